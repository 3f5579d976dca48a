package waypoint

import (
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
