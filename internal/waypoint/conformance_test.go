//go:build linux

package waypoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
	"github.com/ambit-mesh/ambit/internal/echo"
	"github.com/ambit-mesh/ambit/internal/meshtest"
)

// The Gateway API mesh (GAMMA) conformance cases (test/conformance,
// CASES.md), run through the real path: client pod → ztunnel → waypoint →
// ztunnel → `ambit app echo`, with the suite's own manifests.
const conformanceDir = "../../test/conformance/gateway-api-mesh/mesh"

const (
	meshNS     = "gateway-conformance-mesh"
	consumerNS = "gateway-conformance-mesh-consumer"
)

// conformanceVIPs are the addresses given to the suite's Services (the
// manifests leave them to the cluster).
var conformanceVIPs = map[string]string{"echo-v1": "10.96.1.1", "echo-v2": "10.96.1.2", "echo": "10.96.1.3"}

// conformanceManifests are the suite's base manifests as a cluster would
// run them: namespaces in ambient mode using the waypoint, Service VIPs,
// and Deployments replaced by the test's pods.
func conformanceManifests(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(conformanceDir, "manifests.yaml"))
	meshtest.Must(t, err)
	var out []string
	out = append(out, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %s, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Namespace
metadata: {name: %s, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: %[1]s}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: %[1]s, labels: {istio.io/use-waypoint: none}}
spec:
  clusterIP: 10.96.1.20
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
`, meshNS, consumerNS))
	for _, doc := range strings.Split(string(b), "\n---\n") {
		if !strings.Contains(doc, "kind: Service\n") {
			continue
		}
		for name, ip := range conformanceVIPs {
			if strings.Contains(doc, "  name: "+name+"\n") {
				doc = strings.Replace(doc, "spec:\n", "spec:\n  clusterIP: "+ip+"\n", 1)
			}
		}
		out = append(out, doc)
	}
	return strings.Join(out, "\n---\n")
}

type conformance struct {
	*meshtest.Mesh
	clients map[string]*meshtest.Pod
	admin   string
}

func startConformance(t *testing.T) *conformance {
	pod := func(name, ns, node, ip string, labels map[string]string, enrolled bool) *meshtest.Pod {
		return &meshtest.Pod{Name: name, Namespace: ns, Node: node, ServiceAccount: "default", IP: netip.MustParseAddr(ip), Labels: labels, Enrolled: enrolled}
	}
	v1 := pod("echo-v1-0", meshNS, "node-b", "10.244.2.2", map[string]string{"app": "echo", "version": "v1"}, true)
	v2 := pod("echo-v2-0", meshNS, "node-b", "10.244.2.3", map[string]string{"app": "echo", "version": "v2"}, true)
	client := pod("client-0", meshNS, "node-a", "10.244.1.2", map[string]string{"app": "client"}, true)
	consumer := pod("consumer-0", consumerNS, "node-a", "10.244.1.3", map[string]string{"app": "client"}, true)
	wp := pod("waypoint-0", meshNS, "node-a", "10.244.1.10", map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint", "istio.io/dataplane-mode": "none"}, false)
	wp.ServiceAccount = "waypoint"
	c := &conformance{Mesh: meshtest.Start(t, meshtest.Options{
		Nodes: map[string]string{"node-a": "zone-a", "node-b": "zone-b"},
		Pods:  []*meshtest.Pod{v1, v2, client, consumer, wp}, Manifests: conformanceManifests(t),
	}), clients: map[string]*meshtest.Pod{"client": client, "consumer": consumer}}
	for _, p := range []*meshtest.Pod{v1, v2} {
		var srv *echo.Server
		meshtest.Must(t, p.Do(func() error {
			var err error
			srv, err = echo.Start(echo.Options{HTTPPorts: []int{8080, 8443}, GRPCPorts: []int{7070}, TCPPorts: []int{9090}, Pod: p.Name, Namespace: p.Namespace})
			return err
		}))
		t.Cleanup(srv.Close)
	}
	c.admin = c.StartWaypoint(t, wp, "waypoint", nil).AdminAddr.String()
	return c
}

// conformanceCase is one request of CASES.md and what must come back.
type conformanceCase struct {
	host     string // default "echo"; "name:port" for another port
	path     string
	header   map[string]string
	from     string // client pod; default "client"
	status   int    // default 200
	backend  string // pod name prefix; "" for any
	location string // Location header of a redirect
	reqHdr   map[string]string
	absent   []string
	respHdr  map[string]string
	noResp   []string
	echoPath string
}

func (c *conformance) request(t *testing.T, cc conformanceCase) (int, http.Header, echo.Response) {
	host := cc.host
	if host == "" {
		host = "echo"
	}
	name, port, ok := strings.Cut(host, ":")
	if !ok {
		port = "80"
	}
	addr := host
	if net.ParseIP(name) == nil {
		name, _, _ = strings.Cut(name, ".")
		addr = conformanceVIPs[name] + ":" + port
	}
	from := c.clients[cc.from]
	if from == nil {
		from = c.clients["client"]
	}
	client := &http.Client{Timeout: 20 * time.Second,
		Transport:     &http.Transport{DialContext: from.Dialer(), DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest("GET", "http://"+addr+cc.path, nil)
	meshtest.Must(t, err)
	req.Host = strings.TrimSuffix(host, ":80")
	for k, v := range cc.header {
		if strings.EqualFold(k, "host") {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s%s: %v", host, cc.path, err)
	}
	defer resp.Body.Close()
	var e echo.Response
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp.StatusCode, resp.Header, e
}

func (c *conformance) check(t *testing.T, cc conformanceCase) {
	t.Helper()
	want := cc.status
	if want == 0 {
		want = 200
	}
	status, h, e := c.request(t, cc)
	what := cc.host + cc.path
	if status != want {
		t.Errorf("%s: status %d, want %d", what, status, want)
		return
	}
	if cc.backend != "" && !strings.HasPrefix(e.Pod, cc.backend) {
		t.Errorf("%s: answered by %q, want %s", what, e.Pod, cc.backend)
	}
	if cc.location != "" && h.Get("Location") != cc.location {
		t.Errorf("%s: Location %q, want %q", what, h.Get("Location"), cc.location)
	}
	for k, v := range cc.reqHdr {
		if got := strings.Join(http.Header(e.Headers).Values(k), ","); got != v {
			t.Errorf("%s: request header %s at the backend = %q, want %q", what, k, got, v)
		}
	}
	for _, k := range cc.absent {
		if v := http.Header(e.Headers).Values(k); len(v) > 0 {
			t.Errorf("%s: request header %s reached the backend: %q", what, k, v)
		}
	}
	for k, v := range cc.respHdr {
		if got := h.Get(k); got != v {
			t.Errorf("%s: response header %s = %q, want %q", what, k, got, v)
		}
	}
	for _, k := range cc.noResp {
		if v := h.Values(k); len(v) > 0 {
			t.Errorf("%s: response header %s = %q, want none", what, k, v)
		}
	}
	if cc.echoPath != "" && e.Path != cc.echoPath {
		t.Errorf("%s: backend saw path %q, want %q", what, e.Path, cc.echoPath)
	}
}

func (c *conformance) with(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(conformanceDir, file))
	meshtest.Must(t, err)
	c.Change(t, file, string(b), c.admin)
	t.Cleanup(func() { c.Change(t, file, "", c.admin) })
}

func TestConformance(t *testing.T) {
	c := startConformance(t)
	redirect := func(path string, status int, location string) conformanceCase {
		return conformanceCase{path: path, status: status, location: location}
	}
	headerCases := []conformanceCase{
		{path: "/set", header: map[string]string{"Some-Other-Header": "val"}, backend: "echo-v1", reqHdr: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}},
		{path: "/set", header: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "some-other-value"}, backend: "echo-v1", reqHdr: map[string]string{"X-Header-Set": "set-overwrites-values"}},
		{path: "/add", header: map[string]string{"Some-Other-Header": "val"}, backend: "echo-v1", reqHdr: map[string]string{"X-Header-Add": "add-appends-values"}},
		{path: "/add", header: map[string]string{"X-Header-Add": "some-other-value"}, backend: "echo-v1", reqHdr: map[string]string{"X-Header-Add": "some-other-value,add-appends-values"}},
		{path: "/remove", header: map[string]string{"X-Header-Remove": "val"}, backend: "echo-v1", absent: []string{"X-Header-Remove"}},
		{path: "/multiple", header: map[string]string{"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"},
			backend: "echo-v1", reqHdr: map[string]string{"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1",
				"X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"}, absent: []string{"X-Header-Remove-1", "X-Header-Remove-2"}},
		{path: "/case-insensitivity", header: map[string]string{"x-header-set": "original-val-set", "x-header-add": "original-val-add", "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
			backend: "echo-v1", reqHdr: map[string]string{"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "Another-Header": "another-header-val"}, absent: []string{"X-Header-Remove"}},
	}
	suites := []struct {
		name, file string
		cases      []conformanceCase
	}{
		{"MeshBasic", "", []conformanceCase{{path: "/"}}},
		{"MeshTrafficSplit", "mesh-split.yaml", []conformanceCase{{path: "/v1", backend: "echo-v1"}, {path: "/v2", backend: "echo-v2"}}},
		{"MeshHTTPRouteSimpleSameNamespace", "httproute-simple-same-namespace.yaml", []conformanceCase{{path: "/", backend: "echo-v1"}}},
		{"MeshHTTPRouteMatching", "httproute-matching.yaml", []conformanceCase{
			{path: "/", backend: "echo-v1"}, {path: "/example", backend: "echo-v1"}, {path: "/", header: map[string]string{"Version": "one"}, backend: "echo-v1"},
			{path: "/v2", backend: "echo-v2"}, {path: "/v2/example", backend: "echo-v2"}, {path: "/", header: map[string]string{"Version": "two"}, backend: "echo-v2"},
			{path: "/v2/", backend: "echo-v2"}, {path: "/v2example", backend: "echo-v1"}, {path: "/foo/v2/example", backend: "echo-v1"}}},
		{"MeshHTTPRouteNamedRule", "httproute-named-rule.yaml", []conformanceCase{{path: "/named", backend: "echo-v1"}, {path: "/unnamed", backend: "echo-v2"}}},
		{"MeshHTTPRouteQueryParamMatching", "httproute-query-param-matching.yaml", []conformanceCase{
			{path: "/?animal=whale", backend: "echo-v1"}, {path: "/?animal=dolphin", backend: "echo-v2"},
			{path: "/?animal=whale&otherparam=irrelevant", backend: "echo-v1"}, {path: "/?animal=dolphin&color=yellow", backend: "echo-v2"},
			{path: "/?color=blue", status: 404}, {path: "/?animal=dog", status: 404}, {path: "/?animal=whaledolphin", status: 404}, {path: "/", status: 404},
			{path: "/path1?animal=whale", backend: "echo-v1"}, {path: "/?animal=whale", header: map[string]string{"Version": "one"}, backend: "echo-v2"},
			{path: "/path3?animal=shark", backend: "echo-v1"}, {path: "/path4?animal=kraken", header: map[string]string{"Version": "three"}, backend: "echo-v1"},
			{path: "/?animal=shark", status: 404}, {path: "/path4?animal=kraken", status: 404}, {path: "/path5?animal=hydra", backend: "echo-v1"}}},
		{"MeshHTTPRouteRedirectHostAndStatus", "httproute-redirect-host-and-status.yaml", []conformanceCase{
			redirect("/hostname-redirect", 302, "http://example.org/hostname-redirect"), redirect("/host-and-status", 301, "http://example.org/host-and-status")}},
		{"MeshHTTPRouteRedirectPath", "httproute-redirect-path.yaml", []conformanceCase{
			redirect("/original-prefix/lemon", 302, "http://echo/replacement-prefix/lemon"), redirect("/full/path/original", 302, "http://echo/full-path-replacement"),
			redirect("/path-and-host", 302, "http://example.org/replacement-prefix"), redirect("/path-and-status", 301, "http://echo/replacement-prefix"),
			redirect("/full-path-and-host", 302, "http://example.org/replacement-full"), redirect("/full-path-and-status", 301, "http://echo/replacement-full")}},
		{"MeshHTTPRouteRedirectPort", "httproute-redirect-port.yaml", []conformanceCase{
			redirect("/port", 302, "http://echo:8083/port"), redirect("/port-and-host", 302, "http://example.org:8083/port-and-host"),
			redirect("/port-and-status", 301, "http://echo:8083/port-and-status"), redirect("/port-and-host-and-status", 302, "http://example.org:8083/port-and-host-and-status")}},
		{"MeshHTTPRouteSchemeRedirect", "httproute-redirect-scheme.yaml", []conformanceCase{
			redirect("/scheme", 302, "https://echo/scheme"), redirect("/scheme-and-host", 302, "https://example.org/scheme-and-host"),
			redirect("/scheme-and-status", 301, "https://echo/scheme-and-status"), redirect("/scheme-and-host-and-status", 302, "https://example.org/scheme-and-host-and-status")}},
		{"MeshHTTPRoute303Redirect", "httproute-303-redirect.yaml", []conformanceCase{redirect("/redirect", 303, "http://echo/redirect")}},
		{"MeshHTTPRoute307Redirect", "httproute-307-redirect.yaml", []conformanceCase{redirect("/temporary", 307, "http://echo/temporary")}},
		{"MeshHTTPRoute308Redirect", "httproute-308-redirect.yaml", []conformanceCase{redirect("/permanent", 308, "http://echo/permanent")}},
		{"MeshHTTPRouteRequestHeaderModifier", "httproute-request-header-modifier.yaml", headerCases},
		{"MeshHTTPRouteBackendRequestHeaderModifier", "httproute-request-header-modifier-backend.yaml", headerCases},
		{"MeshHTTPRouteRewritePath", "httproute-rewrite-path.yaml", []conformanceCase{
			{path: "/prefix/one/two", backend: "echo-v1", echoPath: "/one/two"}, {path: "/strip-prefix/three", backend: "echo-v1", echoPath: "/three"},
			{path: "/strip-prefix", backend: "echo-v1", echoPath: "/"}, {path: "/full/one/two", backend: "echo-v1", echoPath: "/one"},
			{path: "/full/rewrite-path-and-modify-headers/test", header: map[string]string{"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"},
				backend: "echo-v1", echoPath: "/test", reqHdr: map[string]string{"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Set": "set-overwrites-values"}, absent: []string{"X-Header-Remove"}},
			{path: "/prefix/rewrite-path-and-modify-headers/one", header: map[string]string{"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"},
				backend: "echo-v1", echoPath: "/prefix/one", reqHdr: map[string]string{"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Set": "set-overwrites-values"}, absent: []string{"X-Header-Remove"}}}},
		{"MeshFrontend", "mesh-frontend.yaml", []conformanceCase{
			{host: "echo-v2", path: "/", backend: "echo-v2", respHdr: map[string]string{"X-Header-Set": "set"}},
			{host: "10.244.2.3:8080", path: "/", backend: "echo-v2", noResp: []string{"X-Header-Set"}}}},
		{"MeshFrontendHostname", "mesh-frontend.yaml", []conformanceCase{
			{host: "echo-v2", path: "/", header: map[string]string{"Host": "echo-v1"}, backend: "echo-v2", respHdr: map[string]string{"X-Header-Set": "set"}},
			{host: "echo-v1", path: "/", header: map[string]string{"Host": "echo-v2"}, backend: "echo-v1", noResp: []string{"X-Header-Set"}}}},
		{"MeshPorts", "mesh-ports.yaml", []conformanceCase{
			{host: "echo-v1", path: "/", backend: "echo-v1", respHdr: map[string]string{"X-Header-Set": "v1"}},
			{host: "echo-v1:8080", path: "/", backend: "echo-v1", noResp: []string{"X-Header-Set"}},
			{host: "echo-v2", path: "/", backend: "echo-v2", respHdr: map[string]string{"X-Header-Set": "v2"}},
			{host: "echo-v2:8080", path: "/", backend: "echo-v2", respHdr: map[string]string{"X-Header-Set": "v2"}}}},
		{"MeshConsumerRoute", "mesh-consumer-route.yaml", []conformanceCase{
			{host: "echo-v1.gateway-conformance-mesh", path: "/", from: "consumer", backend: "echo-v1", respHdr: map[string]string{"X-Header-Set": "set"}},
			{host: "echo-v1.gateway-conformance-mesh", path: "/", from: "client", backend: "echo-v1", noResp: []string{"X-Header-Set"}}}},
	}
	for _, s := range suites {
		t.Run(s.name, func(t *testing.T) {
			if s.file != "" {
				c.with(t, s.file)
			}
			for _, cc := range s.cases {
				c.check(t, cc)
			}
		})
	}
	t.Run("MeshHTTPRouteWeight", func(t *testing.T) {
		c.with(t, "httproute-weight.yaml")
		weighted(t, map[string]float64{"echo-v1": 0.7, "echo-v2": 0.3}, func() string {
			_, _, e := c.request(t, conformanceCase{path: "/"})
			return e.Pod
		})
	})
	t.Run("MeshGRPCRouteWeight", func(t *testing.T) {
		c.with(t, "grpcroute-weight.yaml")
		ec := c.grpcClient(t, "echo:7070")
		weighted(t, map[string]float64{"echo-v1": 0.7, "echo-v2": 0.3}, func() string {
			resp, err := ec.Echo(context.Background(), &echov1.EchoRequest{Message: "w"})
			if err != nil {
				t.Fatal(err)
			}
			return resp.GetPod()
		})
	})
	t.Run("MeshGRPCRouteRequestHeaderModifier", func(t *testing.T) {
		c.with(t, "grpcroute-request-header-modifier.yaml")
		ec := c.grpcClient(t, "echo:7070")
		for _, g := range []struct {
			md      []string
			backend string
			want    map[string]string // first value at the backend
			absent  []string
		}{
			{[]string{"x-test-case", "set", "some-other-header", "this-header-should-be-set", "x-header-set", "this-value-should-be-overwritten"}, "echo-v1",
				map[string]string{"x-header-set": "set-overwrites-values", "some-other-header": "this-header-should-be-set"}, nil},
			{[]string{"x-test-case", "add", "x-header-add", "this-value-should-be-appended"}, "echo-v1", map[string]string{"x-header-add": "this-value-should-be-appended"}, nil},
			{[]string{"x-test-case", "remove", "x-header-remove", "this-should-be-removed"}, "echo-v1", nil, []string{"x-header-remove"}},
			{[]string{"x-test-case", "multi", "x-header-set-2", "set-header-2", "x-header-add-2", "add-header-2", "x-header-remove-2", "should-be-removed-2"}, "echo-v2",
				map[string]string{"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2", "x-header-add-1": "header-add-1", "x-header-add-2": "add-header-2"},
				[]string{"x-header-remove-1", "x-header-remove-2"}},
		} {
			ctx := metadata.AppendToOutgoingContext(context.Background(), g.md...)
			resp, err := ec.Echo(ctx, &echov1.EchoRequest{Message: "h"})
			if err != nil {
				t.Fatalf("%v: %v", g.md[:2], err)
			}
			if !strings.HasPrefix(resp.GetPod(), g.backend) {
				t.Errorf("%s: answered by %s, want %s", g.md[1], resp.GetPod(), g.backend)
			}
			for k, v := range g.want {
				if resp.GetMetadata()[k] != v {
					t.Errorf("%s: %s = %q, want %q", g.md[1], k, resp.GetMetadata()[k], v)
				}
			}
			for _, k := range g.absent {
				if v, ok := resp.GetMetadata()[k]; ok {
					t.Errorf("%s: %s reached the backend: %q", g.md[1], k, v)
				}
			}
		}
	})
}

func (c *conformance) grpcClient(t *testing.T, target string) echov1.EchoClient {
	name, port, _ := strings.Cut(target, ":")
	dial := c.clients["client"].Dialer()
	cc, err := grpc.NewClient(conformanceVIPs[name]+":"+port, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(target),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	meshtest.Must(t, err)
	t.Cleanup(func() { cc.Close() })
	return echov1.NewEchoClient(cc)
}

// weighted runs the suite's weight check (conformance/utils/weight): a
// batch of 500 requests passes when every backend's fraction is within 0.05
// of its weight and no other backend answered; like the suite, a batch that
// misses is retried, up to 10 times, so that chance alone (a miss is a 2.4σ
// event) does not fail the test.
func weighted(t *testing.T, want map[string]float64, send func() (pod string)) {
	t.Helper()
	const n = 500
	var last string
	for range 10 {
		counts := map[string]int{}
		for range n {
			counts[strings.TrimSuffix(send(), "-0")]++
		}
		if last = weightMiss(counts, n, want); last == "" {
			t.Logf("distribution over %d requests: %v", n, counts)
			return
		}
	}
	t.Error(last)
}

func weightMiss(counts map[string]int, n int, want map[string]float64) string {
	for b, c := range counts {
		w, ok := want[b]
		if !ok {
			return fmt.Sprintf("%d requests went to unexpected backend %q", c, b)
		}
		if f := float64(c) / float64(n); f < w-0.05 || f > w+0.05 {
			return fmt.Sprintf("%s got %.3f of the requests, want %.2f±0.05 (%v)", b, f, w, counts)
		}
	}
	return ""
}
