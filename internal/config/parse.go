package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/internal/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// Object is one decoded, defaulted and validated manifest object.
type Object struct {
	// Obj is the typed object, one of those model.Snapshot holds
	// (*corev1.Pod, *gatewayv1.HTTPRoute, *networkingv1.VirtualService...),
	// with TypeMeta as written: an Istio v1beta1 object decodes into the v1
	// Go type but keeps apiVersion networking.istio.io/v1beta1.
	Obj    any
	Ref    model.Ref
	Origin model.Origin
	Line   int // file line where the object starts
}

// Parse decodes every document of a YAML stream (documents separated by
// "---"; a "kind: List" contributes its items) into typed objects, applies
// defaults (namespace "default") and validates them.
//
// The error, if any, is an ErrorList holding every problem found in data,
// not just the first. The objects returned are those that had no problem,
// so that a caller such as `ambit analyze` can go on to check references
// between them; a caller applying configuration should reject it all.
//
// Parse never panics, whatever data holds.
func Parse(filename string, data []byte) ([]Object, error) {
	objs, errs := parseFile(filename, data, runtime.GOMAXPROCS(0))
	return objs, errs.err()
}

// ParseSnapshot parses one in-memory stream into a Snapshot, reporting
// duplicate objects as well as everything Parse reports. Like Load it
// returns the Snapshot of the valid objects along with any error.
func ParseSnapshot(filename string, data []byte) (*model.Snapshot, error) {
	objs, errs := parseFile(filename, data, runtime.GOMAXPROCS(0))
	s, dups := snapshot(objs)
	errs = append(errs, dups...)
	return s, errs.err()
}

// parallelThreshold is the number of documents below which fanning out to
// goroutines costs more than it saves.
const parallelThreshold = 64

// parseFile parses one file's documents, on up to workers goroutines.
func parseFile(file string, data []byte, workers int) ([]Object, ErrorList) {
	docs := splitDocuments(data)
	type result struct {
		objs []Object
		errs []*Error
	}
	results := make([]result, len(docs))
	if workers <= 1 || len(docs) < parallelThreshold {
		for i, d := range docs {
			results[i].objs, results[i].errs = parseDocument(file, d)
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(workers, len(docs)) {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= len(docs) {
						return
					}
					results[i].objs, results[i].errs = parseDocument(file, docs[i])
				}
			})
		}
		wg.Wait()
	}
	var objs []Object
	var errs ErrorList
	n := 0
	for _, r := range results {
		n += len(r.objs)
	}
	objs = make([]Object, 0, n)
	for _, r := range results {
		objs = append(objs, r.objs...)
		errs = append(errs, r.errs...)
	}
	return objs, errs
}

// docCtx gathers the errors of one document.
type docCtx struct {
	file string
	doc  rawDoc
	data []byte // the document as parsed (header typos repaired)
	loc  *locator
	errs []*Error
}

func (c *docCtx) line(p *fieldPath) int {
	if l := c.loc0().line(p); l > 0 {
		return l
	}
	return c.doc.firstLine
}

func (c *docCtx) fail(ref model.Ref, p *fieldPath, msg string) {
	msg = c.withSource(p, msg)
	c.errs = append(c.errs, &Error{
		File: c.file, Document: c.doc.index, Line: c.line(p),
		Ref: ref, Field: p.String(), Message: msg, path: p,
	})
}

// withSource puts what the user wrote into type errors: the decoder sees
// YAML's reading of a scalar (1.0 is the number 1, yes is true), which is
// not always recognisable.
func (c *docCtx) withSource(p *fieldPath, msg string) string {
	for _, got := range []string{", got number ", ", got boolean "} {
		i := strings.Index(msg, got)
		if i < 0 || !strings.HasPrefix(msg, "expected ") {
			continue
		}
		rest := msg[i+len(got):]
		value, tail, _ := strings.Cut(rest, " ")
		if tail != "" {
			tail = " " + tail
		}
		src, ok := c.loc0().scalar(p)
		if !ok || src == value {
			return msg
		}
		if strings.HasPrefix(msg, "expected string,") {
			tail = " (quote it to make it a string)"
		}
		return fmt.Sprintf("%s, got %s, which YAML reads as %s %s%s", msg[:i], src, strings.TrimPrefix(strings.TrimSuffix(got, " "), ", got "), value, tail)
	}
	return msg
}

func (c *docCtx) loc0() *locator {
	if c.loc == nil {
		c.loc = newLocator(c.data, c.doc.startLine)
	}
	return c.loc
}

// failAt reports an error about the document as a whole (its kind, say)
// found at p: the line comes from p, but no field is printed.
func (c *docCtx) failAt(ref model.Ref, p *fieldPath, msg string) {
	c.errs = append(c.errs, &Error{
		File: c.file, Document: c.doc.index, Line: c.line(p), Ref: ref, Message: msg,
	})
}

