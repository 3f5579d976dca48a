package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/rawio"
)

// Stream is one HBONE tunnel: an HTTP/2 CONNECT stream whose DATA frames
// carry the tunnelled TCP bytes. It is a net.Conn with TCP's half-close:
//
//   - CloseWrite ends the sending direction (END_STREAM), like shutdown(SHUT_WR);
//     the peer's Read then returns io.EOF, and it may still write back.
//   - Read returns io.EOF once the peer has half-closed and all its bytes are read.
//   - Close ends the stream gracefully: END_STREAM if not sent yet and, if
//     the peer has not finished sending, RST_STREAM(NO_ERROR), which asks it
//     to stop without discarding what it already received (RFC 9113 §8.1).
//   - Reset aborts the stream (RST_STREAM(CANCEL)), as a TCP RST does; the
//     peer's reads and writes fail with a *StreamError.
//
// Reads and writes may run concurrently with each other; like a TCP socket,
// concurrent Writes may interleave. Deadlines are honoured while waiting for
// data or for flow-control window; a Write already handed to the TLS
// connection completes or fails with the connection.
//
// LocalAddr and RemoteAddr are the addresses of the underlying connection
// (the HBONE endpoints), not of the tunnelled flow; see Request.Authority and
// Request.ForwardedFor for those.
//
// ReadFrom and WriteTo move bytes without intermediate copies: ReadFrom reads
// the source straight into a frame buffer, WriteTo hands received buffers to
// the destination (with writev where the destination supports it). io.Copy
// and Splice use them.
type Stream struct {
	c  *conn
	id uint32

	// guarded by c.mu
	sendWindow int64
	localEnd   bool  // END_STREAM sent (or being sent)
	remoteEnd  bool  // END_STREAM received
	removed    bool  // out of the connection's stream table
	sendErr    error // why no more can be sent (reset, connection gone)
	wdl        deadline

	// guarded by mu
	mu          sync.Mutex
	rq          recvQueue
	recvWindow  int64
	recvUnacked int64
	eof         bool  // END_STREAM received
	rerr        error // terminal read error
	readClosed  bool  // Close called
	rdl         deadline
	respDone    bool
	resp        *Response
	respErr     error

	// Direct delivery (see onData): while WriteTo waits with nothing
	// buffered, the read loop writes payloads straight to WriteTo's
	// destination socket. Guarded by mu.
	sink        *rawio.IO // WriteTo's destination, if a TCP socket
	sinkIdle    bool      // WriteTo is waiting and rq is empty
	sinkWritten int64     // bytes the read loop wrote, not yet counted by WriteTo
	sinkErr     error     // a direct write failed: WriteTo returns it

	gotResp bool // client, read loop only: final response headers seen

	rwake  chan struct{} // 1-buffered: readers wait here
	wwake  chan struct{} // 1-buffered: writers wait here
	respCh chan struct{} // client: closed when the response (or failure) is known

	ctx    context.Context // server: the handler's context
	cancel context.CancelFunc

	bytesRead    atomic.Int64
	bytesWritten atomic.Int64
	closeOnce    sync.Once

	bufs    net.Buffers
	held    []*chunk
	heldArr [16]*chunk
	bufsArr [16][]byte
	iovArr  [16]syscall.Iovec
}

// Response is the answer to a CONNECT.
type Response struct {
	StatusCode int
	Header     http.Header
}

func newStream(c *conn, id uint32) *Stream {
	s := &Stream{
		c:          c,
		id:         id,
		sendWindow: c.peerInitWindow,
		recvWindow: int64(c.cfg.streamWindow),
		rwake:      make(chan struct{}, 1),
		wwake:      make(chan struct{}, 1),
	}
	return s
}

// ID is the HTTP/2 stream identifier.
func (s *Stream) ID() uint32 { return s.id }

// BytesRead is the number of tunnelled bytes read so far (live; for
// metrics of long-lived tunnels).
func (s *Stream) BytesRead() int64 { return s.bytesRead.Load() }

// BytesWritten is the number of tunnelled bytes written so far.
func (s *Stream) BytesWritten() int64 { return s.bytesWritten.Load() }

// LocalAddr is the local address of the HBONE connection.
func (s *Stream) LocalAddr() net.Addr { return s.c.nc.LocalAddr() }

