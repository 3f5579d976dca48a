package waypoint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Client sends HTTP/1.1 requests whose body is in memory (or absent) on
// pooled keep-alive connections, entirely on the calling goroutine: write
// the request, read the response head, hand back the body. net/http's
// Transport moves every request through a writer and a reader goroutine per
// connection, two goroutine hand-offs per request; on the waypoint's hot
// path (small requests, small answers) those cost more than the proxying.
// Everything else — streamed bodies, Expect: 100-continue, upgrades, HTTP/2
// — goes through http.Transport.
type h1Client struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	idleTimeout time.Duration
	maxIdle     int // per host

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by URL host, most recently used last
	closed bool
	stop   chan struct{}
}

type h1Conn struct {
	c         net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	key       string
	idleSince time.Time
	reused    bool
	space     respSpace // of the answer in hand
}

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error), idleTimeout time.Duration) *h1Client {
	h := &h1Client{dial: dial, idleTimeout: idleTimeout, maxIdle: 256, idle: map[string][]*h1Conn{}, stop: make(chan struct{})}
	go h.janitor()
	return h
}

// janitor closes connections idle longer than idleTimeout.
func (h *h1Client) janitor() {
	t := time.NewTicker(h.idleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.closeIdle(func(_ string, c *h1Conn) bool { return now.Sub(c.idleSince) > h.idleTimeout })
		}
	}
}

// closeIdle closes the idle connections for which match(host, conn) holds.
func (h *h1Client) closeIdle(match func(key string, c *h1Conn) bool) {
	var old []*h1Conn
	h.mu.Lock()
	for k, cs := range h.idle {
		keep := cs[:0]
		for _, c := range cs {
			if match(k, c) {
				old = append(old, c)
			} else {
				keep = append(keep, c)
			}
		}
		clear(cs[len(keep):])
		if len(keep) == 0 {
			delete(h.idle, k)
		} else {
			h.idle[k] = keep
		}
	}
	h.mu.Unlock()
	for _, c := range old {
		c.c.Close()
	}
}

// Close closes the idle connections; connections in use close when done.
func (h *h1Client) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	idle := h.idle
	h.idle = map[string][]*h1Conn{}
	h.mu.Unlock()
	close(h.stop)
	for _, cs := range idle {
		for _, c := range cs {
			c.c.Close()
		}
	}
}

// get returns an idle connection to key, else a new one; fresh: always a
// new one.
func (h *h1Client) get(ctx context.Context, key string, fresh bool) (*h1Conn, error) {
	h.mu.Lock()
	if cs := h.idle[key]; len(cs) > 0 && !fresh {
		c := cs[len(cs)-1]
		h.idle[key] = cs[:len(cs)-1]
		h.mu.Unlock()
		c.reused = true
		return c, nil
	}
	h.mu.Unlock()
	nc, err := h.dial(ctx, "tcp", key)
	if err != nil {
		return nil, err
	}
	return &h1Conn{c: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 16<<10), key: key}, nil
}

func (h *h1Client) put(c *h1Conn) {
	c.idleSince = time.Now()
	h.mu.Lock()
	if !h.closed && len(h.idle[c.key]) < h.maxIdle {
		h.idle[c.key] = append(h.idle[c.key], c)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	c.c.Close()
}

// RoundTrip sends req (body nil, or in memory with GetBody set) and returns
// the response; its body must be closed. A request that fails on a reused
// connection before any answer (the server closed it while idle) is sent
// once more on a newly dialled one — not another idle one: when a backend
// restarts, every idle connection to it is stale at once.
func (h *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		c, err := h.get(req.Context(), req.URL.Host, attempt > 0)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(h, req)
		if err == nil {
			return resp, nil
		}
		c.c.Close()
		// On a reused connection, a failure before any answer means the
		// connection died while idle (closed: EOF; reset: a tunnel whose
		// backend went away). An idempotent request is safe to send again
		// whatever the error; others only when nothing can have reached a
		// server (EOF on write or before the answer).
		stale := errors.Is(err, errStale) || (idempotent(req.Method) && !errors.Is(err, errAnswered))
		if !c.reused || attempt > 0 || !stale || req.Context().Err() != nil {
			return nil, err
		}
		switch b := req.Body.(type) {
		case *memBody:
			b.rewind()
		default:
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
		}
	}
}

// errStale: the connection gave no answer at all.
var errStale = errors.New("waypoint: upstream connection closed before answering")

// errAnswered marks failures after an answer began (never resent).
var errAnswered = errors.New("waypoint: upstream answer cut short")

func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

func (c *h1Conn) roundTrip(h *h1Client, req *http.Request) (*http.Response, error) {
	// The request's context (timeouts, the client going away) interrupts
	// blocking I/O through the connection's deadline.
	stop := noStop
	if req.Context().Done() != nil {
		stop = context.AfterFunc(req.Context(), func() { c.c.SetDeadline(time.Unix(1, 0)) })
	}
	if err := writeRequest(c.bw, req); err != nil {
		stop()
		return nil, staleIf(err, true)
	}
	if err := c.bw.Flush(); err != nil {
		stop()
		return nil, staleIf(err, true)
	}
	for answered := false; ; answered = true {
		resp, err := readResponse(c.br, req, &c.space)
		if err != nil {
			stop()
			if ctxErr := req.Context().Err(); ctxErr != nil {
				return nil, ctxErr
			}
			if answered {
				return nil, errors.Join(errAnswered, err)
			}
			return nil, staleIf(err, errors.Is(err, io.EOF))
		}
		// 1xx answers other than 101 precede the real one.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		resp.Body = &h1Body{body: resp.Body, c: c, h: h, stop: stop, reuse: !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols}
		return resp, nil
	}
}

