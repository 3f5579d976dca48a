package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/ca"
)

// TrustDomainKey is the Secret key holding the mesh's trust domain.
const TrustDomainKey = "trust-domain"

// caFiles are the Secret keys copied into the CA directory: the
// self-signed layout ca.New creates, and Istio's "cacerts" layout for an
// operator's own root or intermediate.
var caFiles = []string{ca.RootCertFile, ca.RootKeyFile, ca.CACertFile, ca.CAKeyFile, ca.CertChainFile}

// LoadCA loads the mesh CA from the Secret namespace/name, or, when there
// is none, creates a root and stores it there, so that every control plane
// replica, and every restart, signs with the same root. opts.Dir is a
// private scratch directory (an emptyDir) the Secret's files are written
// to for ca.New. The trust domain comes from the Secret too; a different
// opts.TrustDomain is an error rather than a silent change of every
// identity (leave it empty to take the Secret's).
func LoadCA(ctx context.Context, cl *Clients, namespace, name string, opts ca.Options) (*ca.CA, error) {
	if opts.Dir == "" {
		return nil, errors.New("kube CA: a scratch directory is required")
	}
	secrets := cl.Kube.CoreV1().Secrets(namespace)
	for attempt := 0; ; attempt++ {
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			return caFromSecret(sec, opts)
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("kube CA: read Secret %s/%s: %w", namespace, name, err)
		case attempt > 0:
			return nil, fmt.Errorf("kube CA: Secret %s/%s vanished while being created", namespace, name)
		}
		if opts.TrustDomain == "" {
			opts.TrustDomain = "cluster.local"
		}
		c, err := createCASecret(ctx, cl, namespace, name, opts)
		if apierrors.IsAlreadyExists(err) {
			continue // another replica won the race: use its root
		}
		return c, err
	}
}

func caFromSecret(sec *corev1.Secret, opts ca.Options) (*ca.CA, error) {
	where := "Secret " + sec.Namespace + "/" + sec.Name
	td := string(sec.Data[TrustDomainKey])
	switch {
	case td == "" && opts.TrustDomain == "":
		return nil, fmt.Errorf("kube CA: %s has no %q key and no trust domain was given", where, TrustDomainKey)
	case td == "":
		td = opts.TrustDomain
	case opts.TrustDomain != "" && opts.TrustDomain != td:
		return nil, fmt.Errorf("kube CA: %s holds trust domain %q, but %q was asked for: changing it would change every identity; delete the Secret to start a new mesh", where, td, opts.TrustDomain)
	}
	opts.TrustDomain = td
	if err := resetDir(opts.Dir); err != nil {
		return nil, err
	}
	n := 0
	for _, f := range caFiles {
		if b, ok := sec.Data[f]; ok {
			if err := os.WriteFile(filepath.Join(opts.Dir, f), b, 0o600); err != nil {
				return nil, fmt.Errorf("kube CA: %w", err)
			}
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("kube CA: %s holds no CA files (want %s and %s, or Istio's cacerts layout)", where, ca.RootCertFile, ca.RootKeyFile)
	}
	c, err := ca.New(opts)
	if err != nil {
		return nil, fmt.Errorf("kube CA: %s: %w", where, err)
	}
	return c, nil
}

// createCASecret creates a root in opts.Dir and stores it in a new Secret;
// it fails with AlreadyExists when another replica stored one first.
func createCASecret(ctx context.Context, cl *Clients, namespace, name string, opts ca.Options) (*ca.CA, error) {
	if err := resetDir(opts.Dir); err != nil {
		return nil, err
	}
	c, err := ca.New(opts)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{TrustDomainKey: []byte(opts.TrustDomain)}
	for _, f := range []string{ca.RootCertFile, ca.RootKeyFile} {
		b, err := os.ReadFile(filepath.Join(opts.Dir, f))
		if err != nil {
			return nil, fmt.Errorf("kube CA: %w", err)
		}
		data[f] = b
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "ambit"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cl.Kube.CoreV1().Secrets(namespace).Create(ctx, sec, metav1.CreateOptions{FieldManager: "ambit"}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		return nil, fmt.Errorf("kube CA: store the new root in Secret %s/%s: %w", namespace, name, err)
	}
	return c, nil
}

// resetDir empties the scratch directory of CA files, so nothing from an
// earlier root is mixed with the Secret's.
func resetDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kube CA: %w", err)
	}
	for _, f := range append(caFiles, ca.NodeTokenKeyFile) {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kube CA: %w", err)
		}
	}
	return nil
}

// RootCertConfigMap is the ConfigMap, beside the CA Secret, in which the
// control plane publishes the mesh's trust bundle for node proxies.
const RootCertConfigMap = "ambit-root-cert"

// PublishRootCert writes the CA's trust bundle (root-cert.pem) into the
// RootCertConfigMap of namespace: the public half only, never the key.
func PublishRootCert(ctx context.Context, cl *Clients, namespace string, authority *ca.CA) error {
	var bundle string
	for _, p := range authority.TrustBundlePEM() {
		bundle += p
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "ambit"}},
		Data:       map[string]string{ca.RootCertFile: bundle},
	}
	u, err := ToUnstructured(cm)
	if err != nil {
		return err
	}
	if _, err := cl.NewApplier("ambit-controlplane").Apply(ctx, u, false); err != nil {
		return fmt.Errorf("publish the trust bundle: %w", err)
	}
	return nil
}
