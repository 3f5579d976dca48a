package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// rawRequest sends a request with exactly the given header fields on a
// pooled connection and returns the response.
func rawRequest(t *testing.T, e *env, fields ...string) (*Response, error) {
	t.Helper()
	ctx := testCtx(t)
	tgt := e.target()
	cert, err := e.certs.Certificate(ctx, tgt.Source)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.pool.getConn(ctx, tgt.Key(), &tgt, cert)
	if err != nil {
		t.Fatal(err)
	}
	var hf []hpack.HeaderField
	for i := 0; i+1 < len(fields); i += 2 {
		hf = append(hf, hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	s, err := c.openStreamFields(hf)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return s.awaitResponse(ctx)
}

func TestRequestValidation(t *testing.T) {
	got := make(chan *Request, 1)
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		got <- r
		r.Reject(http.StatusServiceUnavailable, nil) // the handler's own answer
	}})
	big := strings.Repeat("x", 4<<10)
	tests := []struct {
		name   string
		fields []string
		want   int
	}{
		{"ok", []string{":method", "CONNECT", ":authority", "10.0.0.1:80"}, 503},
		{"ok IPv6", []string{":method", "CONNECT", ":authority", "[2001:db8::1]:443"}, 503},
		{"ok bad baggage is ignored", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "baggage", "a=b,=nokey"}, 503},
		{"host name authority", []string{":method", "CONNECT", ":authority", "example.com:80"}, 400},
		{"no port", []string{":method", "CONNECT", ":authority", "10.0.0.1"}, 400},
		{"port 0", []string{":method", "CONNECT", ":authority", "10.0.0.1:0"}, 400},
		{"port too big", []string{":method", "CONNECT", ":authority", "10.0.0.1:65536"}, 400},
		{"IPv6 without brackets", []string{":method", "CONNECT", ":authority", "2001:db8::1:443"}, 400},
		{"zone", []string{":method", "CONNECT", ":authority", "[fe80::1%eth0]:80"}, 400},
		{"no authority", []string{":method", "CONNECT"}, 400},
		{"empty authority", []string{":method", "CONNECT", ":authority", ""}, 400},
		{"no method", []string{":authority", "10.0.0.1:80"}, 400},
		{"GET", []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}, 405},
		{"POST", []string{":method", "POST", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}, 405},
		{"CONNECT with path", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":path", "/"}, 400},
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}, 400},
		{"repeated authority", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":authority", "10.0.0.2:80"}, 400},
		{"unknown pseudo-header", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":foo", "x"}, 400},
		{"pseudo after regular", []string{":method", "CONNECT", "x-a", "1", ":authority", "10.0.0.1:80"}, 400},
		{"uppercase name", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "X-Upper", "1"}, 400},
		{"connection header", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "connection", "close"}, 400},
		{"value with newline", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "x-a", "1\n2"}, 400},
		{"malformed Forwarded", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "forwarded", "for=[::1]"}, 400},
		{"headers too large", append([]string{":method", "CONNECT", ":authority", "10.0.0.1:80"},
			"x-1", big, "x-2", big, "x-3", big, "x-4", big, "x-5", big, "x-6", big, "x-7", big, "x-8", big, "x-9", big), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := rawRequest(t, e, tt.fields...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 503 {
				r := <-got
				if want, _ := ParseAuthority(tt.fields[3]); r.Authority != want {
					t.Errorf("Authority = %v", r.Authority)
				}
			}
		})
	}
	if n := e.srv.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("malformed requests cost the connection: %d connections", n)
	}
}

func TestRejectAndUnanswered(t *testing.T) {
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		if r.Authority.Port() == 1 {
			r.Reject(http.StatusForbidden, http.Header{"X-Reason": {"policy"}})
		}
		// port 2: the handler forgets to answer
	}})
	ctx := testCtx(t)
	tgt := e.target()
	tgt.Authority = netip.MustParseAddrPort("10.0.0.1:1")
	s, resp, err := e.pool.Connect(ctx, tgt)
	var se *StatusError
	if s != nil || !errors.As(err, &se) || se.StatusCode != 403 || resp.Header.Get("X-Reason") != "policy" {
		t.Fatalf("Connect = %v, %+v, %v", s, resp, err)
	}
	tgt.Authority = netip.MustParseAddrPort("10.0.0.1:2")
	_, resp, err = e.pool.Connect(ctx, tgt)
	if !errors.As(err, &se) || se.StatusCode != 500 {
		t.Fatalf("unanswered: %+v, %v", resp, err)
	}
	if st := e.srv.Stats(); st.StreamsRejected != 2 {
		t.Errorf("server stats %+v", st)
	}
	if st := e.pool.Stats(); st.StreamsRejected != 2 {
		t.Errorf("pool stats %+v", st)
	}
}

