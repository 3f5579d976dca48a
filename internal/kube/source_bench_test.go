package kube_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// From a pod change written to the API server to the snapshot the control
// plane translates (watch delivery + debounce), with the real API server.
// go test -run XXX -bench APIChange -benchtime 50x ./internal/kube/
func BenchmarkAPIChangeToSnapshot(b *testing.B) {
	c := kubetest.Start(b)
	cl := c.Clients(b)
	ctx := context.Background()
	pod, err := cl.Kube.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "ambit"}}}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	snaps := make(chan *model.Snapshot, 1024)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := &kube.Source{Clients: cl, Debounce: 10 * time.Millisecond}
	go src.Run(sctx, func(s *model.Snapshot) { snaps <- s })
	key := model.Key{Namespace: "default", Name: "p"}
	b.ResetTimer()
	for i := range b.N {
		want := strconv.Itoa(i)
		pod.Labels = map[string]string{"rev": want}
		if pod, err = cl.Kube.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		for s := range snaps {
			if p := s.Pods[key]; p != nil && p.Labels["rev"] == want {
				break
			}
		}
	}
}
