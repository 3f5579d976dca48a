package hbone

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Pool defaults.
const (
	DefaultDialTimeout     = 10 * time.Second
	DefaultPoolIdleTimeout = 5 * time.Minute
	DefaultPoolKeepAlive   = 30 * time.Second
)

// DialFunc dials the TCP connection under an HBONE connection.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Target describes one tunnel to open.
type Target struct {
	// Source is the identity to present: the client certificate is
	// Source's, from PoolOptions.Certificates.
	Source spiffe.ID
	// Destination lists the identities the server may present (at least
	// one); any other is refused during the handshake.
	Destination []spiffe.ID
	// Addr is the HBONE endpoint to dial (the destination's ip:15008, or
	// its waypoint's).
	Addr netip.AddrPort
	// SourceAddr, if valid, is the local address connections leave from
	// (with the default dialer, it is bound). It is part of the pool key,
	// so tunnels of different source pods never share a connection.
	SourceAddr netip.Addr
	// ServerName is sent as SNI if not empty.
	ServerName string
	// Dial overrides PoolOptions.Dial, e.g. to dial from inside the source
	// pod's network namespace. Targets with the same Key must dial alike:
	// a connection dialled for one serves them all.
	Dial DialFunc

	// Authority is the original destination ip:port, sent as :authority.
	Authority netip.AddrPort
	// ForwardedFor, if valid, is sent as "Forwarded: for=<addr>".
	ForwardedFor netip.Addr
	// Baggage, if not empty, is sent as the baggage header (see
	// PeerMetadata.Baggage).
	Baggage string
	// Header holds further request headers.
	Header http.Header
}

// PoolKey identifies the connections a tunnel may share: same source
// identity and address, same expected server identities, same endpoint.
type PoolKey struct {
	Source     spiffe.ID
	SourceAddr netip.Addr
	// Destination is the first expected server identity (in sorted order);
	// MoreDestinations the others, joined, usually empty.
	Destination      spiffe.ID
	MoreDestinations string
	Addr             netip.AddrPort
	ServerName       string
}

// Key is the pool key of t.
func (t Target) Key() PoolKey {
	k := PoolKey{Source: t.Source, SourceAddr: t.SourceAddr, Addr: t.Addr, ServerName: t.ServerName}
	switch len(t.Destination) {
	case 0:
	case 1:
		k.Destination = t.Destination[0]
	default:
		ids := slices.Clone(t.Destination)
		slices.SortFunc(ids, func(a, b spiffe.ID) int { return cmp.Compare(a.String(), b.String()) })
		ids = slices.Compact(ids)
		k.Destination = ids[0]
		var sb strings.Builder
		for _, id := range ids[1:] {
			sb.WriteString(id.String())
			sb.WriteByte(' ')
		}
		k.MoreDestinations = sb.String()
	}
	return k
}

func (t *Target) validate() error {
	switch {
	case t.Source == spiffe.ID{}:
		return errors.New("hbone: Target.Source is empty")
	case len(t.Destination) == 0:
		return errors.New("hbone: Target.Destination is empty")
	case !t.Addr.IsValid():
		return errors.New("hbone: Target.Addr is not set")
	case !t.Authority.IsValid() || t.Authority.Port() == 0:
		return errors.New("hbone: Target.Authority is not set")
	}
	return nil
}

// PoolOptions configure NewPool.
type PoolOptions struct {
	// Certificates supplies source identities' certificates and the roots
	// servers must chain to. Required.
	Certificates Certificates
	// Dial dials when a Target has no Dial of its own (default: a
	// net.Dialer bound to Target.SourceAddr when set).
	Dial DialFunc
	// DialTimeout bounds dial plus TLS handshake of a new connection
	// (default 10s). A dial is shared by every Connect waiting for it and
	// is not cut short when one of them gives up.
	DialTimeout time.Duration
	// Tuning of the HTTP/2 layer. IdleTimeout defaults to 5 minutes,
	// KeepAlive to 30s.
	Tuning Tuning
	// Logger (default: discard).
	Logger *slog.Logger
}

// Pool opens HBONE tunnels over pooled connections: one connection carries
// up to MaxConcurrentStreams tunnels of the same PoolKey; another is dialled
// when all are full; concurrent Connects that need a new connection share
// one dial. A connection that fails or receives GOAWAY takes no new
// tunnels; idle ones are closed after IdleTimeout. Safe for concurrent use.
type Pool struct {
	certs       Certificates
	dial        DialFunc
	dialTimeout time.Duration
	cfg         connConfig
	log         *slog.Logger
	stats       stats
	ctx         context.Context
	cancel      context.CancelFunc

	mu      sync.Mutex
	entries map[PoolKey]*poolEntry
	keys    map[*conn]PoolKey
	closed  bool
}

