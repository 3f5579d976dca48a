package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/ambit-mesh/ambit/internal/pemutil"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// issueFrom has c sign a fresh key for id and returns the chain.
func issueFrom(t *testing.T, c *ca.CA, id spiffe.ID) []*x509.Certificate {
	t.Helper()
	cert := issueTLS(t, c, id)
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, x)
	}
	return chain
}

func issueTLS(t *testing.T, c *ca.CA, id spiffe.ID) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := c.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	issued, err := c.Issue(csr, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: issued.Leaf}
	for _, x := range issued.Chain {
		out.Certificate = append(out.Certificate, x.Raw)
	}
	return out
}

// testPKI signs hand-made certificates, including ones the mesh CA would
// never issue.
type testPKI struct {
	root *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T) *testPKI {
	p := &testPKI{}
	p.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.root = p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "test root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil, p.key)
	return p
}

// sign fills in validity and serial, and signs tmpl by parent (self-signed if nil).
func (p *testPKI) sign(t *testing.T, tmpl, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func (p *testPKI) leaf(t *testing.T, mutate func(*x509.Certificate)) *x509.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		URIs:        []*url.URL{echoID.URL()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	return p.sign(t, tmpl, p.root, p.key, key)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestVerifyPeer(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	now := time.Now()

	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	inter := p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "inter"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, p.root, p.key, interKey)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	viaInter := p.sign(t, &x509.Certificate{URIs: []*url.URL{echoID.URL()}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, inter, interKey, leafKey)

	tests := []struct {
		name    string
		chain   []*x509.Certificate
		noRoots bool
		at      time.Time
		usage   x509.ExtKeyUsage
		wantErr string
	}{
		{name: "valid", chain: []*x509.Certificate{p.leaf(t, nil)}},
		{name: "valid via intermediate", chain: []*x509.Certificate{viaInter, inter}},
		{name: "intermediate missing", chain: []*x509.Certificate{viaInter}, wantErr: "does not verify"},
		{name: "no certificate", wantErr: "no certificate"},
		{name: "no roots", chain: []*x509.Certificate{p.leaf(t, nil)}, noRoots: true, wantErr: "no trusted roots"},
		{name: "other root", chain: []*x509.Certificate{other.leaf(t, nil)}, wantErr: "does not verify"},
		{name: "expired", chain: []*x509.Certificate{p.leaf(t, nil)}, at: now.Add(2 * time.Hour), wantErr: "expired"},
		{name: "not yet valid", chain: []*x509.Certificate{p.leaf(t, nil)}, at: now.Add(-2 * time.Hour), wantErr: "not yet valid"},
		{name: "no SPIFFE SAN", chain: []*x509.Certificate{p.leaf(t, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL("https://echo")} })}, wantErr: "no SPIFFE URI SAN"},
		{name: "no SAN at all", chain: []*x509.Certificate{p.leaf(t, func(c *x509.Certificate) { c.URIs, c.Subject = nil, pkix.Name{CommonName: "x"} })}, wantErr: "no SPIFFE URI SAN"},
		{name: "two SPIFFE SANs", chain: []*x509.Certificate{p.leaf(t, func(c *x509.Certificate) { c.URIs = append(c.URIs, sleepID.URL()) })}, wantErr: "2 SPIFFE URI SANs"},
		{name: "CA as leaf", chain: []*x509.Certificate{p.root}, wantErr: "is a CA certificate"},
		{name: "server-only cert as client", chain: []*x509.Certificate{p.leaf(t, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })}, wantErr: "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := roots
			if tt.noRoots {
				r = nil
			}
			at := tt.at
			if at.IsZero() {
				at = now
			}
			usage := tt.usage
			if usage == 0 {
				usage = x509.ExtKeyUsageClientAuth
			}
			id, err := VerifyPeer(tt.chain, r, at, usage)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || id != echoID {
				t.Fatalf("VerifyPeer = %v, %v", id, err)
			}
		})
	}
}

