package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func sa(name string) string {
	return "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: " + name + "\n"
}

func TestLoadDirectory(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"b.yaml":            sa("b"),
		"a.yml":             sa("a"),
		"sub/c.yaml":        sa("c"),
		"notes.txt":         "not: yaml we read",
		".git/config.yaml":  "ignored: [",
		".hidden.yaml":      "ignored: [",
		"sub/d.YAML":        sa("d"),
		"explicit/e.config": sa("e"),
	})
	objs, err := LoadObjects(dir, filepath.Join(dir, "explicit/e.config"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.Ref.Name+"@"+strings.TrimPrefix(o.Origin.File, dir+string(filepath.Separator)))
	}
	want := "a@a.yml b@b.yaml c@sub/c.yaml d@sub/d.YAML e@explicit/e.config"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("loaded %s\nwant   %s", got, want)
	}
}

func TestLoadCollectsAllErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"1.yaml": sa("one") + "---\n" + sa("Two"),
		"2.yaml": "apiVersion v1\nkind: ServiceAccount\nmetadata:\n  name: three\n",
		"3.yaml": sa("one"),
		"4.yaml": sa("four"),
	})
	s, err := Load(dir, filepath.Join(dir, "missing.yaml"))
	rel := func(f string) string { return filepath.Join(dir, f) }
	want := []string{
		rel("missing.yaml") + ": cannot read: no such file or directory",
		rel("1.yaml") + `: document 2: line 9: ServiceAccount default/Two: metadata.name: invalid name "Two": must be an RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)`,
		rel("2.yaml") + ": document 1: line 1: expected `apiVersion: <group/version>`, found `apiVersion v1` (missing colon?)",
		rel("3.yaml") + ": document 1: line 1: ServiceAccount default/one: duplicate object: already defined at " + rel("1.yaml") + ": document 1, line 1",
	}
	checkErrors(t, err, want)
	if s == nil || s.Len() != 2 {
		t.Fatalf("snapshot should hold the 2 valid objects, got %v", s)
	}
}

func TestNewSnapshotDuplicates(t *testing.T) {
	objs, err := Parse("a.yaml", []byte(sa("x")+"---\n# again\n"+sa("x")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewSnapshot(objs)
	checkErrors(t, err, []string{"a.yaml: document 2: line 7: ServiceAccount default/x: duplicate object: already defined at a.yaml: document 1, line 1"})
}

func TestParseSnapshot(t *testing.T) {
	s, err := ParseSnapshot("seed.yaml", []byte(allKinds))
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 14 {
		t.Errorf("got %d objects, want 14", s.Len())
	}
	if o := s.Origins[s.Refs()[0]]; o.File != "seed.yaml" {
		t.Errorf("origin %v", o)
	}
}

// TestManyDocumentsParallel exercises the parallel path of a single large
// file and checks that order and document numbers survive it.
func TestManyDocumentsParallel(t *testing.T) {
	var b strings.Builder
	const n = 500
	for i := range n {
		fmt.Fprintf(&b, "---\n%s", sa(fmt.Sprintf("sa-%d", i)))
	}
	b.WriteString("---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: Bad\n")
	objs, err := Parse("many.yaml", []byte(b.String()))
	if len(objs) != n {
		t.Fatalf("got %d objects, want %d", len(objs), n)
	}
	for i, o := range objs {
		if o.Origin.Document != i+1 || o.Ref.Name != fmt.Sprintf("sa-%d", i) || o.Line != 5*i+2 {
			t.Fatalf("object %d: %+v", i, o)
		}
	}
	if errs := Errors(err); len(errs) != 1 || errs[0].Document != n+1 || errs[0].Line != 5*n+5 {
		t.Fatalf("errors: %v", err)
	}
}

// BenchmarkParsePods measures the cost per document of a typical Pod; a
// directory of 100,000 of them loads in well under ten seconds on two cores.
func BenchmarkParsePods(b *testing.B) {
	var sb strings.Builder
	const n = 1000
	for i := range n {
		fmt.Fprintf(&sb, `---
apiVersion: v1
kind: Pod
metadata:
  name: pod-%d
  namespace: ns-%d
  labels:
    app: app-%d
    topology.kubernetes.io/zone: zone-%d
spec:
  nodeName: node-%d
  serviceAccountName: sa-%d
  containers:
  - name: app
    image: example.com/app:v1
    ports:
    - containerPort: 8080
      name: http
status:
  phase: Running
  podIP: 10.%d.%d.%d
`, i, i%50, i%300, i%3, i%200, i%300, i/65536, (i/256)%256, i%256)
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		objs, err := Parse("pods.yaml", data)
		if err != nil || len(objs) != n {
			b.Fatal(len(objs), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/pod")
}
