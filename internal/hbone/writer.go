package hbone

import (
	"time"

	"golang.org/x/net/http2/hpack"
)

// Writing frames: "group commit". One goroutine at a time writes to the
// TLS connection (c.writing). A goroutine with frames to send while no write
// is in progress becomes the writer: it writes its frames straight from
// its own buffer (no copy), then whatever other goroutines queued
// meanwhile. A goroutine that finds a write in progress appends its frames
// to the queue and returns at once — it only waits if the queue is full
// (backpressure from a slow peer). Under concurrency, frames of many streams
// thus share TLS records and write(2) calls; without it, nothing is copied.
//
// wmu is held only to queue or to swap buffers, never across a socket
// write, so the read loop can always queue the frames it must send (SETTINGS
// and PING acknowledgements, resets, window updates) without blocking on a
// peer that does not read: it starts a writer goroutine if none is running.

const (
	// maxQueuedWrite is how much may wait behind the write in progress
	// before writers block.
	maxQueuedWrite = 512 << 10
	// maxQueuedControl is how much more the read loop may queue beyond
	// that (acknowledgements to a peer that does not read, e.g. a PING or
	// SETTINGS flood) before the connection is closed.
	maxQueuedControl = 64 << 10
)

// write sends complete frames (see writeLocked).
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	err := c.writeLocked(b)
	c.wmu.Unlock()
	return err
}

// waitRoomLocked waits while the queue is full.
func (c *conn) waitRoomLocked() {
	for c.writing && c.werr == nil && len(c.wq) >= maxQueuedWrite {
		c.wqWaiters++
		c.wcond.Wait()
		c.wqWaiters--
	}
}

// writeLocked sends b: written at once, by this goroutine, if no write is
// in progress (it returns when b is handed to TLS), else queued behind the
// write in progress (it returns at once; the bytes are copied). wmu is held
// on entry and on return but released while writing to the socket.
func (c *conn) writeLocked(b []byte) error {
	c.waitRoomLocked()
	if c.werr != nil {
		return c.werr
	}
	if c.writing {
		c.wq = append(c.wq, b...)
		return nil
	}
	c.writing = true
	return c.sendLocked(b)
}

// sendLocked is the writer: it writes b, then what was queued meanwhile,
// until the queue is empty. wmu is held on entry and on return.
func (c *conn) sendLocked(b []byte) error {
	for {
		c.wmu.Unlock()
		err := c.writeOut(b)
		c.wmu.Lock()
		if err != nil {
			c.failWriteLocked(err)
			break
		}
		if len(c.wq) == 0 {
			break
		}
		b, c.wq, c.wqOut = c.wq, c.wqOut[:0], c.wq
		if c.wqWaiters > 0 {
			c.wcond.Broadcast() // the queue has room again
		}
	}
	c.stopWritingLocked()
	return c.werr
}

// stopWritingLocked ends the writer's turn: the next write is made by
// whoever comes, and those waiting for the queue may go on.
func (c *conn) stopWritingLocked() {
	c.writing = false
	// Do not keep large buffers on idle connections.
	if cap(c.wq) > 64<<10 {
		c.wq = nil
	}
	if cap(c.wqOut) > 64<<10 {
		c.wqOut = nil
	}
	if c.wqWaiters > 0 {
		c.wcond.Broadcast()
	}
}

// writeOut writes to TLS; a batch of more than one TLS record goes out in
// one write(2) (see corkConn).
func (c *conn) writeOut(b []byte) error {
	corked := c.cork != nil && len(b) > maxTLSPlaintext
	if corked {
		c.cork.cork()
	}
	_, err := c.nc.Write(b)
	if corked {
		if uerr := c.cork.uncork(); err == nil {
			err = uerr
		}
	}
	return err
}

// maxTLSPlaintext is the most plaintext one TLS record carries.
const maxTLSPlaintext = 16 << 10

// failWriteLocked records a failed write. The connection is not torn
// down at once: the read loop is given a moment to read what the peer sent
// before it went away (a TLS alert, a GOAWAY), which explains the failure
// better than "broken pipe"; its end tears the connection down.
func (c *conn) failWriteLocked(err error) {
	ce := &ConnError{Err: err}
	c.werr = ce
	c.wfailed.Store(ce)
	c.wq = c.wq[:0]
	c.nc.SetReadDeadline(time.Now().Add(goAwayTimeout))
}

