package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseCSR(t *testing.T) {
	c := newMemCA(t, nil)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)

	goodCSR := csrFor(t, echoID)
	// Flip a bit in the signature (the last bytes of the DER).
	block, _ := pem.Decode(goodCSR)
	block.Bytes[len(block.Bytes)-3] ^= 0x40
	badSig := pem.EncodeToMemory(block)

	tests := []struct {
		name    string
		csr     []byte
		wantErr string // "" = accepted
	}{
		{name: "P-256", csr: goodCSR},
		{name: "P-384", csr: makeCSR(t, p384, csrTemplate{uris: []string{echoID}})},
		{name: "RSA 2048", csr: makeCSR(t, rsa2048, csrTemplate{uris: []string{echoID}})},
		{name: "wrong trust domain", csr: csrFor(t, "spiffe://evil.example/ns/default/sa/echo"), wantErr: `only for trust domain "cluster.local"`},
		{name: "two URI SANs", csr: makeCSR(t, newKey(t), csrTemplate{uris: []string{echoID, "spiffe://cluster.local/ns/default/sa/other"}}), wantErr: "2 URI SANs"},
		{name: "DNS SAN", csr: makeCSR(t, newKey(t), csrTemplate{uris: []string{echoID}, dns: []string{"echo.default.svc"}}), wantErr: "DNS SAN"},
		{name: "IP SAN", csr: makeCSR(t, newKey(t), csrTemplate{uris: []string{echoID}, ips: []string{"10.0.0.1"}}), wantErr: "IP SAN"},
		{name: "email SAN", csr: makeCSR(t, newKey(t), csrTemplate{uris: []string{echoID}, emails: []string{"a@b.c"}}), wantErr: "email SAN"},
		{name: "no SAN", csr: makeCSR(t, newKey(t), csrTemplate{}), wantErr: "no URI SAN"},
		{name: "bad signature", csr: badSig, wantErr: "signature does not verify"},
		{name: "non-SPIFFE URI", csr: csrFor(t, "https://cluster.local/ns/default/sa/echo"), wantErr: "not a SPIFFE ID"},
		{name: "SPIFFE URI of wrong shape", csr: csrFor(t, "spiffe://cluster.local/workload/echo"), wantErr: "not a SPIFFE ID"},
		{name: "query in URI", csr: csrFor(t, echoID+"?x=1"), wantErr: "may hold only"},
		{name: "escaped URI", csr: csrFor(t, "spiffe://cluster.local/ns/default/sa/%65cho"), wantErr: "may hold only"},
		{name: "port in URI", csr: csrFor(t, "spiffe://cluster.local:443/ns/default/sa/echo"), wantErr: "may hold only"},
		{name: "uppercase trust domain", csr: csrFor(t, "spiffe://Cluster.local/ns/default/sa/echo"), wantErr: "lowercase"},
		{name: "P-224 key", csr: makeCSR(t, p224, csrTemplate{uris: []string{echoID}}), wantErr: "P-256"},
		{name: "RSA 1024 key", csr: makeCSR(t, rsa1024, csrTemplate{uris: []string{echoID}}), wantErr: "2048"},
		{name: "Ed25519 key", csr: makeCSR(t, edKey, csrTemplate{uris: []string{echoID}}), wantErr: "not accepted"},
		{name: "not PEM", csr: []byte("hello"), wantErr: "not PEM"},
		{name: "wrong PEM type", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), wantErr: "want CERTIFICATE REQUEST"},
		{name: "trailing data", csr: append(csrFor(t, echoID), []byte("junk")...), wantErr: "trailing data"},
		{name: "too big", csr: make([]byte, MaxCSRSize+1), wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := c.ParseCSR(tt.csr)
			switch {
			case tt.wantErr == "":
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if csr.ID().String() != echoID {
					t.Errorf("ID = %s", csr.ID())
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			}
		})
	}
}

