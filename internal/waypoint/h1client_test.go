package waypoint

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestH1ClientAllIdleStale: when a backend restarts, every idle connection
// to it is stale; a request must not fail because the retry took another
// stale one.
func TestH1ClientAllIdleStale(t *testing.T) {
	const n = 3
	var arrived sync.WaitGroup
	arrived.Add(n)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	d := &net.Dialer{Timeout: 5 * time.Second}
	h := newH1Client(d.DialContext, time.Minute)
	defer h.Close()
	get := func(path string) error {
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			return err
		}
		resp, err := h.RoundTrip(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	// n requests at once: n connections, idle in the pool afterwards.
	errs := make(chan error, n)
	for range n {
		go func() { errs <- get("/hold") }()
	}
	arrived.Wait()
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	h.mu.Lock()
	idle := len(h.idle[srv.Listener.Addr().String()])
	h.mu.Unlock()
	if idle != n {
		t.Fatalf("%d idle connections, want %d", idle, n)
	}
	// The backend drops every connection (a restart): all idle ones are stale.
	srv.CloseClientConnections()
	for i := range n {
		if err := get("/"); err != nil {
			t.Fatalf("request %d after the backend dropped its connections: %v", i, err)
		}
	}
}

// TestH1ClientIdleReset: an idle connection that fails with a reset (a
// tunnel whose backend went away), not a clean close, is stale too for an
// idempotent request.
func TestH1ClientIdleReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The first connection answers one request, then resets on the next;
	// later connections answer everything.
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if n == 0 && i == 1 {
						c.(*net.TCPConn).SetLinger(0) // close sends RST
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	d := &net.Dialer{Timeout: 5 * time.Second}
	h := newH1Client(d.DialContext, time.Minute)
	defer h.Close()
	do := func(method string) error {
		req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", nil)
		resp, err := h.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	if err := do("GET"); err != nil {
		t.Fatal(err)
	}
	if err := do("GET"); err != nil {
		t.Fatalf("GET on a connection reset while idle: %v", err)
	}
}