// holdHandler accepts and keeps streams open until release is closed.
func holdHandler(release chan struct{}) func(context.Context, *Request) {
	return func(ctx context.Context, r *Request) {
		if _, err := r.Accept(nil); err != nil {
			return
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
}

func connectN(t *testing.T, p *Pool, tgt Target, n int) []*Stream {
	t.Helper()
	ctx := testCtx(t)
	streams := make([]*Stream, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { streams[i], _, errs[i] = p.Connect(ctx, tgt) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, s := range streams {
			s.Close()
		}
	})
	return streams
}

func TestStreamLimitOpensSecondConnection(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	e := newEnv(t, envOptions{handler: holdHandler(release)})
	tgt := e.target()
	connectN(t, e.pool, tgt, 101)
	if n := e.pool.Conns(tgt.Key()); n != 2 {
		t.Errorf("pool has %d connections, want 2", n)
	}
	st := e.srv.Stats()
	if st.ConnectionsOpened != 2 || st.StreamsOpened != 101 || st.StreamsRefused != 0 {
		t.Errorf("server stats %+v", st)
	}
}

func TestConcurrentConnectSharesDial(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	e := newEnv(t, envOptions{handler: holdHandler(release)})
	connectN(t, e.pool, e.target(), 60)
	if st := e.pool.Stats(); st.ConnectionsOpened != 1 {
		t.Errorf("60 concurrent Connects dialled %d connections, want 1", st.ConnectionsOpened)
	}
}

// TestServerLimitRefusesAndPoolRetries: the server allows fewer streams than
// the pool assumes before its SETTINGS arrive; streams over the limit are
// refused (REFUSED_STREAM) and retried on another connection.
func TestServerLimitRefusesAndPoolRetries(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	e := newEnv(t, envOptions{
		handler: holdHandler(release),
		server:  ServerOptions{Tuning: Tuning{MaxConcurrentStreams: 3}},
	})
	connectN(t, e.pool, e.target(), 10)
	if n := e.srv.Stats().ConnectionsOpened; n < 4 {
		t.Errorf("%d connections for 10 streams at 3 per connection", n)
	}
	// Now the pool knows the limit: new connections respect it from the
	// start, nothing is refused.
	refused := e.srv.Stats().StreamsRefused
	connectN(t, e.pool, e.target(), 7)
	if st := e.srv.Stats(); st.StreamsRefused != refused {
		t.Errorf("%d more streams refused with the limit known", st.StreamsRefused-refused)
	}
}

func TestPoolIdleTimeout(t *testing.T) {
	e := newEnv(t, envOptions{pool: PoolOptions{Tuning: Tuning{IdleTimeout: 50 * time.Millisecond}}})
	s := e.connect(testCtx(t))
	s.CloseWrite()
	io.ReadAll(s)
	s.Close()
	key := e.target().Key()
	eventually(t, "the idle connection to close", func() bool {
		return e.pool.Conns(key) == 0 && e.srv.Stats().ConnectionsClosed == 1
	})
	// A new tunnel dials again.
	s = e.connect(testCtx(t))
	s.Close()
	if n := e.srv.Stats().ConnectionsOpened; n != 2 {
		t.Errorf("%d connections opened, want 2", n)
	}
}

func TestIdleTimeoutSparesBusyConnections(t *testing.T) {
	e := newEnv(t, envOptions{
		server: ServerOptions{Tuning: Tuning{IdleTimeout: 30 * time.Millisecond}},
		pool:   PoolOptions{Tuning: Tuning{IdleTimeout: 30 * time.Millisecond}},
	})
	s := e.connect(testCtx(t))
	defer s.Close()
	for range 5 { // a stream is open: no idle close, however long it is quiet
		time.Sleep(30 * time.Millisecond)
		s.Write([]byte("x"))
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.srv.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("%d connections", n)
	}
}

func TestServerIdleTimeout(t *testing.T) {
	e := newEnv(t, envOptions{
		server: ServerOptions{Tuning: Tuning{IdleTimeout: 50 * time.Millisecond}},
		pool:   PoolOptions{Tuning: Tuning{IdleTimeout: -1}},
	})
	s := e.connect(testCtx(t))
	s.CloseWrite()
	io.ReadAll(s)
	s.Close()
	key := e.target().Key()
	eventually(t, "the server to close the idle connection", func() bool { return e.pool.Conns(key) == 0 })
	s = e.connect(testCtx(t))
	s.Close()
}

func TestPoolDrain(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.connect(testCtx(t))
	key := e.target().Key()
	e.pool.Drain(func(k PoolKey) bool { return k.Source == clientID })
	if n := e.pool.Conns(key); n != 0 {
		t.Fatalf("%d connections after Drain", n)
	}
	// The open tunnel still works; a new one dials a new connection.
	old.Write([]byte("x"))
	if _, err := io.ReadFull(old, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	s := e.connect(testCtx(t))
	s.Close()
	if n := e.srv.Stats().ConnectionsOpened; n != 2 {
		t.Errorf("%d connections opened, want 2", n)
	}
	// The drained connection closes once its last tunnel ends.
	old.CloseWrite()
	io.ReadAll(old)
	old.Close()
	eventually(t, "the drained connection to close", func() bool { return e.srv.Stats().ConnectionsClosed == 1 })
}

// A renewed client certificate: the connection made with the old one takes
// no new tunnels (the next one dials and presents the new certificate), and
// the tunnel it carries keeps working until it ends.
func TestPoolDrainsOnCertificateRenewal(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.connect(testCtx(t))
	renewed, err := mint(e.ca, clientID)
	if err != nil {
		t.Fatal(err)
	}
	e.certs.mu.Lock()
	e.certs.certs[clientID] = renewed
	e.certs.mu.Unlock()

	s, _, err := e.pool.Connect(testCtx(t), e.target())
	if err != nil {
		t.Fatal(err)
	}
	if s.c == old.c || s.c.clientCert != renewed {
		t.Fatal("the tunnel after renewal went on the old connection")
	}
	if n := e.pool.Conns(e.target().Key()); n != 1 {
		t.Errorf("%d pooled connections, want 1 (the old one drained)", n)
	}
	s.Close()
	finishOnDrained(t, old)
}

// Server.Drain: matching connections get GOAWAY (the pool dials anew) and
// close when their tunnels end; the server keeps accepting.
func TestServerDrain(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.connect(testCtx(t))
	e.srv.Drain(func(local net.Addr) bool { return local.String() == e.addr.String() })
	eventually(t, "the pool to see GOAWAY", func() bool {
		old.c.mu.Lock()
		defer old.c.mu.Unlock()
		return old.c.goAwayRecv
	})
	s := e.connect(testCtx(t))
	if s.c == old.c {
		t.Fatal("a new tunnel went on the drained connection")
	}
	s.Close()
	finishOnDrained(t, old)
}

// finishOnDrained checks that a tunnel on a drained connection still
// carries bytes, ends it, and waits for the connection to close.
func finishOnDrained(t *testing.T, old *Stream) {
	t.Helper()
	old.Write([]byte("x"))
	if _, err := io.ReadFull(old, make([]byte, 1)); err != nil {
		t.Fatalf("the tunnel on the drained connection broke: %v", err)
	}
	old.CloseWrite()
	io.ReadAll(old)
	old.Close()
	eventually(t, "the drained connection to close", func() bool { return old.c.isClosed() })
}

func TestWrongServerIdentity(t *testing.T) {
	e := newEnv(t, envOptions{})
	tgt := e.target()
	tgt.Destination = []spiffe.ID{otherID}
	_, _, err := e.pool.Connect(testCtx(t), tgt)
	var ie *IdentityError
	if !errors.As(err, &ie) || ie.Got != serverID {
		t.Fatalf("Connect to a server with the wrong identity: %v", err)
	}
	// One of several expected identities is enough.
	tgt.Destination = []spiffe.ID{otherID, serverID}
	s, _, err := e.pool.Connect(testCtx(t), tgt)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestServerIdentityPerConnection(t *testing.T) {
	// The server picks its identity by the address the client reached.
	e := newEnv(t, envOptions{
		listenAddr: "127.0.0.2:0",
		server: ServerOptions{Identity: func(local net.Addr, sni string) (spiffe.ID, error) {
			if sni == "other" {
				return otherID, nil
			}
			if local.(*net.TCPAddr).IP.Equal(net.ParseIP("127.0.0.2")) {
				return serverID, nil
			}
			return spiffe.ID{}, errors.New("no workload here")
		}},
	})
	s := e.connect(testCtx(t))
	s.Close()
	tgt := e.target()
	tgt.ServerName, tgt.Destination = "other", []spiffe.ID{otherID}
	s, _, err := e.pool.Connect(testCtx(t), tgt)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestClientCertFromAnotherCA(t *testing.T) {
	e := newEnv(t, envOptions{noPool: true})
	rogue := newTestCerts(t, newTestCA(t))
	rogue.roots = e.certs.Roots() // trusts the server, but its own certificate is foreign
	p := e.newPool(PoolOptions{Certificates: rogue})
	_, _, err := p.Connect(testCtx(t), e.target())
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("server accepted a client certificate from another CA: %v", err)
	}
	eventually(t, "the refusal to be counted", func() bool { return e.srv.Stats().HandshakeFailures == 1 })
	if n := p.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("the pool dialled %d times, want 1 (no retry after a handshake refusal)", n)
	}
	if !strings.Contains(e.logs.String(), "refused connection") {
		t.Errorf("refusal not logged:\n%s", e.logs)
	}
}

func TestServerFromAnotherCA(t *testing.T) {
	e := newEnv(t, envOptions{noPool: true})
	p := e.newPool(PoolOptions{Certificates: newTestCerts(t, newTestCA(t))})
	if _, _, err := p.Connect(testCtx(t), e.target()); err == nil || !strings.Contains(err.Error(), "mesh roots") {
		t.Fatalf("client accepted a server from another CA: %v", err)
	}
}

func dialRawTLS(t *testing.T, e *env, cfg *tls.Config) error {
	t.Helper()
	nc, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	// TLS 1.3: the server judges the client's certificate after the
	// client's handshake completes; its verdict arrives as an alert.
	tc.Write([]byte(clientPreface))
	_, err = tc.Read(make([]byte, 1))
	return err
}

func TestClientWithoutCertificate(t *testing.T) {
	e := newEnv(t, envOptions{noPool: true})
	err := dialRawTLS(t, e, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("client without certificate: %v", err)
	}
	eventually(t, "the refusal to be counted", func() bool { return e.srv.Stats().HandshakeFailures == 1 })
}

func TestClientWithoutALPN(t *testing.T) {
	e := newEnv(t, envOptions{noPool: true})
	cert, _ := e.certs.Certificate(context.Background(), clientID)
	err := dialRawTLS(t, e, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}})
	if err == nil {
		t.Fatal("server kept a connection without ALPN h2")
	}
	err = dialRawTLS(t, e, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}})
	if err == nil {
		t.Fatal("server accepted ALPN http/1.1")
	}
}