// RemoteAddr is the remote address of the HBONE connection.
func (s *Stream) RemoteAddr() net.Addr { return s.c.nc.RemoteAddr() }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline bounds waiting in Read and WriteTo.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl.set(t, s.rwake)
	s.mu.Unlock()
	return nil
}

// SetWriteDeadline bounds waiting for flow-control window in Write and ReadFrom.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.c.mu.Lock()
	s.wdl.set(t, s.wwake)
	s.c.mu.Unlock()
	return nil
}

// ---------------------------------------------------------------------------
// receiving

// onData is called by the read loop with a DATA payload: either ch (a
// buffer of its own) or small (the read loop's scratch, to be copied).
// flow is the frame's flow-controlled length, n the payload's.
//
// When WriteTo is waiting for data with nothing buffered and its
// destination is a TCP socket, a payload of up to directWriteMax bytes is
// written to that socket right here, with one non-blocking write(2):
// handing it to the WriteTo goroutine instead costs a goroutine wake-up per
// frame, which on a busy machine is the tail of a request's latency. What
// the socket does not take at once is queued for WriteTo as usual, so a
// slow destination never blocks the read loop (and the other streams of
// the connection).
func (s *Stream) onData(ch *chunk, small []byte, flow, n int64, end bool) {
	c := s.c
	s.mu.Lock()
	if s.eof || flow > s.recvWindow {
		s.mu.Unlock()
		if ch != nil {
			putChunk(ch)
		}
		c.returnConnWindow(flow, true)
		code := ErrCodeFlowControl
		if s.eof {
			code = ErrCodeStreamClosed
		}
		s.resetFromReadLoop(code)
		return
	}
	s.recvWindow -= flow
	var dropped int64
	var direct int
	var inc uint32
	if s.readClosed || s.rerr != nil {
		dropped = flow
		if ch != nil {
			putChunk(ch)
		}
	} else {
		if s.sinkIdle && s.rq.n == 0 && n > 0 && n <= directWriteMax {
			p := small
			if ch != nil {
				p = ch.buf
			}
			k, err := s.sink.WriteOnce(p)
			if err != nil {
				s.sinkErr = err
				s.sinkIdle = false
			}
			direct = k
			s.sinkWritten += int64(k)
			if ch != nil {
				ch.off = k
			} else {
				small = small[k:]
			}
		}
		if ch != nil {
			if ch.off == len(ch.buf) {
				putChunk(ch)
			} else {
				s.rq.push(ch)
			}
		} else if len(small) > 0 {
			t := s.rq.tail()
			if t == nil || cap(t.buf)-len(t.buf) < len(small) {
				t = getChunk(16 << 10)
				s.rq.push(t)
			}
			t.buf = append(t.buf, small...)
			s.rq.n += len(small)
		}
		s.recvUnacked += flow - n // padding is never read: return it with the next update
		dropped = flow - n
		if direct > 0 {
			inc = s.creditLocked(direct)
		}
	}
	if end {
		s.eof = true
	}
	wake := s.rq.n > 0 || end || s.sinkErr != nil || !s.sinkIdle
	s.mu.Unlock()
	if direct > 0 {
		s.bytesRead.Add(int64(direct))
		s.sendCredit(inc, direct, true)
	}
	if dropped > 0 {
		c.returnConnWindow(dropped, true)
	}
	if wake {
		notify(s.rwake)
	}
	if end {
		c.remoteEnded(s)
	}
}

// directWriteMax is the largest payload the read loop writes to a
// WriteTo destination itself: one TLS record. Larger ones (bulk transfers)
// go to the WriteTo goroutine, so that decrypting the next frame and
// writing this one run in parallel (with 64 KiB, single-stream throughput
// dropped by a fifth).
const directWriteMax = 16 << 10

// readErrLocked is why a Read with nothing buffered must return, if it must.
func (s *Stream) readErrLocked() error {
	switch {
	case s.readClosed:
		return net.ErrClosed
	case s.rerr != nil:
		return s.rerr
	case s.eof:
		return io.EOF
	case s.rdl.exceeded():
		return errDeadline
	}
	return nil
}

