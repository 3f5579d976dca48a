//go:build linux

package redirect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

// These tests build a "pod" namespace and a "peer" namespace joined by a
// veth pair (nothing is linked to the host), install the redirection rules
// in the pod with each iptables backend installed here, and check where
// real connections end up.

var (
	podPfx  = netip.MustParsePrefix("10.244.1.1/24")
	peerPfx = netip.MustParsePrefix("10.244.1.2/24")
	podIP   = podPfx.Addr()
	peerIP  = peerPfx.Addr()
)

const ioTimeout = 10 * time.Second // only bounds a hung test

func backends(t *testing.T) []Backend {
	t.Helper()
	netnstest.RequireRoot(t)
	var bs []Backend
	for _, tl := range availableTools() {
		bs = append(bs, tl.backend)
	}
	if len(bs) == 0 {
		t.Fatal("no iptables installed (apt-get install iptables)")
	}
	return bs
}

type env struct {
	pod, peer *netns.NS
	cfg       Config
}

// newEnv creates pod+peer and installs the rules in pod (removed at the
// end of the test).
func newEnv(t *testing.T, b Backend, cfg Config) *env {
	t.Helper()
	p := netnstest.NewPair(t, podPfx, peerPfx)
	cfg.Backend = b
	e := &env{pod: p.A, peer: p.B, cfg: cfg}
	if err := Install(e.pod, cfg); err != nil {
		t.Fatalf("Install: %v", err)
	}
	t.Cleanup(func() {
		if err := Remove(e.pod, cfg); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	return e
}

func listen(t *testing.T, ns *netns.NS, addr string, opts netns.SocketOptions) *net.TCPListener {
	t.Helper()
	l, err := netns.ListenTCP(ns, addr, opts)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// banner serves every connection on l with "name remoteIP".
func banner(l *net.TCPListener, name string) {
	go func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s", name, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			c.Close()
		}
	}()
}

// accepted returns the first connection accepted on l.
func accepted(t *testing.T, l *net.TCPListener) <-chan *net.TCPConn {
	ch := make(chan *net.TCPConn, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			close(ch)
			return
		}
		t.Cleanup(func() { c.Close() })
		ch <- c
	}()
	return ch
}

func dial(t *testing.T, ns *netns.NS, to netip.AddrPort, opts netns.SocketOptions) *net.TCPConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, err := netns.DialTCP(ctx, ns, to, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c
}

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(ioTimeout):
		t.Fatal("timed out")
	}
	panic("unreachable")
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func TestOutbound(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			e := newEnv(t, b, Config{})
			// The ztunnel's outbound listener, in the pod, on loopback.
			zt := listen(t, e.pod, "127.0.0.1:15001", netns.SocketOptions{})
			peer := listen(t, e.peer, "10.244.1.2:8080", netns.SocketOptions{})
			banner(peer, "peer")

			// 1. The app's connection to the peer lands on 15001; the
			// original destination is recoverable.
			got := accepted(t, zt)
			app := dial(t, e.pod, ap(peerIP, 8080), netns.SocketOptions{})
			c := wait(t, got)
			orig, err := OriginalDst(c)
			if err != nil {
				t.Fatal(err)
			}
			if orig != ap(peerIP, 8080) {
				t.Fatalf("OriginalDst = %s, want %s", orig, ap(peerIP, 8080))
			}
			if c.RemoteAddr().(*net.TCPAddr).AddrPort() != app.LocalAddr().(*net.TCPAddr).AddrPort() {
				t.Fatalf("captured connection from %s, app is %s", c.RemoteAddr(), app.LocalAddr())
			}
			c.Write([]byte("ztunnel"))
			c.Close()
			if s := readAll(t, app); s != "ztunnel" {
				t.Fatalf("app read %q, want the ztunnel's answer", s)
			}

			// 2. The ztunnel's own (marked) connection is not captured and
			// reaches the peer with the pod's IP.
			m := dial(t, e.pod, ap(peerIP, 8080), netns.SocketOptions{Mark: ZtunnelMark})
			if s := readAll(t, m); s != "peer 10.244.1.1" {
				t.Fatalf("marked connection read %q, want the peer", s)
			}

			// 3. Loopback and the pod's own IP are not captured.
			lo := listen(t, e.pod, "127.0.0.1:9090", netns.SocketOptions{})
			banner(lo, "lo")
			self := listen(t, e.pod, "10.244.1.1:9091", netns.SocketOptions{})
			banner(self, "self")
			if s := readAll(t, dial(t, e.pod, netip.MustParseAddrPort("127.0.0.1:9090"), netns.SocketOptions{})); s != "lo 127.0.0.1" {
				t.Fatalf("loopback connection read %q", s)
			}
			if s := readAll(t, dial(t, e.pod, ap(podIP, 9091), netns.SocketOptions{})); s != "self 10.244.1.1" {
				t.Fatalf("connection to the pod's own IP read %q", s)
			}
		})
	}
}

