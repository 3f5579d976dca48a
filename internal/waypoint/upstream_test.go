//go:build linux

package waypoint

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
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