// creditLocked accounts n consumed bytes and returns the stream window
// increment to send now, if any.
func (s *Stream) creditLocked(n int) uint32 {
	s.recvUnacked += int64(n)
	if s.eof || s.rerr != nil || s.recvUnacked < int64(s.c.cfg.streamWindow)/4 {
		return 0
	}
	inc := s.recvUnacked
	s.recvUnacked = 0
	s.recvWindow += inc
	return uint32(inc)
}

// sendCredit returns consumed bytes to the peer's windows. The read loop
// queues the updates instead of writing them (it must never block on the
// socket).
func (s *Stream) sendCredit(streamInc uint32, n int, fromReadLoop bool) {
	c := s.c
	var connInc int64
	c.mu.Lock()
	c.recvUnacked += int64(n)
	if c.recvUnacked >= int64(c.cfg.connWindow)/4 && !c.closed {
		connInc = c.recvUnacked
		c.recvUnacked = 0
		c.recvWindow += connInc
	}
	c.mu.Unlock()
	if streamInc == 0 && connInc == 0 {
		return
	}
	var b [2 * (frameHeaderLen + 4)]byte
	f := b[:0]
	if streamInc > 0 {
		f = appendWindowUpdate(f, s.id, streamInc)
	}
	if connInc > 0 {
		f = appendWindowUpdate(f, 0, uint32(connInc))
	}
	if fromReadLoop {
		c.queueControl(f)
	} else {
		c.write(f)
	}
}

// Read reads tunnelled bytes.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	for {
		if s.rq.n > 0 {
			n := s.rq.read(p)
			inc := s.creditLocked(n)
			more := s.rq.n > 0
			s.mu.Unlock()
			if more {
				notify(s.rwake) // another reader may be waiting
			}
			s.bytesRead.Add(int64(n))
			s.sendCredit(inc, n, false)
			return n, nil
		}
		if err := s.readErrLocked(); err != nil {
			s.mu.Unlock()
			notify(s.rwake)
			return 0, err
		}
		s.mu.Unlock()
		<-s.rwake
		s.mu.Lock()
	}
}

// WriteTo writes everything the peer sends to w until the peer half-closes
// (returning a nil error) or the stream fails. If w is a *net.TCPConn, the
// connection's read loop may write small payloads to it directly while
// WriteTo waits (see onData): nothing else may write to w meanwhile.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	var sink *rawio.IO
	if tc, ok := w.(*net.TCPConn); ok {
		sink = rawio.New(tc)
	}
	var total int64
	for {
		s.mu.Lock()
		for s.rq.n == 0 {
			err := s.sinkErr
			if err == nil {
				err = s.readErrLocked()
			}
			if err != nil {
				total += s.sinkWritten
				s.sinkWritten = 0
				s.sink, s.sinkIdle = nil, false
				s.mu.Unlock()
				notify(s.rwake)
				if err == io.EOF {
					err = nil
				}
				return total, err
			}
			s.sink, s.sinkIdle = sink, sink != nil
			s.mu.Unlock()
			<-s.rwake
			s.mu.Lock()
			s.sinkIdle = false
		}
		total += s.sinkWritten
		s.sinkWritten = 0
		held := s.heldArr[:0]
		bufs := s.bufsArr[:0]
		var taken int64
		for len(held) < len(s.heldArr) {
			ch := s.rq.pop()
			if ch == nil {
				break
			}
			held = append(held, ch)
			bufs = append(bufs, ch.buf[ch.off:])
			taken += int64(len(ch.buf) - ch.off)
		}
		s.mu.Unlock()

		var n int64
		var err error
		switch {
		case sink != nil:
			n, err = sink.WriteBuffers(bufs, s.iovArr[:0])
			clear(s.iovArr[:len(bufs)])
		case len(bufs) == 1:
			var k int
			k, err = w.Write(bufs[0])
			n = int64(k)
		default:
			s.bufs = bufs
			n, err = s.bufs.WriteTo(w)
			s.bufs = nil
		}
		for i, ch := range held {
			putChunk(ch)
			held[i] = nil
			bufs[i] = nil
		}
		total += n
		s.bytesRead.Add(n)

		s.mu.Lock()
		inc := s.creditLocked(int(n))
		s.mu.Unlock()
		s.sendCredit(inc, int(n), false)
		if err != nil {
			// The bytes taken off the queue but not written are
			// dropped: they are no longer in rq for Close or a reset
			// to give back, so give their connection window back
			// here. Otherwise each destination that fails mid-write
			// (a server closing its socket with data in flight)
			// shrinks the peer's connection window for good, until
			// every stream of the connection stalls.
			s.c.returnConnWindow(taken-n, false)
			return total, err
		}
	}
}

