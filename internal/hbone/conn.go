package hbone

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// The HTTP/2 connection shared by both ends: one goroutine reads frames and
// dispatches them (readLoop); stream goroutines write their own frames under
// wmu, so bytes go from the caller's buffer through TLS to the socket
// without a hand-off to a writer goroutine. The read loop never writes: the
// few frames it must send (SETTINGS and PING acknowledgements, resets) are
// queued and flushed by whoever holds wmu next, or by a short-lived
// goroutine. That way a peer that stops reading can block our writers, but
// never our reading, and two ends that both write hard cannot deadlock.
//
// Locks: wmu (socket writes, hpack encoder) may be held while taking mu;
// mu (connection state, send windows, stream table) and Stream.mu (receive
// side of one stream) are never held together.

// connConfig is one end's view of its own settings.
type connConfig struct {
	maxStreams     uint32 // concurrent streams per connection
	streamWindow   int32  // receive window per stream
	connWindow     int32  // receive window of the connection
	maxReadFrame   uint32 // SETTINGS_MAX_FRAME_SIZE we advertise
	maxHeaderBytes uint32 // SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce
	writeFrame     uint32 // largest DATA frame we send (further capped by the peer)
	idleTimeout    time.Duration
	keepAlive      time.Duration
	keepAliveWait  time.Duration
}

const (
	// smallPayload: DATA payloads up to this size are copied into the
	// stream's last buffer (packing small frames); larger ones are read
	// straight from TLS into a buffer of their own.
	smallPayload = 4 << 10
	// maxWriteBatch bounds the bytes one Write call puts in one TLS write
	// (with frame headers, a 256 KiB buffer).
	maxWriteBatch = 255 << 10
	goAwayTimeout = time.Second
	// maxHeaderBlockFrames bounds HEADERS + CONTINUATION frames of one
	// header block (empty CONTINUATION floods).
	maxHeaderBlockFrames = 64
)

type connOwner interface {
	connClosed(c *conn)
}

type conn struct {
	nc       net.Conn  // a *tls.Conn
	cork     *corkConn // under nc, if any
	isServer bool
	cfg      connConfig
	log      *slog.Logger
	owner    connOwner
	srv      *Server // server side only
	peer     spiffe.ID
	tlsState tls.ConnectionState
	// clientCert is the certificate a client connection presented: a pool
	// gives new tunnels only to connections made with the current one.
	clientCert *tls.Certificate
	stats      *stats

	// read side, owned by the read loop
	br           *bufio.Reader
	rbuf         []byte
	scratch      []byte
	dec          *hpack.Decoder
	hfields      []hpack.HeaderField
	hsize        int
	htooBig      bool
	hblockBytes  int
	hblockFrames int
	hstream      uint32 // stream of the header block in progress, 0 if none
	hendStream   bool
	sawSettings  bool
	established  atomic.Bool // the peer's first SETTINGS arrived
	activity     atomic.Bool // a frame arrived since the keepalive last looked

	// write side (see writer.go)
	wmu       sync.Mutex
	wcond     sync.Cond // on wmu: the queue has room, or the writer is done
	writing   bool      // a goroutine is writing to nc
	wq        []byte    // frames queued behind the write in progress
	wqOut     []byte    // the queue buffer being written
	wqWaiters int
	hbuf      []byte // header frames of the goroutine about to write
	enc       *hpack.Encoder
	encBuf    bytes.Buffer
	werr      error
	wfailed   atomic.Pointer[ConnError]
	peerMaxF  atomic.Uint32 // SETTINGS_MAX_FRAME_SIZE of the peer

	mu               sync.Mutex
	streams          map[uint32]*Stream
	nextStreamID     uint32 // client: the next stream to open
	lastPeerStream   uint32 // server: highest stream the client opened
	peerMaxStreams   uint32
	peerMaxHint      *atomic.Uint32 // client: shared with the pool entry
	peerInitWindow   int64
	peerHeaderTable  int64 // pending SETTINGS_HEADER_TABLE_SIZE for the encoder, -1 if none
	sendWindow       int64
	windowCh         chan struct{} // closed and replaced when sendWindow grows
	recvWindow       int64         // what the peer may still send on the connection
	recvUnacked      int64         // consumed, not yet returned with WINDOW_UPDATE
	active           int           // client: reserved + open streams; server: running handlers
	reserved         int           // client: reservations not yet turned into streams
	closing          bool          // no new streams; close when active reaches 0
	goAwaySent       bool
	goAwayRecv       bool
	goAwayLastStream uint32
	closed           bool
	closeErr         error
	idleTimer        *time.Timer
	idleSince        time.Time
	kaTimer          *time.Timer
	pingOut          bool

	done     chan struct{} // closed when teardown is complete
	readDone chan struct{} // closed when the read loop has ended, after readErr is set
	readErr  error
}

