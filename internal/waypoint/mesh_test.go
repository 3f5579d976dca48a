//go:build linux

package waypoint_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
	"github.com/ambit-mesh/ambit/internal/echo"
	"github.com/ambit-mesh/ambit/internal/meshtest"
	"github.com/ambit-mesh/ambit/internal/waypoint"
)

// The mesh: a client on node-a, echo v1 and v2 on node-b, the waypoint pod
// on node-a (not enrolled, as waypoints are). The Services echo, echo-v1 and
// echo-v2 use the waypoint; every request goes
// client → ztunnel(a) → waypoint → ztunnel(b) → echo, all HBONE.
const meshManifests = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.10
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: http-alt, port: 8080}
  - {name: grpc, port: 7070}
  - {name: tcp, port: 9090}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.11
  selector: {app: echo, version: v1}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 7070}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.12
  selector: {app: echo, version: v2}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 7070}
---
apiVersion: v1
kind: Service
metadata: {name: ws, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.13
  selector: {app: echo, version: v1}
  ports: [{name: http, port: 80, targetPort: 8081}]
`

type testMesh struct {
	*meshtest.Mesh
	client *meshtest.Pod
	wp     waypoint.Running
	access *syncBuffer
	served *pathCounter
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startMesh(t *testing.T) *testMesh {
	client := &meshtest.Pod{Name: "client", Namespace: "shop", Node: "node-a", ServiceAccount: "client", IP: netip.MustParseAddr("10.244.1.2"),
		Labels: map[string]string{"app": "client"}, Enrolled: true}
	v1 := &meshtest.Pod{Name: "echo-v1-0", Namespace: "shop", Node: "node-b", ServiceAccount: "echo", IP: netip.MustParseAddr("10.244.2.2"),
		Labels: map[string]string{"app": "echo", "version": "v1"}, Enrolled: true}
	v2 := &meshtest.Pod{Name: "echo-v2-0", Namespace: "shop", Node: "node-b", ServiceAccount: "echo", IP: netip.MustParseAddr("10.244.2.3"),
		Labels: map[string]string{"app": "echo", "version": "v2"}, Enrolled: true}
	wp := &meshtest.Pod{Name: "waypoint-0", Namespace: "shop", Node: "node-a", ServiceAccount: "waypoint", IP: netip.MustParseAddr("10.244.1.10"),
		Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint", "istio.io/dataplane-mode": "none"}}
	m := &testMesh{Mesh: meshtest.Start(t, meshtest.Options{
		Nodes:     map[string]string{"node-a": "zone-a", "node-b": "zone-b"},
		Pods:      []*meshtest.Pod{client, v1, v2, wp},
		Manifests: meshManifests,
	}), client: client, access: &syncBuffer{}, served: &pathCounter{n: map[string]int64{}}}
	for _, p := range []*meshtest.Pod{v1, v2} {
		var srv *echo.Server
		meshtest.Must(t, p.Do(func() error {
			var err error
			srv, err = echo.Start(echo.Options{HTTPPorts: []int{8080}, GRPCPorts: []int{7070}, TCPPorts: []int{9090},
				Pod: p.Name, Namespace: p.Namespace, Version: p.Labels["version"], Log: slog.New(m.served)})
			return err
		}))
		t.Cleanup(srv.Close)
	}
	var ws net.Listener
	meshtest.Must(t, v1.Do(func() error {
		var err error
		ws, err = net.Listen("tcp", ":8081")
		return err
	}))
	t.Cleanup(func() { ws.Close() })
	go serveUpgrades(ws)
	m.wp = m.StartWaypoint(t, wp, "waypoint", m.access)
	return m
}

// httpClient sends requests from the client pod; h2c speaks HTTP/2 with
// prior knowledge.
func (m *testMesh) httpClient(h2c bool) *http.Client {
	dial := m.client.Dialer()
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: false, MaxIdleConnsPerHost: 16}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type result struct {
	status int
	header http.Header
	echo   echo.Response
	body   string
}

func (m *testMesh) do(t *testing.T, c *http.Client, method, url string, header map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	meshtest.Must(t, err)
	for k, v := range header {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: string(b)}
	json.Unmarshal(b, &r.echo)
	return r
}

func (m *testMesh) get(t *testing.T, url string, header map[string]string) result {
	return m.do(t, m.httpClient(false), "GET", url, header)
}

// routes applies a manifest and waits until inForce says it applies; when
// the test ends it removes it and waits until gone says so.
func (m *testMesh) routes(t *testing.T, name, yaml string, inForce, gone func() bool) {
	t.Helper()
	admin := m.wp.AdminAddr.String()
	m.Change(t, name, yaml, admin)
	t.Cleanup(func() {
		m.Change(t, name, "", admin)
		meshtest.Eventually(t, name+" removed", gone)
	})
	meshtest.Eventually(t, name+" in force", inForce)
}

func (m *testMesh) status(t *testing.T, method, url string) int {
	return m.do(t, m.httpClient(false), method, url, nil).status
}

func TestWaypoint(t *testing.T) {
	m := startMesh(t)
	http1 := m.httpClient(false)

	t.Run("default route through the waypoint", func(t *testing.T) {
		r := m.get(t, "http://10.96.0.10/hello", nil)
		if r.status != 200 || !strings.HasPrefix(r.echo.Pod, "echo-v") {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		if got := r.echo.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != "10.244.1.2" {
			t.Errorf("X-Forwarded-For at the backend = %v, want the client 10.244.1.2", got)
		}
		if !strings.HasPrefix(r.echo.Peer, "10.244.1.10:") {
			t.Errorf("backend saw peer %s, want the waypoint 10.244.1.10", r.echo.Peer)
		}
	})
	t.Run("zone pinned by x-destination-zone, served zone reported", func(t *testing.T) {
		r := m.get(t, "http://10.96.0.10/zoned", map[string]string{"x-destination-zone": "zone-b"})
		if r.status != 200 || r.header.Get("X-Ambit-Served-Zone") != "zone-b" {
			t.Fatalf("pinned to zone-b: %d, served zone %q", r.status, r.header.Get("X-Ambit-Served-Zone"))
		}
		// No echo runs in zone-a: a pin there finds no endpoint.
		if r := m.get(t, "http://10.96.0.10/zoned-a", map[string]string{"x-destination-zone": "zone-a"}); r.status != 503 {
			t.Fatalf("pinned to the empty zone-a: %d, want 503", r.status)
		}
		meshtest.Eventually(t, "access log names the serving zone", func() bool {
			return strings.Contains(m.access.String(), `"path":"/zoned","protocol":"HTTP/1.1","response_code":200`) && strings.Contains(m.access.String(), `"upstream_zone":"zone-b"`)
		})
	})
	t.Run("h2c", func(t *testing.T) {
		r := m.do(t, m.httpClient(true), "GET", "http://10.96.0.10/h2", nil)
		if r.status != 200 || r.echo.Proto != "HTTP/2.0" {
			t.Fatalf("got %d proto %q: %s", r.status, r.echo.Proto, r.body)
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		for i := range 20 {
			if r := m.do(t, http1, "GET", fmt.Sprintf("http://10.96.0.10/k/%d", i), nil); r.status != 200 {
				t.Fatalf("request %d: %d", i, r.status)
			}
		}
	})
	t.Run("TCP port relayed at L4", func(t *testing.T) {
		conn, err := m.client.Dialer()(context.Background(), "tcp", "10.96.0.10:9090")
		meshtest.Must(t, err)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "ping over tcp")
		conn.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(conn)
		if string(b) != "ping over tcp" {
			t.Fatalf("echo returned %q", b)
		}
	})
	t.Run("HTTPRoute matches, 404 without a match, Host header ignored", func(t *testing.T) {
		m.routes(t, "split.yaml", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{path: {type: Exact, value: /v1}}]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: echo-v2, port: 80}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: X-Route, value: v2}]}
`, func() bool { return m.status(t, "GET", "http://10.96.0.10/nothing") == 404 },
			func() bool { return m.status(t, "GET", "http://10.96.0.10/nothing") == 200 })
		for _, c := range []struct {
			path   string
			header map[string]string
			want   string
		}{
			{"/v1", nil, "echo-v1-0"},
			{"/v2/x", nil, "echo-v2-0"},
			{"/other", map[string]string{"version": "two"}, "echo-v2-0"},
			{"/v1", map[string]string{"Host": "echo-v2.shop.svc.cluster.local"}, "echo-v1-0"},
		} {
			r := m.get(t, "http://10.96.0.10"+c.path, c.header)
			if r.status != 200 || r.echo.Pod != c.want {
				t.Errorf("%s %v: %d from %q, want %s", c.path, c.header, r.status, r.echo.Pod, c.want)
			}
			if c.want == "echo-v2-0" && r.header.Get("X-Route") != "v2" {
				t.Errorf("%s: response header X-Route = %q", c.path, r.header.Get("X-Route"))
			}
		}
		if r := m.get(t, "http://10.96.0.10/v3", nil); r.status != 404 {
			t.Errorf("unmatched path: %d, want 404", r.status)
		}
		// The route is attached to port 80 only: 8080 takes the default route.
		if r := m.get(t, "http://10.96.0.10:8080/nothing", nil); r.status != 200 {
			t.Errorf("port 8080: %d, want 200 (the route does not select it)", r.status)
		}
		// Traffic to a pod address is not routed by the Service's route.
		if r := m.get(t, "http://10.244.2.3:8080/nothing", nil); r.status != 200 || r.echo.Pod != "echo-v2-0" {
			t.Errorf("pod IP: %d %q", r.status, r.echo.Pod)
		}
	})
	t.Run("filters: header modifiers, rewrite, redirect", func(t *testing.T) {
		m.routes(t, "filters.yaml", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-v1}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: add-appends-values}], remove: [X-Header-Remove]}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: example.org, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /moved}}
