package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse, which must neither panic nor
// return an error that is not an ErrorList of errors naming the document.
// Run it with: go test ./internal/config -fuzz FuzzParse -fuzztime 60s
func FuzzParse(f *testing.F) {
	f.Add([]byte(allKinds))
	f.Add([]byte("apiVersion networking.istio.io/v1beta1\nkind: VirtualService\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n"))
	f.Add([]byte("--- {a: [1, 2}\n...\n---\n- x\n"))
	f.Add([]byte("a: &x [*x]\nb: *y\n"))
	for _, dir := range []string{"testdata/errors", "testdata/seeds"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Parse("fuzz.yaml", data)
		if err == nil {
			for _, o := range objs {
				if o.Obj == nil || o.Ref.Kind == "" {
					t.Fatalf("bad object %+v", o)
				}
			}
			return
		}
		errs := Errors(err)
		if len(errs) == 0 {
			t.Fatalf("error is not an ErrorList: %v", err)
		}
		for _, e := range errs {
			if e.Document < 1 || e.Message == "" {
				t.Fatalf("error without document or message: %#v", e)
			}
			if e.Line < 0 {
				t.Fatalf("negative line: %#v", e)
			}
			if strings.HasPrefix(e.Message, "internal error") {
				t.Fatalf("recovered panic: %s", e.Message)
			}
		}
		_ = err.Error()
	})
}