func newConn(nc net.Conn, isServer bool, cfg connConfig, log *slog.Logger, st *stats) *conn {
	c := &conn{
		nc:              nc,
		isServer:        isServer,
		cfg:             cfg,
		log:             log,
		stats:           st,
		br:              bufio.NewReaderSize(nc, 16<<10),
		scratch:         make([]byte, smallPayload),
		streams:         map[uint32]*Stream{},
		nextStreamID:    1,
		peerMaxStreams:  ^uint32(0),
		peerInitWindow:  defaultWindow,
		peerHeaderTable: -1,
		sendWindow:      defaultWindow,
		windowCh:        make(chan struct{}),
		recvWindow:      int64(cfg.connWindow),
		done:            make(chan struct{}),
		readDone:        make(chan struct{}),
	}
	c.wcond.L = &c.wmu
	c.peerMaxF.Store(minMaxFrameSize)
	c.dec = hpack.NewDecoder(defaultTableSize, c.onHeaderField)
	c.dec.SetMaxStringLength(int(cfg.maxHeaderBytes))
	c.enc = hpack.NewEncoder(&c.encBuf)
	if ts, ok := nc.(*tls.Conn); ok {
		c.tlsState = ts.ConnectionState()
	}
	return c
}

// prefaceFrames is what each end sends first: SETTINGS, then the
// connection window raised from the protocol default.
func (c *conn) prefaceFrames(b []byte) []byte {
	settings := []setting{
		{settingInitialWindowSize, uint32(c.cfg.streamWindow)},
		{settingMaxFrameSize, c.cfg.maxReadFrame},
		{settingMaxHeaderListSize, c.cfg.maxHeaderBytes},
	}
	if c.isServer {
		settings = append(settings, setting{settingMaxConcurrentStreams, c.cfg.maxStreams})
	} else {
		settings = append(settings, setting{settingEnablePush, 0})
	}
	b = appendSettings(b, settings)
	if inc := int64(c.cfg.connWindow) - defaultWindow; inc > 0 {
		b = appendWindowUpdate(b, 0, uint32(inc))
	}
	return b
}

// start arms the timers and runs the read loop in a new goroutine.
func (c *conn) start() {
	c.mu.Lock()
	c.idleSince = time.Now()
	if c.cfg.idleTimeout > 0 {
		c.idleTimer = time.AfterFunc(c.cfg.idleTimeout, c.onIdleTimer)
	}
	if c.cfg.keepAlive > 0 {
		c.kaTimer = time.AfterFunc(c.cfg.keepAlive, c.onKeepAlive)
	}
	c.mu.Unlock()
	go c.readLoop()
}

// ---------------------------------------------------------------------------
// reading

func (c *conn) readLoop() {
	err := c.readFrames()
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = errPeerClosed // a bare io.EOF would read as a clean half-close
	}
	var ne net.Error
	if wf := c.wfailed.Load(); wf != nil && errors.As(err, &ne) && ne.Timeout() {
		err = wf.Err // the deadline failWriteLocked set: the write error is the cause
	}
	c.readErr = err
	close(c.readDone)
	c.teardown(err)
}

// earlyFailure explains the failure of a client connection that ended
// before the server's SETTINGS arrived. With TLS 1.3 the client finishes
// its handshake before the server has checked the client certificate, so
// a refusal shows up only as an alert to the read loop; a write may fail
// first, with a less telling "broken pipe". The read loop's error is
// preferred, waiting for it briefly.
func (c *conn) earlyFailure(ctx context.Context, err error) error {
	select {
	case <-c.readDone:
		if c.readErr != nil {
			return fmt.Errorf("hbone: connection to %s failed before the server accepted it: %w", c.nc.RemoteAddr(), c.readErr)
		}
	case <-ctx.Done():
	case <-time.After(goAwayTimeout):
	}
	return err
}