func TestGarbageAndSlowClients(t *testing.T) {
	e := newEnv(t, envOptions{server: ServerOptions{HandshakeTimeout: time.Second}})
	dial := func() net.Conn {
		nc, err := net.Dial("tcp", e.addr.String())
		if err != nil {
			t.Error(err)
		}
		return nc
	}
	cert, _ := e.certs.Certificate(context.Background(), clientID)
	clients := map[string]func() (net.Conn, error){
		"garbage instead of a ClientHello": func() (net.Conn, error) {
			nc := dial()
			_, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			return nc, err
		},
		"silent client": func() (net.Conn, error) { return dial(), nil },
		"slowloris (a record header, then nothing)": func() (net.Conn, error) {
			nc := dial()
			_, err := nc.Write([]byte{0x16, 0x03, 0x01, 0x02})
			return nc, err
		},
		"mTLS, then no HTTP/2 preface": func() (net.Conn, error) {
			tc := tls.Client(dial(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2"}})
			return tc, tc.Handshake()
		},
	}
	var wg sync.WaitGroup
	for name, open := range clients {
		wg.Go(func() {
			nc, err := open()
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			defer nc.Close()
			// The server must close the connection (well before this).
			nc.SetReadDeadline(time.Now().Add(timeout))
			_, err = io.Copy(io.Discard, nc)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("%s: the server did not close the connection", name)
			}
		})
	}
	wg.Wait()
	eventually(t, "four refusals", func() bool { return e.srv.Stats().HandshakeFailures == 4 })
	if logs := e.logs.String(); strings.Count(logs, "refused connection") != 4 {
		t.Errorf("refusals not logged:\n%s", logs)
	}
	// The server still serves.
	s := e.connect(testCtx(t))
	s.Close()
}

func TestGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		<-release
		s.Write([]byte("drained"))
		s.CloseWrite()
	}})
	s := e.connect(testCtx(t))
	defer s.Close()

	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(testCtx(t)) }()
	key := e.target().Key()
	// The GOAWAY takes the connection out of the pool for new tunnels,
	// and the listener is closed: new tunnels fail...
	eventually(t, "GOAWAY to reach the pool", func() bool {
		e.pool.mu.Lock()
		defer e.pool.mu.Unlock()
		ent := e.pool.entries[key]
		return ent != nil && len(ent.conns) == 1 && !ent.conns[0].tryReserveCheck()
	})
	if _, _, err := e.pool.Connect(testCtx(t), e.target()); err == nil {
		t.Fatal("Connect succeeded during shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a stream open", err)
	case <-time.After(20 * time.Millisecond):
	}
	// ...while the open one finishes.
	close(release)
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "drained" {
		t.Fatalf("open stream during shutdown: %q, %v", got, err)
	}
	s.CloseWrite()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-e.served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