func (c *docCtx) failAll(ref model.Ref, prefix *fieldPath, fe errs) {
	for _, f := range fe {
		c.fail(ref, rebase(f.path, prefix), f.msg)
	}
}

// rebase puts p under prefix (items[3] of a List).
func rebase(p, prefix *fieldPath) *fieldPath {
	if prefix == nil {
		return p
	}
	if p == nil {
		return prefix
	}
	out := prefix
	for _, e := range p.elems() {
		out = &fieldPath{parent: out, name: e.name, index: e.index, kind: e.kind}
	}
	return out
}

// parseDocument turns one document into objects or errors; it recovers
// from panics in the libraries it calls so that no input can crash the
// control plane.
func parseDocument(file string, d rawDoc) (objs []Object, errs []*Error) {
	c := &docCtx{file: file, doc: d, data: d.data}
	defer func() {
		if r := recover(); r != nil {
			objs = nil
			errs = append(c.errs, &Error{File: file, Document: d.index, Line: d.firstLine,
				Message: fmt.Sprintf("internal error while decoding this document (please report it): %v", r)})
		}
	}()
	headerErrs, data := lintHeader(d)
	c.data = data
	for _, e := range headerErrs {
		e.File = file
	}
	c.errs = append(c.errs, headerErrs...)

	js, err := sigsyaml.YAMLToJSONStrict(data)
	if err != nil {
		c.errs = append(c.errs, yamlErrors(c, err)...)
		return nil, c.errs
	}
	js = bytes.TrimSpace(js)
	if string(js) == "null" || len(js) == 0 {
		return nil, c.errs // e.g. a document holding only "~"
	}
	if js[0] != '{' {
		v, _ := decodeGeneric(js)
		c.fail(model.Ref{}, nil, fmt.Sprintf("document is a %s, not an object; a manifest is a mapping with apiVersion, kind, metadata and spec", jsonKindName(v)))
		return nil, c.errs
	}

	var h rawHeader
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &h); err != nil {
		c.fail(model.Ref{}, nil, "cannot read apiVersion, kind and metadata: "+err.Error())
		return nil, c.errs
	}
	if h.Kind.str(nil, nil, "") == "List" {
		objs = parseList(c, js, h)
	} else if obj, ok := decodeObject(c, js, h, nil); ok {
		obj.Line = d.firstLine
		objs = []Object{obj}
	}
	if len(headerErrs) > 0 {
		// The objects were decoded from a repaired document, only to find
		// more errors; they are not what the file says.
		objs = nil
	}
	slices.SortStableFunc(c.errs, func(a, b *Error) int {
		if a.Line == 0 || b.Line == 0 {
			return 0
		}
		return a.Line - b.Line
	})
	// Objects with errors were not returned by decodeObject; those left
	// (the good items of a List) are.
	return objs, c.errs
}

func jsonKindName(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return "scalar"
}

// rawHeader is the part of a document read before its kind is known.
type rawHeader struct {
	APIVersion rawString `json:"apiVersion"`
	Kind       rawString `json:"kind"`
	Metadata   rawString `json:"metadata"`
}

type rawMeta struct {
	Name         rawString `json:"name"`
	Namespace    rawString `json:"namespace"`
	GenerateName rawString `json:"generateName"`
}

// meta reads metadata, reporting it (at prefix.metadata) if it is not an
// object.
func (h rawHeader) meta(c *docCtx, prefix *fieldPath) (rawMeta, bool) {
	var m rawMeta
	raw := bytes.TrimSpace(h.Metadata.raw)
	if len(raw) == 0 || string(raw) == "null" {
		return m, true
	}
	if raw[0] != '{' || sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &m) != nil {
		v, _ := decodeGeneric(raw)
		c.fail(model.Ref{}, rebase(newPath("metadata"), prefix), typeMismatch("object", v))
		return m, false
	}
	return m, true
}

// rawString holds a header value that should be a string but, in a broken
// document, may be anything.
type rawString struct{ raw json.RawMessage }

func (r *rawString) UnmarshalJSON(b []byte) error {
	r.raw = append(json.RawMessage(nil), b...)
	return nil
}

