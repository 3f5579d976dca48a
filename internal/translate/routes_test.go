package translate

import (
	"net/http"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

// The Gateway API mesh conformance cases (CASES.md), driven through
// translation and SelectRule: which backend each request reaches, with which
// redirect, rewrite and header changes.

// caseRequest is one row of a case table. Exactly one outcome is set:
// backend (a Service name in the mesh namespace), notFound, or location (a
// redirect, for a request to http://echo:80).
type caseRequest struct {
	req      request
	backend  string
	notFound bool
	location string
	status   uint32
	// upstreamPath is the path the backend receives (after URL rewrite).
	upstreamPath string
	// backendHeaders are request headers the backend must see (values
	// joined with ","), and backendAbsent names it must not.
	backendHeaders map[string]string
	backendAbsent  []string
	// responseHeaders are response headers set on the way back.
	responseHeaders map[string]string
}

type meshCase struct {
	name     string
	manifest string // in conformanceDir; "" for none
	service  string
	port     uint32
	requests []caseRequest
	// problems lists substrings of the problems expected (others fail).
	problems []string
}

func get(path string, headers ...string) request {
	h := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return request{method: "GET", path: path, headers: h}
}

func TestMeshConformanceRouting(t *testing.T) {
	v1, v2 := "echo-v1", "echo-v2"
	hdrSet := func(path string, extra ...string) caseRequest {
		return caseRequest{req: get(path, extra...), backend: v1}
	}
	cases := []meshCase{
		{
			name: "MeshBasic", service: "echo", port: 80,
			requests: []caseRequest{{req: get("/"), backend: "echo"}},
		},
		{
			name: "MeshTrafficSplit", manifest: "mesh-split.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/v1"), backend: v1},
				{req: get("/v2"), backend: v2},
				{req: get("/v3"), notFound: true},
				{req: get("/v1/"), notFound: true},
			},
		},
		{
			name: "MeshHTTPRouteSimpleSameNamespace", manifest: "httproute-simple-same-namespace.yaml", service: "echo", port: 80,
			requests: []caseRequest{{req: get("/"), backend: v1}, {req: get("/anything"), backend: v1}},
		},
		{
			name: "MeshHTTPRouteMatching", manifest: "httproute-matching.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/"), backend: v1},
				{req: get("/example"), backend: v1},
				{req: get("/", "Version", "one"), backend: v1},
				{req: get("/v2"), backend: v2},
				{req: get("/v2/example"), backend: v2},
				{req: get("/", "Version", "two"), backend: v2},
				{req: get("/v2/"), backend: v2},
				{req: get("/v2example"), backend: v1},
				{req: get("/foo/v2/example"), backend: v1},
			},
		},
		{
			name: "MeshHTTPRouteNamedRule", manifest: "httproute-named-rule.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/named"), backend: v1},
				{req: get("/unnamed"), backend: v2},
				{req: get("/other"), notFound: true},
			},
		},
		{
			name: "MeshHTTPRouteQueryParamMatching", manifest: "httproute-query-param-matching.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/?animal=whale"), backend: v1},
				{req: get("/?animal=dolphin"), backend: v2},
				{req: get("/?animal=whale&otherparam=irrelevant"), backend: v1},
				{req: get("/?animal=dolphin&color=yellow"), backend: v2},
				{req: get("/?color=blue"), notFound: true},
				{req: get("/?animal=dog"), notFound: true},
				{req: get("/?animal=whaledolphin"), notFound: true},
				{req: get("/"), notFound: true},
				{req: get("/path1?animal=whale"), backend: v1},
				{req: get("/?animal=whale", "version", "one"), backend: v2},
				{req: get("/path3?animal=shark"), backend: v1},
				{req: get("/path4?animal=kraken", "version", "three"), backend: v1},
				{req: get("/?animal=shark"), notFound: true},
				{req: get("/path4?animal=kraken"), notFound: true},
				{req: get("/path5?animal=hydra"), backend: v1},
			},
		},
		{
			name: "MeshHTTPRouteRedirectHostAndStatus", manifest: "httproute-redirect-host-and-status.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/hostname-redirect"), location: "http://example.org/hostname-redirect", status: 302},
				{req: get("/host-and-status"), location: "http://example.org/host-and-status", status: 301},
			},
		},
		{
			name: "MeshHTTPRouteRedirectPath", manifest: "httproute-redirect-path.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/original-prefix/lemon"), location: "http://echo/replacement-prefix/lemon", status: 302},
				{req: get("/full/path/original"), location: "http://echo/full-path-replacement", status: 302},
				{req: get("/path-and-host"), location: "http://example.org/replacement-prefix", status: 302},
				{req: get("/path-and-status"), location: "http://echo/replacement-prefix", status: 301},
				{req: get("/full-path-and-host"), location: "http://example.org/replacement-full", status: 302},
				{req: get("/full-path-and-status"), location: "http://echo/replacement-full", status: 301},
			},
		},
		{
			name: "MeshHTTPRouteRedirectPort", manifest: "httproute-redirect-port.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/port"), location: "http://echo:8083/port", status: 302},
				{req: get("/port-and-host"), location: "http://example.org:8083/port-and-host", status: 302},
				{req: get("/port-and-status"), location: "http://echo:8083/port-and-status", status: 301},
				{req: get("/port-and-host-and-status"), location: "http://example.org:8083/port-and-host-and-status", status: 302},
			},
		},
		{
			name: "MeshHTTPRouteSchemeRedirect", manifest: "httproute-redirect-scheme.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/scheme"), location: "https://echo/scheme", status: 302},
				{req: get("/scheme-and-host"), location: "https://example.org/scheme-and-host", status: 302},
				{req: get("/scheme-and-status"), location: "https://echo/scheme-and-status", status: 301},
				{req: get("/scheme-and-host-and-status"), location: "https://example.org/scheme-and-host-and-status", status: 302},
			},
		},
		{
			name: "MeshHTTPRoute303Redirect", manifest: "httproute-303-redirect.yaml", service: "echo", port: 80,
			requests: []caseRequest{{req: get("/redirect"), location: "http://echo/redirect", status: 303}},
		},
		{
			name: "MeshHTTPRoute307Redirect", manifest: "httproute-307-redirect.yaml", service: "echo", port: 80,
			requests: []caseRequest{{req: get("/temporary"), location: "http://echo/temporary", status: 307}},
		},
		{
			name: "MeshHTTPRoute308Redirect", manifest: "httproute-308-redirect.yaml", service: "echo", port: 80,
			requests: []caseRequest{{req: get("/permanent"), location: "http://echo/permanent", status: 308}},
		},
		{
			name: "MeshHTTPRouteRequestHeaderModifier", manifest: "httproute-request-header-modifier.yaml", service: "echo", port: 80,
			requests: headerModifierRequests(hdrSet),
		},
		{
			name: "MeshHTTPRouteBackendRequestHeaderModifier", manifest: "httproute-request-header-modifier-backend.yaml", service: "echo", port: 80,
			requests: headerModifierRequests(hdrSet),
		},
		{
			name: "MeshHTTPRouteRewritePath", manifest: "httproute-rewrite-path.yaml", service: "echo", port: 80,
			requests: []caseRequest{
				{req: get("/prefix/one/two"), backend: v1, upstreamPath: "/one/two"},
				{req: get("/strip-prefix/three"), backend: v1, upstreamPath: "/three"},
				{req: get("/strip-prefix"), backend: v1, upstreamPath: "/"},
				{req: get("/full/one/two"), backend: v1, upstreamPath: "/one"},
				{
					req:     get("/full/rewrite-path-and-modify-headers/test", "X-Header-Remove", "remove-val", "X-Header-Add-Append", "append-val-1", "X-Header-Set", "set-val"),
					backend: v1, upstreamPath: "/test",
					backendHeaders: map[string]string{"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Set": "set-overwrites-values"},
					backendAbsent:  []string{"X-Header-Remove"},
				},
				{
					req:     get("/prefix/rewrite-path-and-modify-headers/one", "X-Header-Remove", "remove-val", "X-Header-Add-Append", "append-val-1", "X-Header-Set", "set-val"),
					backend: v1, upstreamPath: "/prefix/one",
					backendHeaders: map[string]string{"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Set": "set-overwrites-values"},
					backendAbsent:  []string{"X-Header-Remove"},
				},
			},
		},
		{
			name: "MeshFrontend/echo-v2", manifest: "mesh-frontend.yaml", service: "echo-v2", port: 80,
			requests: []caseRequest{{req: get("/"), backend: v2, responseHeaders: map[string]string{"X-Header-Set": "set"}}},
		},
		{
			name: "MeshFrontendHostname/echo-v1", manifest: "mesh-frontend.yaml", service: "echo-v1", port: 80,
			requests: []caseRequest{{req: get("/", "Host", "echo-v2"), backend: v1, responseHeaders: map[string]string{}}},
		},
		{
			name: "MeshPorts/echo-v1:80", manifest: "mesh-ports.yaml", service: "echo-v1", port: 80,
			requests: []caseRequest{{req: get("/"), backend: v1, responseHeaders: map[string]string{"X-Header-Set": "v1"}}},
		},
		{
			name: "MeshPorts/echo-v1:8080", manifest: "mesh-ports.yaml", service: "echo-v1", port: 8080,
			requests: []caseRequest{{req: get("/"), backend: v1, responseHeaders: map[string]string{}}},
		},
		{
			name: "MeshPorts/echo-v2:80", manifest: "mesh-ports.yaml", service: "echo-v2", port: 80,
			requests: []caseRequest{{req: get("/"), backend: v2, responseHeaders: map[string]string{"X-Header-Set": "v2"}}},
		},
		{
			name: "MeshPorts/echo-v2:8080", manifest: "mesh-ports.yaml", service: "echo-v2", port: 8080,
			requests: []caseRequest{{req: get("/"), backend: v2, responseHeaders: map[string]string{"X-Header-Set": "v2"}}},
		},
		{
			name: "MeshConsumerRoute/producer", manifest: "mesh-consumer-route.yaml", service: "echo-v1", port: 80,
			requests: []caseRequest{{req: get("/"), backend: v1, responseHeaders: map[string]string{}}},
		},
		{
			name: "MeshGRPCRouteWeight", manifest: "grpcroute-weight.yaml", service: "echo", port: 7070,
			requests: []caseRequest{{req: request{method: "POST", path: "/grpc.testing.TestService/UnaryCall"}}},
			problems: []string{"service gateway-conformance-mesh/echo-v3 not found (weight 0: it receives no traffic)"},
		},
		{
			name: "MeshGRPCRouteRequestHeaderModifier", manifest: "grpcroute-request-header-modifier.yaml", service: "echo", port: 7070,
			requests: []caseRequest{
				{
					req:            grpcReq("x-test-case", "set", "some-other-header", "this-header-should-be-set", "x-header-set", "this-value-should-be-overwritten"),
					backend:        v1,
					backendHeaders: map[string]string{"x-header-set": "set-overwrites-values", "some-other-header": "this-header-should-be-set"},
				},
				{
					req:            grpcReq("x-test-case", "add", "x-header-add", "this-value-should-be-appended"),
					backend:        v1,
					backendHeaders: map[string]string{"x-header-add": "this-value-should-be-appended,add-appends-values"},
				},
				{
					req:           grpcReq("x-test-case", "remove", "x-header-remove", "this-should-be-removed"),
					backend:       v1,
					backendAbsent: []string{"x-header-remove"},
				},
				{
					req:     grpcReq("x-test-case", "multi", "x-header-set-2", "set-header-2", "x-header-add-2", "add-header-2", "x-header-remove-2", "should-be-removed-2"),
					backend: v2,
					backendHeaders: map[string]string{
						"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2",
						"x-header-add-1": "header-add-1", "x-header-add-2": "add-header-2,header-add-2",
					},
					backendAbsent: []string{"x-header-remove-1", "x-header-remove-2"},
				},
				{req: grpcReq("x-test-case", "other"), notFound: true},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var snap *model.Snapshot
			if c.manifest == "" {
				snap = loadSnapshot(t, conformanceDir+"/manifests.yaml")
			} else {
				snap = conformanceSnapshot(t, c.manifest)
			}
			ix := BuildRoutes(snap, model.DefaultMeshConfig())
			checkProblems(t, ix.Problems(), c.problems)
			sr := ix.ServiceRoutes(model.Key{Namespace: meshNS, Name: c.service})
			if sr == nil {
				t.Fatalf("no routes for service %s", c.service)
			}
			pr := portRoutes(t, sr, c.port)
			for _, cr := range c.requests {
				runCaseRequest(t, pr, cr)
			}
		})
	}
}

