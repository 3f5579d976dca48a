package identity

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

const td = "cluster.local"

var (
	echoID  = spiffe.ID{TrustDomain: td, Namespace: "default", ServiceAccount: "echo"}
	sleepID = spiffe.ID{TrustDomain: td, Namespace: "default", ServiceAccount: "sleep"}
	otherID = spiffe.ID{TrustDomain: td, Namespace: "default", ServiceAccount: "other"}
)

// fakeClock fires timers only when the test advances it, so renewal and
// backoff are driven step by step with no sleeping.
type fakeClock struct {
	mu        sync.Mutex
	now       time.Time
	timers    []*fakeTimer
	scheduled []time.Duration // every AfterFunc delay, in order
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock {
	// Start at the real time: the CA's serving certificate is checked by TLS
	// against the real clock.
	return &fakeClock{now: time.Now().Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	c.scheduled = append(c.scheduled, d)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	i := slices.Index(t.c.timers, t)
	if i < 0 {
		return false
	}
	t.c.timers = slices.Delete(t.c.timers, i, i+1)
	return true
}

// Advance moves the clock and runs the timers that came due, each in its own
// goroutine as time.AfterFunc would.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if !t.at.After(c.now) {
			due = append(due, t)
			return true
		}
		return false
	})
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

func (c *fakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *fakeClock) Scheduled() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.scheduled)
}

// waitScheduled waits (in real time, bounded) until the manager has scheduled
// n timers in total, i.e. until its n-th attempt has completed.
func waitScheduled(t *testing.T, c *fakeClock, n int) []time.Duration {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := c.Scheduled()
		if len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for attempt %d (have %d)", n, len(s))
		}
		time.Sleep(time.Millisecond)
	}
}

// switchClient wraps the real client; while down, calls fail as if the CA
// were unreachable.
type switchClient struct {
	real  CAClient
	down  atomic.Bool
	calls atomic.Int32
}

func (s *switchClient) CreateCertificate(ctx context.Context, in *meshv1.CertificateRequest, opts ...grpc.CallOption) (*meshv1.CertificateResponse, error) {
	s.calls.Add(1)
	if s.down.Load() {
		return nil, status.Error(codes.Unavailable, "connection refused (test: CA down)")
	}
	return s.real.CreateCertificate(ctx, in, opts...)
}

// harness is a real ca.CA behind a real ca.Server, served over TLS on a
// loopback port, and a client authenticated as node-a, which runs echo and
// sleep.
type harness struct {
	ca        *ca.CA
	caDir     string
	transport *ca.CA // signs the control plane's serving certificate
	tlsSrv    *ca.Server
	addr      string
	gs        *grpc.Server
	client    *switchClient
	// cpBundle is what the client verifies the control plane with.
	cpBundle *Bundle
}

// newHarness builds the harness. With a fake clock, the CA signs workload
// certificates at fake time while the TLS transport (which Go checks against
// the real clock) gets its serving certificate from a second, real-time CA;
// with clk nil, one CA does both, as in production.
func newHarness(t *testing.T, clk *fakeClock) *harness {
	t.Helper()
	h := &harness{caDir: t.TempDir()}
	opts := ca.Options{TrustDomain: td, Dir: h.caDir, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour}
	if clk != nil {
		opts.Now = clk.Now
	}
	var err error
	if h.ca, err = ca.New(opts); err != nil {
		t.Fatal(err)
	}
	h.transport = h.ca
	if clk != nil {
		if h.transport, err = ca.New(ca.Options{TrustDomain: td}); err != nil {
			t.Fatal(err)
		}
	}
	h.tlsSrv, err = ca.NewServer(ca.ServerOptions{
		CA:            h.ca,
		Authenticator: h.ca.TokenAuthenticator(),
		Identities: ca.IdentityCheckerFunc(func(node string, id spiffe.ID) bool {
			return node == "node-a" && (id == echoID || id == sleepID)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.start(t, "127.0.0.1:0")
	t.Cleanup(func() { h.gs.Stop() })

	// The proxy side, as ztunnel wires it: bootstrap roots from a file, the
	// node token from a file.
	rootFile := filepath.Join(h.caDir, ca.RootCertFile)
	if clk != nil {
		rootFile = filepath.Join(t.TempDir(), "transport-root.pem")
		os.WriteFile(rootFile, []byte(h.transport.TrustBundlePEM()[0]), 0o600)
	}
	if h.cpBundle, err = LoadBundle(rootFile); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(h.ca.NodeToken("node-a")+"\n"), 0o600)
	conn, err := grpc.NewClient(h.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(ControlPlaneTLSConfig(h.cpBundle, td))),
		grpc.WithPerRPCCredentials(NodeTokenCredentials(TokenFromFile(tokenFile))),
		// Reconnect quickly after a CA restart (the default starts at 1s).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond},
			MinConnectTimeout: 5 * time.Second, // without it, the connect deadline is the 10ms backoff
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.client = &switchClient{real: meshv1.NewCertificateAuthorityClient(conn)}
	return h
}

func (h *harness) start(t *testing.T, addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	tlsCfg, err := h.transport.ServingTLSConfig([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	h.gs = grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	meshv1.RegisterCertificateAuthorityServer(h.gs, h.tlsSrv)
	go h.gs.Serve(lis)
}

// restart brings the CA back on the same address after a stop.
func (h *harness) restart(t *testing.T) { h.start(t, h.addr) }

func (h *harness) manager(t *testing.T, clk *fakeClock, opts Options) *Manager {
	t.Helper()
	opts.Client = h.client
	if clk != nil {
		opts.Clock = clk
	}
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
