package waypoint

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The waypoint serves HTTP/1.1 keep-alive connections itself, on the
// tunnel's goroutine, for the common request: HTTP/1.1 in origin form, a
// body of declared length that fits the retry buffer (or none), no upgrade,
// no Expect, no trailers. net/http's server costs more per request than
// the proxying does: a context and a goroutine reading ahead around every
// handler call, a response struct and header maps built afresh, a
// per-request buffered writer. Here the reader, writer, request and header
// map live as long as the connection, and a request head is one string
// every header is a piece of.
//
// Anything else — the HTTP/2 preface, HTTP/1.0, chunked or large request
// bodies, upgrades, Expect, malformed or oversized heads — hands the
// connection, with the bytes already read, to net/http, which serves it from
// then on and answers bad input as before (400, 431). Both run the same
// handler (Proxy.ServeHTTP).

// h1Server is one client connection served by the loop.
type h1Server struct {
	p      *Proxy
	s      stream
	t      *tunnel
	br     *bufio.Reader
	bw     *bufio.Writer
	head   []byte
	hdr    http.Header
	vals   []string
	tmpl   *http.Request // carries the connection's context
	req    http.Request
	w      h1Writer
	remote string

	// Of the request's header fields (Host aside), as received: how many,
	// and their size as headerSize counts it.
	nfields     int
	fieldsBytes int64

	// The request body, read before the handler runs: in the reader's
	// buffer (discard bytes of it) or in a buffer of its own.
	body    memBody
	discard int
	bodyBuf []byte

	// What the connection is doing since when (h1Conns.clock), for the
	// janitor's timeouts.
	phase atomic.Int32
	since atomic.Int64
}

const (
	phaseIdle    = iota + 1 // waiting for a request
	phaseReading            // reading a request head
	phaseBody               // reading its body (bounded by the idle timeout, as a stream idle timeout)
	phaseServing            // the handler runs
)

func (sc *h1Server) setPhase(ph int32) {
	sc.since.Store(sc.p.h1conns.clock.Load())
	sc.phase.Store(ph)
}

var h1Pool = sync.Pool{New: func() any {
	// Header maps start small (eight fields, one group: cleared cheaply
	// per request) and grow on connections whose requests need it.
	sc := &h1Server{hdr: make(http.Header)}
	sc.br = bufio.NewReaderSize(nil, 4<<10)
	sc.bw = bufio.NewWriterSize(nil, 4<<10)
	return sc
}}

// h1Conns tracks the connections the loop serves, for Shutdown and Close,
// and enforces the idle and read-header timeouts. A janitor does, from a
// clock it advances each tick: setting read deadlines costs two timer
// updates and clock readings per request.
type h1Conns struct {
	mu       sync.Mutex
	m        map[*h1Server]struct{}
	draining atomic.Bool
	closed   bool
	// clock advances by one tick per tick the janitor sees (in
	// nanoseconds): never faster than real time, even when a loaded
	// machine delays or drops ticks, so no timeout fires early.
	clock atomic.Int64
	stop  chan struct{}
}

// start runs the janitor until close.
func (c *h1Conns) start(idle, readHeader time.Duration) {
	tick := min(max(min(idle, readHeader)/4, 5*time.Millisecond), time.Second)
	c.stop = make(chan struct{})
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				c.expire(c.clock.Add(int64(tick)), idle+tick, readHeader+tick)
			}
		}
	}()
}

// expire closes the connections idle or reading a request for too long
// (the limits allow for phases timed from the previous tick).
func (c *h1Conns) expire(now int64, idle, readHeader time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sc := range c.m {
		limit := idle
		switch sc.phase.Load() {
		case phaseIdle, phaseBody:
		case phaseReading:
			limit = readHeader
		default:
			continue
		}
		if now-sc.since.Load() > int64(limit) {
			sc.s.Close()
		}
	}
}

func (c *h1Conns) add(sc *h1Server) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining.Load() || c.closed {
		return false
	}
	if c.m == nil {
		c.m = map[*h1Server]struct{}{}
	}
	c.m[sc] = struct{}{}
	return true
}

func (c *h1Conns) remove(sc *h1Server) {
	c.mu.Lock()
	delete(c.m, sc)
	c.mu.Unlock()
}

// drain closes idle connections now and makes the others close after their
// current request; it reports how many are still open.
func (c *h1Conns) drain() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining.Store(true)
	for sc := range c.m {
		if sc.phase.Load() == phaseIdle {
			sc.s.Close()
		}
	}
	return len(c.m)
}