// str returns the string, reporting (at field p, if c is non-nil) a value
// that is not one.
func (r rawString) str(c *docCtx, prefix *fieldPath, field string) string {
	if len(r.raw) == 0 || string(r.raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(r.raw, &s) == nil {
		return s
	}
	if c != nil {
		v, _ := decodeGeneric(r.raw)
		c.fail(model.Ref{}, rebase(pathOf(field), prefix), typeMismatch("string", v))
	}
	return ""
}

func pathOf(dotted string) *fieldPath {
	parts := strings.Split(dotted, ".")
	return newPath(parts[0], parts[1:]...)
}

func parseList(c *docCtx, js []byte, h rawHeader) []Object {
	if av := h.APIVersion.str(nil, nil, ""); av != "v1" {
		c.fail(model.Ref{Kind: "List"}, newPath("apiVersion"), fmt.Sprintf("List must have apiVersion v1, got %q", av))
	}
	var list struct {
		APIVersion json.RawMessage   `json:"apiVersion"`
		Kind       json.RawMessage   `json:"kind"`
		Metadata   json.RawMessage   `json:"metadata"`
		Items      []json.RawMessage `json:"items"`
	}
	strict, err := sigsjson.UnmarshalStrict(js, &list)
	if err != nil {
		v, _ := decodeGeneric(js)
		var fe errs
		m, _ := v.(map[string]any)
		checkGo(m["items"], reflectListType, newPath("items"), &fe)
		if len(fe) == 0 {
			fe.add(newPath("items"), strings.TrimPrefix(err.Error(), "json: "))
		}
		c.failAll(model.Ref{Kind: "List"}, nil, fe)
		return nil
	}
	for _, se := range strict {
		c.fail(model.Ref{Kind: "List"}, strictPath(se), strictMessage(se))
	}
	var objs []Object
	for i, item := range list.Items {
		prefix := newPath("items").at(i)
		item = bytes.TrimSpace(item)
		if len(item) == 0 || item[0] != '{' {
			v, _ := decodeGeneric(item)
			c.fail(model.Ref{}, prefix, typeMismatch("object", v))
			continue
		}
		var ih rawHeader
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(item, &ih); err != nil {
			c.fail(model.Ref{}, prefix, "cannot read apiVersion, kind and metadata: "+err.Error())
			continue
		}
		if ih.Kind.str(nil, nil, "") == "List" {
			c.fail(model.Ref{}, prefix.child("kind"), "a List may not contain another List")
			continue
		}
		if obj, ok := decodeObject(c, item, ih, prefix); ok {
			obj.Line = c.line(prefix)
			objs = append(objs, obj)
		}
	}
	return objs
}

var reflectListType = reflect.TypeFor[[]map[string]any]()

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

var yamlLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlErrors turns a YAML parser error into errors with file lines.
func yamlErrors(c *docCtx, err error) []*Error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	var parts []string
	if rest, ok := strings.CutPrefix(msg, "unmarshal errors:\n"); ok {
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				parts = append(parts, l)
			}
		}
	} else {
		parts = []string{msg}
	}
	var out []*Error
	nlines := bytes.Count(c.data, []byte("\n")) + 1
	for _, p := range parts {
		e := &Error{File: c.file, Document: c.doc.index}
		n := 0
		if m := yamlLineRE.FindStringSubmatch(p); m != nil {
			n, _ = strconv.Atoi(m[1])
			p = m[2]
			// go-yaml reports a parser error (as opposed to a scanner
			// error) at the line before the token it could not fit.
			if parserError(p) {
				n++
			}
		} else if syntaxError(p) {
			n = 1 // go-yaml leaves out "line 1"
		}
		if n > 0 {
			e.Line = c.doc.startLine + min(n, nlines) - 1
		}
		e.Message = "invalid YAML: " + p + yamlHint(c.data, e.Line-c.doc.startLine+1, p)
		out = append(out, e)
	}
	return out
}

func parserError(msg string) bool {
	return msg == "did not find expected key" || msg == "did not find expected '-' indicator" || msg == "did not find expected node content"
}

func syntaxError(msg string) bool {
	for _, prefix := range []string{"did not find", "found ", "could not find", "mapping values", "block sequence", "control characters", "invalid "} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// yamlHint adds the likely cause to the YAML parser's terser messages.
func yamlHint(data []byte, line int, msg string) string {
	text := ""
	if line >= 1 {
		lines := bytes.Split(data, []byte("\n"))
		if line <= len(lines) {
			text = string(lines[line-1])
		}
	}
	switch {
	case strings.Contains(strings.TrimLeft(text, " "), "\t") && strings.HasPrefix(strings.TrimLeft(text, " "), "\t"),
		strings.Contains(msg, "found character that cannot start any token") && strings.Contains(text, "\t"):
		return " (tabs are not allowed for indentation; use spaces)"
	case strings.Contains(msg, "mapping values are not allowed"):
		return " (check the indentation, and that every `key:` is followed by a space)"
	case strings.Contains(msg, "did not find expected key"), strings.Contains(msg, "did not find expected '-' indicator"):
		return " (check the indentation)"
	case strings.Contains(msg, "already set in map"):
		return " (duplicate key)"
	}
	return ""
}