// ---------------------------------------------------------------------------
// sending

// writeErrLocked is why nothing more can be sent, if so. c.mu is held.
func (s *Stream) writeErrLocked() error {
	switch {
	case s.sendErr != nil:
		return s.sendErr
	case s.localEnd:
		return errWriteAfterCloseWrite
	case s.c.closed:
		return &ConnError{Err: s.c.closeErr}
	case s.wdl.exceeded():
		return errDeadline
	}
	return nil
}

// reserve waits for flow-control window and takes up to want bytes of it.
func (s *Stream) reserve(want int) (int, error) {
	c := s.c
	c.mu.Lock()
	for {
		if err := s.writeErrLocked(); err != nil {
			c.mu.Unlock()
			notify(s.wwake)
			return 0, err
		}
		if avail := min(int64(want), s.sendWindow, c.sendWindow); avail > 0 {
			s.sendWindow -= avail
			c.sendWindow -= avail
			c.mu.Unlock()
			return int(avail), nil
		}
		ch := c.windowCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-s.wwake:
		}
		c.mu.Lock()
	}
}

// Write sends p as DATA frames.
func (s *Stream) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := s.reserve(min(len(p)-written, maxWriteBatch))
		if err != nil {
			return written, err
		}
		if err := s.c.writeData(s.id, p[written:written+n]); err != nil {
			return written, err
		}
		written += n
		s.bytesWritten.Add(int64(n))
	}
	return written, nil
}

// Buffer sizes of ReadFrom (frame header included): it starts small, so
// that idle tunnels hold little memory, and grows while reads fill the
// buffer.
const (
	readFromMin = 4 << 10
	readFromMax = 256 << 10
)

// ReadFrom sends everything read from r until r returns io.EOF (a nil
// error; the stream stays open for writing: call CloseWrite to end it). It
// reads into a buffer with room for the frame header in front, so each read
// becomes one DATA frame and one TLS write without copying.
//
// A bulk transfer — a read that fills the largest buffer — switches to
// readFromBulk, where reading the source and sending (encrypting, writing
// the socket) run on two goroutines; it comes back here when reads get
// small again, so requests and responses are not handed between
// goroutines.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	if tc, ok := r.(*net.TCPConn); ok {
		if rio := rawio.New(tc); rio != nil {
			r = rio
		}
	}
	var total int64
	size := readFromMin
	ch := getChunk(size)
	defer func() { putChunk(ch) }()
	for {
		buf := ch.buf[:cap(ch.buf)]
		limit := min(len(buf)-frameHeaderLen, s.c.frameSize())
		n, rerr := r.Read(buf[frameHeaderLen : frameHeaderLen+limit])
		k, err := s.sendFrames(buf, n)
		total += k
		if err != nil {
			return total, err
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		// Adapt the buffer to the flow.
		switch {
		case n == limit && size < readFromMax && limit < s.c.frameSize():
			size *= 4
		case n == limit:
			k, err, rerr := s.readFromBulk(r, ch)
			total += k
			switch {
			case err != nil:
				return total, err
			case rerr == io.EOF:
				return total, nil
			case rerr != nil:
				return total, rerr
			}
			size = readFromMin // reads got small
		case n < limit/8 && size > readFromMin:
			size = readFromMin
		default:
			continue
		}
		putChunk(ch)
		ch = getChunk(size)
	}
}

// sendFrames sends buf[frameHeaderLen:frameHeaderLen+n] as DATA frames, as
// flow control allows, writing each frame's header in front of its payload
// (over bytes already sent, for all but the first): no copy.
func (s *Stream) sendFrames(buf []byte, n int) (int64, error) {
	var sent int64
	for off := 0; off < n; {
		k, err := s.reserve(n - off)
		if err != nil {
			return sent, err
		}
		putFrameHeader(buf[off:off+frameHeaderLen], k, frameData, 0, s.id)
		if err := s.c.write(buf[off : off+frameHeaderLen+k]); err != nil {
			return sent, err
		}
		off += k
		sent += int64(k)
		s.bytesWritten.Add(int64(k))
	}
	return sent, nil
}

