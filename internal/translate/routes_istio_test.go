package translate

import (
	"net/http"
	"net/url"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

func TestSeed001VirtualService(t *testing.T) {
	mesh := model.DefaultMeshConfig()
	api := model.Key{Namespace: "ai-inference", Name: "inference-api"}
	v1 := model.Key{Namespace: "ai-inference", Name: "inference-api-v1"}

	t.Run("as written", func(t *testing.T) {
		// The article's manifests name a host no Service backs: reported, and
		// the version Services keep their default routes.
		ix := BuildRoutes(loadSnapshot(t, "testdata/routes/seed-001.yaml"), mesh)
		checkProblems(t, ix.Problems(), []string{
			`VirtualService ai-inference/inference-api-vs: spec.hosts[0]: host "inference-api.ai-inference.svc.cluster.local" (inference-api.ai-inference.svc.cluster.local) matches no Service`,
			`DestinationRule ai-inference/inference-api: spec.host: host "inference-api.ai-inference.svc.cluster.local"`,
		})
		if ix.ServiceRoutes(api) != nil {
			t.Error("routes for a Service that does not exist")
		}
		assertDefault(t, portRoutes(t, ix.ServiceRoutes(v1), 80), "ai-inference/inference-api-v1.ai-inference.svc.cluster.local")
	})

	t.Run("with the inference-api Service", func(t *testing.T) {
		ix := BuildRoutes(loadSnapshot(t, "testdata/routes/seed-001.yaml", "testdata/routes/seed-001-service.yaml"), mesh)
		checkProblems(t, ix.Problems(), nil)
		sr := ix.ServiceRoutes(api)
		if sr.GetService() != "ai-inference/inference-api.ai-inference.svc.cluster.local" || len(sr.GetPorts()) != 1 {
			t.Fatalf("routes %v", sr)
		}
		pr := sr.GetPorts()[0]
		if pr.GetPort() != 80 || pr.GetProtocol() != meshv1.AppProtocol_HTTP || !pr.GetUserRoutes() || len(pr.GetRules()) != 1 {
			t.Fatalf("port routes %v", pr)
		}
		r := pr.GetRules()[0]
		want := &meshv1.RouteRule{
			Origin: "VirtualService ai-inference/inference-api-vs rule 1",
			Backends: []*meshv1.WeightedBackend{
				{Destination: &meshv1.Destination{Service: "ai-inference/inference-api-v1.ai-inference.svc.cluster.local", Port: 80}, Weight: 80},
				{Destination: &meshv1.Destination{Service: "ai-inference/inference-api-v2.ai-inference.svc.cluster.local", Port: 80}, Weight: 20},
			},
		}
		if !proto.Equal(r, want) {
			t.Errorf("rule:\n%v\nwant:\n%v", r, want)
		}
		// Every request matches the single rule.
		if got, ok := routematch.SelectRule(pr, "POST", "/predict", http.Header{}, nil); !ok || got != r {
			t.Errorf("POST /predict: %v %v", got, ok)
		}
		dp := ix.DestinationPolicy(api)
		wantDP := &meshv1.DestinationPolicy{
			Service: "ai-inference/inference-api.ai-inference.svc.cluster.local",
			Origin:  "DestinationRule ai-inference/inference-api",
			Subsets: []*meshv1.DestinationPolicy_Subset{
				{Name: "v1", Labels: map[string]string{"app": "inference-api", "version": "v1"}},
				{Name: "v2", Labels: map[string]string{"app": "inference-api", "version": "v2"}},
			},
		}
		if !proto.Equal(dp, wantDP) {
			t.Errorf("destination policy:\n%v\nwant:\n%v", dp, wantDP)
		}
		if ix.DestinationPolicy(v1) != nil {
			t.Error("inference-api-v1 has a destination policy")
		}
		// The standalone form gives the same routes.
		sr2, ps := ServiceRoutes(loadSnapshot(t, "testdata/routes/seed-001.yaml", "testdata/routes/seed-001-service.yaml"), mesh, api)
		if !proto.Equal(sr, sr2) || len(ps) != 0 {
			t.Errorf("ServiceRoutes: %v %v", sr2, ps)
		}
	})
}

// vsBase is a namespace with a two-port Service "reviews", its versions, a
// single-port Service "ratings" and a DestinationRule with subsets.
const vsBase = `
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080}
  - {name: http-admin, port: 9090}
  - {name: tcp-db, port: 5432}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports:
  - {name: http, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: mirror, namespace: other}
spec:
  ports:
  - {name: http, port: 80}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`

func TestVirtualServiceTranslation(t *testing.T) {
	mesh := model.DefaultMeshConfig()
	reviews := model.Key{Namespace: "shop", Name: "reviews"}
	const reviewsKey = "shop/reviews.shop.svc.cluster.local"
	const ratingsKey = "shop/ratings.shop.svc.cluster.local"

	vs := `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop]
  http:
  - name: jason
    match:
    - headers:
        end-user: {exact: jason}
      uri: {prefix: /api/}
    - queryParams:
        debug: {regex: "1|true"}
      method: {exact: POST}
    rewrite:
      uri: /v2/
      authority: reviews-v2
    route:
    - destination: {host: reviews, subset: v2}
      headers:
        request:
          set: {x-version: v2}
    timeout: 3s
    retries:
      attempts: 3
      perTryTimeout: 500ms
      retryOn: 5xx,gateway-error,connect-failure,503
  - match:
    - uri: {exact: /old}
    redirect:
      uri: /new
      authority: example.org
  - match:
    - uri: {regex: "/teapot/[0-9]+"}
      ignoreUriCase: true
    directResponse:
      status: 418
      body: {string: "short and stout"}
  - match:
    - port: 9090
    route:
    - destination: {host: ratings}
  - match:
    - withoutHeaders:
        x-canary: {}
      uri: {prefix: /fault}
    fault:
      delay:
        fixedDelay: 2s
        percentage: {value: 10}
      abort:
        httpStatus: 503
        percentage: {value: 5.5}
    mirror: {host: mirror.other.svc.cluster.local}
    mirrorPercentage: {value: 25}
    mirrors:
    - destination: {host: ratings}
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
    - destination: {host: reviews, subset: v3}
      weight: 0
    headers:
      response:
        add: {x-served-by: mesh}
        remove: [server]
`
	ix := BuildRoutes(snapshotFromYAML(t, vsBase, vs), mesh)
	checkProblems(t, ix.Problems(), []string{
		`spec.http[5].route[2].destination: subset "v3" is not defined in DestinationRule shop/reviews for host reviews.shop.svc.cluster.local (weight 0`,
	})
	sr := ix.ServiceRoutes(reviews)
	pr := portRoutes(t, sr, 9080)
	if !pr.GetUserRoutes() {
		t.Fatal("no user routes on 9080")
	}
	origins := []string{
		"VirtualService shop/reviews rule 1 match 1",
		"VirtualService shop/reviews rule 1 match 2",
		"VirtualService shop/reviews rule 2",
		"VirtualService shop/reviews rule 3",
		// rule 4 only matches port 9090
		"VirtualService shop/reviews rule 5",
		"VirtualService shop/reviews rule 6",
	}
	assertOrigins(t, pr, origins)
	rules := pr.GetRules()

	v2 := &meshv1.Destination{Service: reviewsKey, Port: 9080, Subset: "v2", SubsetLabels: map[string]string{"version": "v2"}}
	v1 := &meshv1.Destination{Service: reviewsKey, Port: 9080, Subset: "v1", SubsetLabels: map[string]string{"version": "v1"}}
	want0 := &meshv1.RouteRule{
		Origin: origins[0],
		Name:   "jason",
		Matches: []*meshv1.RouteMatch{{
			Path:    &meshv1.PathMatch{Type: meshv1.PathMatch_STRING_PREFIX, Value: "/api/"},
			Headers: []*meshv1.HeaderMatch{{Name: "end-user", Type: meshv1.HeaderMatch_EXACT, Value: "jason"}},
		}},
		Backends: []*meshv1.WeightedBackend{{
			Destination:    v2,
			Weight:         1,
			RequestHeaders: &meshv1.HeaderModifier{Set: []*meshv1.HeaderModifier_Header{{Name: "x-version", Value: "v2"}}},
		}},
		Rewrite:   &meshv1.Rewrite{Hostname: "reviews-v2", ReplacePrefix: "/v2/", HasReplacePrefix: true},
		TimeoutMs: 3000,
		Retry:     &meshv1.Retry{Attempts: 3, PerTryTimeoutMs: 500, Codes: []uint32{503}, RetryOn: []string{"5xx", "gateway-error", "connect-failure"}},
	}
	if !proto.Equal(rules[0], want0) {
		t.Errorf("rule 1 match 1:\n%v\nwant:\n%v", rules[0], want0)
	}
	if m := rules[1].GetMatches()[0]; m.GetMethod() != "POST" ||
		!proto.Equal(m.GetQueryParams()[0], &meshv1.HeaderMatch{Name: "debug", Type: meshv1.HeaderMatch_REGEX, Value: "1|true"}) {
		t.Errorf("rule 1 match 2: %v", m)
	}
	if rules[1].GetRewrite().GetFullPath() != "" || !rules[1].GetRewrite().GetHasReplacePrefix() ||
		rules[1].GetMatches()[0].GetPath().GetValue() != "/" {
		// no uri match: Envoy's prefix rewrite replaces the implied "/"
		t.Errorf("rule 1 match 2 rewrite: %v %v", rules[1].GetRewrite(), rules[1].GetMatches())
	}
	if want := (&meshv1.Redirect{FullPath: "/new", Hostname: "example.org", StatusCode: 301}); !proto.Equal(rules[2].GetRedirect(), want) {
		t.Errorf("redirect %v", rules[2].GetRedirect())
	}
	if r := rules[3]; r.GetDirectStatus() != 418 || r.GetDirectBody() != "short and stout" || r.GetMatches()[0].GetPath().GetType() != meshv1.PathMatch_REGEX {
		t.Errorf("direct response rule %v", r)
	}
	want4 := &meshv1.RouteRule{
		Origin: origins[4],
		Matches: []*meshv1.RouteMatch{{
			Path:    &meshv1.PathMatch{Type: meshv1.PathMatch_STRING_PREFIX, Value: "/fault"},
			Headers: []*meshv1.HeaderMatch{{Name: "x-canary", Type: meshv1.HeaderMatch_PRESENT, Invert: true}},
		}},
		Backends: []*meshv1.WeightedBackend{{Destination: v1, Weight: 1}},
		Fault:    &meshv1.Fault{DelayMs: 2000, DelayPercent: 10, AbortStatus: 503, AbortPercent: 5.5},
		Mirrors: []*meshv1.Mirror{
			{Destination: &meshv1.Destination{Service: "other/mirror.other.svc.cluster.local", Port: 80}, Percent: 25},
			{Destination: &meshv1.Destination{Service: ratingsKey, Port: 8080}, Percent: 100},
		},
	}
	if !proto.Equal(rules[4], want4) {
		t.Errorf("fault rule:\n%v\nwant:\n%v", rules[4], want4)
	}
	want5 := &meshv1.RouteRule{
		Origin:          origins[5],
		Backends:        []*meshv1.WeightedBackend{{Destination: v1, Weight: 90}, {Destination: v2, Weight: 10}},
		ResponseHeaders: &meshv1.HeaderModifier{Add: []*meshv1.HeaderModifier_Header{{Name: "x-served-by", Value: "mesh"}}, Remove: []string{"server"}},
	}
	if !proto.Equal(rules[5], want5) {
		t.Errorf("split rule:\n%v\nwant:\n%v", rules[5], want5)
	}

	// Requests.
	for _, c := range []struct {
		method, path string
		h            http.Header
		q            url.Values
		want         int // index in rules, -1 for 404
	}{
		{"GET", "/api/x", http.Header{"End-User": {"jason"}}, nil, 0},
		{"GET", "/api/x", http.Header{"End-User": {"json"}}, nil, 5},
		{"POST", "/x", nil, url.Values{"debug": {"true"}}, 1},
		{"GET", "/x", nil, url.Values{"debug": {"true"}}, 5},
		{"GET", "/old", nil, nil, 2},
		{"GET", "/TEAPOT/42", nil, nil, 3},
		{"GET", "/teapot/4x", nil, nil, 5},
		{"GET", "/fault/a", nil, nil, 4},
		{"GET", "/fault/a", http.Header{"X-Canary": {""}}, nil, 5},
	} {
		got, ok := routematch.SelectRule(pr, c.method, c.path, c.h, c.q)
		switch {
		case c.want < 0 && ok:
			t.Errorf("%s %s: want 404, got %s", c.method, c.path, got.GetOrigin())
		case c.want >= 0 && got != rules[c.want]:
			t.Errorf("%s %s: got %s, want %s", c.method, c.path, got.GetOrigin(), rules[c.want].GetOrigin())
		}
	}
	if got := routematch.RewritePath(rules[0], "/api/books"); got != "/v2/books" {
		t.Errorf("rewrite /api/books → %s", got)
	}
	if got := routematch.RewritePath(rules[1], "/books"); got != "/v2/books" {
		t.Errorf("rewrite /books → %s", got)
	}

	// Port 9090: the port-specific rule applies; the rewrite destination
	// without port takes the request's port on a multi-port Service.
	pr9090 := portRoutes(t, sr, 9090)
	r, ok := routematch.SelectRule(pr9090, "GET", "/anything", http.Header{}, nil)
	if !ok || r.GetOrigin() != "VirtualService shop/reviews rule 4" || !equalDest(r.GetBackends()[0].GetDestination(), &meshv1.Destination{Service: ratingsKey, Port: 8080}) {
		t.Errorf("9090: %v", r)
	}
	if r := portRoutes(t, sr, 9090).GetRules()[0]; !equalDest(r.GetBackends()[0].GetDestination(), &meshv1.Destination{Service: reviewsKey, Port: 9090, Subset: "v2", SubsetLabels: map[string]string{"version": "v2"}}) {
		t.Errorf("9090 rule 1: destination %v (want the request's port 9090)", r.GetBackends()[0].GetDestination())
	}
	// TCP port: no HTTP routes.
	assertDefault(t, portRoutes(t, sr, 5432), reviewsKey)
}

func TestVirtualServiceSelection(t *testing.T) {
	mesh := model.DefaultMeshConfig()
	reviews := model.Key{Namespace: "shop", Name: "reviews"}
	ratings := model.Key{Namespace: "shop", Name: "ratings"}
	vs := func(name, ns, created string, hosts string, extra string) string {
		ts := ""
		if created != "" {
			ts = `, creationTimestamp: "` + created + `"`
		}
		return `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ` + name + `, namespace: ` + ns + ts + `}
spec:
  hosts: ` + hosts + `
` + extra + `
  http:
  - route:
    - destination: {host: ratings.shop.svc.cluster.local}
`
	}
	origin := func(ix *RouteIndex, k model.Key, port uint32) string {
		pr := portRoutes(t, ix.ServiceRoutes(k), port)
		if !pr.GetUserRoutes() {
			return "default"
		}
		return pr.GetRules()[0].GetOrigin()
	}

	t.Run("oldest wins", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase,
			vs("b", "shop", "2024-01-01T00:00:00Z", "[reviews]", ""),
			vs("a", "shop", "2024-02-01T00:00:00Z", "[reviews.shop.svc.cluster.local]", "")), mesh)
		if got := origin(ix, reviews, 9080); got != "VirtualService shop/b rule 1" {
			t.Errorf("got %s", got)
		}
		checkProblems(t, ix.Problems(), []string{"VirtualService shop/a: spec.hosts: ignored for Service shop/reviews: VirtualService shop/b governs that host"})
	})

	t.Run("exact host beats wildcard", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase,
			vs("all", "shop", "2024-01-01T00:00:00Z", `["*.shop.svc.cluster.local"]`, ""),
			vs("reviews", "shop", "2024-02-01T00:00:00Z", "[reviews]", "")), mesh)
		if got := origin(ix, reviews, 9080); got != "VirtualService shop/reviews rule 1" {
			t.Errorf("reviews: %s", got)
		}
		if got := origin(ix, ratings, 8080); got != "VirtualService shop/all rule 1" {
			t.Errorf("ratings: %s", got)
		}
	})

	t.Run("gateway-bound and foreign exportTo", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase,
			vs("ingress", "shop", "", "[reviews]", "  gateways: [istio-system/ingress]"),
			vs("client", "frontend", "", "[reviews.shop]", `  exportTo: ["."]`),
			vs("both", "shop", "", "[ratings]", "  gateways: [istio-system/ingress, mesh]")), mesh)
		if got := origin(ix, reviews, 9080); got != "default" {
			t.Errorf("reviews: %s", got)
		}
		if got := origin(ix, ratings, 8080); got != "VirtualService shop/both rule 1" {
			t.Errorf("ratings: %s", got)
		}
		checkProblems(t, ix.Problems(), []string{"VirtualService frontend/client: spec.exportTo: not exported to namespace shop"})
	})

	t.Run("missing host and destination", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: shop}
