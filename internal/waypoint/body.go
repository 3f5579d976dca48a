package waypoint

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// A request body the waypoint may have to send more than once — to retry,
// or to mirror — is read through a bodyTap, which keeps a copy of what it
// has read up to a bound. Each attempt reads through its own attemptBody:
// first the kept copy, then the rest of the original body. The body still
// streams: nothing waits for it to be complete, and a body longer than the
// bound simply cannot be replayed.
type bodyTap struct {
	mu       sync.Mutex
	src      io.ReadCloser
	kept     []byte
	limit    int
	overflow bool
	eof      bool
	n        int64
}

func newBodyTap(src io.ReadCloser, limit int) *bodyTap { return &bodyTap{src: src, limit: limit} }

// replayable reports whether a new attempt can send the whole body again.
func (t *bodyTap) replayable() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.overflow
}

// complete returns the whole body once it has been read and kept.
func (t *bodyTap) complete() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.kept, t.eof && !t.overflow
}

func (t *bodyTap) bytesRead() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

var errAttemptOver = errors.New("waypoint: request attempt abandoned")

type attemptBody struct {
	t        *bodyTap
	off      int
	detached bool
}

// attempt starts reading the body from its beginning.
func (t *bodyTap) attempt() *attemptBody { return &attemptBody{t: t} }

func (a *attemptBody) Read(p []byte) (int, error) {
	t := a.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if a.detached {
		return 0, errAttemptOver
	}
	if !t.overflow && a.off < len(t.kept) {
		n := copy(p, t.kept[a.off:])
		a.off += n
		return n, nil
	}
	if t.eof {
		return 0, io.EOF
	}
	n, err := t.src.Read(p)
	t.n += int64(n)
	if !t.overflow {
		if len(t.kept)+n > t.limit {
			t.overflow, t.kept = true, nil
		} else {
			t.kept = append(t.kept, p[:n]...)
			a.off += n
		}
	}
	if err == io.EOF {
		t.eof = true
	}
	return n, err
}

// Close ends this attempt's reading; the original body stays open for the
// next attempt (the handler's return closes it).
func (a *attemptBody) Close() error {
	a.t.mu.Lock()
	a.detached = true
	a.t.mu.Unlock()
	return nil
}

// countingBody counts the bytes read from a request body that is not
// tapped (the transport may read it on a goroutine of its own).
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}
