package translate

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// A tiny manifest loader for these tests (the real one is internal/config):
// splits multi-document YAML and decodes the kinds routing reads into their
// typed objects.

// conformanceDir holds the Gateway API mesh conformance manifests.
const conformanceDir = "../../../shared/conformance/gateway-api-mesh/mesh"

const (
	meshNS     = "gateway-conformance-mesh"
	consumerNS = "gateway-conformance-mesh-consumer"
)

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeManifests decodes every document of data.
func decodeManifests(t testing.TB, name string, data []byte) []any {
	t.Helper()
	var out []any
	for i, doc := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s: document %d: %v", name, i+1, err)
		}
		var obj any
		switch meta.Kind {
		case "Namespace":
			obj = &corev1.Namespace{}
		case "Service":
			obj = &corev1.Service{}
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "HTTPRoute":
			obj = &gatewayv1.HTTPRoute{}
		case "GRPCRoute":
			obj = &gatewayv1.GRPCRoute{}
		case "VirtualService":
			obj = &networkingv1.VirtualService{}
		case "DestinationRule":
			obj = &networkingv1.DestinationRule{}
		default:
			t.Fatalf("%s: document %d: kind %q not handled by the test loader", name, i+1, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			// Istio specs use custom JSON unmarshalers that UnmarshalStrict
			// cannot see through; fall back to the lenient decoder for them.
			if err2 := yaml.Unmarshal([]byte(doc), obj); err2 != nil || !strings.HasPrefix(meta.APIVersion, "networking.istio.io/") {
				t.Fatalf("%s: document %d: %v", name, i+1, err)
			}
		}
		out = append(out, obj)
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// loadSnapshot builds a snapshot from manifest files (paths relative to the
// package directory), in order.
func loadSnapshot(t testing.TB, files ...string) *model.Snapshot {
	t.Helper()
	snap := model.NewSnapshot()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		addManifests(t, snap, filepath.Base(f), data)
	}
	return snap
}

func addManifests(t testing.TB, snap *model.Snapshot, name string, data []byte) {
	t.Helper()
	for i, obj := range decodeManifests(t, name, data) {
		if err := snap.Add(obj, model.Origin{File: name, Document: i + 1}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// snapshotFromYAML builds a snapshot from inline manifests.
func snapshotFromYAML(t testing.TB, docs ...string) *model.Snapshot {
	t.Helper()
	snap := model.NewSnapshot()
	for i, d := range docs {
		addManifests(t, snap, fmt.Sprintf("inline-%d", i), []byte(d))
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
	return SelectRule(pr, method, path, h, q)
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
