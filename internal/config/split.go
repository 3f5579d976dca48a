package config

import (
	"bytes"
	"fmt"
)

// rawDoc is one YAML document of a stream, cut out of the file.
type rawDoc struct {
	index     int    // 1-based, counting only non-empty documents
	startLine int    // file line of data's first line
	firstLine int    // file line of the first line with content (apiVersion: usually)
	data      []byte // the document, own copy if it had to be modified
}

// splitDocuments cuts a YAML stream at its document markers and drops
// documents that hold nothing but blank lines and comments.
//
// It splits textually, as kubectl does, rather than with the YAML parser's
// stream API: a syntax error in one document then costs only that document,
// and every document knows the file line it starts on, which is what makes
// error lines relative to the file. This is sound because a line starting
// with "---" or "..." followed by a blank is a document marker wherever it
// appears; YAML forbids it inside scalars.
func splitDocuments(data []byte) []rawDoc {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	var docs []rawDoc
	var (
		cur       []byte // current document, nil if none yet
		curStart  = 1
		curFirst  = 0
		line      = 0
		rewritten bool // cur is our own buffer, not a sub-slice of data
		start     = 0  // offset of cur's first byte in data, when !rewritten
	)
	flush := func(end int) {
		if curFirst > 0 {
			d := rawDoc{index: len(docs) + 1, startLine: curStart, firstLine: curFirst}
			if rewritten {
				d.data = cur
			} else {
				d.data = data[start:end:end]
			}
			docs = append(docs, d)
		}
		cur, curFirst, rewritten = nil, 0, false
	}
	for off := 0; off < len(data); {
		line++
		end := bytes.IndexByte(data[off:], '\n')
		next := len(data)
		if end >= 0 {
			next = off + end + 1
			end = off + end
		} else {
			end = len(data)
		}
		text := bytes.TrimSuffix(data[off:end], []byte("\r"))
		if marker, rest := documentMarker(text); marker {
			flush(off)
			curStart, start = line+1, next
			if r := bytes.TrimSpace(rest); len(r) > 0 && r[0] != '#' {
				// "--- {a: 1}": content on the marker line belongs to the
				// next document. Blank out the marker to keep columns.
				cur = make([]byte, 0, next-off)
				cur = append(cur, "   "...)
				cur = append(cur, data[off+3:next]...)
				rewritten = true
				curStart, curFirst = line, line
			}
			off = next
			continue
		}
		if rewritten {
			cur = append(cur, data[off:next]...)
		}
		if curFirst == 0 && hasContent(text) {
			curFirst = line
		}
		off = next
	}
	flush(len(data))
	return docs
}

// documentMarker reports whether line is a "---" or "..." marker, and what
// follows the marker on the line.
func documentMarker(line []byte) (bool, []byte) {
	if len(line) < 3 || !(bytes.HasPrefix(line, []byte("---")) || bytes.HasPrefix(line, []byte("..."))) {
		return false, nil
	}
	if len(line) > 3 && line[3] != ' ' && line[3] != '\t' {
		return false, nil
	}
	return true, line[3:]
}

// hasContent reports whether a line holds YAML content: not blank, not a
// comment, not a directive (%YAML, which only matters to the parser).
func hasContent(line []byte) bool {
	t := bytes.TrimLeft(line, " \t")
	return len(t) > 0 && t[0] != '#' && !(len(t) == len(line) && t[0] == '%')
}

// A top-level line such as "apiVersion networking.istio.io/v1beta1" is not a
// syntax error to YAML at that point (it is the start of a multi-line plain
// scalar) and the parser reports something baffling a few lines later, so
// the header keys are checked by hand first.
var headerKeys = []string{"apiVersion", "kind", "metadata", "spec", "items"}

var headerExample = map[string]string{
	"apiVersion": "apiVersion: <group/version>",
	"kind":       "kind: <Kind>",
	"metadata":   "metadata:",
	"spec":       "spec:",
	"items":      "items:",
}

// brokenHeader reports whether line is a header key written without its
// colon ("kind Service", "metadata") or without the space after it
// ("kind:Service"), returning the key and what follows it.
func brokenHeader(line []byte) (key string, rest []byte, ok bool) {
	if len(line) == 0 || !bytes.ContainsAny(line[:1], "akmsi") {
		return "", nil, false // fast path: most lines are not candidates
	}
	for _, k := range headerKeys {
		if !bytes.HasPrefix(line, []byte(k)) {
			continue
		}
		rest = line[len(k):]
		switch {
		case len(rest) == 0:
			return k, rest, true
		case rest[0] == ' ' || rest[0] == '\t':
			t := bytes.TrimLeft(rest, " \t")
			return k, rest, len(t) > 0 && t[0] != ':' && t[0] != '#'
		case rest[0] == ':':
			return k, rest, len(rest) > 1 && rest[1] != ' ' && rest[1] != '\t'
		}
		return "", nil, false
	}
	return "", nil, false
}

// lintHeader finds top-level header keys missing their colon (or the space
// after it). It returns the errors, with file lines, and the document with
// the colons put back so that parsing can go on and find further errors.
func lintHeader(d rawDoc) ([]*Error, []byte) {
	var errs []*Error
	var fixed []byte
	line := d.startLine
	for off := 0; off < len(d.data); line++ {
		end := bytes.IndexByte(d.data[off:], '\n')
		next := len(d.data)
		if end >= 0 {
			next = off + end + 1
			end = off + end
		} else {
			end = len(d.data)
		}
		text := bytes.TrimRight(d.data[off:end], " \t\r")
		if key, rest, ok := brokenHeader(text); ok {
			var hint, repl string
			switch {
			case len(rest) > 0 && rest[0] == ':':
				hint, repl = "missing space after colon?", key+": "+string(rest[1:])
			case len(bytes.TrimSpace(rest)) > 0:
				hint, repl = "missing colon?", key+": "+string(bytes.TrimSpace(rest))
			default:
				hint, repl = "missing colon?", key+":"
			}
			errs = append(errs, &Error{
				Document: d.index,
				Line:     line,
				Message:  fmt.Sprintf("expected `%s`, found `%s` (%s)", headerExample[key], text, hint),
			})
			if fixed == nil {
				fixed = append([]byte(nil), d.data[:off]...)
			}
			fixed = append(fixed, repl...)
			fixed = append(fixed, '\n')
		} else if fixed != nil {
			fixed = append(fixed, d.data[off:next]...)
		}
		off = next
	}
	if fixed == nil {
		return nil, d.data
	}
	return errs, fixed
}
