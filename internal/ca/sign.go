package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// MaxCSRSize bounds the PEM a request may carry; a real CSR is well under
// 2 KiB, so anything near this is garbage or abuse.
const MaxCSRSize = 64 << 10

// CSR is a certificate signing request that passed CA.ParseCSR: its signature
// verifies and it asks for exactly one SPIFFE identity in the CA's trust
// domain. Only ParseCSR makes one, so Issue never signs an unchecked request.
type CSR struct {
	req *x509.CertificateRequest
	id  spiffe.ID
}

// ID is the identity the CSR asks for.
func (r *CSR) ID() spiffe.ID { return r.id }

// PublicKey is the key the certificate will certify.
func (r *CSR) PublicKey() crypto.PublicKey { return r.req.PublicKey }

// ParseCSR decodes a PEM PKCS#10 request and applies the mesh's rules: a
// valid self-signature; an ECDSA P-256 or P-384, or RSA >= 2048-bit key;
// exactly one URI SAN, which is a well-formed SPIFFE ID
// (spiffe://<td>/ns/<ns>/sa/<sa>) in this CA's trust domain; no DNS, IP or
// email SANs. The error says which rule failed. Everything else in the CSR
// (subject, requested extensions such as CA:TRUE) is ignored: Issue builds the
// certificate from the mesh's own template, never from the request.
func (c *CA) ParseCSR(pemData []byte) (*CSR, error) {
	if len(pemData) > MaxCSRSize {
		return nil, fmt.Errorf("CSR is %d bytes, more than the %d allowed", len(pemData), MaxCSRSize)
	}
	block, rest := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("CSR is not PEM-encoded")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("CSR PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("CSR PEM has trailing data after the CERTIFICATE REQUEST block")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CSR does not parse: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature does not verify: %w", err)
	}
	if err := checkKey(req.PublicKey); err != nil {
		return nil, err
	}
	if n := len(req.DNSNames); n > 0 {
		return nil, fmt.Errorf("CSR has %d DNS SAN(s) (%s): workload certificates carry only a SPIFFE URI SAN", n, strings.Join(req.DNSNames, ", "))
	}
	if n := len(req.IPAddresses); n > 0 {
		return nil, fmt.Errorf("CSR has %d IP SAN(s): workload certificates carry only a SPIFFE URI SAN", n)
	}
	if n := len(req.EmailAddresses); n > 0 {
		return nil, fmt.Errorf("CSR has %d email SAN(s): workload certificates carry only a SPIFFE URI SAN", n)
	}
	switch len(req.URIs) {
	case 0:
		return nil, errors.New("CSR has no URI SAN: it must name exactly one SPIFFE ID")
	case 1:
	default:
		uris := make([]string, len(req.URIs))
		for i, u := range req.URIs {
			uris[i] = u.String()
		}
		return nil, fmt.Errorf("CSR has %d URI SANs (%s): it must name exactly one SPIFFE ID", len(uris), strings.Join(uris, ", "))
	}
	id, err := c.parseID(req.URIs[0])
	if err != nil {
		return nil, err
	}
	return &CSR{req: req, id: id}, nil
}

// parseID is stricter than spiffe.Parse: the URI must be exactly the
// canonical form of the ID (no query, fragment, user info, port or escapes)
// and use only SPIFFE-legal characters, so the SAN we issue is byte-for-byte
// the SAN that was requested.
func (c *CA) parseID(u *url.URL) (spiffe.ID, error) {
	s := u.String()
	id, err := spiffe.Parse(s)
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("CSR URI SAN is not a SPIFFE ID: %w", err)
	}
	if id.TrustDomain != c.td {
		return spiffe.ID{}, fmt.Errorf("CSR asks for %s in trust domain %q, but this CA signs only for trust domain %q", s, id.TrustDomain, c.td)
	}
	return id, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("CSR key is ECDSA on %s: only P-256 and P-384 are accepted", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("CSR key is %d-bit RSA: 2048 to 8192 bits are accepted", n)
		}
		return nil
	default:
		return fmt.Errorf("CSR key type %T is not accepted: use ECDSA P-256 (or P-384, or RSA >= 2048)", pub)
	}
}

// Issued is a signed certificate with the chain to send with it.
type Issued struct {
	Leaf *x509.Certificate
	// Chain is the leaf followed by the intermediates up to (not including)
	// a root.
	Chain []*x509.Certificate
}

// ChainPEM is Chain PEM-encoded, one certificate per string, as
// CertificateResponse.cert_chain carries it.
func (i *Issued) ChainPEM() []string {
	out := make([]string, len(i.Chain))
	for n, cert := range i.Chain {
		out[n] = string(encodeCert(cert))
	}
	return out
}