func TestInbound(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			e := newEnv(t, b, Config{})
			plain := listen(t, e.pod, "0.0.0.0:15006", netns.SocketOptions{Transparent: true})
			hbone := listen(t, e.pod, "0.0.0.0:15008", netns.SocketOptions{})
			banner(hbone, "hbone")

			// Plaintext inbound to an app port lands on 15006 with the
			// destination intact.
			got := accepted(t, plain)
			client := dial(t, e.peer, ap(podIP, 8080), netns.SocketOptions{})
			c := wait(t, got)
			if la := c.LocalAddr().(*net.TCPAddr).AddrPort(); la != ap(podIP, 8080) {
				t.Fatalf("15006 connection local address %s, want %s", la, ap(podIP, 8080))
			}
			if orig, err := OriginalDst(c); err != nil || orig != ap(podIP, 8080) {
				t.Fatalf("OriginalDst = %s, %v; want %s", orig, err, ap(podIP, 8080))
			}
			if ra := c.RemoteAddr().(*net.TCPAddr).AddrPort(); ra != client.LocalAddr().(*net.TCPAddr).AddrPort() {
				t.Fatalf("15006 connection from %s, client is %s", ra, client.LocalAddr())
			}
			c.Write([]byte("inbound"))
			c.Close()
			if s := readAll(t, client); s != "inbound" {
				t.Fatalf("client read %q", s)
			}

			// HBONE (15008) is reached directly.
			h := dial(t, e.peer, ap(podIP, 15008), netns.SocketOptions{})
			if s := readAll(t, h); s != "hbone 10.244.1.2" {
				t.Fatalf("15008 read %q", s)
			}
		})
	}
}

// TestInboundPreservesClientIP is the ztunnel's inbound path end to end:
// peer -> podIP:8080 is captured on 15006; the "ztunnel" connects to the app
// from the client's own IP (IP_TRANSPARENT, marked), and the app sees the
// client's address; replies find their way back through the routing rule.
func TestInboundPreservesClientIP(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			e := newEnv(t, b, Config{})
			app := listen(t, e.pod, "0.0.0.0:8080", netns.SocketOptions{})
			banner(app, "app")

			// Direct: from inside the pod, spoof the peer's address.
			spoofed := dial(t, e.pod, ap(podIP, 8080), netns.SocketOptions{
				Mark: ZtunnelMark, Transparent: true, Source: ap(peerIP, 0)})
			if s := readAll(t, spoofed); s != "app 10.244.1.2" {
				t.Fatalf("transparent connection read %q, want the app to see 10.244.1.2", s)
			}

			// Through a minimal inbound proxy on 15006.
			zt := listen(t, e.pod, "0.0.0.0:15006", netns.SocketOptions{Transparent: true})
			var wg sync.WaitGroup
			t.Cleanup(func() { zt.Close(); wg.Wait() }) // before the namespaces close
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := zt.AcceptTCP()
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						proxyTransparent(e.pod, c)
					}()
				}
			}()
			client := dial(t, e.peer, ap(podIP, 8080), netns.SocketOptions{})
			if s := readAll(t, client); s != "app 10.244.1.2" {
				t.Fatalf("client read %q through the inbound proxy, want the app to see 10.244.1.2", s)
			}
		})
	}
}