spec:
  hosts: [nowhere, reviews]
  http:
  - route:
    - destination: {host: gone}
      weight: 50
    - destination: {host: reviews, subset: v1}
      weight: 50
`), mesh)
		checkProblems(t, ix.Problems(), []string{
			`spec.hosts[0]: host "nowhere" (nowhere.shop.svc.cluster.local) matches no Service`,
			`spec.http[0].route[0].destination: host "gone" (gone.shop.svc.cluster.local) matches no Service: requests sent to this destination answer 500`,
		})
		r := portRoutes(t, ix.ServiceRoutes(reviews), 9080).GetRules()[0]
		if len(r.GetBackends()) != 2 || r.GetBackends()[0].GetInvalidReason() == "" || r.GetBackends()[0].GetDestination().GetService() != "shop/gone.shop.svc.cluster.local" ||
			r.GetBackends()[1].GetInvalidReason() != "" {
			t.Errorf("backends %v", r.GetBackends())
		}
	})

	t.Run("Gateway API route takes precedence per port", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase, vs("reviews", "shop", "", "[reviews]", ""), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews, port: 9080}
  rules:
  - backendRefs:
    - {name: reviews, port: 9080}
`), mesh)
		if got := origin(ix, reviews, 9080); got != "HTTPRoute shop/reviews rule 1" {
			t.Errorf("9080: %s", got)
		}
		if got := origin(ix, reviews, 9090); got != "VirtualService shop/reviews rule 1" {
			t.Errorf("9090: %s", got)
		}
		checkProblems(t, ix.Problems(), []string{"VirtualService shop/reviews: spec.hosts: not applied to port 9080 of Service shop/reviews: Gateway API routes"})
	})
}