// bulkBuffers is how many buffers of readFromMax bytes a bulk ReadFrom
// uses: one being read into while the other is being sent.
const bulkBuffers = 2

// readFromBulk is ReadFrom during a bulk transfer: this goroutine reads r
// into one buffer while a sender goroutine sends the previous one.
// Measured on the sending ztunnel of one iperf3 stream, the single
// goroutine of ReadFrom was never idle: two thirds of its time sending a
// 256 KiB frame (encrypting, copying the records into the cork buffer,
// write(2), which on a local link also runs the receiver's TCP and
// netfilter work), a fifth reading the source, the rest waiting for
// window. With the reading overlapped (and the larger default windows,
// config.go) single-stream throughput rose by a tenth; two goroutine
// hand-offs per 256 KiB cost nothing measurable.
//
// spare is a buffer of readFromMax bytes the caller owns and keeps. It
// returns the bytes sent, the sending error (first) and the reading error
// that ended the phase; neither means that a read returned less than an
// eighth of the buffer, and the stream is back to one goroutine.
func (s *Stream) readFromBulk(r io.Reader, spare *chunk) (sent int64, err, rerr error) {
	type filled struct {
		ch *chunk
		n  int
	}
	full := make(chan filled, bulkBuffers)
	free := make(chan *chunk, bulkBuffers)
	done := make(chan struct{})
	own := getChunk(readFromMax)
	free <- spare
	free <- own
	var serr atomic.Pointer[error]
	go func() {
		defer close(done)
		for f := range full {
			if serr.Load() == nil {
				k, err := s.sendFrames(f.ch.buf[:cap(f.ch.buf)], f.n)
				sent += k
				if err != nil {
					serr.Store(&err)
				}
			}
			free <- f.ch
		}
	}()
	for {
		ch := <-free
		if serr.Load() != nil {
			free <- ch
			break
		}
		buf := ch.buf[:cap(ch.buf)]
		limit := min(len(buf)-frameHeaderLen, s.c.frameSize())
		var n int
		n, rerr = r.Read(buf[frameHeaderLen : frameHeaderLen+limit])
		if n > 0 {
			full <- filled{ch, n}
		} else {
			free <- ch
		}
		if rerr != nil || n < limit/8 {
			break
		}
	}
	close(full)
	<-done
	// Both buffers are back in free (the sender returns each one it got).
	for range bulkBuffers {
		if ch := <-free; ch != spare {
			putChunk(ch)
		}
	}
	if p := serr.Load(); p != nil {
		err = *p
	}
	return sent, err, rerr
}

// CloseWrite half-closes the stream: END_STREAM after the bytes written so
// far. The peer reads io.EOF; this end can still read.
func (s *Stream) CloseWrite() error {
	c := s.c
	c.mu.Lock()
	if s.localEnd {
		c.mu.Unlock()
		return nil
	}
	if s.sendErr != nil {
		err := s.sendErr
		c.mu.Unlock()
		return err
	}
	if c.closed {
		c.mu.Unlock()
		return &ConnError{Err: c.closeErr}
	}
	s.localEnd = true
	c.mu.Unlock()
	var b [frameHeaderLen]byte
	err := c.write(appendFrameHeader(b[:0], 0, frameData, flagEndStream, s.id))
	c.mu.Lock()
	closeNow := false
	if s.remoteEnd {
		closeNow = c.removeStreamLocked(s)
	}
	c.mu.Unlock()
	notify(s.wwake)
	if closeNow {
		go c.teardown(errLocalClose)
	}
	return err
}

// Close ends the stream gracefully (see the type's documentation) and
// releases its buffers. Reads and writes after Close fail with net.ErrClosed.
func (s *Stream) Close() error {
	s.closeOnce.Do(s.doClose)
	return nil
}

