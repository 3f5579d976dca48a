package waypoint

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// tunnel is what the waypoint knows of one inbound HBONE tunnel.
type tunnel struct {
	peer      spiffe.ID
	src       netip.Addr // the client: the tunnel's source address
	self      netip.Addr // this waypoint instance: the connection's local address
	authority netip.AddrPort
	baggage   string

	srcText string // src as text, for X-Forwarded-For

	// series is the metrics series of the tunnel's last request: the next
	// one most likely has the same labels.
	series atomic.Pointer[lastSeries]
	// svcKey is the key of the Service the tunnel's destination last was
	// (the same Service as long as the configuration is).
	svcKey   atomic.Pointer[tunnelService]
	upstream atomic.Pointer[tunnelUpstream]
}

// upstreamHost is p.upstreamHost(dst, t.src), remembered for the last
// destination (the same endpoint, mostly, for a tunnel's next request).
func (t *tunnel) upstreamHost(p *Proxy, dst netip.AddrPort) string {
	if u := t.upstream.Load(); u != nil && u.dst == dst {
		return u.host
	}
	h := p.upstreamHost(dst, t.src)
	t.upstream.Store(&tunnelUpstream{dst: dst, host: h})
	return h
}

type tunnelUpstream struct {
	dst  netip.AddrPort
	host string
}

type tunnelService struct {
	svc *meshv1.Service
	key string
}

// serviceKey is serviceKey(svc), built once per tunnel and Service.
func (t *tunnel) serviceKey(svc *meshv1.Service) string {
	if c := t.svcKey.Load(); c != nil && c.svc == svc {
		return c.key
	}
	k := serviceKey(svc)
	t.svcKey.Store(&tunnelService{svc: svc, key: k})
	return k
}

func newTunnel(peer spiffe.ID, src, self netip.Addr, authority netip.AddrPort, baggage string) *tunnel {
	return &tunnel{peer: peer, src: src, self: self, authority: authority, baggage: baggage, srcText: src.String()}
}

type tunnelKey struct{}

func tunnelFrom(ctx context.Context) *tunnel {
	t, _ := ctx.Value(tunnelKey{}).(*tunnel)
	return t
}

// stream is what a tunnel carries: an *hbone.Stream, or for the plaintext
// benchmarking listener a *net.TCPConn.
type stream interface {
	net.Conn
	CloseWrite() error
}

// tunnelConn is a tunnel's stream served as an HTTP connection. It replays
// the bytes protocol detection read, and reports when the HTTP server is
// done with it (the tunnel's handler waits for that).
type tunnelConn struct {
	s      stream
	t      *tunnel
	src    streamSource
	closed chan struct{}
	once   sync.Once
}

func newTunnelConn(s stream, t *tunnel, prefix []byte) *tunnelConn {
	return &tunnelConn{s: s, t: t, src: streamSource{s: s, prefix: prefix}, closed: make(chan struct{})}
}

func (c *tunnelConn) Read(p []byte) (int, error) { return c.src.Read(p) }

// streamSource reads a stream after replaying the bytes read ahead of it.
type streamSource struct {
	s      stream
	prefix []byte
}

func (r *streamSource) Read(b []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(b, r.prefix)
		r.prefix = r.prefix[n:]
		return n, nil
	}
	return r.s.Read(b)
}

func (c *tunnelConn) Write(p []byte) (int, error) { return c.s.Write(p) }
func (c *tunnelConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.s.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.s}, r)
}
func (c *tunnelConn) CloseWrite() error   { return c.s.CloseWrite() }
func (c *tunnelConn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.t.authority) }
func (c *tunnelConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.t.src, 0))
}
func (c *tunnelConn) SetDeadline(t time.Time) error      { return c.s.SetDeadline(t) }
func (c *tunnelConn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }

func (c *tunnelConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.s.Close()
}

// connListener hands tunnels to the HTTP server.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// push hands c to the server; false when the listener is closed or ctx ends first.
func (l *connListener) push(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
	case <-ctx.Done():
	}
	return false
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }

// protocol detection

type detected uint8

const (
	detectedTCP detected = iota
	detectedHTTP
)

// detectTimeout bounds how long the waypoint waits for a client's first
// bytes on a port that declares no protocol; a server-first protocol is
// relayed at L4 once it passes.
const detectTimeout = time.Second

// detect reads the first bytes of a stream: an HTTP/1 request line or the
// HTTP/2 preface means HTTP, anything else (or silence) TCP. It returns the
// bytes read, to be replayed.
func detect(s stream) (detected, []byte) {
	buf := make([]byte, 0, 16)
	s.SetReadDeadline(time.Now().Add(detectTimeout))
	defer s.SetReadDeadline(time.Time{})
	for len(buf) < cap(buf) {
		n, err := s.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if v, done := classify(buf); done {
			return v, buf
		}
		if err != nil { // EOF, reset, or silence past detectTimeout
			return detectedTCP, buf
		}
	}
	v, _ := classify(buf)
	return v, buf
}

// classify decides once the bytes show a method token and a space
// ("GET /", "PRI * HTTP/2.0" included) or cannot be one.
func classify(b []byte) (detected, bool) {
	for i, c := range b {
		switch {
		case c == ' ':
			if i > 0 {
				return detectedHTTP, true
			}
			return detectedTCP, true
		case c < 'A' || c > 'Z':
			return detectedTCP, true
		}
	}
	return detectedTCP, len(b) >= 16
}
