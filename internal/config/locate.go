package config

import (
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// locator maps field paths to lines of one document. Decoding goes through
// JSON, which has no positions, so on the (rare) error path the document is
// parsed a second time into a node tree that remembers them.
type locator struct {
	root   *yaml.Node // the document's top-level value; nil if it did not parse
	offset int        // file line of the document's first line, minus one
}

func newLocator(data []byte, startLine int) *locator {
	l := &locator{offset: startLine - 1}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil && doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		l.root = doc.Content[0]
	}
	return l
}

// line returns the file line of the value at p or, if p does not exist in
// the document (a required field left out), of its nearest ancestor. For a
// key in a mapping it is the key's line, which is where an unknown or
// invalid field is written.
func (l *locator) line(p *fieldPath) int {
	if l == nil || l.root == nil {
		return 0
	}
	n := l.root
	best := n.Line
	if p == nil {
		return best + l.offset
	}
	for _, e := range p.elems() {
		n = deref(n)
		var next *yaml.Node
		switch {
		case e.kind == pathIndex && n.Kind == yaml.SequenceNode:
			if e.index < len(n.Content) {
				next = n.Content[e.index]
				best = next.Line
			}
		case e.kind != pathIndex && n.Kind == yaml.MappingNode:
			k, v := mappingLookup(n, e.name)
			if k != nil {
				next = v
				best = k.Line
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return best + l.offset
}

// scalar returns the source text of the scalar at p, if p leads to one.
func (l *locator) scalar(p *fieldPath) (string, bool) {
	if l == nil || l.root == nil || p == nil {
		return "", false
	}
	n := l.root
	for _, e := range p.elems() {
		n = deref(n)
		switch {
		case e.kind == pathIndex && n.Kind == yaml.SequenceNode && e.index < len(n.Content):
			n = n.Content[e.index]
		case e.kind != pathIndex && n.Kind == yaml.MappingNode:
			_, v := mappingLookup(n, e.name)
			if v == nil {
				return "", false
			}
			n = v
		default:
			return "", false
		}
	}
	n = deref(n)
	return n.Value, n.Kind == yaml.ScalarNode
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// mappingLookup finds key in a mapping, trying protobuf's snake_case
// spelling of a camelCase path element as Istio accepts both.
func mappingLookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	alt := snakeCase(key)
	for i := 0; i+1 < len(m.Content); i += 2 {
		if kv := m.Content[i].Value; kv == key || kv == alt {
			return m.Content[i], m.Content[i+1]
		}
	}
	// Map keys of non-string type (PeerAuthentication port numbers) are
	// rendered back from their JSON form; compare numerically.
	if n, err := strconv.ParseInt(key, 10, 64); err == nil {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if kn, err := strconv.ParseInt(m.Content[i].Value, 0, 64); err == nil && kn == n {
				return m.Content[i], m.Content[i+1]
			}
		}
	}
	return nil, nil
}

func snakeCase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