func proxyTransparent(pod *netns.NS, c *net.TCPConn) {
	defer c.Close()
	orig, err := OriginalDst(c)
	if err != nil {
		return
	}
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	up, err := netns.DialTCP(ctx, pod, orig, netns.SocketOptions{Mark: ZtunnelMark, Transparent: true, Source: ap(src, 0)})
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(up, c); up.CloseWrite() }()
	io.Copy(c, up)
}

func TestDNSCapture(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			e := newEnv(t, b, Config{CaptureDNS: true})
			dns, err := netns.ListenConfig{NS: e.pod}.ListenUDP("127.0.0.1:15053")
			if err != nil {
				t.Fatal(err)
			}
			defer dns.Close()
			cl, err := netns.ListenConfig{NS: e.pod}.ListenUDP("0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if _, err := cl.WriteToUDPAddrPort([]byte("query"), ap(peerIP, 53)); err != nil {
				t.Fatal(err)
			}
			dns.SetReadDeadline(time.Now().Add(ioTimeout))
			buf := make([]byte, 64)
			n, _, err := dns.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "query" {
				t.Fatalf("DNS proxy got %q, %v", buf[:n], err)
			}
		})
	}
}

func TestIPv6(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			p := netnstest.NewPair(t, netip.MustParsePrefix("fd00:244::1/64"), netip.MustParsePrefix("fd00:244::2/64"))
			pod, peer := p.A, p.B
			cfg := Config{Backend: b, IPv6: true}
			if err := Install(pod, cfg); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Remove(pod, cfg) })
			out := listen(t, pod, "[::1]:15001", netns.SocketOptions{})
			in := listen(t, pod, "[::]:15006", netns.SocketOptions{Transparent: true})
			pv6, peerv6 := p.AIP, p.BIP

			got := accepted(t, out)
			dial(t, pod, ap(peerv6, 8080), netns.SocketOptions{})
			if orig, err := OriginalDst(wait(t, got)); err != nil || orig != ap(peerv6, 8080) {
				t.Fatalf("IPv6 OriginalDst = %s, %v", orig, err)
			}
			got = accepted(t, in)
			dial(t, peer, ap(pv6, 8080), netns.SocketOptions{})
			c := wait(t, got)
			if la := c.LocalAddr().(*net.TCPAddr).AddrPort(); la != ap(pv6, 8080) {
				t.Fatalf("IPv6 inbound local address %s", la)
			}
			// Transparent to a local app.
			app := listen(t, pod, "[::]:8080", netns.SocketOptions{})
			banner(app, "app")
			s := readAll(t, dial(t, pod, ap(pv6, 8080), netns.SocketOptions{Mark: ZtunnelMark, Transparent: true, Source: ap(peerv6, 0)}))
			if s != "app "+peerv6.String() {
				t.Fatalf("IPv6 transparent connection read %q", s)
			}
		})
	}
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// state dumps everything Install touches in ns: iptables-save of every
// backend and family (comments and counters dropped, and — for legacy,
// whose tables cannot be deleted — tables holding nothing at all), ip rules
// and all routing tables.
func state(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var b strings.Builder
	for _, tl := range availableTools() {
		for _, fam := range []Family{IPv4, IPv6} {
			if tl.save[fam] == "" {
				continue
			}
			out, err := netns.Output(ns, "", tl.save[fam])
			if err != nil {
				t.Fatal(err)
			}
			saved, err := parseSave(out)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "== %s %s\n", tl.backend, fam)
			skip := false
			for _, line := range strings.Split(out, "\n") {
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if strings.HasPrefix(line, "*") {
					tb := saved[line[1:]]
					skip = tl.backend == BackendLegacy && !tb.hasAmbit() && tb.emptyWithoutAmbit()
				}
				if !skip {
					b.WriteString(counters.ReplaceAllString(line, "[]") + "\n")
				}
			}
		}
	}
	for _, args := range [][]string{{"-4", "rule"}, {"-6", "rule"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		out, err := netns.Output(ns, "", "ip", args...)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "== ip %s\n%s", strings.Join(args, " "), out)
	}
	return b.String()
}

