package hbone

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
)

// relayPair is a ztunnel pair in miniature: the client side accepts plain
// TCP and tunnels it with Pool.Connect + Splice; the server side's handler
// dials the "application" and Splices the stream to it.
type relayPair struct {
	e        *env
	outbound net.Listener // where applications connect
	results  chan SpliceResult
	inbound  chan SpliceResult
}

func newRelayPair(t *testing.T, app net.Addr, serverTuning, poolTuning Tuning) *relayPair {
	rp := &relayPair{results: make(chan SpliceResult, 16), inbound: make(chan SpliceResult, 16)}
	rp.e = newEnv(t, envOptions{
		server: ServerOptions{Tuning: serverTuning},
		pool:   PoolOptions{Tuning: poolTuning},
		handler: func(ctx context.Context, r *Request) {
			up, err := net.Dial("tcp", app.String())
			if err != nil {
				r.Reject(http.StatusServiceUnavailable, nil)
				return
			}
			s, err := r.Accept(nil)
			if err != nil {
				up.Close()
				return
			}
			rp.inbound <- Splice(ctx, s, up)
		},
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rp.outbound = l
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				s, _, err := rp.e.pool.Connect(context.Background(), rp.e.target())
				if err != nil {
					down.Close()
					return
				}
				rp.results <- Splice(context.Background(), down, s)
			}()
		}
	}()
	return rp
}

func echoServer(t testing.TB) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return l
}

func TestSpliceRelay(t *testing.T) {
	app := echoServer(t)
	rp := newRelayPair(t, app.Addr(), Tuning{}, Tuning{})
	c, err := net.Dial("tcp", rp.outbound.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("0123456789"), 100_000)
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite() // FIN travels as END_STREAM, and back
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	out := <-rp.results
	if out.Err != nil || out.AtoB != int64(len(msg)) || out.BtoA != int64(len(msg)) {
		t.Fatalf("outbound splice: %+v", out)
	}
	in := <-rp.inbound
	if in.Err != nil || in.AtoB != int64(len(msg)) || in.BtoA != int64(len(msg)) {
		t.Fatalf("inbound splice: %+v", in)
	}
}

// TestSpliceResetPropagates: an application that resets its connection
// makes the other application see a reset too.
func TestSpliceResetPropagates(t *testing.T) {
	appConns := make(chan net.Conn, 1)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		c, err := app.Accept()
		if err == nil {
			appConns <- c
		}
	}()
	rp := newRelayPair(t, app.Addr(), Tuning{}, Tuning{})
	c, err := net.Dial("tcp", rp.outbound.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hi"))
	server := <-appConns
	io.ReadFull(server, make([]byte, 2))
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // RST
	_, err = io.ReadAll(c)
	if err == nil {
		t.Fatal("client saw a clean close after the server reset")
	}
	if out := <-rp.results; out.Err == nil {
		t.Errorf("outbound splice reported no error: %+v", out)
	}
	var se *StreamError
	if in := <-rp.inbound; in.Err == nil || errors.As(in.Err, &se) {
		t.Errorf("inbound splice error: %v", in.Err)
	}
}

func TestSpliceContextCancel(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	defer a2.Close()
	defer b2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan SpliceResult)
	go func() { done <- Splice(ctx, a1, b1) }()
	cancel()
	if res := <-done; !errors.Is(res.Err, context.Canceled) {
		t.Fatalf("Splice after cancel: %+v", res)
	}
}

// TestWriteToSlowTCPDestination covers the read loop's direct writes to a
// WriteTo destination (Stream.onData): small frames go straight to the
// socket while it takes them, the rest is queued in order once it is full,
// the read loop never waits for it (another stream on the same connection
// keeps working), every byte arrives once and in order, and a destination
// that resets makes WriteTo fail.
func TestWriteToSlowTCPDestination(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { // accepted sockets inherit it
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		return serr
	}}
	app, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	appConns := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			appConns <- c
		}
	}()
	type result struct {
		n   int64
		err error
	}
	results := make(chan result, 2)
	slowAuthority := netip.MustParseAddrPort("10.0.0.9:9")
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		if r.Authority != slowAuthority {
			echoHandler(ctx, r)
			return
		}
		up, err := net.Dial("tcp", app.Addr().String())
		if err != nil {
			r.Reject(http.StatusServiceUnavailable, nil)
			return
		}
		defer up.Close()
		up.(*net.TCPConn).SetWriteBuffer(4 << 10)
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		n, err := s.WriteTo(up)
		results <- result{n, err}
	}})
	ctx := testCtx(t)
	slowTarget := e.target()
	slowTarget.Authority = slowAuthority
	connectSlow := func() (*Stream, net.Conn) {
		s, _, err := e.pool.Connect(ctx, slowTarget)
		if err != nil {
			t.Fatal(err)
		}
		return s, <-appConns
	}

	// 3 MiB in 1 KiB writes (one small DATA frame each): more than the
	// socket buffers and the 1 MiB stream window hold.
	const size = 3 << 20
	want, _ := io.ReadAll(pattern(7, size))
	s, dst := connectSlow()
	defer s.Close()
	sent := make(chan error, 1)
	go func() {
		for p := want; len(p) > 0; p = p[1<<10:] {
			if _, err := s.Write(p[:1<<10]); err != nil {
				sent <- err
				return
			}
		}
		sent <- s.CloseWrite()
	}()
	// The destination reads nothing yet; once its buffers are full, the
	// rest waits in the stream. Another stream of the connection still
	// gets its echo meanwhile.
	for i := range 3 {
		echo := e.connect(ctx)
		msg := []byte("ping " + string(rune('0'+i)))
		echo.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(echo, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo on the same connection while the destination does not read: %q, %v", got, err)
		}
		echo.Close()
	}
	got, err := io.ReadAll(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("destination read %d of %d bytes (equal=%v), %v", len(got), size, bytes.Equal(got, want), err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if r := <-results; r.err != nil || r.n != size {
		t.Fatalf("WriteTo = %d, %v; want %d, nil", r.n, r.err, size)
	}
	if n := e.srv.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("%d connections, want 1", n)
	}

	// A destination that resets: WriteTo fails instead of waiting.
	s2, dst2 := connectSlow()
	defer s2.Close()
	s2.Write([]byte("before"))
	io.ReadFull(dst2, make([]byte, len("before")))
	dst2.(*net.TCPConn).SetLinger(0)
	dst2.Close()
	go func() {
		for {
			if _, err := s2.Write(make([]byte, 1<<10)); err != nil {
				return
			}
		}
	}()
	if r := <-results; r.err == nil {
		t.Fatalf("WriteTo to a reset destination: %d bytes, no error", r.n)
	}
}