// queueControl sends frames without ever blocking on the socket. The read
// loop uses it. With no write in progress, it writes them itself in
// no-wait mode (see corkConn): nearly always the socket takes them at
// once; what it does not take, and frames queued meanwhile, are sent by a
// writer goroutine started for them. With a write in progress, the frames
// are queued behind it.
func (c *conn) queueControl(frame []byte) {
	c.wmu.Lock()
	if c.werr != nil {
		c.wmu.Unlock()
		return
	}
	if len(c.wq)+len(frame) > maxQueuedWrite+maxQueuedControl {
		c.wmu.Unlock()
		go c.teardown(connErr(ErrCodeEnhanceYourCalm, "peer does not read what it is sent"))
		return
	}
	if c.writing || c.cork == nil || c.cork.raw == nil {
		c.wq = append(c.wq, frame...)
		start := !c.writing
		c.writing = true
		c.wmu.Unlock()
		if start {
			go c.sendQueued(false)
		}
		return
	}
	c.writing = true
	c.wmu.Unlock()
	c.cork.setNoWait(true)
	_, err := c.nc.Write(frame)
	pending := c.cork.setNoWait(false)
	c.wmu.Lock()
	if err != nil {
		c.failWriteLocked(err)
	}
	if c.werr == nil && (pending || len(c.wq) > 0) {
		c.wmu.Unlock()
		go c.sendQueued(pending)
		return
	}
	c.stopWritingLocked()
	c.wmu.Unlock()
}

// sendQueued is a writer started by queueControl: it sends what a no-wait
// write left (if pending), then the queue. c.writing is set on entry.
func (c *conn) sendQueued(pending bool) {
	var err error
	if pending {
		err = c.cork.flushPending()
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err != nil {
		c.failWriteLocked(err)
	}
	if c.werr != nil || len(c.wq) == 0 {
		c.stopWritingLocked()
		return
	}
	b := c.wq
	c.wq = c.wqOut[:0]
	c.wqOut = b
	c.sendLocked(b)
}

// waitWritten waits until nothing is being written or queued.
func (c *conn) waitWritten() {
	c.wmu.Lock()
	for c.writing && c.werr == nil {
		c.wqWaiters++
		c.wcond.Wait()
		c.wqWaiters--
	}
	c.wmu.Unlock()
}

// frameSize is the largest DATA payload to put in one frame.
func (c *conn) frameSize() int {
	return int(min(c.peerMaxF.Load(), c.cfg.writeFrame))
}

// writeData sends p as DATA frames of stream id.
func (c *conn) writeData(id uint32, p []byte) error {
	fs := c.frameSize()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.waitRoomLocked()
	if c.werr != nil {
		return c.werr
	}
	if c.writing { // frame straight into the queue
		c.wq = appendDataFrames(c.wq, id, p, fs)
		return nil
	}
	c.writing = true
	// Frame into a buffer of our own: the frames go out as one batch.
	ch := getChunk(len(p) + (len(p)+fs-1)/fs*frameHeaderLen)
	ch.buf = appendDataFrames(ch.buf, id, p, fs)
	err := c.sendLocked(ch.buf)
	putChunk(ch)
	return err
}

func appendDataFrames(b []byte, id uint32, p []byte, fs int) []byte {
	for len(p) > 0 {
		k := min(len(p), fs)
		b = appendFrameHeader(b, k, frameData, 0, id)
		b = append(b, p[:k]...)
		p = p[k:]
	}
	return b
}

// writeHeaders encodes fields and sends them as one header block.
func (c *conn) writeHeaders(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeHeadersLocked(id, fields, endStream)
}

// writeHeadersLocked encodes and sends a header block. Encoding and
// queueing happen without releasing wmu, so header blocks reach the wire
// in the order the encoder's dynamic table saw them.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.waitRoomLocked()
	if c.werr != nil {
		return c.werr
	}
	c.mu.Lock()
	ts := c.peerHeaderTable
	c.peerHeaderTable = -1
	c.mu.Unlock()
	if ts >= 0 {
		c.enc.SetMaxDynamicTableSizeLimit(uint32(ts))
	}
	c.encBuf.Reset()
	for _, f := range fields {
		c.enc.WriteField(f)
	}
	maxFrame := int(c.peerMaxF.Load())
	if c.writing {
		c.wq = appendHeaderBlock(c.wq, id, c.encBuf.Bytes(), endStream, maxFrame)
		return nil
	}
	c.writing = true
	// hbuf belongs to the writer, and we are it until sendLocked returns.
	c.hbuf = appendHeaderBlock(c.hbuf[:0], id, c.encBuf.Bytes(), endStream, maxFrame)
	err := c.sendLocked(c.hbuf)
	if cap(c.hbuf) > 16<<10 {
		c.hbuf = nil
	}
	return err
}
