package telemetry

import (
	"io"
	"strconv"
	"strings"
)

// errWriter keeps the first write error and the byte count.
type errWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (e *errWriter) WriteString(s string) {
	if e.err != nil {
		return
	}
	n, err := io.WriteString(e.w, s)
	e.n += int64(n)
	e.err = err
}

func writeHeader(w *errWriter, name, help, typ string) {
	w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

func writeSample(w *errWriter, name, labels string, v uint64) {
	w.WriteString(name + labels + " " + strconv.FormatUint(v, 10) + "\n")
}

// formatLabels renders {a="x",b="y"}; an empty value becomes "unknown", as
// in Istio's metrics, so queries can match on it.
func formatLabels(names, values []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		v := values[i]
		if v == "" {
			v = "unknown"
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(escapeLabelValue(v))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// escapeLabelValue escapes \, " and newline as the text format requires.
func escapeLabelValue(v string) string {
	if !strings.ContainsAny(v, "\\\"\n") {
		return v
	}
	var b strings.Builder
	for _, r := range v {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
