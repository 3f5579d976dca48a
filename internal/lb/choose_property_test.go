package lb

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// referenceCandidates is the chooser's specification, written plainly: the
// names of the endpoints it may pick.
func referenceCandidates(r Request) []string {
	lb := r.Service.GetLoadBalancing()
	scopes, mode := lb.GetRoutingPreference(), lb.GetMode()
	if mode == meshv1.LoadBalancing_MODE_UNSPECIFIED {
		scopes = nil
	}
	var eligible []*Endpoint
	for _, e := range r.Endpoints {
		if r.Port != nil {
			if _, ok := e.TargetPort(r.Port); !ok {
				continue
			}
		}
		eligible = append(eligible, e)
	}
	rankOf := func(e *Endpoint) int {
		if r.Source == nil {
			return 0
		}
		return rank(scopes, r.Source, e)
	}
	want := -1
	switch mode {
	case meshv1.LoadBalancing_STRICT:
		want = len(scopes)
	default:
		for _, e := range eligible {
			want = max(want, rankOf(e))
		}
	}
	var out []string
	for _, e := range eligible {
		if rankOf(e) == want {
			out = append(out, e.Workload.GetName())
		}
	}
	slices.Sort(out)
	return out
}

func TestLocalityChooserMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(opts ...string) string { return opts[rng.IntN(len(opts))] }
	allScopes := []meshv1.LoadBalancing_Scope{REGION, ZONE, SUBZONE, NODE, CLUSTER}
	for iter := range 300 {
		var eps []*Endpoint
		for i := range 1 + rng.IntN(12) {
			var ports []uint32
			if rng.IntN(5) > 0 {
				ports = []uint32{80, 8080}
			}
			eps = append(eps, ep(fmt.Sprintf("e%02d", i), pick("r1", "r2"), pick("z1", "z2"), pick("", "s1"), pick("n1", "n2", "n3"), pick("c1", "c2"), ports...))
		}
		slices.SortFunc(eps, CompareEndpoints)
		var src *meshv1.Workload
		if rng.IntN(8) > 0 {
			src = wl("ns", "src", "10.9.9.9")
			src.Locality = &meshv1.Locality{Region: pick("r1", "r2"), Zone: pick("z1", "z2"), Subzone: pick("", "s1")}
			src.Node, src.ClusterId = pick("n1", "n2", "n3"), pick("c1", "c2")
		}
		var scopes []meshv1.LoadBalancing_Scope
		if rng.IntN(2) == 0 {
			scopes = canonical[:rng.IntN(5)]
		} else {
			perm := rng.Perm(len(allScopes))
			for _, i := range perm[:1+rng.IntN(len(perm))] {
				scopes = append(scopes, allScopes[i])
			}
		}
		modes := []meshv1.LoadBalancing_Mode{NOMODE, STRICT, FAILOVER}
		svc := &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{RoutingPreference: scopes, Mode: modes[rng.IntN(3)]}}
		var p *meshv1.ServicePort
		if rng.IntN(2) == 0 {
			p = port(80, 0)
		}
		r := Request{Service: svc, Port: p, Endpoints: eps, Source: src}
		want := referenceCandidates(r)
		got := candidates(t, LocalityChooser{}, r)
		if !slices.Equal(got, want) {
			t.Fatalf("case %d (scopes %v mode %v src %v): candidates %v, want %v", iter, scopes, svc.LoadBalancing.Mode, src.GetLocality(), got, want)
		}
		// With a Scorer the pick is within the same set.
		scored := LocalityChooser{Scorer: scoreMap{}}
		if got := candidates(t, scored, r); !slices.Equal(got, want) {
			t.Fatalf("case %d with scorer: candidates %v, want %v", iter, got, want)
		}
	}
}
