//go:build linux

package netns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"golang.org/x/sys/unix"
)

func threadNS(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDoSwitchesAndRestores(t *testing.T) {
	ns := netnstest.New(t)
	id, err := ns.ID()
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	err = netns.Do(ns, func() error {
		inside = threadNS(t)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != id.String() {
		t.Fatalf("inside Do the thread is in %s, want %s", inside, id)
	}
	// Every thread of the process is back in the start namespace: ask many
	// goroutines (spread over threads) where they are.
	host, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if host.Equal(ns) || !netns.IsHost(host) {
		t.Fatalf("after Do: current namespace %s, test namespace %s", host, ns)
	}
	wantErr := errors.New("boom")
	if err := netns.Do(ns, func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("Do did not return f's error: %v", err)
	}
}

func TestDoRestoresAfterPanic(t *testing.T) {
	ns := netnstest.New(t)
	done := make(chan string)
	go func() {
		defer func() {
			recover()
			// Still on the same (now unlocked) goroutine: where is the thread?
			s, _ := os.Readlink("/proc/thread-self/ns/net")
			done <- s
		}()
		netns.Do(ns, func() error { panic("inside") })
	}()
	got := <-done
	host, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	hid, _ := host.ID()
	if got != hid.String() {
		t.Fatalf("after a panic in Do the thread is in %s, want %s", got, hid)
	}
}

func TestNamed(t *testing.T) {
	netnstest.RequireRoot(t)
	name := fmt.Sprintf("ambit-test-%d", os.Getpid())
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.DeleteNamed(name) })
	if ns.Name() != name || ns.Path() != "/run/netns/"+name {
		t.Fatalf("name/path = %q/%q", ns.Name(), ns.Path())
	}
	again, err := netns.OpenNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Equal(ns) {
		t.Fatal("OpenNamed opened another namespace")
	}
	again.Close()
	if _, err := netns.NewNamed(name); err == nil {
		t.Fatal("NewNamed with a taken name succeeded")
	}
	// `ip` sees it, as with `ip netns add`.
	out, err := netns.Output(ns, "", "ip", "-o", "link", "show", "lo")
	if err != nil || !strings.Contains(out, "UP") {
		t.Fatalf("lo in named ns: %q %v", out, err)
	}
	if err := ns.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Fatalf("bind mount still there: %v", err)
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if _, err := netns.NewNamed(bad); err == nil {
			t.Errorf("NewNamed(%q) succeeded", bad)
		}
	}
}

func TestOpenRejectsOtherFiles(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := netns.Open("/proc/self/ns/uts"); err == nil {
		t.Fatal("Open accepted a UTS namespace")
	}
	if _, err := netns.Open("/etc/hostname"); err == nil {
		t.Fatal("Open accepted a regular file")
	}
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !netns.IsNetNS(f) {
		t.Fatal("IsNetNS(/proc/self/ns/net) = false")
	}
}

func TestCommandInheritsNamespace(t *testing.T) {
	ns := netnstest.New(t)
	id, _ := ns.ID()
	out, err := netns.Output(ns, "", "readlink", "/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != id.String() {
		t.Fatalf("child ran in %q, want %s", out, id)
	}
	// Path works for nsenter-style tools too (when nsenter is installed).
	if nsenter, err := exec.LookPath("nsenter"); err == nil {
		b, err := exec.Command(nsenter, "--net="+ns.Path(), "readlink", "/proc/self/ns/net").Output()
		if err != nil || strings.TrimSpace(string(b)) != id.String() {
			t.Fatalf("nsenter --net=%s ran in %q: %v", ns.Path(), b, err)
		}
	}
}