type poolEntry struct {
	conns []*conn
	dials []*dialCall
	// peerMax is the server's last SETTINGS_MAX_CONCURRENT_STREAMS (0 until
	// known): new connections assume it rather than wait for their own
	// SETTINGS, so that a server with a low limit is not sent streams it
	// would refuse.
	peerMax atomic.Uint32
}

// dialCall is a dial in progress that Connect calls wait on.
type dialCall struct {
	done    chan struct{}
	c       *conn
	err     error
	waiters int
}

// NewPool checks opts and returns an empty Pool.
func NewPool(opts PoolOptions) (*Pool, error) {
	if opts.Certificates == nil {
		return nil, errors.New("hbone.NewPool: Certificates is required")
	}
	cfg, err := opts.Tuning.connConfig(DefaultPoolIdleTimeout, DefaultPoolKeepAlive)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		certs:       opts.Certificates,
		dial:        opts.Dial,
		dialTimeout: opts.DialTimeout,
		cfg:         cfg,
		log:         opts.Logger,
		entries:     map[PoolKey]*poolEntry{},
		keys:        map[*conn]PoolKey{},
	}
	if p.dialTimeout <= 0 {
		p.dialTimeout = DefaultDialTimeout
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats { return p.stats.snapshot() }

// Conns returns the number of open connections for key.
func (p *Pool) Conns(key PoolKey) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[key]; e != nil {
		return len(e.conns)
	}
	return 0
}

const maxConnectAttempts = 4

// Connect opens a tunnel to t. On a 200 it returns the stream and the
// response (whose header may carry the destination's baggage); the caller
// must Close the stream. On another status it returns the response and a
// *StatusError. A stream the server did not process (refused, or cut by
// GOAWAY) is retried on another connection. ctx bounds the whole call
// (waiting for a connection, the response); it does not apply to the
// stream afterwards.
func (p *Pool) Connect(ctx context.Context, t Target) (*Stream, *Response, error) {
	if err := t.validate(); err != nil {
		return nil, nil, err
	}
	key := t.Key()
	// The source's current certificate: connections made with an older one
	// (renewed, or replaced after a root rotation) take no new tunnels.
	cert, err := p.certs.Certificate(ctx, t.Source)
	if err != nil {
		return nil, nil, fmt.Errorf("hbone: connecting to %s for %s: %w", t.Addr, t.Source, err)
	}
	for range maxConnectAttempts {
		var c *conn
		c, err = p.getConn(ctx, key, &t, cert)
		if err != nil {
			return nil, nil, err
		}
		var s *Stream
		s, err = c.openStream(&t)
		// A connection that failed before the server's SETTINGS arrived was
		// most likely refused in the handshake: report why rather than dial
		// again.
		again := func() bool {
			if !c.established.Load() {
				err = c.earlyFailure(ctx, err)
				return false
			}
			return retryable(err) && ctx.Err() == nil
		}
		if err != nil {
			if again() {
				continue
			}
			return nil, nil, err
		}
		p.stats.streamsOpened.Add(1)
		var resp *Response
		resp, err = s.awaitResponse(ctx)
		if err != nil {
			s.Close()
			if again() {
				p.stats.streamsRefused.Add(1)
				continue
			}
			return nil, nil, err
		}
		if resp.StatusCode != http.StatusOK {
			s.Close()
			p.stats.streamsRejected.Add(1)
			return nil, resp, &StatusError{StatusCode: resp.StatusCode, Header: resp.Header}
		}
		return s, resp, nil
	}
	return nil, nil, fmt.Errorf("hbone: CONNECT %s via %s: gave up after %d attempts: %w", t.Authority, t.Addr, maxConnectAttempts, err)
}

