// Package conformance holds the Gateway API mesh (GAMMA) conformance cases
// of gateway-api-mesh/CASES.md as data — the suite's manifests, each request
// and what must come back — so that every harness running them agrees on
// what they mean: the network-namespace mesh of internal/waypoint's tests
// and the local cluster of test/e2e.
//
// A harness sends each Case from a client pod in the mesh and hands the
// answer to Case.Check; the weighted cases send WeightRequests requests and
// count the answering backends with WeightMiss.
package conformance

import (
	"embed"
	"fmt"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/ambit-mesh/ambit/internal/echo"
)

//go:embed gateway-api-mesh/mesh/*.yaml
var files embed.FS

// Namespaces of the suite's manifests.
const (
	MeshNS     = "gateway-conformance-mesh"
	ConsumerNS = "gateway-conformance-mesh-consumer"
)

// Manifest returns the suite's manifest file name (e.g. "manifests.yaml",
// the base: namespaces, the echo Deployments and Services).
func Manifest(name string) (string, error) {
	b, err := files.ReadFile(path.Join("gateway-api-mesh/mesh", name))
	if err != nil {
		return "", fmt.Errorf("conformance manifest %q: %w", name, err)
	}
	return string(b), nil
}

// Case is one request of CASES.md and what must come back.
type Case struct {
	// Host is the authority dialled: a Service name ("echo", the default),
	// "name.namespace", with ":port" for a port other than 80.
	Host string
	// PodIP: dial the first pod of the Deployment Host names, at its
	// address, instead of the Service (the route must not apply).
	PodIP bool
	Path  string
	// Header is sent; "Host" sets the Host header alone.
	Header map[string]string
	// From is the client: "client" (namespace MeshNS, the default) or
	// "consumer" (namespace ConsumerNS).
	From string
	// Status expected; 0 means 200.
	Status int
	// Backend is the prefix of the answering pod's name ("" for any).
	Backend string
	// Location is the redirect's Location header.
	Location string
	// ReqHdr are request headers as the backend saw them (values of one
	// name joined with ","); Absent must not have reached it.
	ReqHdr map[string]string
	Absent []string
	// RespHdr are response headers; NoResp must not be in the response.
	RespHdr map[string]string
	NoResp  []string
	// EchoPath is the path the backend saw.
	EchoPath string
}

// Authority is the Host header a client sends for c: Host without ":80".
func (c Case) Authority() string { return strings.TrimSuffix(c.Host, ":80") }

