package ca_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/ca"
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
