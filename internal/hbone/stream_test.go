package hbone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

func TestConnectRoundTrip(t *testing.T) {
	reqs := make(chan *Request, 1)
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		reqs <- r
		s, err := r.Accept(http.Header{"Baggage": {PeerMetadata{Namespace: "echo-ns", Workload: "echo"}.Baggage()}})
		if err != nil {
			return
		}
		io.Copy(s, s)
		s.CloseWrite()
	}})
	ctx := testCtx(t)
	tgt := e.target()
	tgt.ForwardedFor = netip.MustParseAddr("10.1.2.3")
	tgt.Baggage = PeerMetadata{Namespace: "sleep-ns", Workload: "sleep", Zone: "zone-a"}.Baggage()
	tgt.Header = http.Header{"X-Extra": {"1"}}
	s, resp, err := e.pool.Connect(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	b, _ := ParseBaggage(resp.Header.Values(HeaderBaggage))
	if got := b.PeerMetadata(); got.Namespace != "echo-ns" || got.Workload != "echo" {
		t.Errorf("response baggage = %+v", got)
	}

	r := <-reqs
	if r.Authority != testAuthority {
		t.Errorf("Authority = %v", r.Authority)
	}
	if r.ForwardedFor != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("ForwardedFor = %v", r.ForwardedFor)
	}
	if m := r.Baggage.PeerMetadata(); m.Namespace != "sleep-ns" || m.Workload != "sleep" || m.Zone != "zone-a" || m.WorkloadKind != "deployment" {
		t.Errorf("Baggage = %+v", m)
	}
	if r.Peer != clientID {
		t.Errorf("Peer = %v", r.Peer)
	}
	if len(r.TLS.PeerCertificates) == 0 || r.TLS.NegotiatedProtocol != "h2" {
		t.Errorf("TLS state: %d certs, ALPN %q", len(r.TLS.PeerCertificates), r.TLS.NegotiatedProtocol)
	}
	if r.Header.Get("X-Extra") != "1" {
		t.Errorf("X-Extra = %q", r.Header.Get("X-Extra"))
	}

	msg := []byte("hello, \x00 tunnel\r\n")
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("after CloseWrite: Read = %d, %v; want EOF", n, err)
	}
	if s.BytesWritten() != int64(len(msg)) || s.BytesRead() != int64(len(msg)) {
		t.Errorf("byte counts %d/%d", s.BytesWritten(), s.BytesRead())
	}
	st := e.srv.Stats()
	if st.ConnectionsOpened != 1 || st.StreamsOpened != 1 {
		t.Errorf("server stats %+v", st)
	}
}

func TestHalfCloseClientFirst(t *testing.T) {
	done := make(chan error, 1)
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			done <- err
			return
		}
		got, err := io.ReadAll(s) // until the client's END_STREAM
		if err != nil || string(got) != "ping" {
			done <- errors.Join(err, errors.New("server read "+string(got)))
			return
		}
		// The client's side is closed; ours still works.
		if _, err := s.Write([]byte("pong")); err != nil {
			done <- err
			return
		}
		done <- s.CloseWrite()
	}})
	s := e.connect(testCtx(t))
	defer s.Close()
	s.Write([]byte("ping"))
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHalfCloseServerFirst(t *testing.T) {
	done := make(chan error, 1)
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			done <- err
			return
		}
		s.Write([]byte("hello"))
		if err := s.CloseWrite(); err != nil {
			done <- err
			return
		}
		got, err := io.ReadAll(s)
		if err == nil && string(got) != "reply" {
			err = errors.New("server read " + string(got))
		}
		done <- err
	}})
	s := e.connect(testCtx(t))
	defer s.Close()
	got, err := io.ReadAll(s) // until the server's END_STREAM
	if err != nil || string(got) != "hello" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if _, err := s.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// pattern is a fast deterministic byte source.
func pattern(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

func patternSum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, pattern(seed, n))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// bulk sends size bytes each way at once: client to server through
// ReadFrom/WriteTo (io.Copy), server to client through Write and Read
// with odd sizes; both ends check SHA-256.
func bulk(t *testing.T, e *env, size int64, serr chan error) {
	ctx := testCtx(t)
	s := e.connect(ctx)
	defer s.Close()
	wantUp, wantDown := patternSum(1, size), patternSum(2, size)

	var wg sync.WaitGroup
	wg.Add(1)
	var upErr error
	go func() {
		defer wg.Done()
		n, err := io.Copy(s, pattern(1, size))
		if err == nil && n != size {
			err = errors.New("short copy")
		}
		if err == nil {
			err = s.CloseWrite()
		}
		upErr = err
	}()
	h := sha256.New()
	buf := make([]byte, 7001)
	var n int64
	for {
		k, err := s.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("client read after %d bytes: %v", n, err)
		}
	}
	wg.Wait()
	if upErr != nil {
		t.Fatal(upErr)
	}
	if n != size || !bytes.Equal(h.Sum(nil), wantDown[:]) {
		t.Fatalf("client received %d bytes, SHA-256 mismatch=%v", n, !bytes.Equal(h.Sum(nil), wantDown[:]))
	}
	if err := <-serr; err != nil {
		t.Fatal(err)
	}
	_ = wantUp
}

