package hbone

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// scriptReader returns reads of scripted sizes from a pattern (0: fill the
// caller's buffer, a bulk read), then end; it hashes what it returned.
type scriptReader struct {
	src   io.Reader
	sizes []int
	i     int
	end   error
	n     int64
	h     hash.Hash
}

func newScriptReader(end error, sizes ...int) *scriptReader {
	return &scriptReader{src: pattern(7, 1<<40), sizes: sizes, end: end, h: sha256.New()}
}

func (r *scriptReader) Read(p []byte) (int, error) {
	if r.i >= len(r.sizes) {
		return 0, r.end
	}
	sz := r.sizes[r.i]
	r.i++
	if sz == 0 || sz > len(p) {
		sz = len(p)
	}
	n, _ := io.ReadFull(r.src, p[:sz])
	r.h.Write(p[:n])
	r.n += int64(n)
	return n, nil
}

// repeat returns n copies of size.
func repeat(size, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

type received struct {
	n   int64
	sum []byte
	err error
}

// hashHandler accepts, reads everything and reports what it got.
func hashHandler(got chan<- received) func(context.Context, *Request) {
	return func(_ context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			got <- received{err: err}
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, s)
		s.CloseWrite()
		got <- received{n: n, sum: h.Sum(nil), err: err}
	}
}

// TestReadFromBulkPhases: ReadFrom goes from small reads to bulk (two
// goroutines) and back, several times; every byte arrives, in order.
func TestReadFromBulkPhases(t *testing.T) {
	var sizes []int
	for range 3 {
		sizes = append(sizes, repeat(100, 3)...)   // small
		sizes = append(sizes, repeat(0, 12)...)    // grows the buffer, then bulk
		sizes = append(sizes, 5, 0, 0, 3, 0, 1000) // small reads end the bulk phase
	}
	for _, end := range []error{io.EOF, errors.New("source failed")} {
		got := make(chan received, 1)
		e := newEnv(t, envOptions{handler: hashHandler(got)})
		s := e.connect(testCtx(t))
		r := newScriptReader(end, sizes...)
		n, err := s.ReadFrom(r)
		wantErr := end
		if end == io.EOF {
			wantErr = nil
		}
		if err != wantErr || n != r.n {
			t.Fatalf("ReadFrom = %d, %v; want %d, %v", n, err, r.n, wantErr)
		}
		if r.n < 8*readFromMax {
			t.Fatalf("script read only %d bytes: no bulk phase", r.n)
		}
		s.CloseWrite()
		res := <-got
		if res.err != nil || res.n != r.n || string(res.sum) != string(r.h.Sum(nil)) {
			t.Fatalf("server got %d bytes (err %v, hash match %v), want %d", res.n, res.err, string(res.sum) == string(r.h.Sum(nil)), r.n)
		}
		s.Close()
	}
}

// endless always fills the caller's buffer.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// TestReadFromBulkPeerReset: a reset from the peer ends a bulk ReadFrom
// from a source that never stops.
func TestReadFromBulkPeerReset(t *testing.T) {
	e := newEnv(t, envOptions{handler: func(_ context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		io.CopyN(io.Discard, s, 4<<20)
		s.Reset()
	}})
	s := e.connect(testCtx(t))
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		_, err := s.ReadFrom(endless{})
		done <- err
	}()
	select {
	case err := <-done:
		var se *StreamError
		if !errors.As(err, &se) || !se.Remote || se.Code != ErrCodeCancel {
			t.Fatalf("ReadFrom after peer reset: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("ReadFrom did not return after the peer's reset")
	}
}

// TestReadFromBulkWriteDeadline: a bulk ReadFrom blocked on flow control
// (the peer does not read) returns at the write deadline.
func TestReadFromBulkWriteDeadline(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, envOptions{handler: func(_ context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		<-release
		s.Close()
	}})
	defer close(release)
	s := e.connect(testCtx(t))
	defer s.Close()
	s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := s.ReadFrom(endless{})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom = %d, %v; want a deadline error", n, err)
	}
	if n != int64(DefaultStreamWindow) {
		t.Fatalf("ReadFrom sent %d bytes, want the stream window, %d", n, DefaultStreamWindow)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("destination gone") }

// TestWriteToFailureKeepsConnWindow: WriteTo failing with data taken off
// the queue gives that data's connection window back; before, every such
// failure shrank the peer's connection window, until the connection
// stalled.
func TestWriteToFailureKeepsConnWindow(t *testing.T) {
	const failing = 8
	var n atomic.Int32
	tun := Tuning{StreamWindow: 256 << 10, ConnWindow: 256 << 10, MaxFrameSize: 16 << 10}
	got := make(chan received, 1)
	drain := hashHandler(got)
	e := newEnv(t, envOptions{
		server: ServerOptions{Tuning: tun, Handler: func(ctx context.Context, r *Request) {
			if n.Add(1) > failing {
				drain(ctx, r)
				return
			}
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			s.WriteTo(failWriter{})
			s.Close()
		}},
		pool: PoolOptions{Tuning: tun},
	})
	chunk := make([]byte, 200<<10)
	for range failing {
		s := e.connect(testCtx(t))
		s.SetWriteDeadline(time.Now().Add(timeout / 4))
		_, err := s.Write(chunk)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("stalled on flow control")
		}
		s.Close()
	}
	s := e.connect(testCtx(t))
	defer s.Close()
	s.SetWriteDeadline(time.Now().Add(timeout / 2))
	const size = 4 << 20
	if _, err := s.ReadFrom(pattern(3, size)); err != nil {
		t.Fatalf("after %d failed WriteTos: %v", failing, err)
	}
	s.CloseWrite()
	if res := <-got; res.err != nil || res.n != size {
		t.Fatalf("server got %d bytes, %v", res.n, res.err)
	}
}