// preexisting adds rules of the pod's own (as a CNI or the app might have)
// with backend b.
func preexisting(t *testing.T, ns *netns.NS, b Backend) {
	t.Helper()
	tl, err := lookTools(b)
	if err != nil {
		t.Fatal(err)
	}
	script := `*nat
:MINE - [0:0]
-A OUTPUT -d 10.244.99.0/24 -p tcp -j RETURN
-A OUTPUT -j MINE
-A MINE -p tcp --dport 7 -j RETURN
COMMIT
*mangle
-A PREROUTING -p udp -j MARK --set-xmark 0x10000/0x10000
COMMIT
*filter
-A INPUT -p tcp --dport 9999 -j ACCEPT
COMMIT
`
	if err := tl.restoreIn(ns, IPv4, script, true); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveRestoresState(t *testing.T) {
	for _, b := range backends(t) {
		for _, pre := range []bool{false, true} {
			name := string(b) + "/fresh"
			if pre {
				name = string(b) + "/with-existing-rules"
			}
			t.Run(name, func(t *testing.T) {
				p := netnstest.NewPair(t, podPfx, peerPfx)
				pod := p.A
				if pre {
					preexisting(t, pod, b)
				}
				cfg := Config{Backend: b, IPv6: true}
				t.Cleanup(func() { Remove(pod, cfg) })
				before := state(t, pod)
				if err := Install(pod, cfg); err != nil {
					t.Fatal(err)
				}
				once := state(t, pod)
				if once == before {
					t.Fatal("Install changed nothing")
				}
				if err := Install(pod, cfg); err != nil {
					t.Fatalf("second Install: %v", err)
				}
				if twice := state(t, pod); twice != once {
					t.Fatalf("Install is not idempotent:\nafter one:\n%s\nafter two:\n%s", once, twice)
				}
				if err := Remove(pod, cfg); err != nil {
					t.Fatal(err)
				}
				if after := state(t, pod); after != before {
					t.Fatalf("Remove did not restore the namespace:\nbefore:\n%s\nafter:\n%s", before, after)
				}
				if err := Remove(pod, cfg); err != nil {
					t.Fatalf("second Remove: %v", err)
				}
				// Traffic flows directly again.
				peer := listen(t, p.B, "10.244.1.2:8080", netns.SocketOptions{})
				banner(peer, "peer")
				if s := readAll(t, dial(t, pod, ap(peerIP, 8080), netns.SocketOptions{})); s != "peer 10.244.1.1" {
					t.Fatalf("after Remove the app reached %q", s)
				}
			})
		}
	}
}

func TestInstallRefusesHost(t *testing.T) {
	netnstest.RequireRoot(t)
	host, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if err := Install(host, Config{}); !errors.Is(err, netns.ErrHostNamespace) {
		t.Fatalf("Install in the host namespace: %v", err)
	}
	if err := Remove(host, Config{}); !errors.Is(err, netns.ErrHostNamespace) {
		t.Fatalf("Remove in the host namespace: %v", err)
	}
}

func TestDetectBackend(t *testing.T) {
	bs := backends(t)
	ns := netnstest.New(t)
	if _, err := DetectBackend(ns); err != nil {
		t.Fatal(err)
	}
	// A namespace whose rules are in one backend keeps that backend.
	for _, b := range bs {
		ns := netnstest.New(t)
		preexisting(t, ns, b)
		got, err := DetectBackend(ns)
		if err != nil || got != b {
			t.Errorf("namespace with %s rules: detected %q, %v", b, got, err)
		}
	}
}

func TestOriginalDstErrors(t *testing.T) {
	if _, err := OriginalDst(nil); err == nil {
		t.Fatal("OriginalDst(nil) succeeded")
	}
	if _, err := parseSockaddr([]byte{1}); err == nil {
		t.Fatal("short sockaddr parsed")
	}
}