func grpcReq(headers ...string) request {
	r := get("/grpc.testing.TestService/UnaryCall", headers...)
	r.method = "POST"
	r.headers["content-type"] = "application/grpc"
	return r
}

// headerModifierRequests is the request table shared by
// MeshHTTPRouteRequestHeaderModifier and its backend variant.
func headerModifierRequests(ok func(string, ...string) caseRequest) []caseRequest {
	with := func(cr caseRequest, hdrs map[string]string, absent ...string) caseRequest {
		cr.backendHeaders, cr.backendAbsent = hdrs, absent
		return cr
	}
	return []caseRequest{
		with(ok("/set", "Some-Other-Header", "val"), map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
		with(ok("/set", "Some-Other-Header", "val", "X-Header-Set", "some-other-value"), map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
		with(ok("/add", "Some-Other-Header", "val"), map[string]string{"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}),
		with(ok("/add", "Some-Other-Header", "val", "X-Header-Add", "some-other-value"), map[string]string{"X-Header-Add": "some-other-value,add-appends-values"}),
		with(ok("/remove", "X-Header-Remove", "val"), nil, "X-Header-Remove"),
		with(ok("/multiple", "X-Header-Set-2", "set-val-2", "X-Header-Add-2", "add-val-2", "X-Header-Remove-2", "remove-val-2", "Another-Header", "another-header-val"),
			map[string]string{
				"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1",
				"X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val",
			}, "X-Header-Remove-1", "X-Header-Remove-2"),
		with(ok("/case-insensitivity", "x-header-set", "original-val-set", "x-header-add", "original-val-add", "x-header-remove", "original-val-remove", "Another-Header", "another-header-val"),
			map[string]string{"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "Another-Header": "another-header-val"},
			"x-header-remove", "X-Header-Remove"),
	}
}

func checkProblems(t *testing.T, got []Problem, want []string) {
	t.Helper()
	matched := make([]bool, len(want))
	for _, p := range got {
		ok := false
		for i, w := range want {
			if strings.Contains(p.String(), w) {
				ok, matched[i] = true, true
			}
		}
		if !ok {
			t.Errorf("unexpected problem: %s", p)
		}
	}
	for i, w := range want {
		if !matched[i] {
			t.Errorf("missing problem %q; got:\n%s", w, problemsText(got))
		}
	}
}

func runCaseRequest(t *testing.T, pr *meshv1.PortRoutes, cr caseRequest) {
	t.Helper()
	rule, ok := selectFor(pr, cr.req)
	what := cr.req.method + " " + cr.req.path
	if cr.notFound {
		if ok {
			t.Errorf("%s: want 404, got rule %s", what, rule.GetOrigin())
		}
		return
	}
	if !ok {
		t.Errorf("%s: no rule matched (404)", what)
		return
	}
	path, rawQuery, _ := strings.Cut(cr.req.path, "?")
	if cr.location != "" {
		loc, status := routematch.RedirectLocation(rule, "http", "echo", 80, path, rawQuery)
		if loc != cr.location || status != cr.status {
			t.Errorf("%s: redirect %d %s, want %d %s (rule %s)", what, status, loc, cr.status, cr.location, rule.GetOrigin())
		}
		if len(rule.GetBackends()) != 0 {
			t.Errorf("%s: redirect rule has backends", what)
		}
		return
	}
	if rule.GetDirectStatus() != 0 {
		t.Errorf("%s: direct response %d from rule %s", what, rule.GetDirectStatus(), rule.GetOrigin())
		return
	}
	var backend *meshv1.WeightedBackend
	if cr.backend != "" {
		if got := backendOf(t, rule); got != svcKey(meshNS, cr.backend) {
			t.Errorf("%s: backend %s, want %s (rule %s)", what, got, svcKey(meshNS, cr.backend), rule.GetOrigin())
		}
		backend = rule.GetBackends()[0]
		if backend.GetInvalidReason() != "" {
			t.Errorf("%s: backend invalid: %s", what, backend.GetInvalidReason())
		}
	}
	if cr.upstreamPath != "" {
		if got := routematch.RewritePath(rule, path); got != cr.upstreamPath {
			t.Errorf("%s: upstream path %q, want %q", what, got, cr.upstreamPath)
		}
	}
	if cr.backendHeaders != nil || cr.backendAbsent != nil {
		h := httpHeader(cr.req.headers)
		applyHeaderModifier(h, rule.GetRequestHeaders())
		applyHeaderModifier(h, backend.GetRequestHeaders())
		for name, want := range cr.backendHeaders {
			if got := strings.Join(h.Values(name), ","); got != want {
				t.Errorf("%s: backend header %s=%q, want %q", what, name, got, want)
			}
		}
		for _, name := range cr.backendAbsent {
			if len(h.Values(name)) > 0 {
				t.Errorf("%s: backend header %s present, want absent", what, name)
			}
		}
	}
	if cr.responseHeaders != nil {
		h := http.Header{}
		applyHeaderModifier(h, backend.GetResponseHeaders())
		applyHeaderModifier(h, rule.GetResponseHeaders())
		if len(h) != len(cr.responseHeaders) {
			t.Errorf("%s: response headers %v, want %v", what, h, cr.responseHeaders)
		}
		for name, want := range cr.responseHeaders {
			if got := strings.Join(h.Values(name), ","); got != want {
				t.Errorf("%s: response header %s=%q, want %q", what, name, got, want)
			}
		}
	}
}

// applyHeaderModifier applies Gateway API header filter semantics (what the
// waypoint does): set overwrites, add appends, remove deletes; names are
// case-insensitive.
func applyHeaderModifier(h http.Header, hm *meshv1.HeaderModifier) {
	if hm == nil {
		return
	}
	for _, s := range hm.GetSet() {
		h.Set(s.GetName(), s.GetValue())
	}
	for _, a := range hm.GetAdd() {
		h.Add(a.GetName(), a.GetValue())
	}
	for _, r := range hm.GetRemove() {
		h.Del(r)
	}
}

// TestMeshConformanceTranslation pins the translated rules of the routing
// cases: order, matches, filters and backends, as the waypoint receives them.
func TestMeshConformanceTranslation(t *testing.T) {
	mesh := model.DefaultMeshConfig()
	echo := model.Key{Namespace: meshNS, Name: "echo"}
	dest := func(name string, port uint32) *meshv1.Destination {
		return &meshv1.Destination{Service: svcKey(meshNS, name), Port: port}
	}

	t.Run("MeshTrafficSplit", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "mesh-split.yaml"), mesh)
		sr := ix.ServiceRoutes(echo)
		if sr.GetService() != svcKey(meshNS, "echo") {
			t.Fatalf("service key %q", sr.GetService())
		}
		// No parentRef port: every HTTP-capable port (80, 8080, 7070) gets
		// the route; TLS (443) and TCP (9090) keep the default.
		for _, pr := range sr.GetPorts() {
			wantUser := pr.GetPort() == 80 || pr.GetPort() == 8080 || pr.GetPort() == 7070
			if pr.GetUserRoutes() != wantUser {
				t.Errorf("port %d: user_routes=%v, want %v", pr.GetPort(), pr.GetUserRoutes(), wantUser)
			}
			if !wantUser {
				assertDefault(t, pr, svcKey(meshNS, "echo"))
			}
		}
		pr := portRoutes(t, sr, 80)
		if pr.GetProtocol() != meshv1.AppProtocol_HTTP {
			t.Errorf("protocol %v", pr.GetProtocol())
		}
		want := []struct {
			origin, path string
			backend      *meshv1.Destination
		}{
			{"HTTPRoute gateway-conformance-mesh/mesh-split rule 1", "/v1", dest("echo-v1", 80)},
			{"HTTPRoute gateway-conformance-mesh/mesh-split rule 2", "/v2", dest("echo-v2", 80)},
		}
		if len(pr.GetRules()) != len(want) {
			t.Fatalf("%d rules, want %d", len(pr.GetRules()), len(want))
		}
		for i, w := range want {
			r := pr.GetRules()[i]
			if r.GetOrigin() != w.origin {
				t.Errorf("rule %d origin %q, want %q", i, r.GetOrigin(), w.origin)
			}
			m := r.GetMatches()
			if len(m) != 1 || m[0].GetPath().GetType() != meshv1.PathMatch_EXACT || m[0].GetPath().GetValue() != w.path {
				t.Errorf("rule %d matches %v", i, m)
			}
			if len(r.GetBackends()) != 1 || r.GetBackends()[0].GetWeight() != 1 || !equalDest(r.GetBackends()[0].GetDestination(), w.backend) {
				t.Errorf("rule %d backends %v", i, r.GetBackends())
			}
		}
	})

	t.Run("MeshHTTPRouteMatching order", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "httproute-matching.yaml"), mesh)
		pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
		// Longest prefix first; among "/" prefixes more headers first, then rule order.
		wantOrigins := []string{
			"HTTPRoute gateway-conformance-mesh/mesh-matching rule 2 match 1", // PathPrefix /v2
			"HTTPRoute gateway-conformance-mesh/mesh-matching rule 1 match 2", // / + version=one
			"HTTPRoute gateway-conformance-mesh/mesh-matching rule 2 match 2", // / + version=two
			"HTTPRoute gateway-conformance-mesh/mesh-matching rule 1 match 1", // PathPrefix /
		}
		assertOrigins(t, pr, wantOrigins)
		if got := pr.GetRules()[1].GetMatches()[0]; got.GetPath().GetType() != meshv1.PathMatch_PREFIX || got.GetPath().GetValue() != "/" ||
			len(got.GetHeaders()) != 1 || got.GetHeaders()[0].GetName() != "version" || got.GetHeaders()[0].GetValue() != "one" {
			t.Errorf("header match with default path: %v", got)
		}
		// The other ports of echo keep the default: the parentRef names port 80.
		assertDefault(t, portRoutes(t, ix.ServiceRoutes(echo), 8080), svcKey(meshNS, "echo"))
		if !portRoutes(t, ix.ServiceRoutes(echo), 80).GetUserRoutes() {
			t.Error("port 80: user_routes false")
		}
		if b := pr.GetRules()[0].GetBackends()[0]; !equalDest(b.GetDestination(), dest("echo-v2", 8080)) {
			t.Errorf("backend %v", b)
		}
	})

	t.Run("MeshHTTPRouteQueryParamMatching order", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "httproute-query-param-matching.yaml"), mesh)
		pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
		p := "HTTPRoute gateway-conformance-mesh/mesh-query-param-matching "
		assertOrigins(t, pr, []string{
			p + "rule 5 match 2", // /path4 + header + query
			p + "rule 3",         // /path1 + query
			p + "rule 5 match 1", // /path3 + query
			p + "rule 6",         // /path5
			p + "rule 4",         // / + header + query
			p + "rule 1",         // / + query
			p + "rule 2",
			p + "rule 7",
		})
	})

	t.Run("MeshHTTPRouteWeight", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "httproute-weight.yaml"), mesh)
		pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
		if len(pr.GetRules()) != 1 {
			t.Fatalf("%d rules", len(pr.GetRules()))
		}
		r := pr.GetRules()[0]
		if len(r.GetMatches()) != 1 || r.GetMatches()[0].GetPath().GetType() != meshv1.PathMatch_PREFIX || r.GetMatches()[0].GetPath().GetValue() != "/" {
			t.Errorf("default match: %v", r.GetMatches())
		}
		assertWeights(t, r, map[string]uint32{"echo-v1": 70, "echo-v2": 30}, 8080)
	})

	t.Run("MeshGRPCRouteWeight", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "grpcroute-weight.yaml"), mesh)
		sr := ix.ServiceRoutes(echo)
		pr := portRoutes(t, sr, 7070)
		if pr.GetProtocol() != meshv1.AppProtocol_HTTP2 || !pr.GetUserRoutes() || len(pr.GetRules()) != 1 {
			t.Fatalf("port 7070: %v", pr)
		}
		r := pr.GetRules()[0]
		if len(r.GetMatches()) != 0 {
			t.Errorf("matches %v, want none (match all)", r.GetMatches())
		}
		// echo-v3 has weight 0 (and does not exist): left out, not a 500.
		assertWeights(t, r, map[string]uint32{"echo-v1": 70, "echo-v2": 30}, 7070)
		if r.GetDirectStatus() != 0 {
			t.Errorf("direct status %d", r.GetDirectStatus())
		}
		assertDefault(t, portRoutes(t, sr, 80), svcKey(meshNS, "echo"))
	})

	t.Run("MeshHTTPRouteNamedRule", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "httproute-named-rule.yaml"), mesh)
		pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
		names := map[string]string{}
		for _, r := range pr.GetRules() {
			names[r.GetMatches()[0].GetPath().GetValue()] = r.GetName()
		}
		if names["/named"] != "named-rule" || names["/unnamed"] != "" {
			t.Errorf("names %v", names)
		}
	})

	t.Run("MeshHTTPRouteRedirectPath", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "httproute-redirect-path.yaml"), mesh)
		pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
		byPath := map[string]*meshv1.Redirect{}
		for _, r := range pr.GetRules() {
			byPath[r.GetMatches()[0].GetPath().GetValue()] = r.GetRedirect()
		}
		want := map[string]*meshv1.Redirect{
			"/original-prefix":      {ReplacePrefix: "/replacement-prefix", HasReplacePrefix: true, StatusCode: 302},
			"/full":                 {FullPath: "/full-path-replacement", StatusCode: 302},
			"/path-and-host":        {Hostname: "example.org", ReplacePrefix: "/replacement-prefix", HasReplacePrefix: true, StatusCode: 302},
			"/path-and-status":      {ReplacePrefix: "/replacement-prefix", HasReplacePrefix: true, StatusCode: 301},
			"/full-path-and-host":   {Hostname: "example.org", FullPath: "/replacement-full", StatusCode: 302},
			"/full-path-and-status": {FullPath: "/replacement-full", StatusCode: 301},
		}
		for p, w := range want {
			if !equalRedirect(byPath[p], w) {
				t.Errorf("%s: redirect %v, want %v", p, byPath[p], w)
			}
		}
		// Longer prefixes first, so "/full-path-and-host" is not taken by "/full".
		if first := pr.GetRules()[0].GetMatches()[0].GetPath().GetValue(); first != "/full-path-and-status" {
			t.Errorf("first rule %s", first)
		}
	})

	t.Run("MeshHTTPRouteRequestHeaderModifier", func(t *testing.T) {
		for _, manifest := range []string{"httproute-request-header-modifier.yaml", "httproute-request-header-modifier-backend.yaml"} {
			ix := BuildRoutes(conformanceSnapshot(t, manifest), mesh)
			pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
			for _, r := range pr.GetRules() {
				if r.GetMatches()[0].GetPath().GetValue() != "/multiple" {
					continue
				}
				hm := r.GetRequestHeaders()
				wb := r.GetBackends()[0]
				if strings.Contains(manifest, "backend") {
					if hm != nil {
						t.Errorf("%s: rule-level modifier %v", manifest, hm)
					}
					hm = wb.GetRequestHeaders()
				} else if wb.GetRequestHeaders() != nil {
					t.Errorf("%s: backend-level modifier %v", manifest, wb.GetRequestHeaders())
				}
				if len(hm.GetSet()) != 2 || len(hm.GetAdd()) != 3 || len(hm.GetRemove()) != 2 ||
					hm.GetSet()[0].GetName() != "X-Header-Set-1" || hm.GetAdd()[2].GetValue() != "header-add-3" || hm.GetRemove()[1] != "X-Header-Remove-2" {
					t.Errorf("%s: modifier %v", manifest, hm)
				}
			}
		}
	})

	t.Run("MeshHTTPRouteRewritePath", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "httproute-rewrite-path.yaml"), mesh)
		pr := portRoutes(t, ix.ServiceRoutes(echo), 80)
		got := map[string]*meshv1.Rewrite{}
		for _, r := range pr.GetRules() {
			got[r.GetMatches()[0].GetPath().GetValue()] = r.GetRewrite()
			if !equalDest(r.GetBackends()[0].GetDestination(), dest("echo-v1", 80)) {
				t.Errorf("backend %v", r.GetBackends()[0])
			}
		}
		want := map[string]*meshv1.Rewrite{
			"/prefix/one":                             {ReplacePrefix: "/one", HasReplacePrefix: true},
			"/strip-prefix":                           {ReplacePrefix: "/", HasReplacePrefix: true},
			"/full/one":                               {FullPath: "/one"},
			"/full/rewrite-path-and-modify-headers":   {FullPath: "/test"},
			"/prefix/rewrite-path-and-modify-headers": {ReplacePrefix: "/prefix", HasReplacePrefix: true},
		}
		for p, w := range want {
			g := got[p]
			if g.GetFullPath() != w.GetFullPath() || g.GetReplacePrefix() != w.GetReplacePrefix() || g.GetHasReplacePrefix() != w.GetHasReplacePrefix() || g.GetHostname() != "" {
				t.Errorf("%s: rewrite %v, want %v", p, g, w)
			}
		}
	})

	t.Run("MeshPorts", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "mesh-ports.yaml"), mesh)
		v1 := ix.ServiceRoutes(model.Key{Namespace: meshNS, Name: "echo-v1"})
		if !portRoutes(t, v1, 80).GetUserRoutes() {
			t.Error("echo-v1:80 has no user routes")
		}
		assertDefault(t, portRoutes(t, v1, 8080), svcKey(meshNS, "echo-v1"))
		v2 := ix.ServiceRoutes(model.Key{Namespace: meshNS, Name: "echo-v2"})
		for _, p := range []uint32{80, 8080} {
			pr := portRoutes(t, v2, p)
			if !pr.GetUserRoutes() || pr.GetRules()[0].GetResponseHeaders().GetSet()[0].GetValue() != "v2" {
				t.Errorf("echo-v2:%d: %v", p, pr)
			}
		}
	})

	t.Run("MeshConsumerRoute", func(t *testing.T) {
		ix := BuildRoutes(conformanceSnapshot(t, "mesh-consumer-route.yaml"), mesh)
		checkProblems(t, ix.Problems(), nil)
		v1 := model.Key{Namespace: meshNS, Name: "echo-v1"}
		// Producer view (clients of other namespaces): untouched.
		for _, pr := range ix.ServiceRoutes(v1).GetPorts() {
			assertDefault(t, pr, svcKey(meshNS, "echo-v1"))
		}
		cons := ix.ConsumerRoutes(v1)
		if len(cons) != 1 || cons[consumerNS] == nil {
			t.Fatalf("consumer routes %v", cons)
		}
		c := cons[consumerNS]
		var ports []uint32
		for _, pr := range c.GetPorts() {
			ports = append(ports, pr.GetPort())
			rule, ok := routematch.SelectRule(pr, "GET", "/", http.Header{}, nil)
			if !ok || !pr.GetUserRoutes() {
				t.Fatalf("port %d: no rule", pr.GetPort())
			}
			if rule.GetResponseHeaders().GetSet()[0].GetName() != "X-Header-Set" || !equalDest(rule.GetBackends()[0].GetDestination(), dest("echo-v1", 80)) {
				t.Errorf("port %d: rule %v", pr.GetPort(), rule)
			}
		}
		if len(ports) != 3 || ports[0] != 80 || ports[1] != 8080 || ports[2] != 7070 {
			t.Errorf("consumer ports %v, want [80 8080 7070]", ports)
		}
		if ix.ConsumerRoutes(echo) != nil {
			t.Error("echo has consumer routes")
		}
	})
}

