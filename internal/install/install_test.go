package install_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// Against a real API server: a dry run changes nothing and is accepted;
// the install creates everything; readiness waits for the rollout (the
// test plays the controllers and kubelets); uninstall removes it, keeping
// the CRDs and the namespace unless purged.
func TestInstallDryRunInstallUninstall(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := install.DefaultOptions()
	objs, err := install.Render(o)
	if err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := install.Install(ctx, cl, objs, true, &out); err != nil {
		t.Fatalf("dry run: %v\n%s", err, out.String())
	}
	if _, err := cl.Kube.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a dry run created the namespace: %v", err)
	}
	if !strings.Contains(out.String(), "DaemonSet ambit-system/ztunnel (server dry run)") {
		t.Errorf("dry run output:\n%s", out.String())
	}

	out.Reset()
	if err := install.Install(ctx, cl, objs, false, &out); err != nil {
		t.Fatalf("install: %v\n%s", err, out.String())
	}
	// Installing again changes nothing and fails nothing.
	if err := install.Install(ctx, cl, objs, false, &out); err != nil {
		t.Fatalf("second install: %v", err)
	}
	apps := cl.Kube.AppsV1()
	if _, err := cl.Gateway.GatewayV1().Gateways("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("Gateway API not served after install: %v", err)
	}
	if _, err := cl.Istio.SecurityV1().AuthorizationPolicies("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("Istio API not served after install: %v", err)
	}

	// Readiness: not before the rollout, then once the controllers report it.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	err = install.WaitReady(short, cl, o, &out)
	cancelShort()
	if err == nil || !strings.Contains(err.Error(), "control plane: 0/1 available") {
		t.Fatalf("ready before any pod runs? %v", err)
	}
	d, err := apps.Deployments(o.Namespace).Get(ctx, install.ControlPlaneName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Status.Replicas, d.Status.AvailableReplicas, d.Status.ReadyReplicas = 1, 1, 1
	if _, err := apps.Deployments(o.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{install.ZtunnelName, install.NodeAgentName} {
		ds, err := apps.DaemonSets(o.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.CurrentNumberScheduled, ds.Status.NumberAvailable = 2, 2, 2, 2
		if _, err := apps.DaemonSets(o.Namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	if err := install.WaitReady(ctx, cl, o, &out); err != nil {
		t.Fatalf("ready: %v\n%s", err, out.String())
	}

	out.Reset()
	if err := install.Uninstall(ctx, cl, objs, false, &out); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if _, err := apps.DaemonSets(o.Namespace).Get(ctx, install.ZtunnelName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ztunnel DaemonSet after uninstall: %v", err)
	}
	if _, err := cl.Gateway.GatewayV1().Gateways("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("uninstall without --purge removed the CRDs: %v", err)
	}
	if err := install.Uninstall(ctx, cl, objs, true, &out); err != nil {
		t.Fatalf("purge: %v", err)
	}
	kubetest.Eventually(t, time.Minute, "CRDs gone after purge", func() bool {
		_, err := cl.Kube.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
		return apierrors.IsNotFound(err)
	})
}
