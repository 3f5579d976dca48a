package config

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

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