func (c *h1Conns) isDraining() bool { return c.draining.Load() }

// close closes every connection at once.
func (c *h1Conns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining.Store(true)
	if !c.closed && c.stop != nil {
		close(c.stop)
	}
	c.closed = true
	for sc := range c.m {
		sc.s.Close()
	}
}

// shutdown drains and waits until the connections are gone or ctx ends.
func (c *h1Conns) shutdown(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for c.drain() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// serveHTTP1 serves an HTTP connection of a tunnel (prefix: bytes protocol
// detection read). It returns once the connection is done.
func (p *Proxy) serveHTTP1(ctx context.Context, t *tunnel, s stream, prefix []byte) {
	sc := h1Pool.Get().(*h1Server)
	sc.p, sc.s, sc.t = p, s, t
	sc.remote = t.src.String() + ":0"
	src := streamSource{s: s, prefix: prefix}
	sc.br.Reset(&src)
	sc.bw.Reset(s)
	sc.tmpl = new(http.Request).WithContext(context.WithValue(ctx, tunnelKey{}, t))
	handoff := false
	if p.h1conns.add(sc) {
		handoff = sc.loop()
		p.h1conns.remove(sc)
	} else {
		s.Close()
	}
	var rest []byte
	if handoff {
		// What the loop read and did not serve goes first to net/http.
		n := sc.br.Buffered()
		rest = make([]byte, 0, len(sc.head)+n+len(src.prefix))
		rest = append(rest, sc.head...)
		b, _ := sc.br.Peek(n)
		rest = append(rest, b...)
		rest = append(rest, src.prefix...)
	}
	sc.release()
	if handoff {
		c := newTunnelConn(s, t, rest)
		if !p.ln.push(ctx, c) {
			s.Close()
			return
		}
		select {
		case <-c.closed:
		case <-ctx.Done():
		}
	}
}

func (sc *h1Server) release() {
	sc.br.Reset(nil)
	sc.bw.Reset(nil)
	clear(sc.hdr)
	clear(sc.w.h)
	clear(sc.vals)
	head, hdr, vals, wh := sc.head[:0], sc.hdr, sc.vals[:0], sc.w.h
	if cap(head) > 16<<10 {
		head = nil
	}
	*sc = h1Server{br: sc.br, bw: sc.bw, head: head, hdr: hdr, vals: vals}
	sc.w.h = wh
	h1Pool.Put(sc)
}

// loop serves requests until the connection ends (false) or one is for
// net/http (true: sc.head and the reader's buffer hold its bytes).
func (sc *h1Server) loop() (handoff bool) {
	p := sc.p
	lim := &p.limits
	if sc.w.h == nil {
		sc.w.h = make(http.Header)
	}
	for {
		sc.head = sc.head[:0]
		if sc.br.Buffered() == 0 {
			sc.setPhase(phaseIdle)
			if p.h1conns.isDraining() {
				sc.s.Close()
				return false
			}
			if _, err := sc.br.Peek(1); err != nil {
				sc.s.Close()
				return false
			}
		}
		sc.setPhase(phaseReading)
		complete, err := sc.readHead(lim.MaxHeaderBytes)
		if err != nil {
			sc.s.Close()
			return false
		}
		if !complete || !sc.parse() {
			return true
		}
		if sc.req.ContentLength > 0 {
			sc.setPhase(phaseBody)
			if !sc.readBody(int(sc.req.ContentLength)) {
				sc.s.Close()
				return false
			}
		}
		sc.setPhase(phaseServing)
		if !sc.serve() {
			return false
		}
	}
}

// readHead reads a request head into sc.head. complete is false when the
// head is not one for the loop (a line longer than the reader's buffer, a
// head larger than the limit).
func (sc *h1Server) readHead(max int) (complete bool, err error) {
	for {
		line, err := sc.br.ReadSlice('\n')
		sc.head = append(sc.head, line...)
		switch {
		case err == bufio.ErrBufferFull:
			return false, nil
		case err != nil:
			return false, err
		case len(sc.head) > max:
			return false, nil
		case len(line) == 1 || (len(line) == 2 && line[0] == '\r'):
			return true, nil
		}
	}
}

// parse turns sc.head into sc.req; false sends the request to net/http.
func (sc *h1Server) parse() bool {
	hs := string(sc.head)
	line, rest, _ := strings.Cut(hs, "\n")
	line = strings.TrimSuffix(line, "\r")
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !validMethod(method) || method == "PRI" || method == "CONNECT" ||
		len(target) == 0 || target[0] != '/' {
		return false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	h := sc.hdr
	clear(h)
	vals := sc.vals[:0]
	sc.nfields, sc.fieldsBytes = 0, 0
	var host string
	hosts := 0
	cl := int64(-1)
	closeConn := false
	for {
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return false // includes obs-fold continuation lines
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return false
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			host = value
			hosts++
			continue // net/http keeps it in Request.Host only
		case "Content-Length":
			n, err := strconv.ParseUint(value, 10, 63)
			if err != nil || value[0] == '+' || (cl >= 0 && int64(n) != cl) {
				return false
			}
			if cl >= 0 {
				continue // repeated, the same: kept once, as net/http does
			}
			cl = int64(n)
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Http2-Settings":
			return false
		case "Connection":
			for _, f := range strings.Split(value, ",") {
				f = strings.TrimSpace(f)
				switch {
				case strings.EqualFold(f, "close"):
					closeConn = true
				case strings.EqualFold(f, "upgrade"):
					return false
				}
			}
		}
		vals = addHeaderValue(h, vals, key, value)
		sc.nfields++
		sc.fieldsBytes += int64(len(key) + len(value) + 4)
	}
	sc.vals = vals
	if hosts != 1 || !httpguts.ValidHostHeader(host) || cl > int64(sc.p.limits.BufferBytes) {
		return false
	}
	r := &sc.req
	*r = *sc.tmpl
	r.Method, r.URL, r.RequestURI = method, u, target
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header, r.Host, r.RemoteAddr, r.Close = h, host, sc.remote, closeConn
	r.Body, r.ContentLength = http.NoBody, max(cl, 0)
	return true
}

// readBody reads a request body of declared length (at most the retry
// buffer, parse made sure): left in the reader's buffer when it fits, as
// the handler reads it before the connection is read again.
func (sc *h1Server) readBody(n int) bool {
	if n <= sc.br.Size() {
		b, err := sc.br.Peek(n)
		if err != nil {
			return false
		}
		sc.body, sc.discard = memBody{b: b}, n
	} else {
		b := getBodyBuf(n)
		if _, err := io.ReadFull(sc.br, b); err != nil {
			putBodyBuf(b)
			return false
		}
		sc.body, sc.bodyBuf = memBody{b: b}, b
	}
	sc.req.Body = &sc.body
	return true
}

// validMethod: a method is a token (RFC 9110 9.1).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// serve runs the handler on sc.req and finishes the response; false ends
// the connection.
func (sc *h1Server) serve() bool {
	w := &sc.w
	clear(w.h)
	*w = h1Writer{sc: sc, bw: sc.bw, h: w.h, isHead: sc.req.Method == http.MethodHead, closeAfter: sc.req.Close,
		nfields: sc.nfields, fieldsBytes: sc.fieldsBytes}
	if !sc.call() {
		sc.s.Close()
		return false
	}
	if w.hijacked {
		return false
	}
	keep := w.finish()
	if sc.discard > 0 {
		sc.br.Discard(sc.discard) // the body, buffered
	}
	if sc.bodyBuf != nil {
		putBodyBuf(sc.bodyBuf)
	}
	sc.body, sc.discard, sc.bodyBuf = memBody{}, 0, nil
	if !keep {
		sc.s.Close()
	}
	return keep
}

// call runs the handler; false when it panicked (net/http's
// ErrAbortHandler included): the connection is cut.
func (sc *h1Server) call() (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				sc.p.log.Error("waypoint: panic serving a request", "panic", v)
			}
			ok = false
		}
	}()
	sc.p.ServeHTTP(&sc.w, &sc.req)
	return true
}

