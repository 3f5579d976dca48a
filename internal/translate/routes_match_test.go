package translate

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

// conformanceRoutes translates every conformance manifest (and the seed) and
// returns all their port routes, for fuzzing.
func conformanceRoutes(t testing.TB) []*meshv1.PortRoutes {
	files, err := filepath.Glob(filepath.Join(conformanceDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no conformance manifests: %v", err)
	}
	var out []*meshv1.PortRoutes
	add := func(snap *model.Snapshot) {
		ix := BuildRoutes(snap, model.DefaultMeshConfig())
		for k := range snap.Services {
			out = append(out, ix.ServiceRoutes(k).GetPorts()...)
			for _, c := range ix.ConsumerRoutes(k) {
				out = append(out, c.GetPorts()...)
			}
		}
	}
	for _, f := range files {
		if strings.HasSuffix(f, "manifests.yaml") {
			continue
		}
		add(conformanceSnapshot(t, filepath.Base(f)))
	}
	if _, err := os.Stat("testdata/routes/seed-001.yaml"); err == nil {
		add(loadSnapshot(t, "testdata/routes/seed-001.yaml", "testdata/routes/seed-001-service.yaml"))
	}
	return out
}

func FuzzSelectRule(f *testing.F) {
	routes := conformanceRoutes(f)
	f.Add("GET", "/v2/example", "version", "two", "animal=whale&x=1")
	f.Add("POST", "/grpc.testing.TestService/UnaryCall", "x-test-case", "multi", "")
	f.Add("GET", "/strip-prefix", "Host", "echo", "a=%zz")
	f.Add("", "", "", "", "")
	f.Add("GET", "/full-path-and-host", ":authority", "echo", ";;")
	f.Fuzz(func(t *testing.T, method, path, hname, hvalue, rawQuery string) {
		h := http.Header{}
		h[hname] = []string{hvalue}
		h.Add(hname, hvalue)
		q, _ := url.ParseQuery(rawQuery)
		for _, pr := range routes {
			r, ok := routematch.SelectRule(pr, method, path, h, q)
			if ok != (r != nil) {
				t.Fatalf("ok=%v with rule %v", ok, r)
			}
			if !ok {
				continue
			}
			_ = routematch.RewritePath(r, path)
			_, _ = routematch.RedirectLocation(r, "http", hvalue, 80, path, rawQuery)
		}
	})
}