func (c *conn) readFrames() error {
	var hb [frameHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			return err
		}
		c.activity.Store(true)
		h := parseFrameHeader(hb[:])
		if h.length > c.cfg.maxReadFrame {
			return connErr(ErrCodeFrameSize, "frame of %d bytes exceeds SETTINGS_MAX_FRAME_SIZE %d", h.length, c.cfg.maxReadFrame)
		}
		if !c.sawSettings {
			if h.typ != frameSettings || h.flags&flagAck != 0 {
				return connErr(ErrCodeProtocol, "first frame is not SETTINGS")
			}
		}
		if c.hstream != 0 && (h.typ != frameContinuation || h.streamID != c.hstream) {
			return connErr(ErrCodeProtocol, "expected CONTINUATION of stream %d", c.hstream)
		}
		var err error
		switch h.typ {
		case frameData:
			err = c.onData(h)
		case frameHeaders:
			err = c.onHeaders(h)
		case frameContinuation:
			if c.hstream == 0 {
				return connErr(ErrCodeProtocol, "CONTINUATION without HEADERS")
			}
			err = c.onHeaders(h)
		case framePriority:
			if h.streamID == 0 {
				return connErr(ErrCodeProtocol, "PRIORITY on stream 0")
			}
			if h.length != 5 {
				return connErr(ErrCodeFrameSize, "PRIORITY of %d bytes", h.length)
			}
			_, err = c.br.Discard(5)
		case frameRSTStream:
			err = c.onRSTStream(h)
		case frameSettings:
			err = c.onSettings(h)
		case framePushPromise:
			return connErr(ErrCodeProtocol, "PUSH_PROMISE (push is disabled)")
		case framePing:
			err = c.onPing(h)
		case frameGoAway:
			err = c.onGoAway(h)
		case frameWindowUpdate:
			err = c.onWindowUpdate(h)
		default: // unknown frame types are ignored (RFC 9113 §4.1)
			_, err = c.br.Discard(int(h.length))
		}
		if err != nil {
			return err
		}
	}
}

// payload reads a control frame's payload into the reusable buffer.
func (c *conn) payload(n uint32) ([]byte, error) {
	if cap(c.rbuf) < int(n) {
		c.rbuf = make([]byte, n)
	}
	b := c.rbuf[:n]
	_, err := io.ReadFull(c.br, b)
	return b, err
}

// peerStreamIdle reports whether id names a stream the peer could open but
// has not: frames on idle streams are connection errors.
func (c *conn) peerStreamIdleLocked(id uint32) bool {
	if c.isServer {
		return id%2 == 1 && id > c.lastPeerStream
	}
	return id%2 == 1 && id >= c.nextStreamID || id%2 == 0
}

func (c *conn) onData(h frameHeader) error {
	if h.streamID == 0 {
		return connErr(ErrCodeProtocol, "DATA on stream 0")
	}
	length := int(h.length)
	pad := 0
	if h.flags&flagPadded != 0 {
		if length < 1 {
			return connErr(ErrCodeFrameSize, "padded DATA without pad length")
		}
		p, err := c.br.ReadByte()
		if err != nil {
			return err
		}
		pad = int(p)
		length--
		if pad > length {
			return connErr(ErrCodeProtocol, "DATA padding exceeds payload")
		}
		length -= pad
	}
	flow := int64(h.length)

	c.mu.Lock()
	if flow > c.recvWindow {
		c.mu.Unlock()
		return connErr(ErrCodeFlowControl, "peer sent %d bytes with a connection window of %d", flow, c.recvWindow)
	}
	c.recvWindow -= flow
	s := c.streams[h.streamID]
	if s == nil && c.peerStreamIdleLocked(h.streamID) {
		c.mu.Unlock()
		return connErr(ErrCodeProtocol, "DATA on idle stream %d", h.streamID)
	}
	c.mu.Unlock()

	if s == nil { // closed or reset: drop, but return the window
		if _, err := c.br.Discard(length + pad); err != nil {
			return err
		}
		c.returnConnWindow(flow, true)
		return nil
	}

	var ch *chunk
	var small []byte
	if length > smallPayload {
		ch = getChunk(length)
		ch.buf = ch.buf[:length]
		if _, err := io.ReadFull(c.br, ch.buf); err != nil {
			putChunk(ch)
			return err
		}
	} else if length > 0 {
		small = c.scratch[:length]
		if _, err := io.ReadFull(c.br, small); err != nil {
			return err
		}
	}
	if pad > 0 {
		if _, err := c.br.Discard(pad); err != nil {
			if ch != nil {
				putChunk(ch)
			}
			return err
		}
	}
	s.onData(ch, small, flow, int64(length), h.flags&flagEndStream != 0)
	return nil
}

