package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// An HBONE pair built on net/http's HTTP/2 (tuned with HTTP2Config): an
// independent implementation to test interoperability against, and the
// "std" variant of the benchmarks.

func stdHTTP2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxReadFrameSize:              1 << 20,
		MaxReceiveBufferPerConnection: 4<<20 - 1, // net/http's maximum
		MaxReceiveBufferPerStream:     4<<20 - 1,
	}
}

// stdEcho is an HBONE echo handler for net/http.
func stdEcho(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

func newStdServer(t testing.TB, certs *testCerts, h http.HandlerFunc) netip.AddrPort {
	t.Helper()
	cert, err := certs.Certificate(context.Background(), serverID)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{*cert},
			ClientAuth:   tls.RequireAnyClientCert,
		},
		HTTP2:     stdHTTP2Config(),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP2(true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func newStdTransport(t testing.TB, certs *testCerts) *http.Transport {
	cert, err := certs.Certificate(context.Background(), clientID)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS13,
			Certificates:       []tls.Certificate{*cert},
			InsecureSkipVerify: true,
		},
		HTTP2:     stdHTTP2Config(),
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// stdTunnel is a CONNECT stream opened with net/http.
type stdTunnel struct {
	w    *io.PipeWriter
	body io.ReadCloser
}

func (s *stdTunnel) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *stdTunnel) Read(p []byte) (int, error)  { return s.body.Read(p) }
func (s *stdTunnel) CloseWrite() error           { return s.w.Close() }
func (s *stdTunnel) Close() error                { s.w.Close(); return s.body.Close() }

func stdConnect(tr *http.Transport, addr netip.AddrPort, method, authority string) (*stdTunnel, *http.Response, error) {
	pr, pw := io.Pipe()
	req := &http.Request{
		Method: method,
		URL:    &url.URL{Scheme: "https", Host: addr.String(), Path: "/"},
		Host:   authority,
		Header: http.Header{},
		Body:   pr,
	}
	if method == http.MethodConnect {
		req.URL.Path = ""
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		resp.Body.Close()
		return nil, resp, nil
	}
	return &stdTunnel{w: pw, body: resp.Body}, resp, nil
}

func TestInteropStdClient(t *testing.T) {
	reqs := make(chan *Request, 1)
	e := newEnv(t, envOptions{noPool: true, handler: func(ctx context.Context, r *Request) {
		reqs <- r
		echoHandler(ctx, r)
	}})
	tr := newStdTransport(t, e.certs)
	tun, resp, err := stdConnect(tr, e.addr, http.MethodConnect, "10.0.0.9:443")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	if r := <-reqs; r.Authority != netip.MustParseAddrPort("10.0.0.9:443") || r.Peer != clientID {
		t.Errorf("request %+v", r)
	}
	msg := bytes.Repeat([]byte("interop"), 50_000)
	go func() {
		tun.Write(msg)
		tun.CloseWrite()
	}()
	got, err := io.ReadAll(tun)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	tun.Close()

	_, resp, err = stdConnect(tr, e.addr, http.MethodGet, "10.0.0.9:443")
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v, %v", resp, err)
	}
	_, resp, err = stdConnect(tr, e.addr, http.MethodConnect, "example.com:443")
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("CONNECT to a host name: %v, %v", resp, err)
	}
}

func TestInteropStdServer(t *testing.T) {
	certs := newTestCerts(t, newTestCA(t))
	addr := newStdServer(t, certs, stdEcho)
	p, err := NewPool(PoolOptions{Certificates: certs})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tgt := Target{Source: clientID, Destination: []spiffe.ID{serverID}, Addr: addr, Authority: testAuthority}
	for range 3 { // several streams on one connection
		s, _, err := p.Connect(testCtx(t), tgt)
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte("interop"), 300_000)
		go func() {
			s.Write(msg)
			s.CloseWrite()
		}()
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %d bytes, %v", len(got), err)
		}
		s.Close()
	}
	if n := p.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("%d connections", n)
	}
	// A refusal from the std server reaches the caller as a StatusError.
	addr2 := newStdServer(t, certs, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) })
	tgt.Addr = addr2
	var se *StatusError
	if _, _, err := p.Connect(testCtx(t), tgt); !errors.As(err, &se) || se.StatusCode != 403 {
		t.Fatalf("Connect to a refusing server: %v", err)
	}
}
