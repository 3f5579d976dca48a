package waypoint

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/routematch"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// The request path in one process, on loopback, without root: a client
// speaking HTTP/1.1 (keep-alive) or h2c inside an HBONE tunnel to the
// waypoint, which authorizes, routes (an HTTPRoute-like rule list) and
// forwards over HBONE to a backend that answers 1 KiB. Everything is real:
// TLS 1.3 with CA-issued SPIFFE certificates on both hops.

// directCA signs without node checks (the benchmark has no control plane).
type directCA struct{ ca *ca.CA }

func (d directCA) CreateCertificate(ctx context.Context, req *meshv1.CertificateRequest, _ ...grpc.CallOption) (*meshv1.CertificateResponse, error) {
	csr, err := d.ca.ParseCSR([]byte(req.Csr))
	if err != nil {
		return nil, err
	}
	issued, err := d.ca.Issue(csr, 0)
	if err != nil {
		return nil, err
	}
	return &meshv1.CertificateResponse{CertChain: issued.ChainPEM(), TrustBundle: d.ca.TrustBundlePEM()}, nil
}

// testCertificates is a waypoint's certificate source backed by a new CA,
// closed at the end of the test.
func testCertificates(tb testing.TB) *identity.Manager {
	tb.Helper()
	authority, err := ca.New(ca.Options{TrustDomain: "cluster.local"})
	if err != nil {
		tb.Fatal(err)
	}
	certs, err := identity.NewManager(identity.Options{Client: directCA{authority}, Bundle: identity.NewBundle(authority.TrustBundle())})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(certs.Close)
	return certs
}

type benchPath struct {
	client *http.Client
	close  func()
	proxy  *Proxy
	store  *Store
}

var (
	benchClientID  = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
	benchWaypoint  = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "waypoint"}
	benchBackendID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "echo"}
)

const benchSvc = "shop/echo.shop.svc.cluster.local"

func startBenchPath(tb testing.TB, h2c bool) *benchPath { return startBenchPathWith(tb, h2c, false) }