// returnConnWindow gives n consumed (or dropped) bytes back to the peer's
// connection window, with a WINDOW_UPDATE once enough have accumulated.
func (c *conn) returnConnWindow(n int64, fromReadLoop bool) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.recvUnacked += n
	var inc int64
	if c.recvUnacked >= int64(c.cfg.connWindow)/4 && !c.closed {
		inc = c.recvUnacked
		c.recvUnacked = 0
		c.recvWindow += inc
	}
	c.mu.Unlock()
	if inc == 0 {
		return
	}
	var b [frameHeaderLen + 4]byte
	f := appendWindowUpdate(b[:0], 0, uint32(inc))
	if fromReadLoop {
		c.queueControl(f)
	} else {
		c.write(f)
	}
}

func (c *conn) onHeaders(h frameHeader) error {
	if h.streamID == 0 {
		return connErr(ErrCodeProtocol, "HEADERS on stream 0")
	}
	p, err := c.payload(h.length)
	if err != nil {
		return err
	}
	if h.typ == frameHeaders {
		pos, pad := 0, 0
		if h.flags&flagPadded != 0 {
			if len(p) < 1 {
				return connErr(ErrCodeFrameSize, "padded HEADERS without pad length")
			}
			pad = int(p[0])
			pos = 1
		}
		if h.flags&flagPriority != 0 {
			pos += 5
		}
		if pos+pad > len(p) {
			return connErr(ErrCodeProtocol, "HEADERS padding exceeds payload")
		}
		p = p[pos : len(p)-pad]
		c.hstream = h.streamID
		c.hendStream = h.flags&flagEndStream != 0
		c.hfields = c.hfields[:0]
		c.hsize, c.htooBig, c.hblockBytes, c.hblockFrames = 0, false, 0, 0
	}
	c.hblockBytes += len(p)
	c.hblockFrames++
	if c.hblockBytes > 4*int(c.cfg.maxHeaderBytes)+(4<<10) || c.hblockFrames > maxHeaderBlockFrames {
		return connErr(ErrCodeEnhanceYourCalm, "header block of stream %d: %d bytes in %d frames", h.streamID, c.hblockBytes, c.hblockFrames)
	}
	if _, err := c.dec.Write(p); err != nil {
		return connErr(ErrCodeCompression, "%v", err)
	}
	if h.flags&flagEndHeaders == 0 {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return connErr(ErrCodeCompression, "%v", err)
	}
	id, end := c.hstream, c.hendStream
	c.hstream = 0
	if c.isServer {
		return c.onRequest(id, end)
	}
	return c.onResponse(id, end)
}

func (c *conn) onHeaderField(f hpack.HeaderField) {
	c.hsize += len(f.Name) + len(f.Value) + 32
	if c.hsize > int(c.cfg.maxHeaderBytes) {
		c.htooBig = true
		return
	}
	c.hfields = append(c.hfields, f)
}

func (c *conn) onRSTStream(h frameHeader) error {
	if h.streamID == 0 {
		return connErr(ErrCodeProtocol, "RST_STREAM on stream 0")
	}
	if h.length != 4 {
		return connErr(ErrCodeFrameSize, "RST_STREAM of %d bytes", h.length)
	}
	p, err := c.payload(4)
	if err != nil {
		return err
	}
	code := ErrCode(binary.BigEndian.Uint32(p))
	c.mu.Lock()
	s := c.streams[h.streamID]
	if s == nil {
		idle := c.peerStreamIdleLocked(h.streamID)
		c.mu.Unlock()
		if idle {
			return connErr(ErrCodeProtocol, "RST_STREAM on idle stream %d", h.streamID)
		}
		return nil
	}
	c.mu.Unlock()
	s.onReset(code)
	return nil
}

