package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ambit-mesh/ambit/internal/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
)

// decodeObject decodes, defaults and validates one object (a document, or
// an item of a List, then prefix is its path).
func decodeObject(c *docCtx, js []byte, h rawHeader, prefix *fieldPath) (Object, bool) {
	nerr := len(c.errs)
	apiVersion := h.APIVersion.str(c, prefix, "apiVersion")
	kind := h.Kind.str(c, prefix, "kind")
	meta, _ := h.meta(c, prefix)
	name := meta.Name.str(c, prefix, "metadata.name")
	namespace := meta.Namespace.str(c, prefix, "metadata.namespace")
	if len(c.errs) > nerr {
		return Object{}, false
	}
	ref := model.Ref{Kind: model.Kind(kind), Namespace: namespace, Name: name}
	if info := kinds[kind]; info != nil {
		// Name objects in errors as they will be known, defaults applied.
		switch {
		case !info.namespaced:
			ref.Namespace = ""
		case namespace == "":
			ref.Namespace = "default"
		}
	}
	at := func(field string) *fieldPath { return rebase(pathOf(field), prefix) }

	if kind == "" {
		c.fail(model.Ref{Name: name, Namespace: namespace}, at("kind"), "required"+caseHint(js, "kind"))
		if apiVersion == "" {
			c.fail(model.Ref{Name: name, Namespace: namespace}, at("apiVersion"), "required"+caseHint(js, "apiVersion"))
		}
		return Object{}, false
	}
	info := kinds[kind]
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	unknownRef := ref
	if name == "" {
		unknownRef = model.Ref{}
	}
	shownVersion := apiVersion
	if shownVersion == "" {
		shownVersion = "missing"
	}
	if hint, ok := notMeshKinds[group+"/"+kind]; ok && (info == nil || info.group != group) {
		c.failAt(unknownRef, at("kind"), fmt.Sprintf("unsupported kind %s (apiVersion %s): %s", kind, shownVersion, hint))
		return Object{}, false
	}
	if info == nil {
		msg := fmt.Sprintf("unknown kind %s (apiVersion %s); supported kinds: %s", kind, shownVersion, supportedKindNames())
		if s := suggest(kind, slices.Sorted(mapKeys(kinds))); s != "" {
			msg = fmt.Sprintf("unknown kind %s (apiVersion %s; did you mean %s?); supported kinds: %s", kind, shownVersion, s, supportedKindNames())
		}
		c.failAt(unknownRef, at("kind"), msg)
		return Object{}, false
	}
	if apiVersion == "" {
		c.fail(ref, at("apiVersion"), fmt.Sprintf("required; %s uses apiVersion %s%s", kind, info.apiVersions()[0], caseHint(js, "apiVersion")))
		return Object{}, false
	}
	if !slices.Contains(info.apiVersions(), apiVersion) {
		c.fail(ref, at("apiVersion"), fmt.Sprintf("unknown apiVersion %s for kind %s; supported: %s", apiVersion, kind, strings.Join(info.apiVersions(), ", ")))
		return Object{}, false
	}
	if name == "" {
		msg := "required" + caseHint(js, "metadata")
		if meta.GenerateName.str(nil, nil, "") != "" {
			msg = "required (generateName is only meaningful to the Kubernetes API server; give the object a name)"
		}
		c.fail(ref, at("metadata.name"), msg)
		// Go on: the rest of the object may hold errors worth reporting now.
	}

	obj, structural := decode(info, js)
	c.failAll(ref, prefix, structural)
	if obj == nil {
		return Object{}, false
	}

	om := obj.(metav1.Object)
	if info.namespaced {
		if om.GetNamespace() == "" {
			om.SetNamespace("default")
		}
	} else {
		om.SetNamespace("") // cluster-scoped: a namespace means nothing
	}
	ref.Namespace = om.GetNamespace()

	var fe errs
	validateMeta(info, om, &fe)
	info.validate(obj, &fe)
	c.failAll(ref, prefix, withoutCascades(fe, structural))
	if len(c.errs) > nerr {
		return Object{}, false
	}
	return Object{Obj: obj, Ref: ref, Origin: model.Origin{File: c.file, Document: c.doc.index}}, true
}