// tryReserveCheck reports whether c would take a new stream, without
// taking it.
func (c *conn) tryReserveCheck() bool {
	if !c.tryReserve() {
		return false
	}
	c.unreserve()
	return true
}

func TestShutdownDeadline(t *testing.T) {
	e := newEnv(t, envOptions{handler: holdHandler(make(chan struct{}))})
	s := e.connect(testCtx(t))
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	// The stream was cut.
	s.SetReadDeadline(time.Now().Add(timeout))
	if _, err := s.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) || errors.Is(err, errDeadline) {
		t.Fatalf("Read after forced shutdown: %v", err)
	}
}

// freezer forwards TCP both ways until frozen, then stops moving bytes
// (a peer that hangs without closing its socket).
type freezer struct {
	l      net.Listener
	frozen chan struct{}
}

func newFreezer(t *testing.T, to netip.AddrPort) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l, frozen: make(chan struct{})}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", to.String())
			if err != nil {
				a.Close()
				continue
			}
			t.Cleanup(func() { a.Close(); b.Close() })
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					select {
					case <-f.frozen:
						return
					default:
					}
					if n > 0 {
						dst.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}
			go pipe(a, b)
			go pipe(b, a)
		}
	}()
	return f
}

func TestKeepAliveDetectsHungPeer(t *testing.T) {
	e := newEnv(t, envOptions{
		pool: PoolOptions{Tuning: Tuning{KeepAlive: 30 * time.Millisecond, KeepAliveTimeout: time.Second, IdleTimeout: -1}},
	})
	f := newFreezer(t, e.addr)
	tgt := e.target()
	tgt.Addr = f.l.Addr().(*net.TCPAddr).AddrPort()
	s, _, err := e.pool.Connect(testCtx(t), tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Quiet but answering: the connection stays.
	time.Sleep(150 * time.Millisecond)
	if e.pool.Conns(tgt.Key()) != 1 {
		t.Fatal("keepalive closed a healthy connection")
	}
	close(f.frozen)
	eventually(t, "keepalive to drop the hung connection", func() bool { return e.pool.Conns(tgt.Key()) == 0 })
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream on a dropped connection still reads")
	}
}