func TestVirtualServiceRedirectAndFaultDefaults(t *testing.T) {
	ix := BuildRoutes(snapshotFromYAML(t, vsBase, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /v1}
    redirect:
      prefixRewrite: /v2
      redirectCode: 308
      scheme: https
  - fault:
      delay: {fixedDelay: 1s}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
    route:
    - destination: {host: reviews}
`), model.DefaultMeshConfig())
	checkProblems(t, ix.Problems(), []string{"spec.http[1].fault.delay.percentage: no percentage: as in Istio, no request is delayed"})
	rules := portRoutes(t, ix.ServiceRoutes(model.Key{Namespace: "shop", Name: "reviews"}), 9080).GetRules()
	if loc, st := routematch.RedirectLocation(rules[0], "http", "reviews", 9080, "/v1/books", "a=b"); loc != "https://reviews/v2/books?a=b" || st != 308 {
		t.Errorf("redirect %s %d", loc, st)
	}
	if f := rules[1].GetFault(); !proto.Equal(f, &meshv1.Fault{DelayMs: 1000, AbortGrpcStatus: 14, AbortPercent: 100}) {
		t.Errorf("fault %v", f)
	}
}

func TestGatewayRouteProblems(t *testing.T) {
	mesh := model.DefaultMeshConfig()
	ix := BuildRoutes(unvalidatedSnapshot(t, vsBase, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: missing}
  - {group: "", kind: Service, name: reviews, port: 1234}
  - {kind: Service, name: ratings}
  - {group: "", kind: Service, name: reviews, sectionName: http-admin}
  - {group: "", kind: Service, name: reviews, port: 5432}
  rules:
  - matches:
    - path: {type: PathPrefix, value: /a}
    backendRefs:
    - {name: gone, port: 80, weight: 1}
    - {name: ratings, port: 8080, weight: 3}
  - matches:
    - path: {type: PathPrefix, value: /b}
    backendRefs:
    - {name: ratings}
  - matches:
    - path: {type: PathPrefix, value: /c}
    filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Auth, name: x}
    backendRefs:
    - {name: ratings, port: 8080}
  - matches:
    - path: {type: RegularExpression, value: "/d(["}
    - path: {type: Exact, value: /d}
      method: DELETE
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {codes: [502, 503], backoff: 100ms}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: mirror, namespace: other, port: 80}
        fraction: {numerator: 1, denominator: 4}
    backendRefs:
    - {group: example.com, kind: Bucket, name: b}
`, &gatewayv1.HTTPRoute{}), mesh)
	checkProblems(t, ix.Problems(), []string{
		"spec.parentRefs[0]: parent Service shop/missing not found",
		"spec.parentRefs[1].port: Service shop/reviews has no TCP port 1234",
		`spec.parentRefs[2].group: a Service parent needs group "" (core)`,
		"spec.rules[0].backendRefs[0]: service shop/gone not found: requests sent to this backend answer 500",
		"spec.rules[1].backendRefs[0]: backendRef to service shop/ratings has no port",
		`spec.rules[2].filters[0]: unsupported filter type "ExtensionRef": requests matching this rule answer 500`,
		`spec.rules[3].matches[0].path.value: invalid regular expression "/d(["`,
		"spec.rules[3].backendRefs[0]: backend kind Bucket.example.com is not supported",
		"spec.parentRefs[4]: port 5432 of Service shop/reviews carries tcp, not HTTP: the route does not apply to it",
	})
	pr := portRoutes(t, ix.ServiceRoutes(model.Key{Namespace: "shop", Name: "reviews"}), 9090)
	byPath := map[string]*meshv1.RouteRule{}
	for _, r := range pr.GetRules() {
		byPath[r.GetMatches()[0].GetPath().GetValue()] = r
	}
	a := byPath["/a"]
	if len(a.GetBackends()) != 2 || !strings.Contains(a.GetBackends()[0].GetInvalidReason(), "not found") || a.GetBackends()[1].GetWeight() != 3 {
		t.Errorf("/a backends %v", a.GetBackends())
	}
	if b := byPath["/b"]; len(b.GetBackends()) != 1 || b.GetBackends()[0].GetInvalidReason() == "" {
		t.Errorf("/b %v", b)
	}
	if c := byPath["/c"]; c.GetDirectStatus() != 500 || len(c.GetBackends()) != 0 {
		t.Errorf("/c %v", c)
	}
	d := byPath["/d"]
	if d.GetTimeoutMs() != 10000 || d.GetBackendTimeoutMs() != 2000 || !proto.Equal(d.GetRetry(), &meshv1.Retry{Attempts: 2, Codes: []uint32{502, 503}, BackoffMs: 100}) ||
		d.GetMatches()[0].GetMethod() != "DELETE" || len(d.GetMirrors()) != 1 || d.GetMirrors()[0].GetPercent() != 25 ||
		d.GetMirrors()[0].GetDestination().GetService() != "other/mirror.other.svc.cluster.local" {
		t.Errorf("/d %v", d)
	}
	if len(d.GetBackends()) != 1 || d.GetBackends()[0].GetInvalidReason() == "" {
		t.Errorf("/d backends %v", d.GetBackends())
	}
	// Only the invalid regex match is dropped; the rule keeps its Exact match.
	if n := len(pr.GetRules()); n != 4 {
		t.Errorf("%d rules on 9090", n)
	}
	// ProblemsFor names the problems of the routes attached to a Service.
	ps := ix.ProblemsFor(model.Key{Namespace: "shop", Name: "reviews"})
	if len(ps) != len(ix.Problems()) {
		t.Errorf("ProblemsFor(reviews):\n%s", problemsText(ps))
	}
	if ps := ix.ProblemsFor(model.Key{Namespace: "shop", Name: "ratings"}); len(ps) != 0 {
		t.Errorf("ProblemsFor(ratings) (no route attached):\n%s", problemsText(ps))
	}
}

