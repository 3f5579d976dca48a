package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/ambit-mesh/ambit/internal/pemutil"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// File names inside Options.Dir. The self-signed layout (root-cert.pem +
// root-key.pem) is what New writes on first start; the plugged-in layout
// (ca-key.pem + cert-chain.pem and/or ca-cert.pem + root-cert.pem) is Istio's
// "cacerts" layout, so an operator's existing Istio CA secret works unchanged.
const (
	RootCertFile     = "root-cert.pem"
	RootKeyFile      = "root-key.pem"
	CACertFile       = "ca-cert.pem"
	CAKeyFile        = "ca-key.pem"
	CertChainFile    = "cert-chain.pem"
	NodeTokenKeyFile = "node-token-key"
	// ExtraRootsDir holds PEM files (*.pem) of additional roots to trust,
	// used while rotating the root: old and new roots are trusted together.
	ExtraRootsDir = "roots"
)

// Defaults for Options.
const (
	DefaultTTL    = 24 * time.Hour
	DefaultMaxTTL = 7 * 24 * time.Hour
	// RootValidity is the lifetime of a root New creates.
	RootValidity = 10 * 365 * 24 * time.Hour
	// Backdate is subtracted from every NotBefore so that a peer whose clock
	// is slightly behind ours still accepts a certificate issued just now.
	Backdate = time.Minute
)

// Options configure New.
type Options struct {
	// TrustDomain of every identity this CA signs, e.g. "cluster.local".
	TrustDomain string
	// Dir holds the CA's files (see the *File constants). If it has no root,
	// New creates a self-signed one there and persists it. Empty Dir means an
	// ephemeral in-memory CA (tests, throw-away meshes): nothing is written.
	Dir string
	// NodeTokenKeyFile overrides where the node-token HMAC key lives
	// (default Dir/node-token-key), for when Dir is a read-only mount.
	NodeTokenKeyFile string
	// ExtraRootFiles lists PEM bundles of additional roots to trust, on top of
	// those in Dir/roots/. See CA.ReloadTrustBundle.
	ExtraRootFiles []string
	// DefaultTTL is the lifetime of a workload certificate when the request
	// asks for none (default 24h). MaxTTL caps requested lifetimes (default 7
	// days, never below DefaultTTL).
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// Logger receives what the CA loads, creates and rotates (default: discard).
	Logger *slog.Logger
}

// CA is a loaded certificate authority. It is safe for concurrent use.
type CA struct {
	td         string
	now        func() time.Time
	log        *slog.Logger
	defaultTTL time.Duration
	maxTTL     time.Duration

	signer crypto.Signer
	cert   *x509.Certificate
	// issuerChain follows the leaf in every issued chain: the signing
	// certificate and its intermediates when the CA is an intermediate,
	// empty when it signs with a root (roots travel in the trust bundle).
	issuerChain []*x509.Certificate
	// primaryRoots are the roots the signing certificate chains to.
	primaryRoots []*x509.Certificate
	tokenKey     []byte

	dir            string
	extraRootFiles []string

	mu     sync.RWMutex
	bundle []*x509.Certificate // primaryRoots + extra roots, deduplicated
	pool   *x509.CertPool      // never mutated once published
}

// New loads the CA from opts.Dir, or creates a self-signed root there on
// first start. See the *File constants for the layouts it understands.
func New(opts Options) (*CA, error) {
	if err := validTrustDomain(opts.TrustDomain); err != nil {
		return nil, err
	}
	c := &CA{
		td:             opts.TrustDomain,
		now:            opts.Now,
		log:            opts.Logger,
		defaultTTL:     opts.DefaultTTL,
		maxTTL:         opts.MaxTTL,
		dir:            opts.Dir,
		extraRootFiles: opts.ExtraRootFiles,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.defaultTTL <= 0 {
		c.defaultTTL = DefaultTTL
	}
	if c.maxTTL <= 0 {
		c.maxTTL = DefaultMaxTTL
	}
	if c.maxTTL < c.defaultTTL {
		c.maxTTL = c.defaultTTL
	}

	if opts.Dir == "" {
		if err := c.createRoot(); err != nil {
			return nil, err
		}
		c.tokenKey = make([]byte, 32)
		rand.Read(c.tokenKey)
		c.log.Info("CA: created ephemeral in-memory root (nothing persisted)", "trust_domain", c.td, "root_subject", c.cert.Subject.String())
	} else {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("CA directory: %w", err)
		}
		if err := c.loadOrCreate(); err != nil {
			return nil, err
		}
		keyFile := opts.NodeTokenKeyFile
		if keyFile == "" {
			keyFile = filepath.Join(opts.Dir, NodeTokenKeyFile)
		}
		key, err := loadOrCreateTokenKey(keyFile)
		if err != nil {
			return nil, err
		}
		c.tokenKey = key
	}
	if err := c.ReloadTrustBundle(); err != nil {
		return nil, err
	}
	return c, nil
}

// TrustDomain is the trust domain of every identity this CA signs.
func (c *CA) TrustDomain() string { return c.td }

