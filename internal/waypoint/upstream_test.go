//go:build linux

package waypoint

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// upstreamProxy is a waypoint whose state holds one workload outside the
// mesh (no HBONE) at 127.0.0.1 and nothing else.
func upstreamProxy(t *testing.T, dialTimeout time.Duration) *Proxy {
	t.Helper()
	certs := testCertificates(t)
	store := NewStore("shop/waypoint")
	err := store.Apply(&xds.Update{Version: 1, Types: []xds.TypeUpdate{{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{
		{Name: "c/Pod/shop/plain", Message: &meshv1.Workload{Uid: "c/Pod/shop/plain", Name: "plain", Namespace: "shop", Addresses: []string{"127.0.0.1"}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Identity: benchWaypoint, Store: store, Certificates: certs, DialTimeout: dialTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// queued reports whether a connection waits in l's accept queue, without
// waiting: a dial that returned has completed its handshake, so its
// connection is queued by then. (The listener's socket is non-blocking.)
func queued(t *testing.T, l *net.TCPListener) bool {
	t.Helper()
	rc, err := l.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var nfd int
	var aerr error
	if err := rc.Control(func(fd uintptr) { nfd, _, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC) }); err != nil {
		t.Fatal(err)
	}
	if aerr == nil {
		syscall.Close(nfd)
		return true
	}
	if !errors.Is(aerr, syscall.EAGAIN) {
		t.Fatal(aerr)
	}
	return false
}

// An endpoint whose workload left the state between the request choosing
// it and the dial (a pod removed in a rollout) is not dialled at all: not
// in plaintext, which would reach a pod being torn down. A workload pushed
// as outside the mesh is dialled directly.
func TestDialUpstreamOnlyKnownWorkloads(t *testing.T) {
	p := upstreamProxy(t, 0)
	src := netip.MustParseAddr("127.0.0.9")
	for _, tt := range []struct {
		ip   string
		dial bool
	}{{"127.0.0.1", true}, {"127.0.0.2", false}} {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.ip+":0")))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := p.dialUpstream(t.Context(), "tcp", p.upstreamHost(l.Addr().(*net.TCPAddr).AddrPort(), src))
		switch {
		case tt.dial && err != nil:
			t.Errorf("%s (outside the mesh): %v", tt.ip, err)
		case tt.dial:
			c.Close()
		case !errors.Is(err, errGoneEndpoint):
			t.Errorf("%s (no workload): dialUpstream = %v, want errGoneEndpoint", tt.ip, err)
		}
		if got := queued(t, l); got != tt.dial {
			t.Errorf("%s: a connection arrived: %v, want %v", tt.ip, got, tt.dial)
		}
	}
}

// fullListener is a loopback listener whose accept queue is full: the
// kernel drops further SYNs, so a connection attempt gets no answer, as
// with an address whose pod is gone.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue: connections complete until it is full, then one
	// attempt goes unanswered.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i == 8 {
			t.Fatal("the accept queue of a backlog-0 listener does not fill")
		}
	}
	return addr
}

// A connection attempt nobody answers ends at the dial timeout, whatever
// the caller's context: the request then gets a 503 (or a retry), never
// waits as long as the kernel retries SYNs.
func TestDialUpstreamBounded(t *testing.T) {
	p := upstreamProxy(t, 100*time.Millisecond)
	addr := fullListener(t)
	// The caller's context only keeps a broken build from hanging the test.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := p.dialUpstream(ctx, "tcp", p.upstreamHost(addr, netip.MustParseAddr("127.0.0.9")))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || ctx.Err() != nil {
		t.Fatalf("dial to an address that does not answer: %v (caller's context: %v), want the dial timeout", err, ctx.Err())
	}
}

const retrySvcKey = "shop/echo.shop.svc.cluster.local"

// retryListen serves h on ip and returns the port.
func retryListen(t *testing.T, ip string, h http.HandlerFunc) uint32 {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// retryWorkload is an endpoint of retrySvcKey.
func retryWorkload(name, ip string, port uint32) xds.Resource {
	uid := "c/Pod/shop/" + name
	return xds.Resource{Name: uid, Message: &meshv1.Workload{Uid: uid, Name: name, Namespace: "shop", Addresses: []string{ip},
		Services: map[string]*meshv1.PortList{retrySvcKey: {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: port}}}}}}
}

