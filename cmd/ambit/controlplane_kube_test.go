package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// testLog writes a command's output to the test's log.
type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// `ambit controlplane --source kube` against a real API server, with the
// RBAC ambit install grants it, two replicas: the CA root lands in its Secret, the trust bundle in its
// ConfigMap; one replica takes the Lease and, as leader, runs the waypoint
// controller; when it stops, the other takes over and reconciles
// waypoints from then on.
func TestControlPlaneKubeCommand(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	ctx := context.Background()
	// What ambit install creates (nothing runs its Deployments here); the
	// replicas act as its control plane service account, so its RBAC is
	// what they may do.
	objs, err := install.Render(install.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := install.Install(ctx, cl, objs, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.KubeconfigFor(t, "ambit-system", install.ControlPlaneName)
	type replica struct {
		stop func()
		done chan int
	}
	start := func(name string) *replica {
		runCtx, cancel := context.WithCancel(ctx)
		r := &replica{done: make(chan int, 1)}
		// The replicas' logs go to the test's log.
		logs := testLog{t}
		go func() {
			r.done <- cli.Main(runCtx, rootCommand(), []string{"controlplane", "--source", "kube", "--kubeconfig", kubeconfig,
				"--ca-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--replica", name}, logs, logs)
		}()
		stopped := false
		r.stop = func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			if code := <-r.done; code != 0 {
				t.Errorf("controlplane %s exited %d", name, code)
			}
		}
		t.Cleanup(r.stop)
		return r
	}
	running := func(rs ...*replica) {
		for _, r := range rs {
			select {
			case code := <-r.done:
				r.done <- code
				t.Fatalf("controlplane exited %d", code)
			default:
			}
		}
	}
	holder := func() string {
		lease, err := cl.Kube.CoordinationV1().Leases("ambit-system").Get(ctx, "ambit-controlplane", metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}

	first := start("cp-0")
	kubetest.Eventually(t, time.Minute, "CA Secret, root ConfigMap, Lease, GatewayClass", func() bool {
		running(first)
		if _, err := cl.Kube.CoreV1().Secrets("ambit-system").Get(ctx, "ambit-ca", metav1.GetOptions{}); err != nil {
			return false
		}
		cm, err := cl.Kube.CoreV1().ConfigMaps("ambit-system").Get(ctx, "ambit-root-cert", metav1.GetOptions{})
		if err != nil || cm.Data["root-cert.pem"] == "" {
			return false
		}
		if holder() != "cp-0" {
			return false
		}
		_, err = cl.Gateway.GatewayV1().GatewayClasses().Get(ctx, "istio-waypoint", metav1.GetOptions{})
		return err == nil
	})
	root, err := cl.Kube.CoreV1().ConfigMaps("ambit-system").Get(ctx, "ambit-root-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A second replica serves too, with the same root.
	second := start("cp-1")
	waypoint := func(name string) *gatewayv1.Gateway {
		return &gatewayv1.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "istio-waypoint",
				Listeners: []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}}}
	}
	kubetest.Apply(t, cl, waypoint("before"))
	kubetest.Eventually(t, time.Minute, "the leader's waypoint Deployment", func() bool {
		running(first, second)
		_, err := cl.Kube.AppsV1().Deployments("default").Get(ctx, "before", metav1.GetOptions{})
		return err == nil
	})
	// The leader (cp-0, unless a renewal was slow) stops, releasing the
	// Lease: the other takes over.
	leader, other := first, second
	otherName := "cp-1"
	if holder() == "cp-1" {
		leader, other, otherName = second, first, "cp-0"
	}
	leader.stop()
	kubetest.Eventually(t, time.Minute, otherName+" leading", func() bool {
		running(other)
		return holder() == otherName
	})
	kubetest.Apply(t, cl, waypoint("after"))
	kubetest.Eventually(t, time.Minute, "the new leader's waypoint Deployment and Gateway status", func() bool {
		running(other)
		if _, err := cl.Kube.AppsV1().Deployments("default").Get(ctx, "after", metav1.GetOptions{}); err != nil {
			return false
		}
		gw, err := cl.Gateway.GatewayV1().Gateways("default").Get(ctx, "after", metav1.GetOptions{})
		return err == nil && meta.IsStatusConditionTrue(gw.Status.Conditions, "Accepted")
	})
	again, err := cl.Kube.CoreV1().ConfigMaps("ambit-system").Get(ctx, "ambit-root-cert", metav1.GetOptions{})
	if err != nil || again.Data["root-cert.pem"] != root.Data["root-cert.pem"] {
		t.Errorf("the second replica published another root (%v)", err)
	}
}