func TestRoutePrecedenceAcrossRoutes(t *testing.T) {
	mesh := model.DefaultMeshConfig()
	route := func(name, created, body string) string {
		return `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ` + name + `, namespace: shop, creationTimestamp: "` + created + `"}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews}
  rules:
` + body
	}
	ix := BuildRoutes(snapshotFromYAML(t, vsBase,
		route("young", "2024-03-01T00:00:00Z", `
  - matches:
    - path: {type: PathPrefix, value: /api}
    backendRefs: [{name: ratings, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /api}
      method: GET
    backendRefs: [{name: ratings, port: 8080}]
`),
		route("old", "2024-01-01T00:00:00Z", `
  - matches:
    - path: {type: PathPrefix, value: /api}
    backendRefs: [{name: reviews, port: 9080}]
  - matches:
    - path: {type: Exact, value: /api}
    backendRefs: [{name: reviews, port: 9080}]
  - matches:
    - path: {type: RegularExpression, value: "/api/.*/x"}
    backendRefs: [{name: reviews, port: 9080}]
`),
		`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews, port: 9090}
  rules:
  - matches:
    - method: {service: pkg.Svc}
    backendRefs: [{name: ratings, port: 8080}]
  - matches:
    - method: {service: pkg.Svc, method: Get}
    backendRefs: [{name: ratings, port: 8080}]
  - matches:
    - method: {method: Get}
    backendRefs: [{name: ratings, port: 8080}]
  - matches:
    - headers: [{name: x, value: "1"}]
    backendRefs: [{name: ratings, port: 8080}]
`), mesh)
	checkProblems(t, ix.Problems(), nil)
	sr := ix.ServiceRoutes(model.Key{Namespace: "shop", Name: "reviews"})
	assertOrigins(t, portRoutes(t, sr, 9080), []string{
		"HTTPRoute shop/old rule 2",   // Exact
		"HTTPRoute shop/young rule 2", // prefix + method
		"HTTPRoute shop/old rule 1",   // prefix, older route
		"HTTPRoute shop/young rule 1",
		"HTTPRoute shop/old rule 3", // regex last
	})
	pr := portRoutes(t, sr, 9090)
	// 9090 has the HTTPRoutes (no port) and the GRPCRoute (port 9090).
	var grpc []string
	for _, r := range pr.GetRules() {
		if strings.HasPrefix(r.GetOrigin(), "GRPCRoute") {
			grpc = append(grpc, r.GetOrigin())
		}
	}
	if strings.Join(grpc, ",") != "GRPCRoute shop/grpc rule 2,GRPCRoute shop/grpc rule 1,GRPCRoute shop/grpc rule 3,GRPCRoute shop/grpc rule 4" {
		t.Errorf("gRPC order %v", grpc)
	}
	for _, c := range []struct{ path, want string }{
		{"/pkg.Svc/Get", "GRPCRoute shop/grpc rule 2"},
		{"/pkg.Svc/List", "GRPCRoute shop/grpc rule 1"},
		{"/other.Svc/Get", "GRPCRoute shop/grpc rule 3"},
	} {
		if r, _ := routematch.SelectRule(pr, "POST", c.path, http.Header{}, nil); r.GetOrigin() != c.want {
			t.Errorf("%s: %s, want %s", c.path, r.GetOrigin(), c.want)
		}
	}
}