`, func() bool { return m.status(t, "GET", "http://10.96.0.11/nothing") == 404 },
			func() bool { return m.status(t, "GET", "http://10.96.0.11/nothing") == 200 })
		r := m.get(t, "http://10.96.0.11/set", map[string]string{"X-Header-Set": "old", "X-Header-Add": "first", "X-Header-Remove": "gone"})
		h := r.echo.Headers
		if r.status != 200 || strings.Join(h["X-Header-Set"], ",") != "set-overwrites-values" || strings.Join(h["X-Header-Add"], ",") != "first,add-appends-values" || h["X-Header-Remove"] != nil {
			t.Errorf("header modifier: %d %v", r.status, h)
		}
		if r := m.get(t, "http://10.96.0.11/prefix/one/two", nil); r.echo.Path != "/one/two" {
			t.Errorf("rewrite: backend saw %q", r.echo.Path)
		}
		r = m.get(t, "http://10.96.0.11/redirect/x?a=b", nil)
		if r.status != 301 || r.header.Get("Location") != "http://example.org/moved?a=b" {
			t.Errorf("redirect: %d %q", r.status, r.header.Get("Location"))
		}
	})
	t.Run("seed 001: 80/20 VirtualService over 2000 requests", func(t *testing.T) {
		m.routes(t, "canary.yaml", `
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: canary, namespace: shop}
spec:
  hosts: [echo.shop.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /predict}}]
    route:
    - {destination: {host: echo-v1}, weight: 80}
    - {destination: {host: echo-v2}, weight: 20}
