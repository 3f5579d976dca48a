package translate

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	sigsyaml "sigs.k8s.io/yaml"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

// conformanceDir holds the Gateway API mesh conformance manifests.
const conformanceDir = "../../test/conformance/gateway-api-mesh/mesh"

const (
	meshNS     = "gateway-conformance-mesh"
	consumerNS = "gateway-conformance-mesh-consumer"
)

// loadSnapshot builds a snapshot from manifest files (paths relative to the
// package directory) with the real parser.
func loadSnapshot(t testing.TB, files ...string) *model.Snapshot {
	t.Helper()
	var objs []config.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		o, err := config.Parse(filepath.Base(f), data)
		if err != nil {
			t.Fatalf("%v", err)
		}
		objs = append(objs, o...)
	}
	snap, err := config.NewSnapshot(objs)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return snap
}

// snapshotFromYAML builds a snapshot from inline manifests.
func snapshotFromYAML(t testing.TB, docs ...string) *model.Snapshot {
	t.Helper()
	var objs []config.Object
	for i, d := range docs {
		o, err := config.Parse(fmt.Sprintf("inline-%d", i), []byte(d))
		if err != nil {
			t.Fatalf("%v", err)
		}
		objs = append(objs, o...)
	}
	snap, err := config.NewSnapshot(objs)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return snap
}

// conformanceSnapshot loads the mesh base manifests plus one test manifest.
func conformanceSnapshot(t testing.TB, manifest string) *model.Snapshot {
	t.Helper()
	return loadSnapshot(t, filepath.Join(conformanceDir, "manifests.yaml"), filepath.Join(conformanceDir, manifest))
}

// svcKey is the mesh key of a Service: "<namespace>/<fqdn>".
func svcKey(ns, name string) string {
	return ns + "/" + model.DefaultMeshConfig().Hostname(ns, name)
}

// portRoutes returns the routes of one port of a Service.
func portRoutes(t testing.TB, sr *meshv1.ServiceRoutes, port uint32) *meshv1.PortRoutes {
	t.Helper()
	for _, p := range sr.GetPorts() {
		if p.GetPort() == port {
			return p
		}
	}
	t.Fatalf("%s: no routes for port %d", sr.GetService(), port)
	return nil
}

// request is one request of a conformance case table.
type request struct {
	method  string
	path    string // may carry "?query"
	headers map[string]string
}

// selectFor runs a request through translated routes.
func selectFor(pr *meshv1.PortRoutes, req request) (*meshv1.RouteRule, bool) {
	method := req.method
	if method == "" {
		method = "GET"
	}
	path, rawQuery, _ := strings.Cut(req.path, "?")
	q, _ := parseQuery(rawQuery)
	h := httpHeader(req.headers)
	return routematch.SelectRule(pr, method, path, h, q)
}

// backendOf names the Service a rule sends to ("" for none), checking it has
// exactly one backend.
func backendOf(t testing.TB, r *meshv1.RouteRule) string {
	t.Helper()
	if len(r.GetBackends()) != 1 {
		t.Fatalf("%s: want 1 backend, got %d", r.GetOrigin(), len(r.GetBackends()))
	}
	return r.GetBackends()[0].GetDestination().GetService()
}

func parseQuery(raw string) (url.Values, error) { return url.ParseQuery(raw) }

func httpHeader(m map[string]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		h.Add(k, v)
	}
	return h
}

// problemsText formats problems one per line, for failure messages.
func problemsText(ps []Problem) string {
	var b bytes.Buffer
	for _, p := range ps {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}

// unvalidatedSnapshot is snapshotFromYAML for objects that the manifest
// parser would reject: objects from the Kubernetes API reach translation
// without Ambit's validation (no webhook), so translation must cope with
// them. The last document is decoded leniently into the typed object of its
// kind; the others go through the parser.
func unvalidatedSnapshot(t testing.TB, valid, invalid string, into any) *model.Snapshot {
	t.Helper()
	snap := snapshotFromYAML(t, valid)
	if err := sigsyaml.Unmarshal([]byte(invalid), into); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := snap.Add(into, model.Origin{File: "unvalidated", Document: 1}); err != nil {
		t.Fatal(err)
	}
	return snap
}
