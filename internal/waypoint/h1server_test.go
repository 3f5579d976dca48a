package waypoint

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawConn speaks HTTP/1.1 by hand to the waypoint, to see exactly what it
// sends back.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(raw string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, raw); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one response (past 100 Continue) and its whole body.
func (rc *rawConn) read(method string) (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	for err == nil && resp.StatusCode == http.StatusContinue {
		resp, err = http.ReadResponse(rc.br, &http.Request{Method: method})
	}
	if err != nil {
		rc.t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading the body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// closed reports whether the waypoint closed the connection.
func (rc *rawConn) closed() bool {
	_, err := rc.br.ReadByte()
	return err == io.EOF
}

func TestHTTP1Server(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	hop := startPlainHop(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/stream":
			w.Header().Set("Trailer", "X-Sum")
			w.Write([]byte("a"))
			w.(http.Flusher).Flush()
			w.Write([]byte("b"))
			w.Header().Set("X-Sum", "2")
		case "/slow":
			arrived <- struct{}{}
			<-release
			io.WriteString(w, "done")
		default:
			w.Header().Set("X-Got", r.Method+" "+r.Host+" "+r.Header.Get("X-Forwarded-Proto"))
			w.Write(body)
		}
	}), Limits{})
	const host = "Host: echo.shop\r\n"

	t.Run("keep-alive with bodies of declared length", func(t *testing.T) {
		rc := dialRaw(t, hop.addr)
		for i, body := range []string{"hello", strings.Repeat("x", 1024), ""} {
			rc.send("POST /echo HTTP/1.1\r\n" + host + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
			resp, got := rc.read("POST")
			if resp.StatusCode != 200 || got != body || resp.Header.Get("X-Got") != "POST echo.shop http" || resp.Close {
				t.Fatalf("request %d: %d %q %v close=%v", i, resp.StatusCode, got, resp.Header, resp.Close)
			}
		}
	})
	t.Run("pipelined requests answered in order", func(t *testing.T) {
		rc := dialRaw(t, hop.addr)
		rc.send("POST /echo HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\none" +
			"POST /echo HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\ntwo")
		for _, want := range []string{"one", "two"} {
			if resp, got := rc.read("POST"); resp.StatusCode != 200 || got != want {
				t.Fatalf("%d %q, want %q", resp.StatusCode, got, want)
			}
		}
	})
	t.Run("chunked answer with trailers", func(t *testing.T) {
		rc := dialRaw(t, hop.addr)
		rc.send("GET /stream HTTP/1.1\r\n" + host + "\r\n")
		resp, got := rc.read("GET")
		if got != "ab" || len(resp.TransferEncoding) != 1 || resp.Trailer.Get("X-Sum") != "2" {
			t.Fatalf("%q %v trailers %v", got, resp.TransferEncoding, resp.Trailer)
		}
		rc.send("GET /echo HTTP/1.1\r\n" + host + "\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("after the chunked answer: %d", resp.StatusCode)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		rc := dialRaw(t, hop.addr)
		rc.send("HEAD /echo HTTP/1.1\r\n" + host + "\r\nGET /echo HTTP/1.1\r\n" + host + "\r\n")
		if resp, got := rc.read("HEAD"); resp.StatusCode != 200 || got != "" {
			t.Fatalf("HEAD: %d %q", resp.StatusCode, got)
		}
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 || resp.Header.Get("X-Got") != "GET echo.shop http" {
			t.Fatalf("GET after HEAD: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("unread body of a local answer is skipped", func(t *testing.T) {
		rc := dialRaw(t, hop.addr)
		rc.send("POST /local HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello" + "POST /echo HTTP/1.1\r\n" + host + "Content-Length: 2\r\n\r\nok")
		if resp, got := rc.read("POST"); resp.StatusCode != 418 || got != "local\n" {
			t.Fatalf("local answer: %d %q", resp.StatusCode, got)
		}
		if resp, got := rc.read("POST"); resp.StatusCode != 200 || got != "ok" {
			t.Fatalf("next request: %d %q", resp.StatusCode, got)
		}
	})
	t.Run("metrics per outcome on one connection", func(t *testing.T) {
		count := func(code string) int {
			var b strings.Builder
			hop.proxy.Metrics().WriteTo(&b)
			for _, l := range strings.Split(b.String(), "\n") {
				if strings.HasPrefix(l, "istio_requests_total{") && strings.Contains(l, `response_code="`+code+`"`) {
					n, _ := strconv.Atoi(l[strings.LastIndexByte(l, ' ')+1:])
					return n
				}
			}
			return 0
		}
		ok0, local0 := count("200"), count("418")
		rc := dialRaw(t, hop.addr)
		for _, path := range []string{"/echo", "/local", "/echo", "/echo", "/local"} {
			rc.send("GET " + path + " HTTP/1.1\r\n" + host + "\r\n")
			rc.read("GET")
		}
		if ok, local := count("200")-ok0, count("418")-local0; ok != 3 || local != 2 {
			t.Fatalf("counted %d × 200 and %d × 418, want 3 and 2", ok, local)
		}
	})
	t.Run("Connection: close", func(t *testing.T) {
		rc := dialRaw(t, hop.addr)
		rc.send("GET /echo HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 || !resp.Close {
			t.Fatalf("%d close=%v", resp.StatusCode, resp.Close)
		}
		if !rc.closed() {
			t.Fatal("connection left open after Connection: close")
		}
	})
	// What the loop does not serve, net/http does, on the same connection.
	t.Run("handed to net/http", func(t *testing.T) {
		for name, c := range map[string]struct{ raw, want string }{
			"chunked request body":   {"POST /echo HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "abc"},
			"Expect: 100-continue":   {"POST /echo HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", "hi"},
			"body beyond the buffer": {"POST /echo HTTP/1.1\r\n" + host + "Content-Length: 70000\r\n\r\n" + strings.Repeat("y", 70000), strings.Repeat("y", 70000)},
		} {
			rc := dialRaw(t, hop.addr)
			rc.send("POST /echo HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nfirst")
			if _, got := rc.read("POST"); got != "first" {
				t.Fatalf("%s: first request answered %q", name, got)
			}
			rc.send(c.raw)
			if resp, got := rc.read("POST"); resp.StatusCode != 200 || got != c.want {
				t.Fatalf("%s: %d %.20q", name, resp.StatusCode, got)
			}
		}
		rc := dialRaw(t, hop.addr)
		rc.send("GET /echo HTTP/1.0\r\n" + host + "\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 || resp.Header.Get("X-Got") != "GET echo.shop http" {
			t.Fatalf("HTTP/1.0: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for raw, want := range map[string]int{
			"GET /echo HTTP/1.1\r\n\r\n":                                                       400, // no Host
			"GET /echo HTTP/1.1\r\n" + host + "Bad Header\r\n\r\n":                             400,
			"GET /echo HTTP/1.1\r\n" + host + "Content-Length: 1, 2\r\n\r\n":                   400,
			"GET /echo HTTP/1.1\r\n" + host + " folded\r\n\r\n":                                400,
			"GET /echo HTTP/1.1\r\n" + host + "X: " + strings.Repeat("a", 70<<10) + "\r\n\r\n": 431,
		} {
			rc := dialRaw(t, hop.addr)
			rc.send(raw)
			if resp, _ := rc.read("GET"); resp.StatusCode != want {
				t.Errorf("%.50q: %d, want %d", raw, resp.StatusCode, want)
			}
		}
	})
	t.Run("shutdown drains", func(t *testing.T) {
		idle := dialRaw(t, hop.addr)
		idle.send("GET /echo HTTP/1.1\r\n" + host + "\r\n")
		idle.read("GET")
		busy := dialRaw(t, hop.addr)
		busy.send("GET /slow HTTP/1.1\r\n" + host + "\r\n")
		<-arrived
		done := make(chan bool)
		go func() { done <- hop.proxy.Shutdown(context.Background()) }()
		if !idle.closed() {
			t.Fatal("idle connection not closed by Shutdown")
		}
		close(release)
		if resp, got := busy.read("GET"); got != "done" || !resp.Close {
			t.Fatalf("request in flight: %q close=%v", got, resp.Close)
		}
		if !<-done {
			t.Fatal("Shutdown did not finish cleanly")
		}
	})
}

// Slow or idle clients are cut off: a head that takes longer than
// ReadHeaderTimeout, a body or a connection idle longer than IdleTimeout.
func TestHTTP1Timeouts(t *testing.T) {
	const header, idle = 100 * time.Millisecond, 300 * time.Millisecond
	hop := startPlainHop(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}), Limits{ReadHeaderTimeout: header, IdleTimeout: idle})
	for _, c := range []struct {
		name, raw string
		after     time.Duration
	}{
		{"head never finished", "GET /echo HTTP/1.1\r\nHost: echo.shop\r\nX-Slow: ", header},
		{"body never finished", "POST /echo HTTP/1.1\r\nHost: echo.shop\r\nContent-Length: 10\r\n\r\nabc", idle},
	} {
		rc := dialRaw(t, hop.addr)
		start := time.Now()
		rc.send(c.raw)
		if !rc.closed() {
			t.Fatalf("%s: connection not closed", c.name)
		}
		if d := time.Since(start); d < c.after {
			t.Fatalf("%s: closed after %v, before %v", c.name, d, c.after)
		}
	}
	rc := dialRaw(t, hop.addr)
	rc.send("GET /echo HTTP/1.1\r\nHost: echo.shop\r\n\r\n")
	if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	start := time.Now()
	if !rc.closed() {
		t.Fatal("idle connection not closed")
	}
	if d := time.Since(start); d < idle {
		t.Fatalf("idle connection closed after %v, before the timeout", d)
	}
}
