package kube_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

func TestLoadCAFromSecret(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	ctx := context.Background()
	if _, err := cl.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Two replicas starting together end up with one root.
	var (
		wg  sync.WaitGroup
		cas [2]*ca.CA
	)
	for i := range cas {
		wg.Go(func() {
			var err error
			cas[i], err = kube.LoadCA(ctx, cl, "ambit-system", "ambit-ca", ca.Options{TrustDomain: "example.org", Dir: t.TempDir()})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if !cas[0].SigningCertificate().Equal(cas[1].SigningCertificate()) {
		t.Fatal("two replicas created different roots")
	}
	sec, err := cl.Kube.CoreV1().Secrets("ambit-system").Get(ctx, "ambit-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[kube.TrustDomainKey]) != "example.org" {
		t.Errorf("trust domain in Secret: %q", sec.Data[kube.TrustDomainKey])
	}

	// A restart without a trust domain takes the Secret's, and the same root.
	again, err := kube.LoadCA(ctx, cl, "ambit-system", "ambit-ca", ca.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if again.TrustDomain() != "example.org" || !again.SigningCertificate().Equal(cas[0].SigningCertificate()) {
		t.Errorf("restart: trust domain %q, same root %v", again.TrustDomain(), again.SigningCertificate().Equal(cas[0].SigningCertificate()))
	}

	// Asking for another trust domain is refused, naming both.
	_, err = kube.LoadCA(ctx, cl, "ambit-system", "ambit-ca", ca.Options{TrustDomain: "other.org", Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `"example.org"`) || !strings.Contains(err.Error(), `"other.org"`) {
		t.Errorf("trust domain change: %v", err)
	}

	// A Secret without CA files is an error naming it.
	if _, err := cl.Kube.CoreV1().Secrets("ambit-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "empty"}, Data: map[string][]byte{kube.TrustDomainKey: []byte("x.org")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = kube.LoadCA(ctx, cl, "ambit-system", "empty", ca.Options{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "ambit-system/empty holds no CA files") {
		t.Errorf("empty Secret: %v", err)
	}
}