func staleIf(err error, stale bool) error {
	if stale {
		return errors.Join(errStale, err)
	}
	return err
}

// h1Body returns its connection to the pool once read to the end.
type h1Body struct {
	body  io.ReadCloser
	c     *h1Conn
	h     *h1Client
	stop  func() bool
	eof   bool
	reuse bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// buffered returns the rest of the body when all of it is already in the
// connection's read buffer (a small answer arrives with its head), to be
// written from there; consumed then takes it as read.
func (b *h1Body) buffered() ([]byte, bool) {
	fb, ok := b.body.(*fixedBody)
	if !ok || fb.n <= 0 || int64(fb.br.Buffered()) < fb.n {
		return nil, false
	}
	p, err := fb.br.Peek(int(fb.n))
	return p, err == nil
}

func (b *h1Body) consumed() {
	fb := b.body.(*fixedBody)
	fb.br.Discard(int(fb.n))
	fb.n, b.eof = 0, true
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// A deadline set by the watcher means the context ended: the
	// connection may be mid-answer and cannot be reused.
	watching := b.stop()
	if b.eof && b.reuse && watching {
		b.body.Close()
		b.h.put(b.c)
		return nil
	}
	b.c.c.Close()
	return b.body.Close()
}

func noStop() bool { return true }

// writeRequest writes req's head and in-memory body as net/http's
// Request.Write would, less its defaults: no User-Agent is made up for a
// client that sent none.
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	b := bw.AvailableBuffer()
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.URL.RequestURI()...)
	b = append(b, " HTTP/1.1\r\n"...)
	if req.Host != "" {
		b = append(b, "Host: "...)
		b = append(b, req.Host...)
		b = append(b, '\r', '\n')
	}
	bw.Write(b)
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		}
		writeHeaderLines(bw, k, vv)
	}
	cl := req.ContentLength
	if req.Body == nil || req.Body == http.NoBody {
		cl = 0
	}
	b = bw.AvailableBuffer()
	if cl > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, cl, 10)
		b = append(b, '\r', '\n')
	}
	if req.Close {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, '\r', '\n')
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if cl == 0 {
		return nil
	}
	n, err := io.Copy(bw, req.Body)
	if err == nil && n != cl {
		err = fmt.Errorf("waypoint: request body of %d bytes, %d declared", n, cl)
	}
	return err
}

var headEnd = []byte("\r\n\r\n")

// respSpace holds a connection's answer of the common kind: the response,
// its header map and values, its body. Each answer reuses it, as nothing
// looks at an answer once its body is closed, which hands the connection
// back (a caller that keeps header values keeps copies: the handler's
// writers snapshot headers as they are written).
type respSpace struct {
	resp http.Response
	hdr  http.Header
	vals []string
	body fixedBody
}

// readResponse reads a response head. The common one — HTTP/1.1, a body of
// declared length, its head already in the reader's buffer — is parsed in
// place into one string, into sp if not nil; anything else goes to
// http.ReadResponse.
func readResponse(br *bufio.Reader, req *http.Request, sp *respSpace) (*http.Response, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, err
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, headEnd)
	if end < 0 || req.Method == http.MethodHead {
		return http.ReadResponse(br, req)
	}
	if sp == nil {
		sp = new(respSpace)
	}
	resp := parseResponseHead(string(buf[:end+2]), sp)
	if resp == nil {
		return http.ReadResponse(br, req)
	}
	br.Discard(end + 4)
	resp.Request = req
	resp.Body = http.NoBody
	if resp.ContentLength > 0 {
		sp.body = fixedBody{br: br, n: resp.ContentLength}
		resp.Body = &sp.body
	}
	return resp, nil
}

// parseResponseHead parses an HTTP/1.1 response head (without the final
// empty line) with a Content-Length and a status that has a body; nil for
// anything else. The response is sp's.
func parseResponseHead(hs string, sp *respSpace) *http.Response {
	line, rest, _ := strings.Cut(hs, "\n")
	status, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r"), "HTTP/1.1 ")
	if !ok || len(status) < 3 || (len(status) > 3 && status[3] != ' ') {
		return nil
	}
	code, err := strconv.Atoi(status[:3])
	if err != nil || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil
	}
	n := strings.Count(rest, "\n")
	h := sp.hdr
	if h == nil {
		h = make(http.Header, n)
		sp.hdr = h
	} else {
		clear(h)
	}
	vals := slices.Grow(sp.vals[:0], n) // one array for every value
	resp := &sp.resp
	*resp = http.Response{Status: status, StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, ContentLength: -1}
	for rest != "" {
		line, rest, _ = strings.Cut(rest, "\n")
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\r"), ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return nil
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Content-Length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || value[0] == '+' || (resp.ContentLength >= 0 && n != resp.ContentLength) {
				return nil
			}
			if resp.ContentLength >= 0 {
				continue // repeated, the same: kept once, as net/http does
			}
			resp.ContentLength = n
		case "Transfer-Encoding", "Trailer":
			return nil
		case "Connection":
			resp.Close = resp.Close || httpguts.HeaderValuesContainsToken([]string{value}, "close")
		}
		vals = addHeaderValue(h, vals, key, value)
	}
	sp.vals = vals
	if resp.ContentLength < 0 {
		return nil
	}
	if resp.Close {
		delete(h, "Connection") // as net/http does
	}
	return resp
}
