package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Server defaults.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultServerIdleTimeout = 10 * time.Minute
)

// ServerOptions configure NewServer.
type ServerOptions struct {
	// Certificates supplies the server's certificates (unless TLSConfig
	// does) and the roots client certificates must chain to. Required.
	Certificates Certificates
	// Identity chooses the identity a connection presents, from the local
	// address the client reached and the SNI it sent (often empty): a
	// ztunnel's inbound listener inside a pod's network namespace returns
	// that pod's identity; a waypoint returns its own. Required unless
	// TLSConfig is set.
	Identity func(local net.Addr, serverName string) (spiffe.ID, error)
	// TLSConfig, if set, replaces Identity: it must provide the server
	// certificate (Certificates, GetCertificate or GetConfigForClient).
	// Whatever it says, the server enforces TLS 1.3, ALPN h2 and a client
	// certificate verified against Certificates.Roots() with a SPIFFE ID
	// (its own VerifyConnection, if any, runs after that check).
	TLSConfig *tls.Config
	// Handler is called, on a goroutine of its own, for every well-formed
	// CONNECT; it must answer with Request.Accept or Request.Reject. The
	// stream is closed when Handler returns (a request it did not answer
	// gets 500). ctx is cancelled when the client resets the stream or the
	// connection fails. Required.
	Handler func(ctx context.Context, r *Request)
	// HandshakeTimeout bounds the TLS handshake plus the HTTP/2 preface
	// (default 10s): slow or silent clients are cut off.
	HandshakeTimeout time.Duration
	// Tuning of the HTTP/2 layer. IdleTimeout defaults to 10 minutes —
	// longer than a Pool's, so that clients close idle connections, not
	// servers; KeepAlive to disabled (TCP keepalive still applies).
	Tuning Tuning
	// Logger gets refused connections and protocol errors (default: discard).
	Logger *slog.Logger
}

// Server accepts HBONE connections: mutual TLS 1.3 with ALPN h2, then
// HTTP/2 CONNECT streams handed to ServerOptions.Handler.
type Server struct {
	tlsConfig        *tls.Config
	handler          func(context.Context, *Request)
	handshakeTimeout time.Duration
	cfg              connConfig
	log              *slog.Logger
	stats            stats
	baseCtx          context.Context
	cancelBase       context.CancelFunc

	mu          sync.Mutex
	listeners   map[*net.Listener]struct{}
	handshaking map[net.Conn]struct{}
	conns       map[*conn]struct{}
	shutdown    bool
	drained     chan struct{} // closed when, after shutdown, no connection is left
}

// NewServer checks opts and returns a Server; it serves nothing until Serve.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Certificates == nil {
		return nil, errors.New("hbone.NewServer: Certificates is required")
	}
	if opts.Identity == nil && opts.TLSConfig == nil {
		return nil, errors.New("hbone.NewServer: Identity or TLSConfig is required")
	}
	if opts.Handler == nil {
		return nil, errors.New("hbone.NewServer: Handler is required")
	}
	cfg, err := opts.Tuning.connConfig(DefaultServerIdleTimeout, 0)
	if err != nil {
		return nil, err
	}
	srv := &Server{
		tlsConfig:        serverTLSConfig(opts.TLSConfig, opts.Certificates, opts.Identity),
		handler:          opts.Handler,
		handshakeTimeout: opts.HandshakeTimeout,
		cfg:              cfg,
		log:              opts.Logger,
		listeners:        map[*net.Listener]struct{}{},
		handshaking:      map[net.Conn]struct{}{},
		conns:            map[*conn]struct{}{},
		drained:          make(chan struct{}),
	}
	if srv.handshakeTimeout <= 0 {
		srv.handshakeTimeout = DefaultHandshakeTimeout
	}
	if srv.log == nil {
		srv.log = slog.New(slog.DiscardHandler)
	}
	srv.baseCtx, srv.cancelBase = context.WithCancel(context.Background())
	return srv, nil
}

// Stats returns the server's counters.
func (srv *Server) Stats() Stats { return srv.stats.snapshot() }

// Serve accepts connections on l until Shutdown or Close (then it returns
// ErrServerClosed) or until l fails for good. Temporary accept errors
// (such as running out of file descriptors) are retried with a backoff.
func (srv *Server) Serve(l net.Listener) error {
	srv.mu.Lock()
	if srv.shutdown {
		srv.mu.Unlock()
		return ErrServerClosed
	}
	srv.listeners[&l] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, &l)
		srv.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if srv.isShutdown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			srv.log.Warn("hbone: accept failed; retrying", "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go srv.serveConn(nc)
	}
}

func (srv *Server) isShutdown() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.shutdown
}

