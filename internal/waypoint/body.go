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
	rmu sync.Mutex // serializes reads of src; never held with mu waited on
	mu  sync.Mutex // guards the fields below

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
	if n, err, done := a.fromKept(p); done {
		return n, err
	}
	// Read more of the original body. The state lock is not held while
	// waiting for the client: a gRPC stream's next message may only come
	// once the response to the last one has been seen, and deciding on that
	// response looks at the tap.
	t := a.t
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if n, err, done := a.fromKept(p); done { // another attempt read meanwhile
		return n, err
	}
	n, err := t.src.Read(p)
	t.mu.Lock()
	defer t.mu.Unlock()
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

// fromKept serves a read from what the tap kept; done is false when the
// attempt has read all of it and the original body must be read on.
func (a *attemptBody) fromKept(p []byte) (int, error, bool) {
	t := a.t
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case a.detached:
		return 0, errAttemptOver, true
	case !t.overflow && a.off < len(t.kept):
		n := copy(p, t.kept[a.off:])
		a.off += n
		return n, nil, true
	case t.eof:
		return 0, io.EOF, true
	}
	return 0, nil, false
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

// memBody is a request body read into memory, sent by the synchronous
// client (which rewinds it to send it again on a fresh connection).
type memBody struct {
	b   []byte
	off int
}

func (m *memBody) Read(p []byte) (int, error) {
	if m.off >= len(m.b) {
		return 0, io.EOF
	}
	n := copy(p, m.b[m.off:])
	m.off += n
	return n, nil
}

// WriteTo writes what is left in one call (io.Copy prefers it).
func (m *memBody) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(m.b[m.off:])
	m.off += n
	return int64(n), err
}

func (m *memBody) Close() error { return nil }
func (m *memBody) rewind()      { m.off = 0 }

// Bodies read into memory take their buffer from a pool when small (the
// common case: a few KiB at most).
const pooledBodyBytes = 4 << 10

var bodyBufs = sync.Pool{New: func() any { return new([pooledBodyBytes]byte) }}

func getBodyBuf(n int) []byte {
	if n > pooledBodyBytes {
		return make([]byte, n)
	}
	return bodyBufs.Get().(*[pooledBodyBytes]byte)[:n]
}

// putBodyBuf returns a buffer of getBodyBuf once nothing uses it (as the
// array it is: putting a slice would allocate its header).
func putBodyBuf(b []byte) {
	if cap(b) == pooledBodyBytes {
		bodyBufs.Put((*[pooledBodyBytes]byte)(b[:pooledBodyBytes]))
	}
}