func TestIssue(t *testing.T) {
	clk := newTestClock()
	c, err := New(Options{TrustDomain: td, Now: clk.Now, DefaultTTL: time.Hour, MaxTTL: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{name: "default", ttl: 0, wantTTL: time.Hour},
		{name: "requested", ttl: 2 * time.Hour, wantTTL: 2 * time.Hour},
		{name: "capped", ttl: 100 * time.Hour, wantTTL: 10 * time.Hour},
	}
	serials := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := newKey(t)
			csr, err := c.ParseCSR(makeCSR(t, key, csrTemplate{uris: []string{echoID}}))
			if err != nil {
				t.Fatal(err)
			}
			issued, err := c.Issue(csr, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			leaf := issued.Leaf
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != echoID {
				t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, echoID)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Error("leaf has extra SANs")
			}
			if !key.PublicKey.Equal(leaf.PublicKey) {
				t.Error("leaf does not certify the CSR's key")
			}
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
				t.Errorf("KeyUsage = %v", leaf.KeyUsage)
			}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
			}
			if !leaf.NotBefore.Equal(clk.Now().Add(-Backdate)) {
				t.Errorf("NotBefore = %s, want now - %s", leaf.NotBefore, Backdate)
			}
			if !leaf.NotAfter.Equal(clk.Now().Add(tt.wantTTL)) {
				t.Errorf("NotAfter = now + %s, want now + %s", leaf.NotAfter.Sub(clk.Now()), tt.wantTTL)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.Cmp(new(big.Int).Lsh(big.NewInt(1), 128)) >= 0 {
				t.Errorf("serial %s is not a positive 128-bit number", leaf.SerialNumber)
			}
			if serials[leaf.SerialNumber.String()] {
				t.Error("serial reused")
			}
			serials[leaf.SerialNumber.String()] = true
			if len(issued.Chain) != 1 || len(issued.ChainPEM()) != 1 {
				t.Errorf("chain from a root CA has %d certs, want just the leaf", len(issued.Chain))
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageAny} {
				if err := verify(issued.Chain, c.CertPool(), clk.Now(), usage); err != nil {
					t.Errorf("verify for %v: %v", usage, err)
				}
			}
		})
	}
	if _, err := c.TTL(-time.Second); err == nil {
		t.Error("negative TTL accepted")
	}
}

// TestValidityWindow checks that verification, with the clock moved, refuses
// certificates that are expired or not yet valid.
func TestValidityWindow(t *testing.T) {
	clk := newTestClock()
	c := newMemCA(t, clk)
	issuedAt := clk.Now()
	issued := mustIssue(t, c, echoID, time.Hour)
	tests := []struct {
		name    string
		at      time.Time
		wantErr bool
	}{
		{name: "now", at: issuedAt},
		{name: "peer clock 30s behind (backdate covers it)", at: issuedAt.Add(-30 * time.Second)},
		{name: "just before expiry", at: issuedAt.Add(time.Hour - time.Second)},
		{name: "expired", at: issuedAt.Add(time.Hour + time.Second), wantErr: true},
		{name: "not yet valid", at: issuedAt.Add(-10 * time.Minute), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(issued.Chain, c.CertPool(), tt.at, x509.ExtKeyUsageClientAuth)
			if tt.wantErr {
				var inv x509.CertificateInvalidError
				if !errors.As(err, &inv) || inv.Reason != x509.Expired {
					t.Fatalf("err = %v, want x509.Expired", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLeafNeverOutlivesIssuer(t *testing.T) {
	p := newPluggedIn(t)
	now := time.Now()
	// An intermediate that expires in 30 minutes.
	p.inter = makeCACert(t, "short intermediate", p.interKey, p.root, p.rootKey, now.Add(-time.Hour), now.Add(30*time.Minute))
	writePEM(t, p.dir+"/"+CertChainFile, certBlock(p.inter))
	writePEM(t, p.dir+"/"+CAKeyFile, keyBlock(t, p.interKey))
	writePEM(t, p.dir+"/"+RootCertFile, certBlock(p.root))
	c, err := New(Options{TrustDomain: td, Dir: p.dir})
	if err != nil {
		t.Fatal(err)
	}
	issued := mustIssue(t, c, echoID, 24*time.Hour)
	if !issued.Leaf.NotAfter.Equal(p.inter.NotAfter) {
		t.Errorf("leaf NotAfter %s, want capped to the intermediate's %s", issued.Leaf.NotAfter, p.inter.NotAfter)
	}
}

func TestServingCertificate(t *testing.T) {
	clk := newTestClock()
	c := newMemCA(t, clk)
	cert, err := c.IssueServingCertificate([]string{"ambit-controlplane.istio-system.svc", "127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/istio-system/sa/ambit-controlplane" {
		t.Errorf("URI SANs = %v", leaf.URIs)
	}
	if len(leaf.DNSNames) != 1 || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("DNS %v IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	opts := x509.VerifyOptions{Roots: c.CertPool(), CurrentTime: clk.Now(), DNSName: "ambit-controlplane.istio-system.svc"}
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("serving cert does not verify for its DNS name: %v", err)
	}
	opts.DNSName = "127.0.0.1"
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("serving cert does not verify for its IP: %v", err)
	}
	if _, err := c.IssueServingCertificate([]string{""}, 0); err == nil {
		t.Error("empty host accepted")
	}

	// ServingTLSConfig re-issues after half the lifetime.
	cfg, err := c.ServingTLSConfig([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := cfg.GetCertificate(nil)
	again, _ := cfg.GetCertificate(nil)
	if first != again {
		t.Error("serving certificate re-issued before half-life")
	}
	clk.Advance(DefaultTTL/2 + time.Second)
	renewed, _ := cfg.GetCertificate(nil)
	if renewed == first {
		t.Error("serving certificate not re-issued after half-life")
	}
}