// startBenchPathWith, with reverseProxy, serves the tunnels with
// net/http/httputil.ReverseProxy instead of the waypoint's handler (same
// HBONE, transports and endpoint), the yardstick the issue quotes.
func startBenchPathWith(tb testing.TB, h2c, reverseProxy bool) *benchPath {
	tb.Helper()
	certs := testCertificates(tb)
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}

	// Backend: an HBONE server (the destination ztunnel's job) whose tunnels
	// carry HTTP to a 1 KiB handler.
	payload := strings.Repeat("x", 1024)
	backendHTTP := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, payload)
	})}
	backendHTTP.Protocols = new(http.Protocols)
	backendHTTP.Protocols.SetHTTP1(true)
	backendHTTP.Protocols.SetUnencryptedHTTP2(true)
	backendConns := newConnListener()
	go backendHTTP.Serve(backendConns)
	backend, err := hbone.NewServer(hbone.ServerOptions{Certificates: certs,
		Identity: func(net.Addr, string) (spiffe.ID, error) { return benchBackendID, nil },
		Handler: func(ctx context.Context, r *hbone.Request) {
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			c := newTunnelConn(s, &tunnel{authority: r.Authority}, nil)
			if backendConns.push(ctx, c) {
				select {
				case <-c.closed:
				case <-ctx.Done():
				}
			}
		}})
	if err != nil {
		tb.Fatal(err)
	}
	bl, _ := net.Listen("tcp", "127.0.0.1:0")
	go backend.Serve(bl)
	closers = append(closers, func() { backend.Close(); backendConns.Close(); backendHTTP.Close() })

	// The waypoint, configured as the control plane would.
	store := NewStore("shop/waypoint")
	prefix := func(p string) []*meshv1.RouteMatch {
		return []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: p}}}
	}
	to := []*meshv1.WeightedBackend{{Destination: &meshv1.Destination{Service: benchSvc, Port: 80}, Weight: 1}}
	rules := []*meshv1.RouteRule{
		{Origin: "r1", Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_EXACT, Value: "/healthz"}}}, Backends: to},
		{Origin: "r2", Matches: prefix("/api/v2"), Backends: to},
		{Origin: "r3", Matches: []*meshv1.RouteMatch{{Headers: []*meshv1.HeaderMatch{{Name: "x-canary", Value: "1"}}}}, Backends: to},
		{Origin: "r4", Matches: prefix("/"), Backends: to, RequestHeaders: &meshv1.HeaderModifier{Set: []*meshv1.HeaderModifier_Header{{Name: "X-Route", Value: "r4"}}}},
	}
	loc := &meshv1.Locality{Zone: "zone-a"}
	err = store.Apply(&xds.Update{Version: 1, Types: []xds.TypeUpdate{
		{TypeURL: meshv1.TypeService, Upserts: []xds.Resource{{Name: benchSvc, Message: &meshv1.Service{Name: "echo", Namespace: "shop", Hostname: "echo.shop.svc.cluster.local",
			Addresses: []string{"10.96.0.10"}, Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: meshv1.AppProtocol_HTTP}},
			Waypoint: &meshv1.WaypointRef{Service: "shop/waypoint.shop.svc.cluster.local", HbonePort: 15008}}}}},
		{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{
			{Name: "c/Pod/shop/echo", Message: &meshv1.Workload{Uid: "c/Pod/shop/echo", Name: "echo", Namespace: "shop", Addresses: []string{"127.0.0.2"},
				ServiceAccount: "echo", TrustDomain: "cluster.local", WorkloadName: "echo", Locality: loc, TunnelProtocol: meshv1.TunnelProtocol_HBONE,
				Services: map[string]*meshv1.PortList{benchSvc: {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}}}}}},
			{Name: "c/Pod/shop/client", Message: &meshv1.Workload{Uid: "c/Pod/shop/client", Name: "client", Namespace: "shop", Addresses: []string{"127.0.0.1"},
				ServiceAccount: "client", TrustDomain: "cluster.local", WorkloadName: "client", Locality: loc, TunnelProtocol: meshv1.TunnelProtocol_HBONE}},
		}},
		{TypeURL: meshv1.TypeWaypointConfig, Upserts: []xds.Resource{{Name: "shop/waypoint", Message: &meshv1.WaypointConfig{Name: "waypoint", Namespace: "shop",
			Services: []*meshv1.ServiceRoutes{{Service: benchSvc, Ports: []*meshv1.PortRoutes{{Port: 80, Protocol: meshv1.AppProtocol_HTTP, Rules: rules, UserRoutes: true}}}},
			Policies: []*meshv1.Authorization{{Name: "deny-admin", Namespace: "shop", Action: meshv1.Authorization_DENY,
				Rules: []*meshv1.Rule{{To: []*meshv1.Operation{{Paths: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Prefix{Prefix: "/admin"}}}}}}}}}}}}},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	// Every HBONE dial of the waypoint reaches the backend's listener.
	var d net.Dialer
	proxy, err := New(Options{Identity: benchWaypoint, Store: store, Certificates: certs,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, bl.Addr().String())
		}})
	if err != nil {
		tb.Fatal(err)
	}
	if reverseProxy {
		target := proxy.upstreamHost(netip.MustParseAddrPort("127.0.0.2:8080"), netip.MustParseAddr("127.0.0.1"))
		rp := &httputil.ReverseProxy{Transport: proxy.h1, Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target
		}}
		if h2c {
			rp.Transport = proxy.h2
		}
		proxy.http.Handler = rp
	}
	wl, _ := net.Listen("tcp", "127.0.0.1:0")
	go proxy.Serve(wl)
	closers = append(closers, proxy.Close)

	// The client: HTTP inside HBONE tunnels to the waypoint, authority the VIP.
	pool, err := hbone.NewPool(hbone.PoolOptions{Certificates: certs})
	if err != nil {
		tb.Fatal(err)
	}
	closers = append(closers, func() { pool.Close() })
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			s, _, err := pool.Connect(ctx, hbone.Target{Source: benchClientID, Destination: []spiffe.ID{benchWaypoint},
				Addr: netip.MustParseAddrPort(wl.Addr().String()), Authority: netip.MustParseAddrPort("10.96.0.10:80")})
			if err != nil {
				return nil, err
			}
			return s, nil
		}}
	tr.Protocols = new(http.Protocols)
	if h2c {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	closers = append(closers, tr.CloseIdleConnections)
	return &benchPath{client: &http.Client{Transport: tr}, close: cleanup, proxy: proxy, store: store}
}

func (bp *benchPath) get(tb testing.TB, path string) {
	resp, err := bp.client.Get("http://echo.shop/" + strings.TrimPrefix(path, "/"))
	if err != nil {
		tb.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != 1024 {
		tb.Fatalf("%s: %d, %d bytes", path, resp.StatusCode, n)
	}
}

// TestBenchPath checks the benchmark's setup answers as expected.
func TestBenchPath(t *testing.T) {
	bp := startBenchPath(t, false)
	defer bp.close()
	bp.get(t, "/api/v2/items")
	resp, err := bp.client.Get("http://echo.shop/admin")
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("denied path: %v %v", resp, err)
	}
	resp.Body.Close()
}

// BenchmarkRequestPath: one request through the waypoint (client and
// backend included; allocations are the whole process's).
func BenchmarkRequestPath(b *testing.B) {
	for _, h2c := range []bool{false, true} {
		name := "http1"
		if h2c {
			name = "h2c"
		}
		b.Run(name, func(b *testing.B) {
			bp := startBenchPath(b, h2c)
			defer bp.close()
			bp.get(b, "/warm")
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bp.get(b, "/api/v2/items")
				}
			})
		})
	}
}

// BenchmarkReverseProxyPath is BenchmarkRequestPath with
// httputil.ReverseProxy in the waypoint's place (no routing, no policy, no
// metrics): the difference is the waypoint's handler against the standard
// library's proxy.
func BenchmarkReverseProxyPath(b *testing.B) {
	bp := startBenchPathWith(b, false, true)
	defer bp.close()
	bp.get(b, "/warm")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bp.get(b, "/api/v2/items")
		}
	})
}

