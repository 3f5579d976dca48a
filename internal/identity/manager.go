package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/ambit-mesh/ambit/internal/pemutil"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// CAClient is the one call the Manager makes; meshv1.CertificateAuthorityClient
// satisfies it, and tests may wrap one to inject failures.
type CAClient interface {
	CreateCertificate(ctx context.Context, in *meshv1.CertificateRequest, opts ...grpc.CallOption) (*meshv1.CertificateResponse, error)
}

// Defaults for Options.
const (
	DefaultRenewFraction  = 0.5
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	// minRenewDelay keeps a CA that hands out nearly-expired certificates
	// (say, its own certificate is about to expire) from being hammered.
	minRenewDelay = time.Second
)

// Options configure a Manager. Only Client is required.
type Options struct {
	Client CAClient
	// Bundle is kept up to date from every CA response. Pass the bundle the
	// control-plane connection verifies with (ControlPlaneTLSConfig) so both
	// follow root rotations; nil means a new empty Bundle.
	Bundle *Bundle
	// TTL is the lifetime asked of the CA; 0 lets the CA choose.
	TTL time.Duration
	// RenewFraction of a certificate's lifetime elapses before it is renewed
	// (default 0.5: renew at half-life).
	RenewFraction float64
	// InitialBackoff and MaxBackoff bound the jittered exponential backoff
	// between failed attempts (defaults 1s and 30s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// RequestTimeout bounds each CreateCertificate call (default 10s).
	RequestTimeout time.Duration
	// Clock defaults to the real one.
	Clock Clock
	// Logger gets issuance, renewal failures and recoveries (default: discard).
	Logger *slog.Logger
}

// Manager holds one certificate per identity the proxy serves. Certificates
// are fetched on first use (or Prefetch), renewed at RenewFraction of their
// lifetime with a fresh key, and retried with backoff on failure while the
// previous certificate keeps being served until it expires. Safe for
// concurrent use.
type Manager struct {
	client         CAClient
	bundle         *Bundle
	ttl            time.Duration
	renewFraction  float64
	initialBackoff time.Duration
	maxBackoff     time.Duration
	requestTimeout time.Duration
	clock          Clock
	log            *slog.Logger

	ctx    context.Context // cancelled by Close; parent of every CA call
	cancel context.CancelFunc

	mu      sync.Mutex
	entries map[spiffe.ID]*entry
	closed  bool
}

// entry is the state of one identity. All fields are guarded by Manager.mu.
type entry struct {
	id       spiffe.ID
	cert     *tls.Certificate // nil until the first success
	renewAt  time.Time
	lastErr  error // of the latest attempt; nil after a success
	failures int   // consecutive failed attempts
	timer    Timer // next attempt; nil while one runs
	// changed is closed (and replaced) whenever an attempt completes or the
	// entry is forgotten, waking Certificate callers.
	changed chan struct{}
}

// NewManager returns a Manager; it fetches nothing until asked.
func NewManager(opts Options) (*Manager, error) {
	if opts.Client == nil {
		return nil, errors.New("identity.NewManager: Client is required")
	}
	m := &Manager{
		client:         opts.Client,
		bundle:         opts.Bundle,
		ttl:            opts.TTL,
		renewFraction:  opts.RenewFraction,
		initialBackoff: opts.InitialBackoff,
		maxBackoff:     opts.MaxBackoff,
		requestTimeout: opts.RequestTimeout,
		clock:          opts.Clock,
		log:            opts.Logger,
		entries:        map[spiffe.ID]*entry{},
	}
	if m.bundle == nil {
		m.bundle = NewBundle(nil)
	}
	if m.renewFraction <= 0 || m.renewFraction >= 1 {
		m.renewFraction = DefaultRenewFraction
	}
	if m.initialBackoff <= 0 {
		m.initialBackoff = DefaultInitialBackoff
	}
	if m.maxBackoff <= 0 {
		m.maxBackoff = DefaultMaxBackoff
	}
	m.maxBackoff = max(m.maxBackoff, m.initialBackoff)
	if m.requestTimeout <= 0 {
		m.requestTimeout = DefaultRequestTimeout
	}
	if m.clock == nil {
		m.clock = realClock{}
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Bundle is the trust bundle the Manager keeps current.
func (m *Manager) Bundle() *Bundle { return m.bundle }

// Roots is the current root pool (see Bundle.Roots).
func (m *Manager) Roots() *x509.CertPool { return m.bundle.Roots() }

// Prefetch starts obtaining id's certificate without waiting, e.g. when a pod
// is enrolled, so its first connection does not wait for the CA.
func (m *Manager) Prefetch(id spiffe.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.entryLocked(id)
	}
}

// Certificate returns id's current certificate, fetching it first if needed.
// It blocks until a valid certificate is available or ctx is done — except
// that when the CA has refused the identity outright (PermissionDenied,
// Unauthenticated, InvalidArgument) and there is no valid certificate, it
// returns the CA's reason at once rather than wait out ctx; attempts continue
// in the background, since e.g. a pod just scheduled may not be in the
// control plane's model yet.
func (m *Manager) Certificate(ctx context.Context, id spiffe.ID) (*tls.Certificate, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, fmt.Errorf("certificate for %s: identity manager closed", id)
		}
		e := m.entryLocked(id)
		if e.cert != nil && m.clock.Now().Before(e.cert.Leaf.NotAfter) {
			cert := e.cert
			m.mu.Unlock()
			return cert, nil
		}
		lastErr, changed := e.lastErr, e.changed
		m.mu.Unlock()
		if lastErr != nil && refused(lastErr) {
			return nil, lastErr
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("certificate for %s not available: %w (last attempt: %v)", id, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("certificate for %s not available: %w", id, ctx.Err())
		}
	}
}