func (srv *Server) serveConn(nc net.Conn) {
	srv.mu.Lock()
	if srv.shutdown {
		srv.mu.Unlock()
		nc.Close()
		return
	}
	srv.handshaking[nc] = struct{}{}
	srv.mu.Unlock()

	deadline := time.Now().Add(srv.handshakeTimeout)
	nc.SetDeadline(deadline)
	cork := newCorkConn(nc)
	tc := tls.Server(cork, srv.tlsConfig)
	ctx, cancel := context.WithDeadline(srv.baseCtx, deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	var peer spiffe.ID
	if err == nil {
		cs := tc.ConnectionState()
		if cs.NegotiatedProtocol != ALPN {
			err = fmt.Errorf("client did not negotiate ALPN %q", ALPN)
		} else {
			peer, err = peerIdentity(cs)
		}
	}
	if err != nil {
		srv.refuse(nc, "TLS handshake failed", err)
		return
	}

	c := newConn(tc, true, srv.cfg, srv.log, &srv.stats)
	c.srv, c.owner, c.peer, c.cork = srv, srv, peer, cork
	srv.mu.Lock()
	delete(srv.handshaking, nc)
	if srv.shutdown {
		srv.mu.Unlock()
		nc.Close()
		srv.checkDrained()
		return
	}
	srv.conns[c] = struct{}{}
	srv.mu.Unlock()

	// The HTTP/2 preface, still under the handshake deadline: our SETTINGS,
	// then the client's magic string. Its first SETTINGS frame (checked by
	// the read loop) lifts the read deadline.
	err = c.write(c.prefaceFrames(nil))
	if err == nil {
		var magic [len(clientPreface)]byte
		if _, err = io.ReadFull(c.br, magic[:]); err == nil && string(magic[:]) != clientPreface {
			err = errors.New("bad HTTP/2 client preface")
		}
	}
	if err != nil {
		srv.log.Info("hbone: refused connection: HTTP/2 preface failed", "remote", nc.RemoteAddr().String(), "peer", peer.String(), "error", err)
		srv.stats.handshakeFailures.Add(1)
		c.nc.Close()
		srv.connClosed(c)
		return
	}
	nc.SetWriteDeadline(time.Time{})
	srv.stats.connectionsOpened.Add(1)
	c.start()
}

func (srv *Server) refuse(nc net.Conn, what string, err error) {
	srv.log.Info("hbone: refused connection: "+what, "remote", nc.RemoteAddr().String(), "local", nc.LocalAddr().String(), "error", err)
	srv.stats.handshakeFailures.Add(1)
	nc.Close()
	srv.mu.Lock()
	delete(srv.handshaking, nc)
	srv.mu.Unlock()
	srv.checkDrained()
}

// connClosed implements connOwner.
func (srv *Server) connClosed(c *conn) {
	srv.mu.Lock()
	delete(srv.conns, c)
	srv.mu.Unlock()
	srv.checkDrained()
}

func (srv *Server) checkDrained() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.shutdown && len(srv.conns) == 0 && len(srv.handshaking) == 0 {
		select {
		case <-srv.drained:
		default:
			close(srv.drained)
		}
	}
}

// stopLocked marks the server shut down and closes its listeners and the
// connections still in their handshake.
func (srv *Server) stopLocked() []*conn {
	srv.shutdown = true
	for l := range srv.listeners {
		(*l).Close()
	}
	for nc := range srv.handshaking {
		nc.Close()
	}
	conns := make([]*conn, 0, len(srv.conns))
	for c := range srv.conns {
		conns = append(conns, c)
	}
	return conns
}

// Shutdown stops accepting, sends GOAWAY on every connection, and waits
// until the streams already open are done (connections close as they
// drain) or ctx ends, when it closes whatever is left and returns ctx.Err().
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	conns := srv.stopLocked()
	srv.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	srv.checkDrained()
	select {
	case <-srv.drained:
		srv.cancelBase()
		return nil
	case <-ctx.Done():
		srv.Close()
		return ctx.Err()
	}
}

// Drain sends GOAWAY on the connections whose local address matches (a
// pod left the node) and closes each once its open streams are done. The
// server keeps accepting.
func (srv *Server) Drain(match func(local net.Addr) bool) {
	srv.mu.Lock()
	var conns []*conn
	for c := range srv.conns {
		if match(c.nc.LocalAddr()) {
			conns = append(conns, c)
		}
	}
	srv.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
}

// Close stops accepting and closes every connection at once.
func (srv *Server) Close() error {
	srv.mu.Lock()
	conns := srv.stopLocked()
	srv.mu.Unlock()
	// Connections first: handlers woken by the cancellation must find
	// their streams cut, not end them gracefully.
	for _, c := range conns {
		c.close()
	}
	srv.cancelBase()
	srv.checkDrained()
	return nil
}

// ---------------------------------------------------------------------------
// requests

