package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// `ambit controlplane --source kube` against a real API server: the CA root
// lands in its Secret, the trust bundle in its ConfigMap, the replica
// takes the Lease and, as leader, runs the waypoint controller.
func TestControlPlaneKubeCommand(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallCRDs(t)
	cl := c.Clients(t)
	ctx := context.Background()
	if _, err := cl.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() {
		done <- cli.Main(runCtx, rootCommand(), []string{"controlplane", "--source", "kube", "--kubeconfig", c.Kubeconfig,
			"--ca-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--replica", "cp-0"}, &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("controlplane exited %d: %s", code, errb.String())
		}
	})
	exited := func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("controlplane exited %d: %s", code, errb.String())
		default:
		}
		return false
	}
	kubetest.Eventually(t, time.Minute, "CA Secret, root ConfigMap, Lease, GatewayClass", func() bool {
		exited()
		if _, err := cl.Kube.CoreV1().Secrets("ambit-system").Get(ctx, "ambit-ca", metav1.GetOptions{}); err != nil {
			return false
		}
		cm, err := cl.Kube.CoreV1().ConfigMaps("ambit-system").Get(ctx, "ambit-root-cert", metav1.GetOptions{})
		if err != nil || cm.Data["root-cert.pem"] == "" {
			return false
		}
		lease, err := cl.Kube.CoordinationV1().Leases("ambit-system").Get(ctx, "ambit-controlplane", metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "cp-0" {
			return false
		}
		_, err = cl.Gateway.GatewayV1().GatewayClasses().Get(ctx, "istio-waypoint", metav1.GetOptions{})
		return err == nil
	})
}