// startRetryProxy applies retrySvcKey (routed by the waypoint with Istio's
// default retry policy) and its endpoints to store and returns the address
// of a waypoint serving it in plaintext.
func startRetryProxy(t *testing.T, store *Store, endpoints ...xds.Resource) string {
	err := store.Apply(&xds.Update{Version: 1, Types: []xds.TypeUpdate{
		{TypeURL: meshv1.TypeService, Upserts: []xds.Resource{{Name: retrySvcKey, Message: &meshv1.Service{Name: "echo", Namespace: "shop", Hostname: "echo.shop.svc.cluster.local",
			Addresses: []string{"10.96.0.10"}, Ports: []*meshv1.ServicePort{{Port: 80, AppProtocol: meshv1.AppProtocol_HTTP}}}}}},
		{TypeURL: meshv1.TypeWorkload, Upserts: endpoints},
		{TypeURL: meshv1.TypeWaypointConfig, Upserts: []xds.Resource{{Name: "shop/waypoint", Message: &meshv1.WaypointConfig{Name: "waypoint", Namespace: "shop",
			Services: []*meshv1.ServiceRoutes{{Service: retrySvcKey, Ports: []*meshv1.PortRoutes{{Port: 80, Protocol: meshv1.AppProtocol_HTTP, Rules: []*meshv1.RouteRule{
				{Backends: []*meshv1.WeightedBackend{{Destination: &meshv1.Destination{Service: retrySvcKey, Port: 80}, Weight: 1}}}}}}}}}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Identity: benchWaypoint, Store: store, Certificates: testCertificates(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.ServePlain(pl, netip.MustParseAddrPort("10.96.0.10:80"))
	t.Cleanup(func() { pl.Close() })
	return pl.Addr().String()
}

// A retry chooses among the endpoints as they are when it is sent, not as
// they were when the request arrived: in a rollout the request's first
// view may list only pods that have left since. Here the only endpoint
// answers 503 and, before answering, is replaced by another (as the
// control plane does when its pod goes); the retry must reach the new one.
func TestRetryUsesCurrentEndpoints(t *testing.T) {
	store := NewStore("shop/waypoint")
	newPort := retryListen(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "new") })
	var replaced atomic.Bool
	oldPort := retryListen(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		if !replaced.Swap(true) {
			err := store.Apply(&xds.Update{Version: 2, Types: []xds.TypeUpdate{{TypeURL: meshv1.TypeWorkload,
				Upserts: []xds.Resource{retryWorkload("new", "127.0.0.2", newPort)}, Removes: []string{"c/Pod/shop/old"}}}})
			if err != nil {
				t.Error(err)
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	addr := startRetryProxy(t, store, retryWorkload("old", "127.0.0.1", oldPort))

	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "new" {
		t.Errorf("answer %d %q, want 200 from the endpoint that replaced the failing one", resp.StatusCode, body)
	}
}

// Each retry goes to an endpoint the request has not tried yet (Envoy's
// previous_hosts predicate, in Istio's default retry policy): with two of
// three endpoints failing, the default two retries always reach the third.
// Excluding only the last failed endpoint, the third attempt went back to
// the first in about one request of six.
func TestRetryAvoidsEveryTriedEndpoint(t *testing.T) {
	fail := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	store := NewStore("shop/waypoint")
	addr := startRetryProxy(t, store,
		retryWorkload("bad1", "127.0.0.1", retryListen(t, "127.0.0.1", fail)),
		retryWorkload("bad2", "127.0.0.2", retryListen(t, "127.0.0.2", fail)),
		retryWorkload("good", "127.0.0.3", retryListen(t, "127.0.0.3", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "good") })))
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 60 {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "good" {
			t.Fatalf("request %d: answer %d %q, want 200 from the one healthy endpoint", i, resp.StatusCode, body)
		}
	}
}

// A new pod given the address of one that left (the local cluster reuses
// pod IPs): when the update replacing the workload is applied, the
// waypoint's pooled HBONE connection to the address takes no new tunnels
// and its idle upstream HTTP connections there are closed, so the next
// request dials afresh instead of going onto a connection to a pod that is
// gone.
func TestReplacedWorkloadDrainsUpstream(t *testing.T) {
	for _, viaTransport := range []bool{false, true} {
		t.Run(map[bool]string{false: "h1fast", true: "http.Transport"}[viaTransport], func(t *testing.T) {
			bp := startBenchPathWith(t, viaTransport, viaTransport) // h2c: the proxy forwards with http.Transport (h2)
			defer bp.close()
			fast := 1 // requests go through h1fast, whose idle connections are counted
			if viaTransport {
				fast = 0 // through http.Transport: a reused idle connection dials nothing
			}
			p := bp.proxy
			ep := netip.MustParseAddr("127.0.0.2")
			key := hbone.Target{Source: benchWaypoint, Destination: []spiffe.ID{benchBackendID}, Addr: netip.AddrPortFrom(ep, 15008)}.Key()
			idleTo := func() int {
				n := 0
				p.h1fast.mu.Lock()
				defer p.h1fast.mu.Unlock()
				for host, cs := range p.h1fast.idle {
					if dst, _, err := parseUpstreamHost(host); err == nil && dst.Addr() == ep {
						n += len(cs)
					}
				}
				return n
			}
			expect := func(when string, conns, idle int) {
				t.Helper()
				if n := p.pool.Conns(key); n != conns {
					t.Errorf("%s: %d pooled HBONE connections to the endpoint, want %d", when, n, conns)
				}
				if n := idleTo(); n != idle {
					t.Errorf("%s: %d idle upstream connections to the endpoint, want %d", when, n, idle)
				}
			}
			bp.get(t, "/api/v2/items")
			expect("before", 1, fast)
			opened := p.pool.Stats().ConnectionsOpened

			// The echo pod is replaced by another (new uid) at the same address.
			echo := bp.store.State().View().WorkloadByIP(ep)
			next := proto.Clone(echo).(*meshv1.Workload)
			next.Uid, next.Name = "c/Pod/shop/echo-2", "echo-2"
			err := bp.store.Apply(&xds.Update{Version: 2, Types: []xds.TypeUpdate{{TypeURL: meshv1.TypeWorkload,
				Upserts: []xds.Resource{{Name: next.Uid, Message: next}}, Removes: []string{echo.Uid}}}})
			if err != nil {
				t.Fatal(err)
			}
			expect("after the replacement", 0, 0)
			bp.get(t, "/api/v2/items")
			if got := p.pool.Stats().ConnectionsOpened - opened; got != 1 {
				t.Errorf("after the replacement %d HBONE connections were dialled, want 1 (a new one)", got)
			}
			expect("after a new request", 1, fast)

			// An update that replaces no workload leaves the connections alone.
			err = bp.store.Apply(&xds.Update{Version: 3, Types: []xds.TypeUpdate{{TypeURL: meshv1.TypeWorkload,
				Upserts: []xds.Resource{{Name: next.Uid, Message: proto.Clone(next)}}}}})
			if err != nil {
				t.Fatal(err)
			}
			expect("after an update in place", 1, fast)
		})
	}
}