func (s *Stream) awaitResponse(ctx context.Context) (*Response, error) {
	select {
	case <-s.respCh:
	case <-ctx.Done():
		s.Reset()
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resp, s.respErr
}

// getConn returns a connection for key, made with cert, with a stream slot
// reserved.
func (p *Pool) getConn(ctx context.Context, key PoolKey, t *Target, cert *tls.Certificate) (*conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		e := p.entries[key]
		if e == nil {
			e = &poolEntry{}
			p.entries[key] = e
		}
		var stale []*conn
		e.conns = slices.DeleteFunc(e.conns, func(c *conn) bool {
			if c.clientCert != cert {
				stale = append(stale, c)
				return true
			}
			return false
		})
		if len(stale) > 0 {
			p.mu.Unlock()
			for _, c := range stale {
				c.drain()
			}
			p.log.Info("hbone: certificate renewed; older connections take no new tunnels", "source", key.Source.String(), "connections", len(stale))
			continue
		}
		for _, c := range e.conns {
			if c.tryReserve() {
				p.mu.Unlock()
				return c, nil
			}
		}
		joinLimit := p.cfg.maxStreams
		if v := e.peerMax.Load(); v > 0 {
			joinLimit = min(joinLimit, v)
		}
		var d *dialCall
		for _, dc := range e.dials {
			if dc.waiters < int(joinLimit) {
				d = dc
				break
			}
		}
		if d == nil {
			d = &dialCall{done: make(chan struct{})}
			e.dials = append(e.dials, d)
			go p.dialConn(key, *t, cert, d, &e.peerMax)
		}
		d.waiters++
		p.mu.Unlock()

		select {
		case <-d.done:
			if d.err != nil {
				return nil, d.err
			}
			if d.c.tryReserve() {
				return d.c, nil
			}
			if d.c.isClosed() && !d.c.established.Load() {
				// Closed before the server's SETTINGS: refused, most likely.
				return nil, d.c.earlyFailure(ctx, &ConnError{Err: errors.New("closed before the server accepted it")})
			}
			// Filled up (or failed) already: look again.
		case <-ctx.Done():
			p.mu.Lock()
			d.waiters--
			p.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

func (p *Pool) dialConn(key PoolKey, t Target, cert *tls.Certificate, d *dialCall, peerMax *atomic.Uint32) {
	ctx, cancel := context.WithTimeout(p.ctx, p.dialTimeout)
	c, err := p.handshake(ctx, &t, cert)
	cancel()
	if err == nil {
		c.peerMaxHint = peerMax
		if v := peerMax.Load(); v > 0 {
			c.peerMaxStreams = v
		}
	}
	if err != nil {
		p.stats.handshakeFailures.Add(1)
		err = fmt.Errorf("hbone: connecting to %s for %s: %w", t.Addr, t.Source, err)
	}
	p.mu.Lock()
	e := p.entries[key]
	e.dials = slices.DeleteFunc(e.dials, func(x *dialCall) bool { return x == d })
	if err == nil && p.closed {
		c.nc.Close()
		c, err = nil, ErrPoolClosed
	}
	if err == nil {
		e.conns = append(e.conns, c)
		p.keys[c] = key
		p.stats.connectionsOpened.Add(1)
		c.start()
	} else if len(e.conns) == 0 && len(e.dials) == 0 {
		delete(p.entries, key)
	}
	d.c, d.err = c, err
	p.mu.Unlock()
	close(d.done)
}

// handshake dials t.Addr, runs the mTLS handshake presenting cert and
// sends the HTTP/2 preface; the connection is returned unstarted.
func (p *Pool) handshake(ctx context.Context, t *Target, cert *tls.Certificate) (*conn, error) {
	dial := t.Dial
	if dial == nil {
		dial = p.dial
	}
	if dial == nil {
		d := &net.Dialer{}
		if t.SourceAddr.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: t.SourceAddr.AsSlice()}
		}
		dial = d.DialContext
	}
	raw, err := dial(ctx, "tcp", t.Addr.String())
	if err != nil {
		return nil, err
	}
	cork := newCorkConn(raw)
	tc := tls.Client(cork, clientTLSConfig(cert, p.certs, t.Destination, t.ServerName))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ALPN {
		raw.Close()
		return nil, fmt.Errorf("server did not negotiate ALPN %q", ALPN)
	}
	peer, err := peerIdentity(cs)
	if err != nil {
		raw.Close()
		return nil, err
	}
	c := newConn(tc, false, p.cfg, p.log, &p.stats)
	c.owner, c.peer, c.cork, c.clientCert = p, peer, cork, cert
	if dl, ok := ctx.Deadline(); ok {
		tc.SetWriteDeadline(dl)
	}
	b := append([]byte(clientPreface), c.prefaceFrames(nil)...)
	if err := c.write(b); err != nil {
		raw.Close()
		return nil, err
	}
	tc.SetWriteDeadline(time.Time{})
	return c, nil
}

// connClosed implements connOwner.
func (p *Pool) connClosed(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key, ok := p.keys[c]
	if !ok {
		return
	}
	delete(p.keys, c)
	if e := p.entries[key]; e != nil {
		e.conns = slices.DeleteFunc(e.conns, func(x *conn) bool { return x == c })
		if len(e.conns) == 0 && len(e.dials) == 0 {
			delete(p.entries, key)
		}
	}
}

// Drain stops new tunnels on the connections whose key matches (a pod left
// the node, a certificate or the roots were replaced): they are closed as
// soon as their open tunnels end. Later Connects for those keys dial anew.
func (p *Pool) Drain(match func(PoolKey) bool) {
	p.mu.Lock()
	var conns []*conn
	for key, e := range p.entries {
		if match(key) {
			conns = append(conns, e.conns...)
			e.conns = nil
			if len(e.dials) == 0 {
				delete(p.entries, key)
			}
		}
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
}

// Close closes every connection (open streams fail) and makes Connect
// fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var conns []*conn
	for c := range p.keys {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.cancel()
	for _, c := range conns {
		c.close()
	}
	return nil
}

// openStream sends the CONNECT on c, using the slot tryReserve took.
func (c *conn) openStream(t *Target) (*Stream, error) {
	fields := make([]hpack.HeaderField, 0, 4+len(t.Header))
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: http.MethodConnect},
		hpack.HeaderField{Name: ":authority", Value: t.Authority.String()})
	if t.ForwardedFor.IsValid() {
		fields = append(fields, hpack.HeaderField{Name: "forwarded", Value: FormatForwarded(t.ForwardedFor)})
	}
	if t.Baggage != "" {
		fields = append(fields, hpack.HeaderField{Name: "baggage", Value: t.Baggage})
	}
	fields = appendHeaderFields(fields, t.Header)
	return c.openStreamFields(fields)
}