func (c *conn) onSettings(h frameHeader) error {
	if h.streamID != 0 {
		return connErr(ErrCodeProtocol, "SETTINGS on stream %d", h.streamID)
	}
	if h.flags&flagAck != 0 {
		if h.length != 0 {
			return connErr(ErrCodeFrameSize, "SETTINGS ack with payload")
		}
		return nil
	}
	if h.length%6 != 0 {
		return connErr(ErrCodeFrameSize, "SETTINGS of %d bytes", h.length)
	}
	if h.length > maxSettingsFrame {
		return connErr(ErrCodeEnhanceYourCalm, "SETTINGS of %d bytes", h.length)
	}
	p, err := c.payload(h.length)
	if err != nil {
		return err
	}
	c.mu.Lock()
	broadcast := false
	for ; len(p) > 0; p = p[6:] {
		id, val := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
		switch id {
		case settingHeaderTableSize:
			c.peerHeaderTable = int64(val)
		case settingEnablePush:
			if val > 1 {
				c.mu.Unlock()
				return connErr(ErrCodeProtocol, "SETTINGS_ENABLE_PUSH %d", val)
			}
		case settingMaxConcurrentStreams:
			c.peerMaxStreams = val
			if c.peerMaxHint != nil {
				c.peerMaxHint.Store(val)
			}
		case settingInitialWindowSize:
			if val > maxWindow {
				c.mu.Unlock()
				return connErr(ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE %d", val)
			}
			delta := int64(val) - c.peerInitWindow
			c.peerInitWindow = int64(val)
			for _, s := range c.streams {
				s.sendWindow += delta
				if s.sendWindow > maxWindow {
					c.mu.Unlock()
					return connErr(ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows stream %d's window", s.id)
				}
			}
			broadcast = delta > 0
		case settingMaxFrameSize:
			if val < minMaxFrameSize || val > maxMaxFrameSize {
				c.mu.Unlock()
				return connErr(ErrCodeProtocol, "SETTINGS_MAX_FRAME_SIZE %d", val)
			}
			c.peerMaxF.Store(val)
		}
	}
	if broadcast {
		c.broadcastWindowLocked()
	}
	first := !c.sawSettings
	c.sawSettings = true
	c.mu.Unlock()
	c.established.Store(true)
	if first && c.isServer && c.wfailed.Load() == nil {
		c.nc.SetReadDeadline(time.Time{}) // the preface is complete
	}
	var b [frameHeaderLen]byte
	c.queueControl(appendSettingsAck(b[:0]))
	return nil
}

func (c *conn) broadcastWindowLocked() {
	if !c.closed {
		close(c.windowCh)
		c.windowCh = make(chan struct{})
	}
}

func (c *conn) onPing(h frameHeader) error {
	if h.streamID != 0 {
		return connErr(ErrCodeProtocol, "PING on stream %d", h.streamID)
	}
	if h.length != 8 {
		return connErr(ErrCodeFrameSize, "PING of %d bytes", h.length)
	}
	p, err := c.payload(8)
	if err != nil {
		return err
	}
	if h.flags&flagAck != 0 {
		c.mu.Lock()
		c.pingOut = false
		c.mu.Unlock()
		return nil
	}
	var data [8]byte
	copy(data[:], p)
	var b [frameHeaderLen + 8]byte
	c.queueControl(appendPing(b[:0], true, data))
	return nil
}

func (c *conn) onGoAway(h frameHeader) error {
	if h.streamID != 0 {
		return connErr(ErrCodeProtocol, "GOAWAY on stream %d", h.streamID)
	}
	if h.length < 8 {
		return connErr(ErrCodeFrameSize, "GOAWAY of %d bytes", h.length)
	}
	p, err := c.payload(8)
	if err != nil {
		return err
	}
	if _, err := c.br.Discard(int(h.length) - 8); err != nil {
		return err
	}
	last := binary.BigEndian.Uint32(p) & maxStreamID
	code := ErrCode(binary.BigEndian.Uint32(p[4:]))
	gerr := &GoAwayError{LastStreamID: last, Code: code}
	c.mu.Lock()
	c.goAwayRecv = true
	c.goAwayLastStream = last
	c.closing = true
	var refused []*Stream
	if !c.isServer {
		for id, s := range c.streams {
			if id > last {
				refused = append(refused, s)
			}
		}
	}
	idle := c.active == 0
	c.mu.Unlock()
	if code != ErrCodeNo {
		c.log.Debug("hbone: peer sent GOAWAY", "remote", c.nc.RemoteAddr().String(), "code", code.String())
	}
	for _, s := range refused {
		s.fail(&ConnError{Err: errors.Join(gerr, errUnprocessed)}, true)
	}
	if idle {
		go c.teardown(gerr)
	}
	return nil
}

func (c *conn) onWindowUpdate(h frameHeader) error {
	if h.length != 4 {
		return connErr(ErrCodeFrameSize, "WINDOW_UPDATE of %d bytes", h.length)
	}
	p, err := c.payload(4)
	if err != nil {
		return err
	}
	inc := int64(binary.BigEndian.Uint32(p) & maxWindow)
	c.mu.Lock()
	if h.streamID == 0 {
		if inc == 0 {
			c.mu.Unlock()
			return connErr(ErrCodeProtocol, "WINDOW_UPDATE of 0 on the connection")
		}
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			c.mu.Unlock()
			return connErr(ErrCodeFlowControl, "connection send window overflow")
		}
		c.broadcastWindowLocked()
		c.mu.Unlock()
		return nil
	}
	s := c.streams[h.streamID]
	if s == nil {
		idle := c.peerStreamIdleLocked(h.streamID)
		c.mu.Unlock()
		if idle {
			return connErr(ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", h.streamID)
		}
		return nil
	}
	if inc == 0 || s.sendWindow+inc > maxWindow {
		c.mu.Unlock()
		code := ErrCodeFlowControl
		if inc == 0 {
			code = ErrCodeProtocol
		}
		s.resetFromReadLoop(code)
		return nil
	}
	s.sendWindow += inc
	c.mu.Unlock()
	notify(s.wwake)
	return nil
}

// ---------------------------------------------------------------------------
// stream bookkeeping

// removeStreamLocked takes s out of the table once it is closed in both
// directions or reset; it returns true when the connection should close now
// (draining and nothing left).
func (c *conn) removeStreamLocked(s *Stream) (closeNow bool) {
	if s.removed {
		return false
	}
	s.removed = true
	delete(c.streams, s.id)
	if !c.isServer {
		return c.releaseLocked()
	}
	return false
}

// acquireLocked counts a new stream (client reservation, server handler).
func (c *conn) acquireLocked() {
	c.active++
	if c.active == 1 && c.idleTimer != nil {
		c.idleTimer.Stop()
	}
}

// releaseLocked uncounts a stream; it returns true when the connection
// should close now.
func (c *conn) releaseLocked() bool {
	c.active--
	if c.active > 0 || c.closed {
		return false
	}
	if c.closing {
		return true
	}
	c.idleSince = time.Now()
	if c.idleTimer != nil {
		c.idleTimer.Reset(c.cfg.idleTimeout)
	}
	return false
}

// remoteEnded records END_STREAM from the peer.
func (c *conn) remoteEnded(s *Stream) {
	c.mu.Lock()
	s.remoteEnd = true
	closeNow := false
	if s.localEnd {
		closeNow = c.removeStreamLocked(s)
	}
	c.mu.Unlock()
	if closeNow {
		go c.teardown(errLocalClose)
	}
}

func (c *conn) onIdleTimer() {
	c.mu.Lock()
	if c.closed || c.active > 0 {
		c.mu.Unlock()
		return
	}
	if rest := c.cfg.idleTimeout - time.Since(c.idleSince); rest > 0 {
		c.idleTimer.Reset(rest)
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.mu.Unlock()
	c.teardown(errIdleClose)
}

func (c *conn) onKeepAlive() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.activity.Swap(false) {
		c.pingOut = false
		c.kaTimer.Reset(c.cfg.keepAlive)
		c.mu.Unlock()
		return
	}
	if c.pingOut { // a PING went unanswered for keepAliveWait
		c.mu.Unlock()
		c.teardown(errKeepAlive)
		return
	}
	c.pingOut = true
	c.kaTimer.Reset(c.cfg.keepAliveWait)
	c.mu.Unlock()
	var b [frameHeaderLen + 8]byte
	c.queueControl(appendPing(b[:0], false, [8]byte{'a', 'm', 'b', 'i', 't'}))
}

// usable reports whether new streams may go on this connection.
func (c *conn) tryReserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing || c.nextStreamID > maxStreamID {
		return false
	}
	if uint32(c.active) >= min(c.cfg.maxStreams, c.peerMaxStreams) {
		return false
	}
	c.acquireLocked()
	c.reserved++
	return true
}

func (c *conn) unreserve() {
	c.mu.Lock()
	c.reserved--
	closeNow := c.releaseLocked()
	c.mu.Unlock()
	if closeNow {
		go c.teardown(errLocalClose)
	}
}

// drain stops new streams (GOAWAY) and closes the connection once the
// open ones are done.
func (c *conn) drain() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closing = true
	if c.active == 0 {
		c.mu.Unlock()
		c.teardown(errLocalClose) // says GOAWAY itself
		return
	}
	send := !c.goAwaySent
	c.goAwaySent = true
	last := c.lastPeerStream
	c.mu.Unlock()
	if send {
		var b [frameHeaderLen + 8]byte
		c.write(appendGoAway(b[:0], last, ErrCodeNo))
	}
}

