package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// `ambit waypoint apply|delete --kubeconfig` against a real API server: the
// Gateway is applied (and the namespace enrolled), then deleted.
func TestWaypointCommandsOnKubernetes(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallCRDs(t)
	cl := c.Clients(t)
	ctx := context.Background()
	kubetest.Apply(t, cl, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}})
	if code, out, errOut := run(t, "waypoint", "apply", "--kubeconfig", c.Kubeconfig, "-n", "shop", "--name", "wp", "--for", "all", "--enroll-namespace"); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	gw, err := cl.Gateway.GatewayV1().Gateways("shop").Get(ctx, "wp", metav1.GetOptions{})
	if err != nil || gw.Spec.GatewayClassName != "istio-waypoint" || gw.Labels["istio.io/waypoint-for"] != "all" {
		t.Fatalf("Gateway after apply: %v, %v", gw, err)
	}
	ns, err := cl.Kube.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if err != nil || ns.Labels["istio.io/use-waypoint"] != "wp" || ns.Labels["istio.io/dataplane-mode"] != "ambient" {
		t.Fatalf("namespace labels after --enroll-namespace: %v, %v", ns.Labels, err)
	}
	// Applying again changes nothing and fails nothing.
	if code, _, errOut := run(t, "waypoint", "apply", "--kubeconfig", c.Kubeconfig, "-n", "shop", "--name", "wp", "--for", "all"); code != 0 {
		t.Fatalf("second apply: exit %d: %s", code, errOut)
	}
	if code, _, errOut := run(t, "waypoint", "delete", "--kubeconfig", c.Kubeconfig, "-n", "shop", "--name", "wp"); code != 0 {
		t.Fatalf("delete: exit %d: %s", code, errOut)
	}
	if code, _, errOut := run(t, "waypoint", "delete", "--kubeconfig", c.Kubeconfig, "-n", "shop", "--name", "wp"); code == 0 || !strings.Contains(errOut, "no waypoint shop/wp in the cluster") {
		t.Errorf("deleting twice: exit %d: %s", code, errOut)
	}
	if code, _, _ := run(t, "waypoint", "apply", "-f", t.TempDir(), "--enroll-namespace"); code != 2 {
		t.Errorf("--enroll-namespace with -f: exit %d, want 2", code)
	}
}