// Request is one CONNECT received by a Server.
type Request struct {
	// Authority is the original destination, from :authority.
	Authority netip.AddrPort
	// ForwardedFor is the for= address of the first Forwarded element
	// (the original source, as the sending ztunnel saw it); invalid when
	// absent. It is what the peer claims: trust it only from peers allowed
	// to speak for others (waypoints).
	ForwardedFor netip.Addr
	// Baggage holds the well-formed members of the baggage header (nil if none).
	Baggage Baggage
	// Header holds every regular header field (canonical keys).
	Header http.Header
	// Peer is the client's SPIFFE ID, from its verified certificate.
	Peer spiffe.ID
	// TLS is the connection's state; PeerCertificates is the client's
	// chain, verified against the mesh roots.
	TLS *tls.ConnectionState
	// LocalAddr and RemoteAddr are the HBONE connection's addresses.
	LocalAddr  net.Addr
	RemoteAddr net.Addr

	s         *Stream
	status    int    // set when the request is refused before the handler
	reason    string // why
	responded bool
}

// Accept answers 200 with header (may be nil; e.g. the destination's
// baggage) and returns the stream carrying the tunnel. The stream is
// closed when the handler returns.
func (r *Request) Accept(header http.Header) (*Stream, error) {
	if r.responded {
		return nil, errors.New("hbone: request already answered")
	}
	r.responded = true
	if err := r.s.c.writeResponse(r.s, http.StatusOK, header, false); err != nil {
		return nil, err
	}
	return r.s, nil
}

// Reject answers with status (3xx to 5xx: 400 malformed, 401/403 not
// authorized, 503 destination unreachable, ...) and header, and ends the
// stream.
func (r *Request) Reject(status int, header http.Header) error {
	if status < 300 || status > 599 {
		return fmt.Errorf("hbone: Reject with status %d, want 300-599", status)
	}
	if r.responded {
		return errors.New("hbone: request already answered")
	}
	r.responded = true
	r.s.c.stats.streamsRejected.Add(1)
	err := r.s.c.writeResponse(r.s, status, header, true)
	r.s.Close()
	return err
}

