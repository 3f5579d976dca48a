package hbone

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

const td = "cluster.local"

var (
	clientID = spiffe.ID{TrustDomain: td, Namespace: "default", ServiceAccount: "sleep"}
	serverID = spiffe.ID{TrustDomain: td, Namespace: "default", ServiceAccount: "echo"}
	otherID  = spiffe.ID{TrustDomain: td, Namespace: "default", ServiceAccount: "other"}
)

// testCerts implements Certificates with an in-memory CA: certificates are
// minted on first use, the roots are the CA's.
type testCerts struct {
	ca    *ca.CA
	roots *x509.CertPool
	mu    sync.Mutex
	certs map[spiffe.ID]*tls.Certificate
}

func newTestCA(t testing.TB) *ca.CA {
	t.Helper()
	c, err := ca.New(ca.Options{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestCerts(t testing.TB, c *ca.CA) *testCerts {
	return &testCerts{ca: c, roots: c.CertPool(), certs: map[spiffe.ID]*tls.Certificate{}}
}

func (tc *testCerts) Certificate(_ context.Context, id spiffe.ID) (*tls.Certificate, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if c := tc.certs[id]; c != nil {
		return c, nil
	}
	c, err := mint(tc.ca, id)
	if err != nil {
		return nil, err
	}
	tc.certs[id] = c
	return c, nil
}

func (tc *testCerts) Roots() *x509.CertPool { return tc.roots }

func mint(c *ca.CA, id spiffe.ID) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, err
	}
	csr, err := c.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		return nil, err
	}
	issued, err := c.Issue(csr, time.Hour)
	if err != nil {
		return nil, err
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: issued.Leaf}
	for _, cert := range issued.Chain {
		out.Certificate = append(out.Certificate, cert.Raw)
	}
	return out, nil
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is a Server on a loopback port and a Pool to reach it.
type env struct {
	t      testing.TB
	ca     *ca.CA
	certs  *testCerts
	srv    *Server
	addr   netip.AddrPort
	pool   *Pool
	logs   *logBuffer
	served chan error
}

type envOptions struct {
	handler    func(context.Context, *Request)
	server     ServerOptions // Certificates, Identity, Handler, Logger filled in if zero
	pool       PoolOptions   // Certificates filled in if zero
	noPool     bool
	listenAddr string
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, ca: newTestCA(t), logs: &logBuffer{}, served: make(chan error, 1)}
	e.certs = newTestCerts(t, e.ca)
	so := o.server
	if so.Certificates == nil {
		so.Certificates = e.certs
	}
	if so.Identity == nil && so.TLSConfig == nil {
		so.Identity = func(net.Addr, string) (spiffe.ID, error) { return serverID, nil }
	}
	if so.Handler == nil {
		so.Handler = o.handler
	}
	if so.Handler == nil {
		so.Handler = echoHandler
	}
	if so.Logger == nil {
		so.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := NewServer(so)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	la := o.listenAddr
	if la == "" {
		la = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", la)
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().(*net.TCPAddr).AddrPort()
	go func() { e.served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	if !o.noPool {
		po := o.pool
		if po.Certificates == nil {
			po.Certificates = e.certs
		}
		e.pool = e.newPool(po)
	}
	return e
}

func (e *env) newPool(po PoolOptions) *Pool {
	e.t.Helper()
	if po.Certificates == nil {
		po.Certificates = e.certs
	}
	p, err := NewPool(po)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p
}

var testAuthority = netip.MustParseAddrPort("10.0.0.7:8080")

func (e *env) target() Target {
	return Target{
		Source:      clientID,
		Destination: []spiffe.ID{serverID},
		Addr:        e.addr,
		Authority:   testAuthority,
	}
}

func (e *env) connect(ctx context.Context) *Stream {
	e.t.Helper()
	s, _, err := e.pool.Connect(ctx, e.target())
	if err != nil {
		e.t.Fatalf("Connect: %v", err)
	}
	return s
}

// echoHandler accepts and echoes until the client half-closes.
func echoHandler(_ context.Context, r *Request) {
	s, err := r.Accept(nil)
	if err != nil {
		return
	}
	io.Copy(s, s)
	s.CloseWrite()
}

// timeout is a failure timeout only: tests do not wait for it to pass.
const timeout = 20 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the failure timeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
