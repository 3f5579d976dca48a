package translate

import (
	"fmt"
	"sort"

	"github.com/ambit-mesh/ambit/internal/model"
)

// Problem is an object, or a part of one, that could not be applied as
// written, and why. Translation never fails as a whole: it applies what it can,
// falls back to a safe behaviour for the rest (a 500 for an unusable backend,
// the default route for an unusable parent) and reports a Problem, which the
// control plane exposes as status and logs.
type Problem struct {
	// Ref is the object at fault.
	Ref model.Ref
	// Field is the JSON path of the offending part, e.g.
	// "spec.rules[1].backendRefs[0]"; empty for the object as a whole.
	Field string
	// Message says what is wrong and what the mesh does instead.
	Message string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Ref.String() + ": " + p.Message
	}
	return p.Ref.String() + ": " + p.Field + ": " + p.Message
}

// routeProblems collects problems without duplicates (the same route attached
// to several Services or ports is converted once, but a problem found while
// attaching it may be found more than once) and remembers which Services each
// concerns.
type routeProblems struct {
	list  []Problem
	seen  map[Problem]int
	about map[model.Key][]int
	byRef map[model.Ref][]int
}

func (ps *routeProblems) add(svc *model.Key, ref model.Ref, field, format string, args ...any) {
	p := Problem{Ref: ref, Field: field, Message: fmt.Sprintf(format, args...)}
	if ps.seen == nil {
		ps.seen = map[Problem]int{}
		ps.about = map[model.Key][]int{}
		ps.byRef = map[model.Ref][]int{}
	}
	i, ok := ps.seen[p]
	if !ok {
		i = len(ps.list)
		ps.list = append(ps.list, p)
		ps.seen[p] = i
		ps.byRef[ref] = append(ps.byRef[ref], i)
	}
	if svc != nil {
		ps.relateOne(*svc, i)
	}
}

// relate records that every problem found so far in ref concerns svc.
func (ps *routeProblems) relate(svc model.Key, ref model.Ref) {
	for _, i := range ps.byRef[ref] {
		ps.relateOne(svc, i)
	}
}

func (ps *routeProblems) relateOne(svc model.Key, i int) {
	for _, j := range ps.about[svc] {
		if j == i {
			return
		}
	}
	ps.about[svc] = append(ps.about[svc], i)
}

// sortRouteProblems returns the problems ordered by object, field and message, so output
// is deterministic whatever the map iteration order was.
func sortRouteProblems(ps []Problem) []Problem {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Ref != b.Ref {
			if a.Ref.Kind != b.Ref.Kind {
				return a.Ref.Kind < b.Ref.Kind
			}
			if a.Ref.Namespace != b.Ref.Namespace {
				return a.Ref.Namespace < b.Ref.Namespace
			}
			return a.Ref.Name < b.Ref.Name
		}
		if a.Field != b.Field {
			return a.Field < b.Field
		}
		return a.Message < b.Message
	})
	return ps
}
