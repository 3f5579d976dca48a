package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Certificates supplies workload certificates and the mesh roots.
// *identity.Manager implements it.
type Certificates interface {
	// Certificate returns id's current certificate, fetching it if needed.
	Certificate(ctx context.Context, id spiffe.ID) (*tls.Certificate, error)
	// Roots is the current pool of mesh roots.
	Roots() *x509.CertPool
}

var _ Certificates = (*identity.Manager)(nil)

// ALPN is the application protocol HBONE negotiates.
const ALPN = "h2"

// hardenServer applies what HBONE requires of any server config: TLS 1.3
// only, ALPN h2, a client certificate that chains to the current mesh roots
// and names a SPIFFE ID (checked on every handshake, so root rotations
// apply to new connections at once), no session tickets (every connection
// proves its identity), and full-size TLS records from the first byte.
func hardenServer(cfg *tls.Config, certs Certificates) {
	cfg.MinVersion = tls.VersionTLS13
	cfg.MaxVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ALPN}
	// Verification happens in VerifyConnection against the roots of the
	// moment, which a static ClientCAs pool would not follow.
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.ClientCAs = nil
	cfg.SessionTicketsDisabled = true
	cfg.DynamicRecordSizingDisabled = true
	inner := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if _, err := identity.VerifyPeer(cs.PeerCertificates, certs.Roots(), time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
			return err
		}
		if inner != nil {
			return inner(cs)
		}
		return nil
	}
}

// serverTLSConfig builds the server's TLS config: base (cloned) if given,
// else one whose certificate is chosen per connection by ident.
func serverTLSConfig(base *tls.Config, certs Certificates, ident func(local net.Addr, serverName string) (spiffe.ID, error)) *tls.Config {
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				var local net.Addr
				if hello.Conn != nil {
					local = hello.Conn.LocalAddr()
				}
				id, err := ident(local, hello.ServerName)
				if err != nil {
					return nil, fmt.Errorf("no server identity for %v (SNI %q): %w", local, hello.ServerName, err)
				}
				return certs.Certificate(hello.Context(), id)
			},
		}
	}
	hardenServer(cfg, certs)
	if inner := cfg.GetConfigForClient; inner != nil {
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := inner(hello)
			if err != nil || c == nil {
				return c, err
			}
			c = c.Clone()
			c.GetConfigForClient = nil
			hardenServer(c, certs)
			return c, nil
		}
	}
	return cfg
}

// clientTLSConfig is the config of one outbound connection: it presents
// cert and accepts only a server chaining to the mesh roots whose SPIFFE ID
// is one of want.
func clientTLSConfig(cert *tls.Certificate, certs Certificates, want []spiffe.ID, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert, nil
		},
		// Host names play no part in the mesh: VerifyConnection checks the
		// chain and the SPIFFE ID instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := identity.VerifyPeer(cs.PeerCertificates, certs.Roots(), time.Now(), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if !slices.Contains(want, id) {
				return &IdentityError{Got: id, Want: want}
			}
			return nil
		},
		DynamicRecordSizingDisabled: true,
	}
}

// IdentityError reports a server presenting an identity other than the
// ones expected of the destination.
type IdentityError struct {
	Got  spiffe.ID
	Want []spiffe.ID
}

func (e *IdentityError) Error() string {
	return fmt.Sprintf("hbone: server presented identity %s, want one of %v", e.Got, e.Want)
}

// peerIdentity returns the SPIFFE ID of a verified connection's peer.
func peerIdentity(cs tls.ConnectionState) (spiffe.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffe.ID{}, errors.New("peer presented no certificate")
	}
	return spiffe.FromCertificate(cs.PeerCertificates[0])
}