`, func() bool { return m.status(t, "GET", "http://10.96.0.10/other") == 404 },
			func() bool { return m.status(t, "GET", "http://10.96.0.10/other") == 200 })
		const n = 2000
		counts := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := m.httpClient(w%2 == 0)
				for i := w; i < n; i += 8 {
					resp, err := c.Get("http://10.96.0.10/predict")
					if err != nil {
						errs <- err
						return
					}
					var e echo.Response
					json.NewDecoder(resp.Body).Decode(&e)
					resp.Body.Close()
					mu.Lock()
					counts[e.Pod]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		v1, v2 := float64(counts["echo-v1-0"])/n, float64(counts["echo-v2-0"])/n
		t.Logf("v1 %.3f, v2 %.3f (%v)", v1, v2, counts)
		if v1 < 0.77 || v1 > 0.83 || v2 < 0.17 || v2 > 0.23 {
			t.Errorf("split v1 %.3f v2 %.3f, want 0.80±0.03 / 0.20±0.03", v1, v2)
		}
	})
	t.Run("timeout and retries with echo's delay and status", func(t *testing.T) {
		m.routes(t, "timeouts.yaml", `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: timeouts, namespace: shop}
spec:
  hosts: [echo-v2]
  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 200ms
    route: [{destination: {host: echo-v2}}]
  - match: [{uri: {prefix: /status}}]
    retries: {attempts: 3, retryOn: "503"}
    route: [{destination: {host: echo-v2}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo-v2}}]
  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: echo-v2}}]
  - route: [{destination: {host: echo-v2}}]