func assertOrigins(t *testing.T, pr *meshv1.PortRoutes, want []string) {
	t.Helper()
	var got []string
	for _, r := range pr.GetRules() {
		got = append(got, r.GetOrigin())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rule order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func assertDefault(t *testing.T, pr *meshv1.PortRoutes, service string) {
	t.Helper()
	if pr.GetUserRoutes() || len(pr.GetRules()) != 1 {
		t.Errorf("port %d: want the default route, got %v", pr.GetPort(), pr)
		return
	}
	r := pr.GetRules()[0]
	if len(r.GetMatches()) != 0 || len(r.GetBackends()) != 1 ||
		!equalDest(r.GetBackends()[0].GetDestination(), &meshv1.Destination{Service: service, Port: pr.GetPort()}) {
		t.Errorf("port %d: default rule %v", pr.GetPort(), r)
	}
}

func assertWeights(t *testing.T, r *meshv1.RouteRule, want map[string]uint32, port uint32) {
	t.Helper()
	got := map[string]uint32{}
	for _, b := range r.GetBackends() {
		if b.GetInvalidReason() != "" {
			t.Errorf("backend %v invalid: %s", b.GetDestination(), b.GetInvalidReason())
		}
		if b.GetDestination().GetPort() != port {
			t.Errorf("backend %v: port %d, want %d", b.GetDestination(), b.GetDestination().GetPort(), port)
		}
		got[b.GetDestination().GetService()] = b.GetWeight()
	}
	if len(got) != len(want) {
		t.Errorf("backends %v, want %v", got, want)
	}
	for name, w := range want {
		if got[svcKey(meshNS, name)] != w {
			t.Errorf("weight of %s = %d, want %d", name, got[svcKey(meshNS, name)], w)
		}
	}
}

func equalDest(a, b *meshv1.Destination) bool {
	if a.GetService() != b.GetService() || a.GetPort() != b.GetPort() || a.GetSubset() != b.GetSubset() || len(a.GetSubsetLabels()) != len(b.GetSubsetLabels()) {
		return false
	}
	for k, v := range a.GetSubsetLabels() {
		if b.GetSubsetLabels()[k] != v {
			return false
		}
	}
	return true
}

func equalRedirect(a, b *meshv1.Redirect) bool {
	return a.GetScheme() == b.GetScheme() && a.GetHostname() == b.GetHostname() && a.GetPort() == b.GetPort() &&
		a.GetFullPath() == b.GetFullPath() && a.GetReplacePrefix() == b.GetReplacePrefix() &&
		a.GetHasReplacePrefix() == b.GetHasReplacePrefix() && a.GetStatusCode() == b.GetStatusCode()
}
