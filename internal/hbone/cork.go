package hbone

import (
	"net"
	"sync"
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
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    *chunk
}

// corkBuffer is the most collected before a write(2).
const corkBuffer = 256 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = getChunk(corkBuffer)
	}
	if len(c.buf.buf)+len(p) > cap(c.buf.buf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(c.buf.buf) {
			return c.Conn.Write(p)
		}
	}
	c.buf.buf = append(c.buf.buf, p...)
	return len(p), nil
}

func (c *corkConn) flushLocked() error {
	if c.buf == nil || len(c.buf.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf.buf)
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