// handshake runs a TLS handshake over an in-memory pipe and returns both
// sides' errors.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	sc, cc := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	srv, cli := tls.Server(sc, server), tls.Client(cc, client)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err != nil {
			sc.Close()
		}
		done <- err
	}()
	clientErr = cli.Handshake()
	if clientErr != nil {
		cc.Close()
	} else {
		// TLS 1.3: the server may reject the client's certificate after the
		// client considers the handshake done; a read surfaces its alert.
		go cli.Read(make([]byte, 1))
	}
	serverErr = <-done
	sc.Close()
	cc.Close()
	return serverErr, clientErr
}

func only(want spiffe.ID) func(spiffe.ID) error {
	return func(got spiffe.ID) error {
		if got != want {
			return fmt.Errorf("want %s", want)
		}
		return nil
	}
}

func TestMutualTLS(t *testing.T) {
	h := newHarness(t, nil)
	m := h.manager(t, nil, Options{Bundle: h.cpBundle})
	foreign, err := ca.New(ca.Options{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("sleep calls echo", func(t *testing.T) {
		var sawClient spiffe.ID
		serverCfg := m.ServerTLSConfig(echoID, func(p spiffe.ID) error { sawClient = p; return only(sleepID)(p) })
		serverErr, clientErr := handshake(t, serverCfg, m.ClientTLSConfig(sleepID, only(echoID)))
		if serverErr != nil || clientErr != nil {
			t.Fatalf("server: %v; client: %v", serverErr, clientErr)
		}
		if sawClient != sleepID {
			t.Errorf("server saw client %s", sawClient)
		}
	})
	t.Run("server refuses unauthorized client", func(t *testing.T) {
		serverErr, _ := handshake(t, m.ServerTLSConfig(echoID, only(sleepID)), m.ClientTLSConfig(echoID, nil))
		if serverErr == nil || !strings.Contains(serverErr.Error(), "not authorized") {
			t.Errorf("server: %v", serverErr)
		}
	})
	t.Run("client refuses unexpected server", func(t *testing.T) {
		_, clientErr := handshake(t, m.ServerTLSConfig(echoID, nil), m.ClientTLSConfig(sleepID, only(sleepID)))
		if clientErr == nil || !strings.Contains(clientErr.Error(), "not authorized") {
			t.Errorf("client: %v", clientErr)
		}
	})
	t.Run("server refuses client from a foreign root", func(t *testing.T) {
		foreignCert := issueTLS(t, foreign, sleepID)
		clientCfg := m.ClientTLSConfig(sleepID, nil)
		clientCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return foreignCert, nil }
		serverErr, _ := handshake(t, m.ServerTLSConfig(echoID, nil), clientCfg)
		if serverErr == nil || !strings.Contains(serverErr.Error(), "does not verify") {
			t.Errorf("server: %v", serverErr)
		}
	})
	t.Run("server refuses client without certificate", func(t *testing.T) {
		serverErr, _ := handshake(t, m.ServerTLSConfig(echoID, nil), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if serverErr == nil {
			t.Error("server accepted a client without certificate")
		}
	})
	t.Run("control-plane config refuses a workload server", func(t *testing.T) {
		_, clientErr := handshake(t, m.ServerTLSConfig(echoID, nil), ControlPlaneTLSConfig(m.Bundle(), td))
		if clientErr == nil || !strings.Contains(clientErr.Error(), "want spiffe://cluster.local/ns/istio-system/sa/ambit-controlplane") {
			t.Errorf("client: %v", clientErr)
		}
	})
}

func TestBundle(t *testing.T) {
	a, b := newTestPKI(t), newTestPKI(t)
	bundle := NewBundle([]*x509.Certificate{a.root, a.root})
	if len(bundle.Certificates()) != 1 {
		t.Error("duplicates kept")
	}
	ch := bundle.Changed()
	if bundle.Set([]*x509.Certificate{a.root}) {
		t.Error("same set reported as a change")
	}
	if bundle.Set(nil) {
		t.Error("empty set accepted")
	}
	select {
	case <-ch:
		t.Fatal("notified without a change")
	default:
	}
	if !bundle.Set([]*x509.Certificate{b.root, a.root}) {
		t.Fatal("change not reported")
	}
	<-ch
	if _, err := VerifyPeer([]*x509.Certificate{b.leaf(t, nil)}, bundle.Roots(), time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Error(err)
	}
	if _, err := pemutil.Certificates([]byte("junk")); err == nil {
		t.Error("junk parsed")
	}
}