func (s *Stream) doClose() {
	c := s.c
	s.mu.Lock()
	s.readClosed = true
	dropped := int64(s.rq.n)
	s.rq.reset()
	s.rdl.set(time.Time{}, s.rwake)
	s.mu.Unlock()

	var b [frameHeaderLen + frameHeaderLen + 4]byte
	f := b[:0]
	c.mu.Lock()
	closeNow := false
	if !s.removed && s.sendErr == nil && !c.closed {
		if !s.localEnd {
			s.localEnd = true
			f = appendFrameHeader(f, 0, frameData, flagEndStream, s.id)
		}
		if !s.remoteEnd {
			f = appendRSTStream(f, s.id, ErrCodeNo)
		}
		closeNow = c.removeStreamLocked(s)
	}
	if s.sendErr == nil {
		s.sendErr = net.ErrClosed
	}
	s.wdl.set(time.Time{}, s.wwake)
	c.mu.Unlock()
	if len(f) > 0 {
		c.write(f)
	}
	c.returnConnWindow(dropped, false)
	s.finish(net.ErrClosed)
	if closeNow {
		go c.teardown(errLocalClose)
	}
}

// Reset aborts the stream with RST_STREAM(CANCEL), discarding unread data.
func (s *Stream) Reset() error {
	s.reset(ErrCodeCancel, false)
	return nil
}

func (s *Stream) resetFromReadLoop(code ErrCode) { s.reset(code, true) }

func (s *Stream) reset(code ErrCode, fromReadLoop bool) {
	c := s.c
	serr := &StreamError{Code: code}
	c.mu.Lock()
	sendRST := !s.removed && !c.closed
	closeNow := false
	if sendRST {
		closeNow = c.removeStreamLocked(s)
	}
	if s.sendErr == nil || s.sendErr == net.ErrClosed {
		s.sendErr = serr
	}
	c.mu.Unlock()
	if sendRST {
		var b [frameHeaderLen + 4]byte
		f := appendRSTStream(b[:0], s.id, code)
		if fromReadLoop {
			c.queueControl(f)
		} else {
			c.write(f)
		}
	}
	s.mu.Lock()
	dropped := int64(s.rq.n)
	s.rq.reset()
	if s.rerr == nil {
		s.rerr = serr
	}
	s.mu.Unlock()
	c.returnConnWindow(dropped, fromReadLoop)
	s.finish(serr)
	if closeNow {
		go c.teardown(errLocalClose)
	}
}

// onReset handles RST_STREAM from the peer. NO_ERROR keeps what was
// received readable (RFC 9113 §8.1); any other code discards it.
func (s *Stream) onReset(code ErrCode) {
	c := s.c
	serr := &StreamError{Code: code, Remote: true}
	c.mu.Lock()
	if s.removed {
		c.mu.Unlock()
		return
	}
	closeNow := c.removeStreamLocked(s)
	if s.sendErr == nil {
		s.sendErr = serr
	}
	c.mu.Unlock()
	s.mu.Lock()
	var dropped int64
	if code != ErrCodeNo {
		dropped = int64(s.rq.n)
		s.rq.reset()
		s.rerr = serr
	} else if !s.eof && s.rerr == nil {
		s.rerr = serr
	}
	s.mu.Unlock()
	c.returnConnWindow(dropped, true)
	var ferr error = serr
	if code == ErrCodeRefusedStream {
		ferr = errors.Join(serr, errUnprocessed)
	}
	s.finish(ferr)
	if closeNow {
		go c.teardown(errLocalClose)
	}
}

// fail ends the stream because its connection failed or went away.
// Received data stays readable up to the failure.
func (s *Stream) fail(err error, remove bool) {
	c := s.c
	c.mu.Lock()
	if s.sendErr == nil {
		s.sendErr = err
	}
	closeNow := false
	if remove && !s.removed {
		closeNow = c.removeStreamLocked(s)
	}
	c.mu.Unlock()
	s.mu.Lock()
	if !s.eof && s.rerr == nil {
		s.rerr = err
	}
	s.mu.Unlock()
	s.finish(err)
	if closeNow {
		go c.teardown(errLocalClose)
	}
}

// finish wakes everyone waiting on the stream and settles a pending
// response with err.
func (s *Stream) finish(err error) {
	notify(s.rwake)
	notify(s.wwake)
	if s.cancel != nil {
		s.cancel()
	}
	if s.respCh != nil {
		s.setResponse(nil, err)
	}
}

func (s *Stream) setResponse(resp *Response, err error) {
	s.mu.Lock()
	if s.respDone {
		s.mu.Unlock()
		return
	}
	s.respDone = true
	s.resp, s.respErr = resp, err
	s.mu.Unlock()
	close(s.respCh)
}
