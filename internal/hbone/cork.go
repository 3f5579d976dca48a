package hbone

import (
	"net"
	"sync"

	"github.com/ambit-mesh/ambit/internal/rawio"
)

// corkConn sits between crypto/tls and the socket. crypto/tls writes every
// TLS record (16 KiB of plaintext at most) with its own write(2); while
// corked, corkConn collects the records of one batch of frames and sends
// them with one write(2) instead, which on a busy tunnel cuts write
// syscalls four- to sixteen-fold for the price of one copy of the
// ciphertext.
//
// Records must reach the socket in the order crypto/tls produced them
// (their sequence numbers are part of the encryption), so the flush
// happens under the same lock that orders writes, and crypto/tls's own
// writes (alerts, key updates) wait for it.
//
// The read loop writes its few frames (window updates, acknowledgements)
// through corkConn in "no-wait" mode: one non-blocking write(2), whatever
// the socket does not take kept in pending and sent before anything else
// (see conn.queueControl). That spares a goroutine hand-off per frame
// without ever making the read loop wait for a peer that does not read.
//
// Reads and writes of the socket go through rawio.IO when the socket offers
// raw access (a TCP connection does).
type corkConn struct {
	net.Conn
	raw     *rawio.IO // nil if Conn offers no raw access: no-wait writes unavailable
	rmu     sync.Mutex
	mu      sync.Mutex
	corked  bool
	buf     *chunk
	noWait  bool
	pending []byte
}

func newCorkConn(nc net.Conn) *corkConn {
	return &corkConn{Conn: nc, raw: rawio.New(nc)}
}

func (c *corkConn) Read(p []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Read(p)
	}
	// crypto/tls reads from one goroutine at a time; the lock makes sure
	// of it for rawio.IO's sake.
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.raw.Read(p)
}

// write writes p to the socket; c.mu is held.
func (c *corkConn) write(p []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Write(p)
	}
	return c.raw.Write(p)
}

// corkBuffer is the most collected before a write(2).
const corkBuffer = 256 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noWait {
		n := len(p)
		if len(c.pending) == 0 {
			k, err := c.raw.WriteOnce(p)
			if err != nil {
				return 0, err
			}
			p = p[k:]
		}
		c.pending = append(c.pending, p...)
		return n, nil
	}
	if len(c.pending) > 0 {
		if err := c.flushPendingLocked(); err != nil {
			return 0, err
		}
	}
	if !c.corked {
		return c.write(p)
	}
	if c.buf == nil {
		c.buf = getChunk(corkBuffer)
	}
	if len(c.buf.buf)+len(p) > cap(c.buf.buf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(c.buf.buf) {
			return c.write(p)
		}
	}
	c.buf.buf = append(c.buf.buf, p...)
	return len(p), nil
}

func (c *corkConn) flushLocked() error {
	if c.buf == nil || len(c.buf.buf) == 0 {
		return nil
	}
	_, err := c.write(c.buf.buf)
	c.buf.buf = c.buf.buf[:0]
	return err
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork sends what was collected and releases the buffer.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	err := c.flushLocked()
	if c.buf != nil {
		putChunk(c.buf)
		c.buf = nil
	}
	return err
}

// setNoWait switches no-wait mode on or off; switching it off reports
// whether bytes are pending, which the caller must then have sent
// (flushPending) before the connection's next frames.
func (c *corkConn) setNoWait(on bool) (pending bool) {
	c.mu.Lock()
	c.noWait = on
	pending = len(c.pending) > 0
	c.mu.Unlock()
	return pending
}

// flushPending sends what no-wait writes left, waiting for the socket.
func (c *corkConn) flushPending() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushPendingLocked()
}

func (c *corkConn) flushPendingLocked() error {
	_, err := c.write(c.pending)
	c.pending = nil
	return err
}
