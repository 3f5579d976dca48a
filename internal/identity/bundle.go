package identity

import (
	"crypto/x509"
	"fmt"
	"github.com/ambit-mesh/ambit/internal/pemutil"
	"os"
	"slices"
	"sync"
)

// Bundle holds the roots a proxy trusts now. The CA sends the whole set with
// every certificate (old and new roots together during a rotation), and the
// set replaces the previous one — so a root the CA stops sending stops being
// trusted after the next renewal. Readers get immutable snapshots, so a
// handshake never sees a half-updated pool. Safe for concurrent use.
type Bundle struct {
	mu      sync.Mutex
	certs   []*x509.Certificate
	pool    *x509.CertPool
	changed chan struct{}
}

// NewBundle starts with roots, e.g. the root-cert.pem a proxy is deployed
// with, which it needs to verify the control plane before its first CSR.
func NewBundle(roots []*x509.Certificate) *Bundle {
	b := &Bundle{changed: make(chan struct{})}
	b.certs, b.pool = snapshot(roots)
	return b
}

// LoadBundle reads a PEM file of roots into a new Bundle.
func LoadBundle(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	roots, err := pemutil.Certificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewBundle(roots), nil
}

// Roots is the current pool. It must not be modified; it is replaced, never
// mutated, when the roots change.
func (b *Bundle) Roots() *x509.CertPool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pool
}

// Certificates is the current set of roots.
func (b *Bundle) Certificates() []*x509.Certificate {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.certs)
}

// Set replaces the roots and reports whether the set changed. An empty set is
// ignored: it would make every peer untrusted, and is never what a CA means.
func (b *Bundle) Set(roots []*x509.Certificate) bool {
	if len(roots) == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if sameSet(b.certs, roots) {
		return false
	}
	b.certs, b.pool = snapshot(roots)
	close(b.changed)
	b.changed = make(chan struct{})
	return true
}

// Changed returns a channel closed at the next change of the roots (take a
// new one after each change). Proxies use it to re-check long-lived
// connections or to rebuild state derived from the roots.
func (b *Bundle) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

func snapshot(roots []*x509.Certificate) ([]*x509.Certificate, *x509.CertPool) {
	var certs []*x509.Certificate
	pool := x509.NewCertPool()
	for _, c := range roots {
		if !slices.ContainsFunc(certs, c.Equal) {
			certs = append(certs, c)
			pool.AddCert(c)
		}
	}
	return certs, pool
}

func sameSet(a, b []*x509.Certificate) bool {
	for _, c := range a {
		if !slices.ContainsFunc(b, c.Equal) {
			return false
		}
	}
	for _, c := range b {
		if !slices.ContainsFunc(a, c.Equal) {
			return false
		}
	}
	return true
}