// decode decodes js into a new object of the kind, returning it and the
// structural errors (unknown fields, wrong types), each at its path.
//
// When there are structural errors the object returned, if any, is decoded
// from the document with the offending values removed, so that the semantic
// checks can still run and report everything else that is wrong in one go.
// It is nil if even that cannot be decoded.
func decode(info *kindInfo, js []byte) (any, errs) {
	var structural errs
	var generic any
	check := func() {
		v, err := decodeGeneric(js)
		if err != nil {
			structural.add(nil, err.Error())
			return
		}
		generic = v
		checkGo(v, info.goType, nil, &structural)
	}
	if info.lenient {
		check()
	}
	obj := info.newObj()
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if (err != nil || len(strict) > 0) && !info.lenient {
		// The decoder stops at the first type error and gives no path for
		// errors from custom unmarshalers: ask the checker.
		check()
	}
	if len(structural) == 0 {
		for _, se := range strict {
			structural.add(strictPath(se), strictMessage(se))
		}
		if err != nil {
			structural.add(nil, strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if len(structural) == 0 {
		return obj, nil
	}
	if generic == nil {
		return nil, structural
	}
	for _, f := range structural {
		if f.path == nil || !prune(generic, f.path) {
			return nil, structural
		}
	}
	clean, merr := json.Marshal(generic)
	if merr != nil {
		return nil, structural
	}
	obj = info.newObj()
	if strict, err := sigsjson.UnmarshalStrict(clean, obj); err != nil || len(strict) > 0 {
		return nil, structural
	}
	return obj, structural
}

// prune removes the value at p from a generic document: a map entry is
// deleted, a list element set to null (deleting it would shift the indices
// of the paths still to be reported).
func prune(v any, p *fieldPath) bool {
	elems := p.elems()
	for i, e := range elems {
		last := i == len(elems)-1
		switch c := v.(type) {
		case map[string]any:
			if e.kind == pathIndex {
				return false
			}
			if last {
				delete(c, e.name)
				return true
			}
			v = c[e.name]
		case []any:
			if e.kind != pathIndex || e.index >= len(c) {
				return false
			}
			if last {
				c[e.index] = nil
				return true
			}
			v = c[e.index]
		default:
			return false
		}
	}
	return false
}

// withoutCascades drops semantic errors that follow from a structural one:
// a value that could not be decoded is missing, and a check of it, of what
// contains it or of what it contains, would only repeat the news. An
// unknown field with a suggested spelling also hides "required" errors for
// the field it was probably meant to be.
func withoutCascades(semantic, structural errs) errs {
	if len(structural) == 0 {
		return semantic
	}
	var related []string
	for _, s := range structural {
		related = append(related, s.path.String())
		if sug := suggestedPath(s); sug != "" {
			related = append(related, sug)
		}
	}
	out := semantic[:0:0]
	for _, f := range semantic {
		p := f.path.String()
		if !slices.ContainsFunc(related, func(r string) bool { return pathsRelated(p, r) }) {
			out = append(out, f)
		}
	}
	return out
}

func suggestedPath(f fieldErr) string {
	_, rest, ok := strings.Cut(f.msg, "(did you mean ")
	if !ok || f.path == nil {
		return ""
	}
	name, err := strconv.Unquote(strings.TrimSuffix(rest, "?)"))
	if err != nil {
		return ""
	}
	return f.path.parent.childOrRoot(name).String()
}

// pathsRelated reports whether one path is the other or lies inside it.
func pathsRelated(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	return a == "" || a == b || (strings.HasPrefix(b, a) && (b[len(a)] == '.' || b[len(a)] == '['))
}

// caseHint notices "apiversion:" for "apiVersion:" and the like: JSON keys
// are case-sensitive, and the usual message (required) would be puzzling.
func caseHint(js []byte, key string) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(js, &top) != nil {
		return ""
	}
	for k := range top {
		if k != key && strings.EqualFold(k, key) {
			return fmt.Sprintf(" (found %q; keys are case-sensitive)", k)
		}
	}
	return ""
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func strictPath(err error) *fieldPath {
	fe, ok := err.(sigsjson.FieldError)
	if !ok {
		return nil
	}
	return parseFieldPath(fe.FieldPath())
}

func strictMessage(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "unknown field"):
		return "unknown field"
	case strings.HasPrefix(msg, "duplicate field"):
		return "duplicate field"
	}
	return msg
}

var pathElemRE = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)

// parseFieldPath reads the paths sigs.k8s.io/json reports ("spec.ports[0].x").
func parseFieldPath(s string) *fieldPath {
	var p *fieldPath
	for _, m := range pathElemRE.FindAllStringSubmatch(s, -1) {
		if m[2] != "" {
			i, _ := strconv.Atoi(m[2])
			if p == nil {
				p = newPath("")
			}
			p = p.at(i)
			continue
		}
		p = p.childOrRoot(m[1])
	}
	return p
}