// TTL resolves a requested lifetime: 0 means the default, anything above the
// maximum is capped to it, negative is an error.
func (c *CA) TTL(requested time.Duration) (time.Duration, error) {
	switch {
	case requested < 0:
		return 0, fmt.Errorf("requested validity %s is negative", requested)
	case requested == 0:
		return c.defaultTTL, nil
	case requested > c.maxTTL:
		return c.maxTTL, nil
	default:
		return requested, nil
	}
}

// Issue signs a workload certificate for csr, valid for ttl (see TTL for how
// 0 and over-long values are treated): URI SAN exactly csr.ID(), key usage
// digitalSignature|keyEncipherment, extended key usage serverAuth+clientAuth,
// NotBefore backdated by Backdate, and a random 128-bit serial.
func (c *CA) Issue(csr *CSR, ttl time.Duration) (*Issued, error) {
	if csr == nil || csr.req == nil {
		return nil, errors.New("nil CSR")
	}
	return c.sign(csr.req.PublicKey, leafSANs{uris: []*url.URL{csr.id.URL()}}, ttl,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
}

type leafSANs struct {
	uris []*url.URL
	dns  []string
	ips  []net.IP
}

func (c *CA) sign(pub crypto.PublicKey, sans leafSANs, ttl time.Duration, eku []x509.ExtKeyUsage) (*Issued, error) {
	ttl, err := c.TTL(ttl)
	if err != nil {
		return nil, err
	}
	now := c.now()
	notAfter := now.Add(ttl)
	// A leaf must not outlive its issuers: it would stop verifying when they
	// expire anyway, and the holder would renew too late.
	for _, issuer := range append([]*x509.Certificate{c.cert}, c.issuerChain...) {
		if issuer.NotAfter.Before(notAfter) {
			notAfter = issuer.NotAfter
		}
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("CA certificate %q expired at %s: cannot issue", c.cert.Subject, c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		// Empty subject: identity is the URI SAN alone. x509 then marks the
		// SAN extension critical, as RFC 5280 requires.
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  sans.uris,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	chain := append([]*x509.Certificate{leaf}, c.issuerChain...)
	return &Issued{Leaf: leaf, Chain: chain}, nil
}

// ControlPlaneNamespace and ControlPlaneServiceAccount name the control
// plane's own identity, as in Istio (istiod runs as istio-system/istiod; we
// keep the namespace so existing AuthorizationPolicies keep making sense).
const (
	ControlPlaneNamespace      = "istio-system"
	ControlPlaneServiceAccount = "ambit-controlplane"
)

// IssueServingCertificate issues the control plane's own TLS certificate:
// a fresh ECDSA P-256 key, the control-plane SPIFFE ID as URI SAN, and hosts
// (DNS names or IP addresses) as DNS/IP SANs so clients that verify host
// names work too. ttl 0 means the CA default.
func (c *CA) IssueServingCertificate(hosts []string, ttl time.Duration) (*tls.Certificate, error) {
	var sans leafSANs
	sans.uris = []*url.URL{spiffe.ControlPlaneID(c.td).URL()}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
			return nil, errors.New("serving certificate: empty host name")
		case ip != nil:
			sans.ips = append(sans.ips, ip)
		default:
			sans.dns = append(sans.dns, h)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	issued, err := c.sign(key.Public(), sans, ttl, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: issued.Leaf}
	for _, cert := range issued.Chain {
		out.Certificate = append(out.Certificate, cert.Raw)
	}
	return out, nil
}

// ServingTLSConfig is a TLS 1.3 server config for the control plane's
// listener (xDS + CA on 15012). Its certificate comes from
// IssueServingCertificate and is re-issued on the first handshake after
// half its lifetime, so a long-running control plane never serves an expired
// certificate. Client certificates are not requested: proxies authenticate
// with bearer tokens, since they have no certificate before their first CSR.
func (c *CA) ServingTLSConfig(hosts []string) (*tls.Config, error) {
	s := &servingCert{ca: c, hosts: hosts}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.get() },
	}, nil
}

type servingCert struct {
	ca    *CA
	hosts []string

	mu       sync.Mutex
	cert     *tls.Certificate
	issuedAt time.Time
}

func (s *servingCert) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.ca.now()
	if s.cert != nil && now.Before(s.issuedAt.Add(s.cert.Leaf.NotAfter.Sub(s.issuedAt)/2)) {
		return s.cert, nil
	}
	cert, err := s.ca.IssueServingCertificate(s.hosts, 0)
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			s.ca.log.Error("CA: renewing the control plane's serving certificate failed; serving the current one", "error", err, "not_after", s.cert.Leaf.NotAfter)
			return s.cert, nil
		}
		return nil, err
	}
	s.cert, s.issuedAt = cert, now
	return cert, nil
}
