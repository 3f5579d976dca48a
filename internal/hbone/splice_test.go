package hbone

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
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