// writeResponse sends the response headers, unless the stream is already
// gone (answering a reset stream would be a protocol error).
func (c *conn) writeResponse(s *Stream, status int, header http.Header, end bool) error {
	fields := make([]hpack.HeaderField, 0, 1+len(header))
	fields = append(fields, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	fields = appendHeaderFields(fields, header)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.waitRoomLocked() // so that the check below still holds when the headers are queued
	c.mu.Lock()
	if err := s.writeErrLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if end {
		s.localEnd = true
	}
	c.mu.Unlock()
	return c.writeHeadersLocked(s.id, fields, end)
}

// appendHeaderFields adds h to fields with lowercase names, leaving out
// pseudo-headers and fields HTTP/2 forbids.
func appendHeaderFields(fields []hpack.HeaderField, h http.Header) []hpack.HeaderField {
	for k, vs := range h {
		name := strings.ToLower(k)
		if !validFieldName(name) || connectionSpecific(name) || name == "host" {
			continue
		}
		for _, v := range vs {
			if validFieldValue(v) {
				fields = append(fields, hpack.HeaderField{Name: name, Value: v})
			}
		}
	}
	return fields
}

// onRequest handles a complete request header block (read loop).
func (c *conn) onRequest(id uint32, end bool) error {
	if id%2 == 0 {
		return connErr(ErrCodeProtocol, "client opened even stream %d", id)
	}
	c.mu.Lock()
	if id <= c.lastPeerStream {
		s := c.streams[id]
		c.mu.Unlock()
		if s == nil {
			return connErr(ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
		}
		s.resetFromReadLoop(ErrCodeProtocol) // trailers: not allowed on CONNECT
		return nil
	}
	c.lastPeerStream = id
	if c.closing || uint32(c.active) >= c.cfg.maxStreams {
		c.mu.Unlock()
		c.stats.streamsRefused.Add(1)
		var b [frameHeaderLen + 4]byte
		c.queueControl(appendRSTStream(b[:0], id, ErrCodeRefusedStream))
		return nil
	}
	// Everything the stream needs is set before it is published in the
	// table, where teardown may find it.
	s := newStream(c, id)
	s.remoteEnd = end
	s.eof = end
	s.ctx, s.cancel = context.WithCancel(c.srv.baseCtx)
	c.streams[id] = s
	c.acquireLocked()
	c.mu.Unlock()
	c.stats.streamsOpened.Add(1)
	req := c.newRequest(s)
	go c.srv.serveStream(c, req)
	return nil
}

func (srv *Server) serveStream(c *conn, req *Request) {
	s := req.s
	defer func() {
		if p := recover(); p != nil {
			srv.log.Error("hbone: handler panicked", "authority", req.Authority.String(), "peer", req.Peer.String(), "panic", p)
			s.Reset()
		}
		if !req.responded {
			req.Reject(http.StatusInternalServerError, nil)
		}
		s.Close()
		s.cancel()
		c.mu.Lock()
		closeNow := c.releaseLocked()
		c.mu.Unlock()
		if closeNow {
			c.teardown(errLocalClose)
		}
	}()
	if req.status != 0 {
		srv.log.Info("hbone: rejected malformed CONNECT", "status", req.status, "reason", req.reason, "peer", req.Peer.String(), "remote", c.nc.RemoteAddr().String())
		req.Reject(req.status, nil)
		return
	}
	srv.handler(s.ctx, req)
}

// newRequest builds the Request from the decoded header block, deciding
// the status of a request refused before the handler (read loop).
func (c *conn) newRequest(s *Stream) *Request {
	r := &Request{
		Peer:       c.peer,
		TLS:        &c.tlsState,
		LocalAddr:  c.nc.LocalAddr(),
		RemoteAddr: c.nc.RemoteAddr(),
		s:          s,
	}
	bad := func(status int, format string, args ...any) *Request {
		r.status, r.reason = status, fmt.Sprintf(format, args...)
		return r
	}
	if c.htooBig {
		return bad(http.StatusRequestHeaderFieldsTooLarge, "header list exceeds %d bytes", c.cfg.maxHeaderBytes)
	}
	var method, authority, scheme, path, protocol string
	var seen [5]bool
	regular := false
	for _, f := range c.hfields {
		if strings.HasPrefix(f.Name, ":") {
			if regular {
				return bad(http.StatusBadRequest, "pseudo-header %s after regular headers", f.Name)
			}
			var i int
			var dst *string
			switch f.Name {
			case ":method":
				i, dst = 0, &method
			case ":authority":
				i, dst = 1, &authority
			case ":scheme":
				i, dst = 2, &scheme
			case ":path":
				i, dst = 3, &path
			case ":protocol":
				i, dst = 4, &protocol
			default:
				return bad(http.StatusBadRequest, "unknown pseudo-header %s", f.Name)
			}
			if seen[i] {
				return bad(http.StatusBadRequest, "repeated pseudo-header %s", f.Name)
			}
			seen[i] = true
			*dst = f.Value
			continue
		}
		regular = true
		if !validFieldName(f.Name) {
			return bad(http.StatusBadRequest, "invalid header name %q", f.Name)
		}
		if connectionSpecific(f.Name) && !(f.Name == "te" && f.Value == "trailers") {
			return bad(http.StatusBadRequest, "connection-specific header %s", f.Name)
		}
		if !validFieldValue(f.Value) {
			return bad(http.StatusBadRequest, "invalid value of header %s", f.Name)
		}
		if r.Header == nil {
			r.Header = http.Header{}
		}
		k := http.CanonicalHeaderKey(f.Name)
		r.Header[k] = append(r.Header[k], f.Value)
	}
	switch {
	case !seen[0]:
		return bad(http.StatusBadRequest, "no :method")
	case method != http.MethodConnect:
		return bad(http.StatusMethodNotAllowed, "method %q: HBONE serves only CONNECT", method)
	case protocol != "":
		return bad(http.StatusBadRequest, "extended CONNECT (:protocol %q) is not supported", protocol)
	case seen[2] || seen[3]:
		return bad(http.StatusBadRequest, "CONNECT with :scheme or :path")
	case authority == "":
		return bad(http.StatusBadRequest, "no :authority")
	}
	ap, err := ParseAuthority(authority)
	if err != nil {
		return bad(http.StatusBadRequest, "%v", err)
	}
	r.Authority = ap
	if v := r.Header[HeaderForwarded]; len(v) > 0 {
		a, err := ParseForwarded(v)
		if err != nil {
			return bad(http.StatusBadRequest, "%v", err)
		}
		r.ForwardedFor = a
	}
	if v := r.Header[HeaderBaggage]; len(v) > 0 {
		b, err := ParseBaggage(v)
		if err != nil {
			c.log.Debug("hbone: ignoring malformed baggage", "peer", c.peer.String(), "error", err)
		}
		r.Baggage = b
	}
	return r
}

// ParseAuthority parses a CONNECT :authority naming an original
// destination: "ip:port" ("[ipv6]:port"), no zone, port not 0.
func ParseAuthority(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("authority %q is not ip:port", s)
	}
	if ap.Addr().Zone() != "" || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("authority %q: zone or port 0 not allowed", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// validFieldName: a lowercase token (RFC 9113 §8.2.1).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isTokenChar(c) || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

// validFieldValue: no NUL, CR or LF, no leading or trailing whitespace
// (RFC 9113 §8.2.1).
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	if s != "" && (s[0] == ' ' || s[0] == '\t' || s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		return false
	}
	return true
}

func connectionSpecific(name string) bool {
	switch name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "te":
		return true
	}
	return false
}
