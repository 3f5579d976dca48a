package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// VerifyPeer checks a peer's certificate chain (leaf first, as
// tls.ConnectionState.PeerCertificates has it) against roots at time now and
// returns the peer's identity. It refuses a chain that does not lead to one of
// the roots, any certificate outside its validity window, a leaf that is a CA
// or lacks usage (x509.ExtKeyUsageClientAuth when verifying a client,
// ServerAuth when verifying a server), and a leaf without exactly one SPIFFE
// URI SAN. Host names play no part: in the mesh, identity is the SPIFFE ID.
func VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) (spiffe.ID, error) {
	if len(chain) == 0 {
		return spiffe.ID{}, errors.New("peer presented no certificate")
	}
	if roots == nil {
		return spiffe.ID{}, errors.New("no trusted roots yet: cannot verify peer")
	}
	leaf := chain[0]
	if leaf.IsCA {
		return spiffe.ID{}, fmt.Errorf("peer certificate %q is a CA certificate, not a workload certificate", leaf.Subject)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return spiffe.ID{}, fmt.Errorf("peer certificate%s does not verify against the mesh roots: %w", claimed(leaf), err)
	}
	id, err := spiffe.FromCertificate(leaf)
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	return id, nil
}

// claimed names the URIs an unverified certificate claims, for error
// messages only.
func claimed(c *x509.Certificate) string {
	if len(c.URIs) == 0 {
		return ""
	}
	s := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		s[i] = u.String()
	}
	return " (claiming " + strings.Join(s, ", ") + ")"
}

// ControlPlaneTLSConfig is the TLS client config a proxy dials the control
// plane with: TLS 1.3, the server's chain verified against the bundle's
// current roots on every handshake, and its SPIFFE ID required to be
// ControlPlaneID(trustDomain) — the address the proxy dials (a node IP, a
// Service name) plays no part. Use it with credentials.NewTLS.
func ControlPlaneTLSConfig(bundle *Bundle, trustDomain string) *tls.Config {
	want := spiffe.ControlPlaneID(trustDomain)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Go's built-in verification would check a host name; VerifyConnection
		// does the whole chain verification instead, against the current roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := VerifyPeer(cs.PeerCertificates, bundle.Roots(), time.Now(), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("control plane: %w", err)
			}
			if id != want {
				return fmt.Errorf("control plane presented identity %s, want %s", id, want)
			}
			return nil
		},
	}
}

// NodeTokenCredentials sends "authorization: Bearer <token>" on every call,
// the credential the CA's TokenAuthenticator expects. token is called before
// each call, so a rotated token (file) is picked up; see TokenFromFile.
func NodeTokenCredentials(token func() (string, error)) credentials.PerRPCCredentials {
	return bearer{token: token}
}

// StaticToken is a token source for NodeTokenCredentials.
func StaticToken(token string) func() (string, error) {
	return func() (string, error) { return token, nil }
}

// TokenFromFile is a token source for NodeTokenCredentials that re-reads
// path on every call (a projected service-account token rotates in place).
func TokenFromFile(path string) func() (string, error) {
	return func() (string, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("node token: %w", err)
		}
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return "", fmt.Errorf("node token file %s is empty", path)
		}
		return tok, nil
	}
}

type bearer struct{ token func() (string, error) }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := b.token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity keeps the token off plaintext connections.
func (bearer) RequireTransportSecurity() bool { return true }
