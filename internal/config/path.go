package config

import (
	"strconv"
	"strings"
)

// fieldPath names a value inside a document, e.g. spec.rules[0].matches[1].
// It is a persistent linked list (each element points at its parent) so
// validators can hand out child paths freely without copying.
type fieldPath struct {
	parent *fieldPath
	name   string // field name or map key
	index  int    // list index when isIndex
	kind   pathKind
}

type pathKind uint8

const (
	pathField pathKind = iota // .name
	pathKey                   // [name]: a map key
	pathIndex                 // [index]
)

func newPath(name string, more ...string) *fieldPath {
	p := &fieldPath{name: name}
	for _, m := range more {
		p = p.child(m)
	}
	return p
}

// child returns p.name (p.name.more... with more names).
func (p *fieldPath) child(name string, more ...string) *fieldPath {
	c := &fieldPath{parent: p, name: name, kind: pathField}
	for _, m := range more {
		c = &fieldPath{parent: c, name: m, kind: pathField}
	}
	return c
}

func (p *fieldPath) key(k string) *fieldPath {
	return &fieldPath{parent: p, name: k, kind: pathKey}
}

func (p *fieldPath) at(i int) *fieldPath {
	return &fieldPath{parent: p, index: i, kind: pathIndex}
}

// elems returns the path from the root down.
func (p *fieldPath) elems() []*fieldPath {
	var out []*fieldPath
	for q := p; q != nil; q = q.parent {
		out = append(out, q)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func (p *fieldPath) String() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	for i, e := range p.elems() {
		switch e.kind {
		case pathField:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e.name)
		case pathKey:
			b.WriteByte('[')
			b.WriteString(e.name)
			b.WriteByte(']')
		case pathIndex:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
		}
	}
	return b.String()
}

// fieldErr is an error at a path inside one object, before the file,
// document and object it belongs to are attached.
type fieldErr struct {
	path *fieldPath // nil: the object as a whole
	msg  string
}

// errs collects fieldErrs; validators take a *errs and append to it.
type errs []fieldErr

func (e *errs) add(p *fieldPath, msg string) {
	*e = append(*e, fieldErr{path: p, msg: msg})
}