// BenchmarkRouteSelect: the router alone, on the conformance suite's
// QueryParamMatching-like rule list.
func BenchmarkRouteSelect(b *testing.B) {
	q := func(v string) []*meshv1.HeaderMatch { return []*meshv1.HeaderMatch{{Name: "animal", Value: v}} }
	pr := &meshv1.PortRoutes{Rules: []*meshv1.RouteRule{
		{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: "/path1"}, QueryParams: q("whale")}}},
		{Matches: []*meshv1.RouteMatch{{Headers: []*meshv1.HeaderMatch{{Name: "version", Value: "one"}}, QueryParams: q("whale")}}},
		{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "/v[0-9]+/items"}}}},
		{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: "/api"}}}},
	}}
	h := http.Header{"Version": {"two"}, "User-Agent": {"bench"}}
	b.ReportAllocs()
	for b.Loop() {
		if r, ok := routematch.SelectRule(pr, "GET", "/api/items", h, nil); !ok || r != pr.Rules[3] {
			b.Fatal("wrong rule")
		}
	}
}

// The plaintext listener exists for benchmarks on loopback only.
func TestServePlainLoopbackOnly(t *testing.T) {
	certs := testCertificates(t)
	p, err := New(Options{Identity: benchWaypoint, Store: NewStore("shop/waypoint"), Certificates: certs})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := p.ServePlain(l, netip.MustParseAddrPort("10.96.0.10:80")); err == nil || !strings.Contains(err.Error(), "only loopback") {
		t.Fatalf("ServePlain on 0.0.0.0: %v", err)
	}
}

// plainHop is a waypoint serving a plaintext loopback listener as a hop to
// an HTTP backend outside the mesh (bench/waypoint.sh's setup, in one
// process). Requests to /local/ are answered by the waypoint itself (418).
type plainHop struct {
	proxy *Proxy
	addr  string // the waypoint's listener
}

func startPlainHop(tb testing.TB, backend http.Handler, lim Limits) *plainHop {
	tb.Helper()
	certs := testCertificates(tb)
	srv := &http.Server{Handler: backend}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(bl)
	tb.Cleanup(func() { srv.Close() })
	bport := uint32(bl.Addr().(*net.TCPAddr).Port)
	store := NewStore("shop/waypoint")
	to := []*meshv1.WeightedBackend{{Destination: &meshv1.Destination{Service: benchSvc, Port: 80}, Weight: 1}}
	err = store.Apply(&xds.Update{Version: 1, Types: []xds.TypeUpdate{
		{TypeURL: meshv1.TypeService, Upserts: []xds.Resource{{Name: benchSvc, Message: &meshv1.Service{Name: "echo", Namespace: "shop", Hostname: "echo.shop.svc.cluster.local",
			Addresses: []string{"10.96.0.10"}, Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: bport, AppProtocol: meshv1.AppProtocol_HTTP}}}}}},
		{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Name: "c/Pod/shop/echo", Message: &meshv1.Workload{Uid: "c/Pod/shop/echo", Name: "echo", Namespace: "shop",
			Addresses: []string{"127.0.0.1"}, Services: map[string]*meshv1.PortList{benchSvc: {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: bport}}}}}}}},
		{TypeURL: meshv1.TypeWaypointConfig, Upserts: []xds.Resource{{Name: "shop/waypoint", Message: &meshv1.WaypointConfig{Name: "waypoint", Namespace: "shop",
			Services: []*meshv1.ServiceRoutes{{Service: benchSvc, Ports: []*meshv1.PortRoutes{{Port: 80, Protocol: meshv1.AppProtocol_HTTP, Rules: []*meshv1.RouteRule{
				{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: "/local"}}}, DirectStatus: 418, DirectBody: "local\n"},
				{Backends: to},
			}}}}}}}}},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	p, err := New(Options{Identity: benchWaypoint, Store: store, Certificates: certs, Limits: lim})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go p.ServePlain(pl, netip.MustParseAddrPort("10.96.0.10:80"))
	tb.Cleanup(func() { pl.Close() })
	return &plainHop{proxy: p, addr: pl.Addr().String()}
}

// BenchmarkPlainHop is the waypoint as a bare HTTP hop (the plaintext
// benchmarking listener, a backend outside the mesh): what bench/waypoint.sh
// compares with nginx and haproxy, here in one process. POST 1 KiB, 1 KiB back.
func BenchmarkPlainHop(b *testing.B) {
	// Read the whole body first: net/http stops request-body reads once a
	// handler has written its answer.
	hop := startPlainHop(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}), Limits{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + hop.addr + "/echo"
	body := strings.Repeat("x", 1024)
	post := func() {
		resp, err := client.Post(url, "application/octet-stream", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1024 {
			b.Fatalf("%d, %d bytes", resp.StatusCode, n)
		}
	}
	post()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post()
		}
	})
}