// fixedBody is a body of declared length read from a connection.
type fixedBody struct {
	br *bufio.Reader
	n  int64 // left to read
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, err
	}
	if b.n == 0 {
		return n, io.EOF
	}
	return n, nil
}

func (b *fixedBody) Close() error { return nil }

// h1Writer is the http.ResponseWriter of the loop: status line and headers
// go to the connection's writer when known, the body with its declared
// length or chunked.
type h1Writer struct {
	sc          *h1Server
	bw          *bufio.Writer
	h           http.Header
	status      int
	wroteHeader bool // WriteHeader called
	headSent    bool // status line and headers written
	chunked     bool
	bodyOK      bool
	clen        int64 // declared Content-Length, -1 none
	n           int64
	isHead      bool
	closeAfter  bool
	hijacked    bool
	failed      bool // a write to the client failed

	nfields     int // of the request (see h1Server)
	fieldsBytes int64
}

func (w *h1Writer) Header() http.Header { return w.h }

func (w *h1Writer) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("waypoint: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		return // informational answers are not passed on
	}
	w.wroteHeader, w.status = true, code
	w.bodyOK = !w.isHead && code != http.StatusNoContent && code != http.StatusNotModified
	w.clen = -1
	if v := w.h["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.clen = n
		}
	}
	if w.clen >= 0 || !w.bodyOK {
		w.writeHead()
	}
	// Otherwise the head waits for the first write (then chunked) or the
	// end of the handler (then Content-Length: 0).
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyOK {
		return 0, http.ErrBodyNotAllowed
	}
	if !w.headSent {
		w.chunked = true
		w.writeHead()
	}
	if w.clen >= 0 && w.n+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	var err error
	if w.chunked {
		b := w.bw.AvailableBuffer()
		b = strconv.AppendInt(b, int64(len(p)), 16)
		b = append(b, '\r', '\n')
		w.bw.Write(b)
		w.bw.Write(p)
		_, err = w.bw.WriteString("\r\n")
	} else {
		_, err = w.bw.Write(p)
	}
	if err != nil {
		w.failed = true
		return 0, err
	}
	w.n += int64(len(p))
	return len(p), nil
}