`, func() bool { return m.status(t, "GET", "http://10.96.0.12/abort") == 418 },
			func() bool { return m.status(t, "GET", "http://10.96.0.12/abort") == 200 })
		start := time.Now()
		r := m.get(t, "http://10.96.0.12/slow?delay=3s", nil)
		if r.status != 504 || time.Since(start) > 2500*time.Millisecond {
			t.Errorf("timeout: %d after %v, want 504 after about 200ms", r.status, time.Since(start))
		}
		start = time.Now()
		if r := m.get(t, "http://10.96.0.12/delayed", nil); r.status != 200 || time.Since(start) < 300*time.Millisecond {
			t.Errorf("fault delay: %d after %v, want 200 after at least 300ms", r.status, time.Since(start))
		}
		before := retriesSeen(t, m)
		if r := m.get(t, "http://10.96.0.12/status/503", nil); r.status != 503 {
			t.Errorf("retried 503: %d", r.status)
		}
		// 1 try + 3 retries, each answered 503 by the backend.
		if got := retriesSeen(t, m) - before; got != 4 {
			t.Errorf("backend got %d attempts, want 4", got)
		}
	})
	t.Run("L7 authorization", func(t *testing.T) {
		m.routes(t, "authz.yaml", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: echo-v1}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: echo-v1}]
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}], to: [{operation: {methods: [GET]}}]}]
`, func() bool { return m.status(t, "GET", "http://10.96.0.11/admin") == 403 },
			func() bool { return m.status(t, "POST", "http://10.96.0.11/admin") == 200 })
		r := m.get(t, "http://10.96.0.11/admin/x", nil)
		if r.status != 403 || r.body != "RBAC: access denied" {
			t.Errorf("denied: %d %q", r.status, r.body)
		}
		if r := m.get(t, "http://10.96.0.11/ok", nil); r.status != 200 {
			t.Errorf("allowed GET: %d", r.status)
		}
		if r := m.do(t, http1, "POST", "http://10.96.0.11/ok", nil); r.status != 403 {
			t.Errorf("POST not allowed: %d", r.status)
		}
		if r := m.get(t, "http://10.96.0.12/admin", nil); r.status != 200 {
			t.Errorf("policy leaks to echo-v2: %d", r.status)
		}
	})
	t.Run("gRPC unary and streaming", func(t *testing.T) {
		cc, err := grpc.NewClient("10.96.0.11:7070", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return m.client.Dialer()(ctx, "tcp", addr) }))
		meshtest.Must(t, err)
		defer cc.Close()
		c := echov1.NewEchoClient(cc)
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-test", "yes"), 20*time.Second)
		defer cancel()
		resp, err := c.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
		if err != nil || resp.GetMessage() != "hi" || resp.GetPod() != "echo-v1-0" || resp.GetMetadata()["x-test"] != "yes" {
			t.Fatalf("unary: %v %v", resp, err)
		}
		_, err = c.Echo(ctx, &echov1.EchoRequest{StatusCode: int32(codes.NotFound)})
		if status.Code(err) != codes.NotFound {
			t.Errorf("status from trailers: %v", err)
		}
		st, err := c.EchoStream(ctx)
		meshtest.Must(t, err)
		for i := range 5 {
			msg := fmt.Sprintf("m%d", i)
			meshtest.Must(t, st.Send(&echov1.EchoRequest{Message: msg}))
			got, err := st.Recv() // each answer arrives before the next message is sent
			if err != nil || got.GetMessage() != msg {
				t.Fatalf("stream message %d: %v %v", i, got, err)
			}
		}
		meshtest.Must(t, st.CloseSend())
		if _, err := st.Recv(); err != io.EOF {
			t.Errorf("stream end: %v", err)
		}
	})
	t.Run("WebSocket upgrade passed through", func(t *testing.T) {
		conn, err := m.client.Dialer()(context.Background(), "tcp", "10.96.0.13:80")
		meshtest.Must(t, err)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 || resp.Header.Get("X-Upgraded-Path") != "/chat" {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		for _, msg := range []string{"frame one", "frame two"} {
			io.WriteString(conn, msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
				t.Fatalf("echo over the upgraded connection: %q %v", got, err)
			}
		}
	})
	t.Run("DestinationRule subsets and mirror", func(t *testing.T) {
		before := m.served.count("/mirrored")
		m.routes(t, "subsets.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: shop}
spec:
  host: echo
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: shop}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: echo, subset: v1}}]
    mirror: {host: echo, subset: v2}
    mirrorPercentage: {value: 100}
  - match: [{uri: {prefix: /hashed}}]
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo, subset: v2}}]
`, func() bool { return m.get(t, "http://10.96.0.10/sub", nil).echo.Pod == "echo-v2-0" },
			func() bool { return m.status(t, "GET", "http://10.96.0.10/nothing") == 200 })
		for range 20 {
			if r := m.get(t, "http://10.96.0.10/sub", nil); r.echo.Pod != "echo-v2-0" {
				t.Fatalf("subset v2 answered by %s", r.echo.Pod)
			}
		}
		for _, user := range []string{"ann", "bob", "cid"} {
			first := m.get(t, "http://10.96.0.10/hashed", map[string]string{"X-User": user}).echo.Pod
			for range 10 {
				if got := m.get(t, "http://10.96.0.10/hashed", map[string]string{"X-User": user}).echo.Pod; got != first {
					t.Fatalf("consistent hash: user %s went to %s then %s", user, first, got)
				}
			}
		}
		r := m.do(t, m.httpClient(false), "POST", "http://10.96.0.10/mirrored", nil)
		if r.echo.Pod != "echo-v1-0" {
			t.Fatalf("mirrored request answered by %s", r.echo.Pod)
		}
		// The copy reaches v2 (the primary went to v1): two requests seen.
		meshtest.Eventually(t, "mirror received", func() bool { return m.served.count("/mirrored")-before == 2 })
	})
	t.Run("bad requests get 400/431/414 and the waypoint carries on", func(t *testing.T) {
		for _, c := range []struct {
			raw  string
			want int
		}{
			{"GET / HTTP/1.1\r\nHost: echo\r\nBad Header Line\r\n\r\n", 400},
			{"GET / HTTP/1.1\r\nHost: echo\r\nContent-Length: -5\r\n\r\n", 400},
			{"GET / HTTP/1.1\r\nHost: echo\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
			{"GET /" + strings.Repeat("p", 17<<10) + " HTTP/1.1\r\nHost: echo\r\n\r\n", 414},
			{"GET / HTTP/1.1\r\nHost: echo\r\n" + strings.Repeat("X-Many: 1\r\n", 150) + "\r\n", 431},
		} {
			conn, err := m.client.Dialer()(context.Background(), "tcp", "10.96.0.10:80")
			meshtest.Must(t, err)
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, c.raw)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if err != nil || resp.StatusCode != c.want {
				t.Errorf("%.40q: %v %v, want %d", c.raw, resp, err, c.want)
			}
		}
		if r := m.get(t, "http://10.96.0.10/still-fine", nil); r.status != 200 {
			t.Fatalf("after bad requests: %d", r.status)
		}
	})
	t.Run("metrics and access log", func(t *testing.T) {
		resp, err := http.Get("http://" + m.wp.MetricsAddr.String() + "/metrics")
		meshtest.Must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out := string(b)
		for _, want := range []string{"istio_requests_total{", `reporter="waypoint"`, `source_workload="client"`, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`,
			`destination_service="echo-v1.shop.svc.cluster.local"`, `response_code="403"`, `grpc_response_status="5"`, `request_protocol="grpc"`,
			`source_zone="zone-a"`, `destination_zone="zone-b"`, "istio_request_duration_milliseconds_bucket{", "istio_response_bytes_sum{", "istio_tcp_sent_bytes_total{"} {
			if !strings.Contains(out, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		meshtest.Eventually(t, "access log flushed", func() bool { return strings.Contains(m.access.String(), `"path":"/admin/x"`) })
		for _, line := range strings.Split(strings.TrimSpace(m.access.String()), "\n") {
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("access log line is not JSON: %v: %s", err, line)
			}
		}
	})
}

// serveUpgrades answers HTTP/1.1 upgrade requests with 101 and then echoes
// the upgraded connection's bytes, as a WebSocket echo server would.
func serveUpgrades(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				return
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upgraded-Path: "+req.URL.Path+"\r\n\r\n")
			io.Copy(c, br)
		}()
	}
}

// retriesSeen counts the requests the echo servers answered on /status/503.
func retriesSeen(t *testing.T, m *testMesh) int64 {
	t.Helper()
	return m.served.count("/status/503")
}

// pathCounter is a slog handler counting the echo servers' request lines by path.
type pathCounter struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *pathCounter) count(path string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

func (c *pathCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *pathCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *pathCounter) WithGroup(string) slog.Handler            { return c }
func (c *pathCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "path" {
			c.mu.Lock()
			c.n[a.Value.String()]++
			c.mu.Unlock()
		}
		return true
	})
	return nil
}