// refused reports whether the CA turned the request down on its merits, as
// opposed to being unreachable or failing.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return true
	}
	return false
}

// GetCertificate adapts Certificate to tls.Config.GetCertificate for a server
// that always presents id.
func (m *Manager) GetCertificate(id spiffe.ID) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		ctx := context.Background()
		if hello != nil {
			ctx = hello.Context()
		}
		return m.Certificate(ctx, id)
	}
}

// GetClientCertificate adapts Certificate to tls.Config.GetClientCertificate.
func (m *Manager) GetClientCertificate(id spiffe.ID) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		ctx := context.Background()
		if req != nil {
			ctx = req.Context()
		}
		return m.Certificate(ctx, id)
	}
}

// VerifyPeer is VerifyPeer against the current roots and the Manager's clock.
func (m *Manager) VerifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage) (spiffe.ID, error) {
	return VerifyPeer(chain, m.bundle.Roots(), m.clock.Now(), usage)
}

// ServerTLSConfig is an mTLS server config presenting id: TLS 1.3, a client
// certificate required and verified against the current roots on every
// handshake, and authorize (if not nil) called with the client's identity —
// its error refuses the handshake. Callers add NextProtos (e.g. "h2").
func (m *Manager) ServerTLSConfig(id spiffe.ID, authorize func(peer spiffe.ID) error) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: m.GetCertificate(id),
		// RequireAnyClientCert, not RequireAndVerifyClientCert: verification
		// happens in VerifyConnection against the roots of the moment, which
		// a static ClientCAs pool would not follow.
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: m.verifyConnection(x509.ExtKeyUsageClientAuth, authorize),
	}
}

// ClientTLSConfig is an mTLS client config presenting id, verifying the
// server's chain against the current roots on every handshake, and calling
// authorize (if not nil) with the server's identity — typically "is this the
// identity the destination is supposed to have".
func (m *Manager) ClientTLSConfig(id spiffe.ID, authorize func(peer spiffe.ID) error) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: m.GetClientCertificate(id),
		// Host-name verification does not apply to SPIFFE identities;
		// VerifyConnection does the full chain and identity check instead.
		InsecureSkipVerify: true,
		VerifyConnection:   m.verifyConnection(x509.ExtKeyUsageServerAuth, authorize),
	}
}

// verifyConnection runs on every handshake, resumed ones included.
func (m *Manager) verifyConnection(usage x509.ExtKeyUsage, authorize func(spiffe.ID) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		peer, err := m.VerifyPeer(cs.PeerCertificates, usage)
		if err != nil {
			return err
		}
		if authorize != nil {
			if err := authorize(peer); err != nil {
				return fmt.Errorf("peer %s not authorized: %w", peer, err)
			}
		}
		return nil
	}
}

// Forget drops id's certificate and stops renewing it (a pod left the node).
// Waiters still blocked in Certificate start over and fetch it again.
func (m *Manager) Forget(id spiffe.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return
	}
	delete(m.entries, id)
	if e.timer != nil {
		e.timer.Stop()
	}
	close(e.changed)
	m.log.Info("identity: forgot certificate", "identity", id.String())
}

// CertificateStatus describes one identity, for debug endpoints.
type CertificateStatus struct {
	ID        spiffe.ID
	NotAfter  time.Time // zero before the first certificate
	RenewAt   time.Time
	Failures  int   // consecutive failed attempts
	LastError error // of the latest attempt, nil after a success
}

// Status lists the identities the Manager holds, sorted by ID.
func (m *Manager) Status() []CertificateStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]CertificateStatus, 0, len(m.entries))
	for _, e := range m.entries {
		s := CertificateStatus{ID: e.id, RenewAt: e.renewAt, Failures: e.failures, LastError: e.lastErr}
		if e.cert != nil {
			s.NotAfter = e.cert.Leaf.NotAfter
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b CertificateStatus) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	return out
}