// FlushError sends what is buffered (with the head, committing to chunked
// if the length is unknown).
func (w *h1Writer) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.chunked = w.bodyOK
		w.writeHead()
	}
	if err := w.bw.Flush(); err != nil {
		w.failed = true
		return err
	}
	return nil
}

func (w *h1Writer) Flush() { w.FlushError() }

// Hijack hands the connection over (the handler uses it to cut a response
// whose upstream broke mid-body); what was written is sent first.
func (w *h1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	w.bw.Flush()
	return w.sc.s, bufio.NewReadWriter(w.sc.br, w.bw), nil
}

// finish ends the response; false when the connection cannot carry
// another.
func (w *h1Writer) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		if w.bodyOK {
			w.clen = 0
			w.h["Content-Length"] = zeroLength
		}
		w.writeHead()
	}
	keep := !w.closeAfter && !w.failed
	if w.chunked {
		w.bw.WriteString("0\r\n")
		for k, vv := range w.h {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				writeHeaderLines(w.bw, name, vv)
			}
		}
		w.bw.WriteString("\r\n")
	} else if w.clen >= 0 && w.n < w.clen && w.bodyOK {
		keep = false // the client must see the body cut short
	}
	if err := w.bw.Flush(); err != nil {
		return false
	}
	return keep
}

var zeroLength = []string{"0"}

func (w *h1Writer) writeHead() {
	w.headSent = true
	// A waypoint shutting down lets each connection finish the request in
	// hand and says it closes.
	w.closeAfter = w.closeAfter || w.sc.p.h1conns.isDraining()
	bw := w.bw
	b := bw.AvailableBuffer()
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	if text := http.StatusText(w.status); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(w.status), 10)
	}
	b = append(b, "\r\n"...)
	bw.Write(b)
	delete(w.h, "Transfer-Encoding")
	delete(w.h, "Connection")
	if w.chunked {
		delete(w.h, "Content-Length")
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	if _, ok := w.h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	for k, vv := range w.h {
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			writeHeaderLines(bw, k, vv)
		}
	}
	bw.WriteString("\r\n")
}

// writeHeaderLines writes one field; an invalid name is dropped and line
// breaks in values become spaces, as net/http does.
func writeHeaderLines(bw *bufio.Writer, k string, vv []string) {
	if !httpguts.ValidHeaderFieldName(k) {
		return
	}
	for _, v := range vv {
		if strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, '\r') >= 0 { // ContainsAny builds a set per call
			v = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(v)
		}
		v = strings.TrimSpace(v)
		b := bw.AvailableBuffer()
		b = append(b, k...)
		b = append(b, ':', ' ')
		b = append(b, v...)
		b = append(b, '\r', '\n')
		bw.Write(b)
	}
}

type dateEntry struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[dateEntry]

// httpDate is the Date header value, formatted once a second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &dateEntry{sec: now.Unix(), s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

// addHeaderValue adds a value to h, its slice cut from vals (one array for
// a whole head; capacity-limited so that appending to it copies).
func addHeaderValue(h http.Header, vals []string, key, value string) []string {
	vals = append(vals, value)
	if vv, ok := h[key]; ok {
		h[key] = append(vv[:len(vv):len(vv)], value)
	} else {
		h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return vals
}