func TestSocketsStayInTheirNamespace(t *testing.T) {
	p := netnstest.NewPair(t, netip.MustParsePrefix("10.244.0.1/24"), netip.MustParsePrefix("10.244.0.2/24"))
	// A listener on A's loopback is reachable from A, not from B.
	l, err := netns.ListenTCP(p.A, "127.0.0.1:0", netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go serveBanner(l, "a-loopback")
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	ctx := context.Background()
	c, err := netns.DialTCP(ctx, p.A, addr, netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expectBanner(t, c, "a-loopback")
	if c, err := netns.DialTCP(ctx, p.B, addr, netns.SocketOptions{}); err == nil {
		c.Close()
		t.Fatal("B reached A's loopback listener")
	} else if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial from B: %v, want connection refused", err)
	}

	// Across the veth, with Dialer (the net.Dialer-shaped helper).
	lb, err := netns.ListenTCP(p.B, "10.244.0.2:8080", netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	go serveRemote(lb)
	dial := netns.Dialer(p.A, netns.SocketOptions{Mark: 0x539})
	conn, err := dial(ctx, "tcp", "10.244.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	expectBanner(t, conn, "10.244.0.1")
	if _, err := dial(ctx, "tcp", "localhost:80"); err == nil {
		t.Fatal("Dialer resolved a host name")
	}
	if _, err := dial(ctx, "udp", "10.244.0.2:8080"); err == nil {
		t.Fatal("Dialer accepted udp")
	}

	// Source binding: A binds its own address and a chosen port.
	c2, err := netns.DialTCP(ctx, p.A, netip.MustParseAddrPort("10.244.0.2:8080"),
		netns.SocketOptions{Source: netip.MustParseAddrPort("10.244.0.1:40123"), ReuseAddr: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.LocalAddr().String(); got != "10.244.0.1:40123" {
		t.Fatalf("local address %s", got)
	}
	c2.Close()

	// UDP in a namespace.
	u, err := netns.ListenConfig{NS: p.B}.ListenUDP("10.244.0.2:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ua, err := netns.ListenConfig{NS: p.A}.ListenUDP("10.244.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	if _, err := ua.WriteToUDPAddrPort([]byte("hi"), netip.MustParseAddrPort("10.244.0.2:5353")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	u.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := u.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hi" || from.Addr() != p.AIP {
		t.Fatalf("udp: %q from %s: %v", buf[:n], from, err)
	}
}

func TestDialHonoursContext(t *testing.T) {
	p := netnstest.NewPair(t, netip.MustParsePrefix("10.244.0.1/24"), netip.MustParsePrefix("10.244.0.2/24"))
	// Nobody answers ARP for .99: the kernel would give up after ~3s; the
	// context's 100ms deadline ends the dial first.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := netns.DialTCP(ctx, p.A, netip.MustParseAddrPort("10.244.0.99:80"), netns.SocketOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want deadline exceeded", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := netns.DialTCP(ctx2, p.A, netip.MustParseAddrPort("10.244.0.2:80"), netns.SocketOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with cancelled context: %v", err)
	}
}

func TestHostNamespaceIsRefused(t *testing.T) {
	netnstest.RequireRoot(t)
	host, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if !netns.IsHost(host) {
		t.Fatal("IsHost(current) = false")
	}
	ns := netnstest.New(t)
	checks := map[string]error{
		"AddBridge":      netns.AddBridge(host, "ambit-never"),
		"AddVeth(host,)": netns.AddVeth(host, "ambit-never0", ns, "x0"),
		"AddVeth(,host)": netns.AddVeth(ns, "x1", host, "ambit-never1"),
		"SetLinkUp":      netns.SetLinkUp(host, "lo"),
		"AddAddr":        netns.AddAddr(host, "lo", netip.MustParsePrefix("10.244.9.9/32")),
		"AddRoute":       netns.AddRoute(host, netip.MustParsePrefix("10.244.9.0/24"), netip.Addr{}, "lo"),
		"SetSysctl":      netns.SetSysctl(host, "net.ipv4.ip_forward", "1"),
		"Guard":          netns.Guard(host),
	}
	for name, err := range checks {
		if !errors.Is(err, netns.ErrHostNamespace) {
			t.Errorf("%s on the host namespace: %v, want ErrHostNamespace", name, err)
		}
	}
	for _, n := range []string{"ambit-never", "ambit-never0", "ambit-never1", "x0", "x1"} {
		if _, err := net.InterfaceByName(n); err == nil {
			t.Errorf("interface %s appeared in the host namespace", n)
		}
	}
}

func TestBridge(t *testing.T) {
	br := netnstest.New(t)
	n1, n2 := netnstest.New(t), netnstest.New(t)
	if err := netns.AddBridge(br, "br0"); err != nil {
		t.Fatal(err)
	}
	if err := netns.AttachToBridge(br, "br0", n1, "eth0", "veth-n1", netip.MustParsePrefix("10.244.5.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := netns.AttachToBridge(br, "br0", n2, "eth0", "veth-n2", netip.MustParsePrefix("10.244.5.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddAddr(br, "br0", netip.MustParsePrefix("10.244.5.254/24")); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddRoute(n1, netip.MustParsePrefix("10.244.6.0/24"), netip.MustParseAddr("10.244.5.254"), ""); err != nil {
		t.Fatal(err)
	}
	if err := netns.SetSysctl(br, "net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if v, err := netns.Sysctl(br, "net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Fatalf("ip_forward in bridge ns = %q, %v", v, err)
	}
	l, err := netns.ListenTCP(n2, "10.244.5.2:9000", netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go serveRemote(l)
	c, err := netns.DialTCP(context.Background(), n1, netip.MustParseAddrPort("10.244.5.2:9000"), netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expectBanner(t, c, "10.244.5.1")
}

// serveBanner answers every connection with banner.
func serveBanner(l net.Listener, banner string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(banner))
		c.Close()
	}
}

// serveRemote answers every connection with the client's IP.
func serveRemote(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String()))
		c.Close()
	}
}

func expectBanner(t *testing.T, c net.Conn, want string) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
}
