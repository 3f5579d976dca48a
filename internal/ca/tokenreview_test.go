package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// Node proxies authenticate with their pod's bound service account token:
// the API server's TokenReview names the pod's node. Tokens of other
// accounts, for other audiences, or bound to nothing are refused.
func TestTokenReviewAuthenticator(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	ctx := context.Background()
	kube := cl.Kube
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}}, metav1.CreateOptions{})
	must(err)
	_, err = kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{})
	must(err)
	for _, sa := range []string{"ztunnel", "app"} {
		_, err = kube.CoreV1().ServiceAccounts("ambit-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		must(err)
	}
	pod := func(name, sa string) *corev1.Pod {
		p, err := kube.CoreV1().Pods("ambit-system").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "ambit"}}},
		}, metav1.CreateOptions{})
		must(err)
		return p
	}
	token := func(sa string, bound *corev1.Pod, audience string) string {
		req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}}}
		if bound != nil {
			req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}
		tr, err := kube.CoreV1().ServiceAccounts("ambit-system").CreateToken(ctx, sa, req, metav1.CreateOptions{})
		must(err)
		return tr.Status.Token
	}
	zt := pod("ztunnel-x", "ztunnel")
	app := pod("app", "app")

	a := &ca.TokenReviewAuthenticator{Reviews: kube.AuthenticationV1().TokenReviews(), ServiceAccounts: []string{"ambit-system/ztunnel"}}
	call := func(tok string) (string, error) {
		return a.Authenticate(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok)))
	}

	good := token("ztunnel", zt, ca.DefaultTokenAudience)
	node, err := call(good)
	if err != nil || node != "node-a" {
		t.Fatalf("ztunnel's bound token: node %q, %v", node, err)
	}
	// With Workloads, another account's bound token authenticates that
	// workload (a waypoint): its node, scoped to its own identity. Tokens
	// bound to nothing stay refused.
	wa := &ca.TokenReviewAuthenticator{Reviews: kube.AuthenticationV1().TokenReviews(), ServiceAccounts: []string{"ambit-system/ztunnel"}, Workloads: true}
	appTok := token("app", app, ca.DefaultTokenAudience)
	caller, err := wa.Review(ctx, appTok)
	if err != nil || caller != (ca.Caller{Node: "node-a", Namespace: "ambit-system", ServiceAccount: "app"}) {
		t.Fatalf("workload token: %+v, %v", caller, err)
	}
	if caller, err := wa.Review(ctx, good); err != nil || caller != (ca.Caller{Node: "node-a"}) {
		t.Fatalf("ztunnel token with Workloads: %+v, %v", caller, err)
	}
	if _, err := wa.Review(ctx, token("app", nil, ca.DefaultTokenAudience)); err == nil || !strings.Contains(err.Error(), "not bound to a pod") {
		t.Errorf("unbound workload token: %v", err)
	}

	// The CA: both identities run on node-a; the ztunnel of node-a may
	// obtain either, the workload only its own.
	authority, err := ca.New(ca.Options{TrustDomain: "cluster.local"})
	must(err)
	srv, err := ca.NewServer(ca.ServerOptions{CA: authority, Authenticator: wa,
		Identities: ca.IdentityCheckerFunc(func(node string, id spiffe.ID) bool { return node == "node-a" })})
	must(err)
	appID, ztID := "spiffe://cluster.local/ns/ambit-system/sa/app", "spiffe://cluster.local/ns/ambit-system/sa/ztunnel"
	for _, tc := range []struct {
		token, id string
		code      codes.Code
	}{
		{good, appID, codes.OK},
		{appTok, appID, codes.OK},
		{appTok, ztID, codes.PermissionDenied},
	} {
		_, err := srv.CreateCertificate(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tc.token)),
			&meshv1.CertificateRequest{Csr: string(newCSR(t, tc.id))})
		if status.Code(err) != tc.code {
			t.Errorf("certificate for %s: %v, want %v", tc.id, err, tc.code)
		}
		if tc.code == codes.PermissionDenied && !strings.Contains(err.Error(), "workload ambit-system/app on node node-a may obtain only its own identity") {
			t.Errorf("refusal does not say why: %v", err)
		}
	}

	for _, tc := range []struct {
		name, token, want string
	}{
		{"another account's token", token("app", app, ca.DefaultTokenAudience), "service account ambit-system/app may not act for a node"},
		{"another audience", token("ztunnel", zt, kubetest.APIAudience), "rejected by the Kubernetes API"},
		{"not bound to a pod", token("ztunnel", nil, ca.DefaultTokenAudience), "not bound to a pod on a node"},
		{"garbage", "not-a-token", "rejected by the Kubernetes API"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node, err := call(tc.token)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("node %q, error %v; want an error containing %q", node, err, tc.want)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Error("error contains the token")
			}
		})
	}
}

// newCSR is a proxy's certificate request for the SPIFFE ID id.
func newCSR(t *testing.T, id string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