// SigningCertificate is the certificate whose key signs leaves: the root in
// the self-signed layout, the intermediate in the plugged-in one.
func (c *CA) SigningCertificate() *x509.Certificate { return c.cert }

// TrustBundle returns the roots the mesh trusts now: the CA's own root(s)
// first, then the extra roots. The slice is a copy; the certificates are shared
// and must not be modified.
func (c *CA) TrustBundle() []*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.bundle)
}

// TrustBundlePEM is TrustBundle PEM-encoded, one certificate per string, as
// CertificateResponse.trust_bundle carries it.
func (c *CA) TrustBundlePEM() []string {
	b := c.TrustBundle()
	out := make([]string, len(b))
	for i, cert := range b {
		out[i] = string(encodeCert(cert))
	}
	return out
}

// CertPool returns the trust bundle as a pool. The pool is shared and must
// not be modified.
func (c *CA) CertPool() *x509.CertPool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.pool
}

// ReloadTrustBundle re-reads the extra roots (Dir/roots/*.pem and
// Options.ExtraRootFiles) and replaces the trust bundle. Root rotation is:
// (1) put the new root in roots/ and reload, so workloads learn to trust it on
// their next renewal; (2) once every certificate has been renewed, swap the
// CA's root to the new one and put the old one in roots/; (3) when the last
// certificate from the old root has expired, remove it from roots/.
// On error the previous bundle stays in place.
func (c *CA) ReloadTrustBundle() error {
	var files []string
	if c.dir != "" {
		matches, err := filepath.Glob(filepath.Join(c.dir, ExtraRootsDir, "*.pem"))
		if err != nil {
			return err
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	files = append(files, c.extraRootFiles...)

	bundle := slices.Clone(c.primaryRoots)
	for _, f := range files {
		certs, err := readCerts(f)
		if err != nil {
			return fmt.Errorf("extra trusted roots: %w", err)
		}
		for _, cert := range certs {
			if !cert.IsCA || !cert.BasicConstraintsValid {
				return fmt.Errorf("extra trusted roots: %s: certificate %q is not a CA certificate", f, cert.Subject)
			}
			bundle = append(bundle, cert)
		}
	}
	bundle = dedupe(bundle)
	pool := x509.NewCertPool()
	for _, cert := range bundle {
		pool.AddCert(cert)
	}

	c.mu.Lock()
	old := len(c.bundle)
	c.bundle, c.pool = bundle, pool
	c.mu.Unlock()
	if old != 0 && old != len(bundle) {
		c.log.Info("CA: trust bundle changed", "roots", len(bundle), "previous_roots", old)
	}
	return nil
}

func (c *CA) loadOrCreate() error {
	has := func(name string) bool {
		_, err := os.Stat(filepath.Join(c.dir, name))
		return err == nil
	}
	switch {
	case has(CAKeyFile):
		return c.loadPluggedIn()
	case has(RootCertFile) && has(RootKeyFile):
		return c.loadRoot()
	case has(RootCertFile) || has(RootKeyFile):
		// Never overwrite half a root: whoever holds the other half would
		// silently stop being trusted.
		return fmt.Errorf("CA directory %s has only one of %s and %s: restore the missing file, or remove both to create a new root",
			c.dir, RootCertFile, RootKeyFile)
	default:
		if err := c.createRoot(); err != nil {
			return err
		}
		if err := c.persistRoot(); err != nil {
			return err
		}
		c.log.Info("CA: created self-signed root", "dir", c.dir, "trust_domain", c.td,
			"root_subject", c.cert.Subject.String(), "not_after", c.cert.NotAfter)
		return nil
	}
}

// createRoot makes a fresh self-signed ECDSA P-256 root (in memory only).
func (c *CA) createRoot() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{c.td}, CommonName: "Ambit root CA for " + c.td},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(RootValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	c.signer, c.cert, c.issuerChain, c.primaryRoots = key, cert, nil, []*x509.Certificate{cert}
	return nil
}

func (c *CA) persistRoot() error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.signer)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// Key first: a crash between the two writes leaves a key without a
	// certificate, which loadOrCreate refuses loudly rather than replacing.
	if err := writeFileAtomic(filepath.Join(c.dir, RootKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("persist root key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(c.dir, RootCertFile), encodeCert(c.cert), 0o644); err != nil {
		return fmt.Errorf("persist root certificate: %w", err)
	}
	return nil
}

// loadRoot loads a self-signed root (ours from an earlier start, or one the
// operator put there).
func (c *CA) loadRoot() error {
	certFile, keyFile := filepath.Join(c.dir, RootCertFile), filepath.Join(c.dir, RootKeyFile)
	certs, err := readCerts(certFile)
	if err != nil {
		return err
	}
	key, err := readKey(keyFile)
	if err != nil {
		return err
	}
	cert := certs[0]
	if err := checkSigningCert(cert, key, certFile, keyFile, c.now()); err != nil {
		return err
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("%s: %q is not self-signed (%v); an intermediate CA goes in %s with %s, %s and %s",
			certFile, cert.Subject, err, CertChainFile, CAKeyFile, RootCertFile, c.dir)
	}
	// Any further certificates in root-cert.pem are trusted too (Istio
	// allows a multi-root root-cert.pem during rotation).
	c.signer, c.cert, c.issuerChain, c.primaryRoots = key, cert, nil, certs
	c.log.Info("CA: loaded root", "dir", c.dir, "root_subject", cert.Subject.String(), "not_after", cert.NotAfter)
	return nil
}

// loadPluggedIn loads an operator-provided signing CA (usually an
// intermediate) in Istio's cacerts layout and checks it is usable: the key
// matches, and the chain verifies to root-cert.pem.
func (c *CA) loadPluggedIn() error {
	keyFile := filepath.Join(c.dir, CAKeyFile)
	rootFile := filepath.Join(c.dir, RootCertFile)
	chainFile := filepath.Join(c.dir, CertChainFile)
	caCertFile := filepath.Join(c.dir, CACertFile)

	key, err := readKey(keyFile)
	if err != nil {
		return err
	}
	roots, err := readCerts(rootFile)
	if err != nil {
		return fmt.Errorf("plugged-in CA (%s present) needs %s: %w", CAKeyFile, RootCertFile, err)
	}
	var chain []*x509.Certificate
	certFile := chainFile
	if _, err := os.Stat(chainFile); err == nil {
		if chain, err = readCerts(chainFile); err != nil {
			return err
		}
	}
	var cert *x509.Certificate
	if _, err := os.Stat(caCertFile); err == nil {
		certs, err := readCerts(caCertFile)
		if err != nil {
			return err
		}
		cert, certFile = certs[0], caCertFile
		if len(chain) == 0 {
			chain = certs
		}
	} else if len(chain) > 0 {
		cert = chain[0]
	} else {
		return fmt.Errorf("plugged-in CA (%s present) needs %s (signing certificate first, then intermediates) or %s", CAKeyFile, CertChainFile, CACertFile)
	}
	if err := checkSigningCert(cert, key, certFile, keyFile, c.now()); err != nil {
		return err
	}

	// What follows the leaf: the signing cert and intermediates, without
	// duplicates and without the roots (those travel in the trust bundle).
	isRoot := func(x *x509.Certificate) bool {
		return slices.ContainsFunc(roots, func(r *x509.Certificate) bool { return r.Equal(x) })
	}
	var issuer []*x509.Certificate
	if !isRoot(cert) {
		issuer = append(issuer, cert)
	}
	for _, x := range chain {
		if x.Equal(cert) || isRoot(x) {
			continue
		}
		issuer = append(issuer, x)
	}

	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, x := range issuer {
		inter.AddCert(x)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: inter, CurrentTime: c.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("plugged-in CA: %s (%q) does not chain to %s: %w", certFile, cert.Subject, rootFile, err)
	}
	c.signer, c.cert, c.issuerChain, c.primaryRoots = key, cert, issuer, roots
	c.log.Info("CA: loaded plugged-in CA", "dir", c.dir, "signing_subject", cert.Subject.String(),
		"intermediates", len(issuer), "roots", len(roots), "not_after", cert.NotAfter)
	return nil
}

// checkSigningCert refuses a certificate that cannot sign leaves, or whose
// key is not the one we were given.
func checkSigningCert(cert *x509.Certificate, key crypto.Signer, certFile, keyFile string, now time.Time) error {
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return fmt.Errorf("%s does not match the certificate in %s (%q): the public keys differ", keyFile, certFile, cert.Subject)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return fmt.Errorf("%s: %q is not a CA certificate (basic constraints CA:TRUE missing)", certFile, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s: %q lacks the certSign key usage", certFile, cert.Subject)
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("%s: %q expired at %s", certFile, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// readCerts reads every CERTIFICATE block of a PEM file; it refuses a file
// with none, and any non-certificate block.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := pemutil.Certificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// readKey reads a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private key.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM private key found", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: unexpected PEM block %q, want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%s: unsupported CA key type %T (want ECDSA or RSA)", path, key)
	}
}

func loadOrCreateTokenKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		enc := base64.StdEncoding.EncodeToString(key) + "\n"
		if err := writeFileAtomic(path, []byte(enc), 0o600); err != nil {
			return nil, fmt.Errorf("persist node token key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node token key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("node token key %s: not base64: %w", path, err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("node token key %s: %d bytes, want at least 32", path, len(key))
	}
	return key, nil
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// (or a crash) never sees half a key.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func encodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

func dedupe(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if !slices.ContainsFunc(out, c.Equal) {
			out = append(out, c)
		}
	}
	return out
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() *big.Int {
	b := make([]byte, 16)
	for {
		rand.Read(b)
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n
		}
	}
}

// validTrustDomain applies the SPIFFE rules for trust domain names:
// lowercase letters, digits, '.', '-' and '_'.
func validTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("trust domain %q: only lowercase letters, digits, '.', '-' and '_' are allowed", td)
		}
	}
	return nil
}