// Close stops all renewals and cancels calls in flight. Certificate then
// fails; certificates already handed out stay usable until they expire.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	m.cancel()
	for _, e := range m.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
		close(e.changed)
	}
	m.entries = nil
}

// entryLocked returns id's entry, creating it and starting its first fetch.
func (m *Manager) entryLocked(id spiffe.ID) *entry {
	e := m.entries[id]
	if e == nil {
		e = &entry{id: id, changed: make(chan struct{})}
		m.entries[id] = e
		go m.attempt(e)
	}
	return e
}

// attempt makes one CreateCertificate call for e and schedules the next one:
// the renewal on success, a backoff on failure.
func (m *Manager) attempt(e *entry) {
	m.mu.Lock()
	if m.closed || m.entries[e.id] != e {
		m.mu.Unlock()
		return
	}
	e.timer = nil
	m.mu.Unlock()

	start := m.clock.Now()
	cert, roots, err := m.request(e.id)

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.entries[e.id] != e {
		return // forgotten while the call was in flight
	}
	now := m.clock.Now()
	var delay time.Duration
	if err == nil {
		e.cert, e.lastErr, e.failures = cert, nil, 0
		// Measure the lifetime from when we asked, not from NotBefore: the CA
		// backdates NotBefore for clock skew, which would otherwise make
		// short-lived certificates look half-spent on arrival.
		from := start
		if cert.Leaf.NotBefore.After(from) {
			from = cert.Leaf.NotBefore
		}
		e.renewAt = from.Add(time.Duration(float64(cert.Leaf.NotAfter.Sub(from)) * m.renewFraction))
		delay = max(e.renewAt.Sub(now), minRenewDelay)
		if m.bundle.Set(roots) {
			m.log.Info("identity: trust bundle updated", "roots", len(roots))
		}
		m.log.Info("identity: certificate issued", "identity", e.id.String(),
			"serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter, "renew_in", delay)
	} else {
		e.lastErr = err
		e.failures++
		delay = m.backoff(e.failures)
		e.renewAt = now.Add(delay)
		attrs := []any{"identity", e.id.String(), "error", err, "failures", e.failures, "retry_in", delay}
		if e.cert != nil && now.Before(e.cert.Leaf.NotAfter) {
			attrs = append(attrs, "serving_previous_until", e.cert.Leaf.NotAfter)
		}
		m.log.Warn("identity: certificate request failed", attrs...)
	}
	close(e.changed)
	e.changed = make(chan struct{})
	e.timer = m.clock.AfterFunc(delay, func() { m.attempt(e) })
}

// backoff is the delay after the n-th consecutive failure: exponential from
// InitialBackoff, capped at MaxBackoff, with "equal jitter" (half fixed, half
// random) so proxies that lost the CA together do not return together.
func (m *Manager) backoff(n int) time.Duration {
	d := m.initialBackoff
	for i := 1; i < n && d < m.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, m.maxBackoff)
	half := d / 2
	return half + mrand.N(d-half+1)
}

// request generates a key and CSR for id and asks the CA. It checks the
// answer before accepting it: the leaf certifies our key and names exactly
// id, and the chain verifies to the trust bundle sent with it.
func (m *Manager) request(id spiffe.ID) (*tls.Certificate, []*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.requestTimeout)
	defer cancel()
	resp, err := m.client.CreateCertificate(ctx, &meshv1.CertificateRequest{
		Csr:             string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValiditySeconds: int64(m.ttl / time.Second),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("certificate for %s: %w", id, err)
	}

	bad := func(format string, args ...any) error {
		return fmt.Errorf("certificate for %s: unusable CA response: %s", id, fmt.Sprintf(format, args...))
	}
	var chain []*x509.Certificate
	for _, p := range resp.GetCertChain() {
		certs, err := pemutil.Certificates([]byte(p))
		if err != nil {
			return nil, nil, bad("cert_chain: %v", err)
		}
		chain = append(chain, certs...)
	}
	if len(chain) == 0 {
		return nil, nil, bad("empty cert_chain")
	}
	var roots []*x509.Certificate
	for _, p := range resp.GetTrustBundle() {
		certs, err := pemutil.Certificates([]byte(p))
		if err != nil {
			return nil, nil, bad("trust_bundle: %v", err)
		}
		roots = append(roots, certs...)
	}
	if len(roots) == 0 {
		return nil, nil, bad("empty trust_bundle")
	}
	leaf := chain[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, bad("leaf does not certify the key of our CSR")
	}
	_, pool := snapshot(roots)
	got, err := VerifyPeer(chain, pool, m.clock.Now(), x509.ExtKeyUsageAny)
	if err != nil {
		return nil, nil, bad("%v", err)
	}
	if got != id {
		return nil, nil, bad("leaf names %s", got)
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, roots, nil
}
