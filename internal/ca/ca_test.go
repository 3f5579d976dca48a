package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const echoID = "spiffe://cluster.local/ns/default/sa/echo"

func TestNewCreatesRootAndReloadsIt(t *testing.T) {
	dir := t.TempDir()
	clk := newTestClock()
	c1, err := New(Options{TrustDomain: td, Dir: dir, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	root := c1.SigningCertificate()
	if !root.IsCA || root.CheckSignatureFrom(root) != nil {
		t.Fatal("created root is not a self-signed CA")
	}
	if _, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || root.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", root.PublicKey)
	}
	if got := root.NotAfter.Sub(clk.Now()); got != RootValidity {
		t.Errorf("root validity %s, want %s", got, RootValidity)
	}
	if len(root.Subject.Organization) != 1 || root.Subject.Organization[0] != td || !strings.Contains(root.Subject.CommonName, td) {
		t.Errorf("root subject %q should name the trust domain", root.Subject)
	}
	for name, want := range map[string]os.FileMode{RootKeyFile: 0o600, NodeTokenKeyFile: 0o600, RootCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}

	clk.Advance(time.Hour)
	c2, err := New(Options{TrustDomain: td, Dir: dir, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.SigningCertificate().Equal(root) {
		t.Error("second New created a different root instead of loading the persisted one")
	}
	if c1.NodeToken("node-a") != c2.NodeToken("node-a") {
		t.Error("node token key not persisted: tokens differ across restarts")
	}
	// A certificate from the first instance verifies against the second's bundle.
	issued := mustIssue(t, c1, echoID, 0)
	if err := verify(issued.Chain, c2.CertPool(), clk.Now(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("cert from first instance does not verify after restart: %v", err)
	}
}

func TestNewRefusesHalfARoot(t *testing.T) {
	for _, keep := range []string{RootCertFile, RootKeyFile} {
		t.Run(keep, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := New(Options{TrustDomain: td, Dir: dir}); err != nil {
				t.Fatal(err)
			}
			other := RootKeyFile
			if keep == RootKeyFile {
				other = RootCertFile
			}
			os.Remove(filepath.Join(dir, other))
			_, err := New(Options{TrustDomain: td, Dir: dir})
			if err == nil || !strings.Contains(err.Error(), "only one of") {
				t.Fatalf("New with only %s: err = %v, want refusal", keep, err)
			}
			if _, statErr := os.Stat(filepath.Join(dir, other)); statErr == nil {
				t.Error("New recreated the missing half")
			}
		})
	}
}

func TestNewRejectsBadTrustDomain(t *testing.T) {
	for _, bad := range []string{"", "Cluster.Local", "a/b", "td:80"} {
		if _, err := New(Options{TrustDomain: bad}); err == nil {
			t.Errorf("New(TrustDomain %q) succeeded, want error", bad)
		}
	}
}

func TestUserProvidedRoot(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	key := newKey(t)
	root := makeCACert(t, "operator root", key, nil, nil, now.Add(-time.Hour), now.Add(time.Hour*24*365))
	writePEM(t, filepath.Join(dir, RootCertFile), certBlock(root))
	writePEM(t, filepath.Join(dir, RootKeyFile), keyBlock(t, key))
	c, err := New(Options{TrustDomain: td, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !c.SigningCertificate().Equal(root) {
		t.Fatal("operator's root not used")
	}
	issued := mustIssue(t, c, echoID, 0)
	if err := verify(issued.Chain, pool(root), now, x509.ExtKeyUsageServerAuth); err != nil {
		t.Error(err)
	}

	// A key that does not belong to the certificate is refused clearly.
	writePEM(t, filepath.Join(dir, RootKeyFile), keyBlock(t, newKey(t)))
	if _, err := New(Options{TrustDomain: td, Dir: dir}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched root key: err = %v", err)
	}
}

// pluggedIn writes an Istio-style cacerts directory: root -> intermediate
// (signing CA).
type pluggedIn struct {
	dir                 string
	root, inter         *x509.Certificate
	rootKey, interKey   *ecdsa.PrivateKey
	otherRoot           *x509.Certificate
	otherRootKey        *ecdsa.PrivateKey
	notBefore, notAfter time.Time
}

func newPluggedIn(t *testing.T) *pluggedIn {
	p := &pluggedIn{dir: t.TempDir(), rootKey: newKey(t), interKey: newKey(t), otherRootKey: newKey(t)}
	now := time.Now()
	p.notBefore, p.notAfter = now.Add(-time.Hour), now.Add(365*24*time.Hour)
	p.root = makeCACert(t, "corp root", p.rootKey, nil, nil, p.notBefore, p.notAfter)
	p.inter = makeCACert(t, "mesh intermediate", p.interKey, p.root, p.rootKey, p.notBefore, p.notAfter)
	p.otherRoot = makeCACert(t, "other root", p.otherRootKey, nil, nil, p.notBefore, p.notAfter)
	return p
}

func TestPluggedInIntermediate(t *testing.T) {
	tests := []struct {
		name    string
		write   func(t *testing.T, p *pluggedIn)
		wantErr string
	}{
		{
			name: "cert-chain with intermediate and root",
			write: func(t *testing.T, p *pluggedIn) {
				writePEM(t, filepath.Join(p.dir, CertChainFile), certBlock(p.inter), certBlock(p.root))
				writePEM(t, filepath.Join(p.dir, CAKeyFile), keyBlock(t, p.interKey))
				writePEM(t, filepath.Join(p.dir, RootCertFile), certBlock(p.root))
			},
		},
		{
			name: "istio cacerts layout (ca-cert + cert-chain)",
			write: func(t *testing.T, p *pluggedIn) {
				writePEM(t, filepath.Join(p.dir, CACertFile), certBlock(p.inter))
				writePEM(t, filepath.Join(p.dir, CertChainFile), certBlock(p.inter), certBlock(p.root))
				writePEM(t, filepath.Join(p.dir, CAKeyFile), keyBlock(t, p.interKey))
				writePEM(t, filepath.Join(p.dir, RootCertFile), certBlock(p.root))
			},
		},
		{
			name: "key does not match",
			write: func(t *testing.T, p *pluggedIn) {
				writePEM(t, filepath.Join(p.dir, CertChainFile), certBlock(p.inter))
				writePEM(t, filepath.Join(p.dir, CAKeyFile), keyBlock(t, p.rootKey))
				writePEM(t, filepath.Join(p.dir, RootCertFile), certBlock(p.root))
			},
			wantErr: "does not match",
		},
		{
			name: "chain does not verify to root-cert.pem",
			write: func(t *testing.T, p *pluggedIn) {
				writePEM(t, filepath.Join(p.dir, CertChainFile), certBlock(p.inter))
				writePEM(t, filepath.Join(p.dir, CAKeyFile), keyBlock(t, p.interKey))
				writePEM(t, filepath.Join(p.dir, RootCertFile), certBlock(p.otherRoot))
			},
			wantErr: "does not chain to",
		},
		{
			name: "root-cert.pem missing",
			write: func(t *testing.T, p *pluggedIn) {
				writePEM(t, filepath.Join(p.dir, CertChainFile), certBlock(p.inter))
				writePEM(t, filepath.Join(p.dir, CAKeyFile), keyBlock(t, p.interKey))
			},
			wantErr: RootCertFile,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPluggedIn(t)
			tt.write(t, p)
			c, err := New(Options{TrustDomain: td, Dir: p.dir})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			issued := mustIssue(t, c, echoID, 0)
			if len(issued.Chain) != 2 || !issued.Chain[1].Equal(p.inter) {
				t.Fatalf("chain = %d certs, want leaf + intermediate", len(issued.Chain))
			}
			// Verifies with only the root trusted: the intermediate travels in the chain.
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
				if err := verify(issued.Chain, pool(p.root), time.Now(), usage); err != nil {
					t.Errorf("usage %v: %v", usage, err)
				}
			}
			if b := c.TrustBundle(); len(b) != 1 || !b[0].Equal(p.root) {
				t.Errorf("trust bundle = %d certs, want just the root", len(b))
			}
			if _, err := os.Stat(filepath.Join(p.dir, RootKeyFile)); err == nil {
				t.Error("New wrote a root key into a plugged-in CA directory")
			}
		})
	}
}

// TestRootRotation walks the documented rotation: old and new roots trusted
// together, certificates from either verify against either CA's bundle.
func TestRootRotation(t *testing.T) {
	oldDir, newDir := t.TempDir(), t.TempDir()
	oldCA, err := New(Options{TrustDomain: td, Dir: oldDir})
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := New(Options{TrustDomain: td, Dir: newDir})
	if err != nil {
		t.Fatal(err)
	}
	oldRoot, newRoot := oldCA.SigningCertificate(), newCA.SigningCertificate()
	if len(oldCA.TrustBundle()) != 1 {
		t.Fatal("fresh CA should trust one root")
	}

	// Step 1: the running (old) CA learns to trust the new root.
	writePEM(t, filepath.Join(oldDir, ExtraRootsDir, "new.pem"), certBlock(newRoot))
	if err := oldCA.ReloadTrustBundle(); err != nil {
		t.Fatal(err)
	}
	// Step 2: the new CA keeps trusting the old root (via an option this time).
	oldRootFile := filepath.Join(t.TempDir(), "old-root.pem")
	writePEM(t, oldRootFile, certBlock(oldRoot))
	newCA, err = New(Options{TrustDomain: td, Dir: newDir, ExtraRootFiles: []string{oldRootFile}})
	if err != nil {
		t.Fatal(err)
	}

	for name, c := range map[string]*CA{"old": oldCA, "new": newCA} {
		b := c.TrustBundle()
		if len(b) != 2 {
			t.Fatalf("%s CA bundle has %d roots, want 2", name, len(b))
		}
		if !b[0].Equal(c.SigningCertificate()) {
			t.Errorf("%s CA bundle does not start with its own root", name)
		}
		if got := len(c.TrustBundlePEM()); got != 2 {
			t.Errorf("%s CA TrustBundlePEM has %d entries", name, got)
		}
	}
	fromOld := mustIssue(t, oldCA, echoID, 0)
	fromNew := mustIssue(t, newCA, echoID, 0)
	for _, bundleOf := range []*CA{oldCA, newCA} {
		for _, issued := range []*Issued{fromOld, fromNew} {
			if err := verify(issued.Chain, bundleOf.CertPool(), time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
				t.Errorf("cert does not verify against rotated bundle: %v", err)
			}
		}
	}

	// Step 3: drop the old root; its certificates stop verifying.
	newCA, err = New(Options{TrustDomain: td, Dir: newDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(fromOld.Chain, newCA.CertPool(), time.Now(), x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("cert from the removed root still verifies")
	}

	// A bad extra root file is an error and keeps the previous bundle.
	os.WriteFile(filepath.Join(oldDir, ExtraRootsDir, "junk.pem"), []byte("not pem"), 0o600)
	if err := oldCA.ReloadTrustBundle(); err == nil {
		t.Error("reload with junk root file succeeded")
	}
	if len(oldCA.TrustBundle()) != 2 {
		t.Error("failed reload changed the bundle")
	}
}
