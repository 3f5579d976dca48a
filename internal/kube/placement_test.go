package kube_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// The API server's answer to "does this identity run on this node?", for
// pods the kubelet has not reported an IP for yet.
func TestPodPlacement(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	ctx := context.Background()
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "plain"}, Spec: corev1.PodSpec{NodeName: "node-a"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "host"}, Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "host", HostNetwork: true}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pending"}, Spec: corev1.PodSpec{ServiceAccountName: "pending"}},
	} {
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "ambit"}}
		if _, err := cl.Kube.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	done, err := cl.Kube.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "done"},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "done", Containers: []corev1.Container{{Name: "app", Image: "ambit"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done.Status.Phase = corev1.PodSucceeded
	if _, err := cl.Kube.CoreV1().Pods("default").UpdateStatus(ctx, done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	p := &kube.PodPlacement{Clients: cl}
	id := func(ns, sa string) spiffe.ID {
		return spiffe.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
	}
	for _, tc := range []struct {
		node string
		id   spiffe.ID
		want bool
	}{
		{"node-a", id("default", "web"), true},
		{"node-a", id("default", "default"), true}, // a pod without serviceAccountName runs as "default"
		{"node-b", id("default", "web"), false},
		{"node-a", id("other", "web"), false},
		{"node-a", id("default", "host"), false},    // host network: never the ztunnel's
		{"node-a", id("default", "pending"), false}, // not scheduled
		{"node-a", id("default", "done"), false},    // finished
	} {
		if got := p.NodeRuns(tc.node, tc.id); got != tc.want {
			t.Errorf("NodeRuns(%s, %s) = %v, want %v", tc.node, tc.id, got, tc.want)
		}
	}
}