func bulkHandler(size int64, serr chan error) func(context.Context, *Request) {
	return func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			serr <- err
			return
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var downErr error
		go func() {
			defer wg.Done()
			src := pattern(2, size)
			rng := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 300<<10)
			for {
				k, err := src.Read(buf[:1+rng.IntN(len(buf)-1)])
				if k > 0 {
					if _, werr := s.Write(buf[:k]); werr != nil {
						downErr = werr
						return
					}
				}
				if err == io.EOF {
					break
				}
			}
			downErr = s.CloseWrite()
		}()
		h := sha256.New()
		n, err := io.Copy(h, s)
		wg.Wait()
		want := patternSum(1, size)
		switch {
		case err != nil:
			serr <- err
		case downErr != nil:
			serr <- downErr
		case n != size || !bytes.Equal(h.Sum(nil), want[:]):
			serr <- errors.New("server: upload SHA-256 mismatch")
		default:
			serr <- nil
		}
	}
}

func TestBulk100MB(t *testing.T) {
	size := int64(100 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	serr := make(chan error, 1)
	e := newEnv(t, envOptions{handler: bulkHandler(size, serr)})
	bulk(t, e, size, serr)
}

// TestBulkSmallWindows runs with the protocol's minimum frame size and
// default windows, so that both ends block on flow control all the time.
func TestBulkSmallWindows(t *testing.T) {
	size := int64(8 << 20)
	serr := make(chan error, 1)
	small := Tuning{StreamWindow: 65535, ConnWindow: 65535, MaxFrameSize: 16384}
	e := newEnv(t, envOptions{
		handler: bulkHandler(size, serr),
		server:  ServerOptions{Tuning: small},
		pool:    PoolOptions{Tuning: small},
	})
	bulk(t, e, size, serr)
}

func TestConcurrentStreamsEcho(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			s, _, err := e.pool.Connect(ctx, e.target())
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i*997)
			for range 20 {
				if _, err := s.Write(msg); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(s, got); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, msg) {
					errs <- errors.New("echo mismatch")
					return
				}
			}
			s.CloseWrite()
			if _, err := s.Read(make([]byte, 1)); err != io.EOF {
				errs <- errors.Join(errors.New("want EOF"), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.srv.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestDeadlines(t *testing.T) {
	e := newEnv(t, envOptions{})
	s := e.connect(testCtx(t))
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := s.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline: %v", err)
	}
	// Clearing the deadline makes the stream usable again.
	s.SetReadDeadline(time.Time{})
	s.Write([]byte("x"))
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := s.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past deadline: %v", err)
	}
}

func TestResetPropagates(t *testing.T) {
	got := make(chan error, 1)
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		s, _ := r.Accept(nil)
		_, err := io.Copy(io.Discard, s)
		<-ctx.Done() // cancelled by the reset
		got <- err
	}})
	s := e.connect(testCtx(t))
	s.Write([]byte("some bytes"))
	s.Reset()
	err := <-got
	var se *StreamError
	if !errors.As(err, &se) || se.Code != ErrCodeCancel || !se.Remote {
		t.Fatalf("server read after client reset: %v", err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("Write after Reset succeeded")
	}
}

// TestCloseWithoutReadingAsksPeerToStop: Close before the peer finished
// sends RST_STREAM(NO_ERROR); the peer's writes then fail, its reads still
// deliver what was sent before.
func TestCloseWithoutReading(t *testing.T) {
	res := make(chan error, 1)
	e := newEnv(t, envOptions{handler: func(ctx context.Context, r *Request) {
		s, _ := r.Accept(nil)
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "bye" {
			res <- errors.Join(err, errors.New("read "+string(got)))
			return
		}
		for { // the client has gone: writing must fail soon
			if _, err := s.Write(make([]byte, 1<<10)); err != nil {
				var se *StreamError
				if errors.As(err, &se) && se.Remote && se.Code == ErrCodeNo {
					res <- nil
				} else {
					res <- err
				}
				return
			}
		}
	}})
	s := e.connect(testCtx(t))
	s.Write([]byte("bye"))
	s.Close()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}