// teardown closes the connection and fails every stream still open. err is
// the cause: a protoError or a deliberate close is announced with GOAWAY.
func (c *conn) teardown(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = err
	streams := make([]*Stream, 0, len(c.streams))
	for _, s := range c.streams {
		s.removed = true
		streams = append(streams, s)
	}
	clear(c.streams)
	close(c.windowCh)
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.kaTimer != nil {
		c.kaTimer.Stop()
	}
	goAwaySent := c.goAwaySent
	c.goAwaySent = true
	last := c.lastPeerStream
	c.mu.Unlock()

	code, announce := ErrCodeNo, false
	var pe *protoError
	switch {
	case errors.As(err, &pe):
		code, announce = pe.code, true
		c.log.Info("hbone: closing connection after protocol error", "remote", c.nc.RemoteAddr().String(), "error", err)
	case errors.Is(err, errIdleClose), errors.Is(err, errLocalClose):
		announce = true
	case errors.Is(err, errKeepAlive):
		c.log.Info("hbone: peer stopped answering", "remote", c.nc.RemoteAddr().String())
	}
	// A draining connection has said GOAWAY(NO_ERROR) already; an error is
	// worth a second one.
	if announce && (!goAwaySent || code != ErrCodeNo) {
		c.nc.SetWriteDeadline(time.Now().Add(goAwayTimeout))
		var b [frameHeaderLen + 8]byte
		c.write(appendGoAway(b[:0], last, code))
		c.waitWritten()
	}
	c.nc.Close()
	cerr := &ConnError{Err: err}
	for _, s := range streams {
		s.fail(cerr, false)
	}
	close(c.done)
	if c.stats != nil {
		c.stats.connectionsClosed.Add(1)
	}
	if c.owner != nil {
		c.owner.connClosed(c)
	}
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// close closes the connection at once.
func (c *conn) close() { c.teardown(errLocalClose) }

// notify wakes the goroutine waiting on a 1-buffered channel, if any.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// deadline is a Stream read or write deadline.
type deadline struct {
	t     time.Time
	timer *time.Timer
}

// set arms d to wake ch at t; the caller holds the lock guarding d.
func (d *deadline) set(t time.Time, ch chan struct{}) {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.t = t
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur > 0 {
		d.timer = time.AfterFunc(dur, func() { notify(ch) })
	} else {
		notify(ch)
	}
}

func (d *deadline) exceeded() bool {
	return !d.t.IsZero() && !time.Now().Before(d.t)
}

var errDeadline = os.ErrDeadlineExceeded