// Check compares an answer with c: nil when it is what the suite wants,
// else what differs.
func (c Case) Check(status int, h http.Header, e echo.Response) error {
	want := c.Status
	if want == 0 {
		want = http.StatusOK
	}
	if status != want {
		return fmt.Errorf("status %d, want %d", status, want)
	}
	var bad []string
	if c.Backend != "" && !strings.HasPrefix(e.Pod, c.Backend) {
		bad = append(bad, fmt.Sprintf("answered by %q, want %s", e.Pod, c.Backend))
	}
	if c.Location != "" && h.Get("Location") != c.Location {
		bad = append(bad, fmt.Sprintf("Location %q, want %q", h.Get("Location"), c.Location))
	}
	for _, k := range slices.Sorted(maps.Keys(c.ReqHdr)) {
		if got := strings.Join(http.Header(e.Headers).Values(k), ","); got != c.ReqHdr[k] {
			bad = append(bad, fmt.Sprintf("request header %s at the backend = %q, want %q", k, got, c.ReqHdr[k]))
		}
	}
	for _, k := range c.Absent {
		if v := http.Header(e.Headers).Values(k); len(v) > 0 {
			bad = append(bad, fmt.Sprintf("request header %s reached the backend: %q", k, v))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.RespHdr)) {
		if got := h.Get(k); got != c.RespHdr[k] {
			bad = append(bad, fmt.Sprintf("response header %s = %q, want %q", k, got, c.RespHdr[k]))
		}
	}
	for _, k := range c.NoResp {
		if v := h.Values(k); len(v) > 0 {
			bad = append(bad, fmt.Sprintf("response header %s = %q, want none", k, v))
		}
	}
	if c.EchoPath != "" && e.Path != c.EchoPath {
		bad = append(bad, fmt.Sprintf("backend saw path %q, want %q", e.Path, c.EchoPath))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

// Suite is one conformance test: its manifest (none for MeshBasic) and
// its cases, run in order once the manifest applies.
type Suite struct {
	Name, File string
	Cases      []Case
}

func redirect(path string, status int, location string) Case {
	return Case{Path: path, Status: status, Location: location}
}

// headerCases are shared by MeshHTTPRouteRequestHeaderModifier and
// MeshHTTPRouteBackendRequestHeaderModifier (filters on the rule or on the
// backendRef).
var headerCases = []Case{
	{Path: "/set", Header: map[string]string{"Some-Other-Header": "val"}, Backend: "echo-v1", ReqHdr: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}},
	{Path: "/set", Header: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "some-other-value"}, Backend: "echo-v1", ReqHdr: map[string]string{"X-Header-Set": "set-overwrites-values"}},
	{Path: "/add", Header: map[string]string{"Some-Other-Header": "val"}, Backend: "echo-v1", ReqHdr: map[string]string{"X-Header-Add": "add-appends-values"}},
	{Path: "/add", Header: map[string]string{"X-Header-Add": "some-other-value"}, Backend: "echo-v1", ReqHdr: map[string]string{"X-Header-Add": "some-other-value,add-appends-values"}},
	{Path: "/remove", Header: map[string]string{"X-Header-Remove": "val"}, Backend: "echo-v1", Absent: []string{"X-Header-Remove"}},
	{Path: "/multiple", Header: map[string]string{"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"},
		Backend: "echo-v1", ReqHdr: map[string]string{"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1",
			"X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"}, Absent: []string{"X-Header-Remove-1", "X-Header-Remove-2"}},
	{Path: "/case-insensitivity", Header: map[string]string{"x-header-set": "original-val-set", "x-header-add": "original-val-add", "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
		Backend: "echo-v1", ReqHdr: map[string]string{"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "Another-Header": "another-header-val"}, Absent: []string{"X-Header-Remove"}},
}

// rewriteHeaders are sent by the two header cases of MeshHTTPRouteRewritePath.
var rewriteHeaders = map[string]string{"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"}

var rewriteWant = map[string]string{"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Set": "set-overwrites-values"}

// HTTPSuites are the HTTP cases of CASES.md, in its order (the weighted
// and gRPC ones are WeightSuites and GRPCHeaderCases).
var HTTPSuites = []Suite{
	{"MeshBasic", "", []Case{{Path: "/"}}},
	{"MeshTrafficSplit", "mesh-split.yaml", []Case{{Path: "/v1", Backend: "echo-v1"}, {Path: "/v2", Backend: "echo-v2"}}},
	{"MeshHTTPRouteSimpleSameNamespace", "httproute-simple-same-namespace.yaml", []Case{{Path: "/", Backend: "echo-v1"}}},
	{"MeshHTTPRouteMatching", "httproute-matching.yaml", []Case{
		{Path: "/", Backend: "echo-v1"}, {Path: "/example", Backend: "echo-v1"}, {Path: "/", Header: map[string]string{"Version": "one"}, Backend: "echo-v1"},
		{Path: "/v2", Backend: "echo-v2"}, {Path: "/v2/example", Backend: "echo-v2"}, {Path: "/", Header: map[string]string{"Version": "two"}, Backend: "echo-v2"},
		{Path: "/v2/", Backend: "echo-v2"}, {Path: "/v2example", Backend: "echo-v1"}, {Path: "/foo/v2/example", Backend: "echo-v1"}}},
	{"MeshHTTPRouteNamedRule", "httproute-named-rule.yaml", []Case{{Path: "/named", Backend: "echo-v1"}, {Path: "/unnamed", Backend: "echo-v2"}}},
	{"MeshHTTPRouteQueryParamMatching", "httproute-query-param-matching.yaml", []Case{
		{Path: "/?animal=whale", Backend: "echo-v1"}, {Path: "/?animal=dolphin", Backend: "echo-v2"},
		{Path: "/?animal=whale&otherparam=irrelevant", Backend: "echo-v1"}, {Path: "/?animal=dolphin&color=yellow", Backend: "echo-v2"},
		{Path: "/?color=blue", Status: 404}, {Path: "/?animal=dog", Status: 404}, {Path: "/?animal=whaledolphin", Status: 404}, {Path: "/", Status: 404},
		{Path: "/path1?animal=whale", Backend: "echo-v1"}, {Path: "/?animal=whale", Header: map[string]string{"Version": "one"}, Backend: "echo-v2"},
		{Path: "/path3?animal=shark", Backend: "echo-v1"}, {Path: "/path4?animal=kraken", Header: map[string]string{"Version": "three"}, Backend: "echo-v1"},
		{Path: "/?animal=shark", Status: 404}, {Path: "/path4?animal=kraken", Status: 404}, {Path: "/path5?animal=hydra", Backend: "echo-v1"}}},
	{"MeshHTTPRouteRedirectHostAndStatus", "httproute-redirect-host-and-status.yaml", []Case{
		redirect("/hostname-redirect", 302, "http://example.org/hostname-redirect"), redirect("/host-and-status", 301, "http://example.org/host-and-status")}},
	{"MeshHTTPRouteRedirectPath", "httproute-redirect-path.yaml", []Case{
		redirect("/original-prefix/lemon", 302, "http://echo/replacement-prefix/lemon"), redirect("/full/path/original", 302, "http://echo/full-path-replacement"),
		redirect("/path-and-host", 302, "http://example.org/replacement-prefix"), redirect("/path-and-status", 301, "http://echo/replacement-prefix"),
		redirect("/full-path-and-host", 302, "http://example.org/replacement-full"), redirect("/full-path-and-status", 301, "http://echo/replacement-full")}},
	{"MeshHTTPRouteRedirectPort", "httproute-redirect-port.yaml", []Case{
		redirect("/port", 302, "http://echo:8083/port"), redirect("/port-and-host", 302, "http://example.org:8083/port-and-host"),
		redirect("/port-and-status", 301, "http://echo:8083/port-and-status"), redirect("/port-and-host-and-status", 302, "http://example.org:8083/port-and-host-and-status")}},
	{"MeshHTTPRouteSchemeRedirect", "httproute-redirect-scheme.yaml", []Case{
		redirect("/scheme", 302, "https://echo/scheme"), redirect("/scheme-and-host", 302, "https://example.org/scheme-and-host"),
		redirect("/scheme-and-status", 301, "https://echo/scheme-and-status"), redirect("/scheme-and-host-and-status", 302, "https://example.org/scheme-and-host-and-status")}},
	{"MeshHTTPRoute303Redirect", "httproute-303-redirect.yaml", []Case{redirect("/redirect", 303, "http://echo/redirect")}},
	{"MeshHTTPRoute307Redirect", "httproute-307-redirect.yaml", []Case{redirect("/temporary", 307, "http://echo/temporary")}},
	{"MeshHTTPRoute308Redirect", "httproute-308-redirect.yaml", []Case{redirect("/permanent", 308, "http://echo/permanent")}},
	{"MeshHTTPRouteRequestHeaderModifier", "httproute-request-header-modifier.yaml", headerCases},
	{"MeshHTTPRouteBackendRequestHeaderModifier", "httproute-request-header-modifier-backend.yaml", headerCases},
	{"MeshHTTPRouteRewritePath", "httproute-rewrite-path.yaml", []Case{
		{Path: "/prefix/one/two", Backend: "echo-v1", EchoPath: "/one/two"}, {Path: "/strip-prefix/three", Backend: "echo-v1", EchoPath: "/three"},
		{Path: "/strip-prefix", Backend: "echo-v1", EchoPath: "/"}, {Path: "/full/one/two", Backend: "echo-v1", EchoPath: "/one"},
		{Path: "/full/rewrite-path-and-modify-headers/test", Header: rewriteHeaders, Backend: "echo-v1", EchoPath: "/test", ReqHdr: rewriteWant, Absent: []string{"X-Header-Remove"}},
		{Path: "/prefix/rewrite-path-and-modify-headers/one", Header: rewriteHeaders, Backend: "echo-v1", EchoPath: "/prefix/one", ReqHdr: rewriteWant, Absent: []string{"X-Header-Remove"}}}},
	{"MeshFrontend", "mesh-frontend.yaml", []Case{
		{Host: "echo-v2", Path: "/", Backend: "echo-v2", RespHdr: map[string]string{"X-Header-Set": "set"}},
		{Host: "echo-v2:8080", PodIP: true, Path: "/", Backend: "echo-v2", NoResp: []string{"X-Header-Set"}}}},
	{"MeshFrontendHostname", "mesh-frontend.yaml", []Case{
		{Host: "echo-v2", Path: "/", Header: map[string]string{"Host": "echo-v1"}, Backend: "echo-v2", RespHdr: map[string]string{"X-Header-Set": "set"}},
		{Host: "echo-v1", Path: "/", Header: map[string]string{"Host": "echo-v2"}, Backend: "echo-v1", NoResp: []string{"X-Header-Set"}}}},
	{"MeshPorts", "mesh-ports.yaml", []Case{
		{Host: "echo-v1", Path: "/", Backend: "echo-v1", RespHdr: map[string]string{"X-Header-Set": "v1"}},
		{Host: "echo-v1:8080", Path: "/", Backend: "echo-v1", NoResp: []string{"X-Header-Set"}},
		{Host: "echo-v2", Path: "/", Backend: "echo-v2", RespHdr: map[string]string{"X-Header-Set": "v2"}},
		{Host: "echo-v2:8080", Path: "/", Backend: "echo-v2", RespHdr: map[string]string{"X-Header-Set": "v2"}}}},
	{"MeshConsumerRoute", "mesh-consumer-route.yaml", []Case{
		{Host: "echo-v1.gateway-conformance-mesh", Path: "/", From: "consumer", Backend: "echo-v1", RespHdr: map[string]string{"X-Header-Set": "set"}},
		{Host: "echo-v1.gateway-conformance-mesh", Path: "/", From: "client", Backend: "echo-v1", NoResp: []string{"X-Header-Set"}}}},
}

// Weighted is a weighted test: Protocol "http" sends GET http://echo/,
// "grpc" an Echo call to echo:7070.
type Weighted struct {
	Name, File, Protocol string
	Want                 map[string]float64
}

// WeightSuites are MeshHTTPRouteWeight and MeshGRPCRouteWeight (whose
// weight-0 backend echo-v3 does not exist and must not break the route).
var WeightSuites = []Weighted{
	{"MeshHTTPRouteWeight", "httproute-weight.yaml", "http", map[string]float64{"echo-v1": 0.7, "echo-v2": 0.3}},
	{"MeshGRPCRouteWeight", "grpcroute-weight.yaml", "grpc", map[string]float64{"echo-v1": 0.7, "echo-v2": 0.3}},
}

// The suite's weight check (conformance/utils/weight): a batch of
// WeightRequests passes when every backend's fraction is within
// WeightTolerance of its weight and no other backend answered; a batch that
// misses is retried, up to WeightTries times, so that chance alone (a miss
// is a 2.4σ event) does not fail the test.
const (
	WeightRequests  = 500
	WeightTolerance = 0.05
	WeightTries     = 10
)

// Weigh runs the check: send returns the name of the pod that answered one
// request. It returns nil and the last batch's counts once a batch passes,
// else the last batch's miss.
func Weigh(want map[string]float64, send func() (pod string, err error)) (map[string]int, error) {
	var miss error
	var counts map[string]int
	for range WeightTries {
		counts = map[string]int{}
		for range WeightRequests {
			pod, err := send()
			if err != nil {
				return counts, err
			}
			counts[backendOf(pod, want)]++
		}
		if miss = weightMiss(counts, want); miss == nil {
			return counts, nil
		}
	}
	return counts, miss
}

// backendOf names the backend of pod: the key of want its name starts with
// (pods are named after their Deployment), else the pod's name.
func backendOf(pod string, want map[string]float64) string {
	for b := range want {
		if strings.HasPrefix(pod, b+"-") {
			return b
		}
	}
	return pod
}

func weightMiss(counts map[string]int, want map[string]float64) error {
	for _, b := range slices.Sorted(maps.Keys(counts)) {
		c := counts[b]
		w, ok := want[b]
		if !ok {
			return fmt.Errorf("%d requests went to unexpected backend %q", c, b)
		}
		if f := float64(c) / WeightRequests; f < w-WeightTolerance || f > w+WeightTolerance {
			return fmt.Errorf("%s got %.3f of the requests, want %.2f±%.2f (%v)", b, f, w, WeightTolerance, counts)
		}
	}
	for b, w := range want {
		if w > 0 && counts[b] == 0 {
			return fmt.Errorf("no request went to %s (%v)", b, counts)
		}
	}
	return nil
}

// GRPCHeaderFile is MeshGRPCRouteRequestHeaderModifier's manifest.
const GRPCHeaderFile = "grpcroute-request-header-modifier.yaml"

// GRPCHeaderCase is one call of MeshGRPCRouteRequestHeaderModifier to
// echo:7070 with metadata MD (pairs).
type GRPCHeaderCase struct {
	MD      []string
	Backend string
	// Want: the first value of each name at the backend; Absent must not
	// have reached it.
	Want   map[string]string
	Absent []string
}

// GRPCHeaderCases are MeshGRPCRouteRequestHeaderModifier's calls.
var GRPCHeaderCases = []GRPCHeaderCase{
	{[]string{"x-test-case", "set", "some-other-header", "this-header-should-be-set", "x-header-set", "this-value-should-be-overwritten"}, "echo-v1",
		map[string]string{"x-header-set": "set-overwrites-values", "some-other-header": "this-header-should-be-set"}, nil},
	{[]string{"x-test-case", "add", "x-header-add", "this-value-should-be-appended"}, "echo-v1", map[string]string{"x-header-add": "this-value-should-be-appended"}, nil},
	{[]string{"x-test-case", "remove", "x-header-remove", "this-should-be-removed"}, "echo-v1", nil, []string{"x-header-remove"}},
	{[]string{"x-test-case", "multi", "x-header-set-2", "set-header-2", "x-header-add-2", "add-header-2", "x-header-remove-2", "should-be-removed-2"}, "echo-v2",
		map[string]string{"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2", "x-header-add-1": "header-add-1", "x-header-add-2": "add-header-2"},
		[]string{"x-header-remove-1", "x-header-remove-2"}},
}

// Name is the case's x-test-case.
func (g GRPCHeaderCase) Name() string { return g.MD[1] }

// Check compares the answering pod and the metadata the backend saw with g.
func (g GRPCHeaderCase) Check(pod string, md map[string]string) error {
	var bad []string
	if !strings.HasPrefix(pod, g.Backend) {
		bad = append(bad, fmt.Sprintf("answered by %s, want %s", pod, g.Backend))
	}
	for _, k := range slices.Sorted(maps.Keys(g.Want)) {
		if md[k] != g.Want[k] {
			bad = append(bad, fmt.Sprintf("%s = %q, want %q", k, md[k], g.Want[k]))
		}
	}
	for _, k := range g.Absent {
		if v, ok := md[k]; ok {
			bad = append(bad, fmt.Sprintf("%s reached the backend: %q", k, v))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}
