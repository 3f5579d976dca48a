package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/internal/model"
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
		Ref: ref, Field: p.String(), Message: msg,
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