// openStreamFields sends a request with exactly these header fields.
func (c *conn) openStreamFields(fields []hpack.HeaderField) (*Stream, error) {
	c.wmu.Lock()
	// Wait for queue room first: from taking the stream ID until its
	// HEADERS are queued wmu must not be released, or a later stream's
	// HEADERS could overtake (stream IDs must reach the peer in order).
	c.waitRoomLocked()
	c.mu.Lock()
	c.reserved--
	if c.closed || c.closing || c.nextStreamID > maxStreamID {
		closeNow := c.releaseLocked()
		c.mu.Unlock()
		c.wmu.Unlock()
		if closeNow {
			go c.teardown(errLocalClose)
		}
		return nil, &ConnError{Err: errUnprocessed}
	}
	id := c.nextStreamID
	c.nextStreamID += 2
	s := newStream(c, id)
	s.respCh = make(chan struct{})
	c.streams[id] = s
	c.mu.Unlock()
	err := c.writeHeadersLocked(id, fields, false)
	c.wmu.Unlock()
	if err != nil {
		// The connection is failing; the server never saw the request.
		s.fail(&ConnError{Err: errors.Join(err, errUnprocessed)}, true)
		return nil, &ConnError{Err: errors.Join(err, errUnprocessed)}
	}
	return s, nil
}

// onResponse handles a complete response header block (read loop).
func (c *conn) onResponse(id uint32, end bool) error {
	c.mu.Lock()
	s := c.streams[id]
	idle := s == nil && c.peerStreamIdleLocked(id)
	c.mu.Unlock()
	if idle {
		return connErr(ErrCodeProtocol, "HEADERS on idle stream %d", id)
	}
	if s == nil || s.respCh == nil {
		return nil // reset meanwhile; the block was decoded, which is all that matters
	}
	if s.gotResp { // trailers: not allowed on a CONNECT stream
		s.resetFromReadLoop(ErrCodeProtocol)
		return nil
	}
	resp, err := c.parseResponse()
	if err == nil && resp == nil && end {
		err = errors.New("interim response ends the stream")
	}
	if err != nil {
		s.setResponse(nil, fmt.Errorf("hbone: malformed response: %w", err))
		s.resetFromReadLoop(ErrCodeProtocol)
		return nil
	}
	if resp == nil {
		return nil // 1xx: wait for the final response
	}
	s.gotResp = true
	s.setResponse(resp, nil)
	if end {
		s.mu.Lock()
		s.eof = true
		s.mu.Unlock()
		notify(s.rwake)
		c.remoteEnded(s)
	}
	return nil
}

// parseResponse checks the decoded response header block; a nil response
// with a nil error is an interim (1xx) response.
func (c *conn) parseResponse() (*Response, error) {
	if c.htooBig {
		return nil, fmt.Errorf("header list exceeds %d bytes", c.cfg.maxHeaderBytes)
	}
	status := ""
	regular := false
	var h http.Header
	for _, f := range c.hfields {
		if strings.HasPrefix(f.Name, ":") {
			if regular || f.Name != ":status" || status != "" {
				return nil, fmt.Errorf("unexpected pseudo-header %s", f.Name)
			}
			status = f.Value
			continue
		}
		regular = true
		if !validFieldName(f.Name) || !validFieldValue(f.Value) || connectionSpecific(f.Name) {
			return nil, fmt.Errorf("invalid header %q", f.Name)
		}
		if h == nil {
			h = http.Header{}
		}
		k := http.CanonicalHeaderKey(f.Name)
		h[k] = append(h[k], f.Value)
	}
	code, err := strconv.Atoi(status)
	if len(status) != 3 || err != nil || code < 100 {
		return nil, fmt.Errorf("bad :status %q", status)
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return nil, errors.New("101 is not allowed in HTTP/2")
		}
		return nil, nil
	}
	return &Response{StatusCode: code, Header: h}, nil
}
