package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

// A periodic resync delivers every cached object again as an update with
// the same resourceVersion: it must not make a new snapshot. A real change
// (new resourceVersion) and a deletion must.
func TestResyncIsNotAChange(t *testing.T) {
	s := &Source{pending: map[model.Ref]any{}, wake: make(chan struct{}, 1)}
	h := s.handler(model.KindPod)
	pod := func(rv string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", ResourceVersion: rv}}
	}
	ref := model.Ref{Kind: model.KindPod, Namespace: "shop", Name: "web-0"}
	pending := func() (any, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		obj, ok := s.pending[ref]
		delete(s.pending, ref)
		return obj, ok
	}

	h.OnAdd(pod("1"), true)
	if obj, ok := pending(); !ok || obj == nil {
		t.Fatal("an added pod is not pending")
	}
	<-s.wake
	h.OnUpdate(pod("1"), pod("1"))
	if _, ok := pending(); ok {
		t.Error("a resync (same resourceVersion) is pending as a change")
	}
	select {
	case <-s.wake:
		t.Error("a resync woke the source")
	default:
	}
	h.OnUpdate(pod("1"), pod("2"))
	if obj, ok := pending(); !ok || obj.(*corev1.Pod).ResourceVersion != "2" {
		t.Errorf("an update is not pending: %v", obj)
	}
	h.OnDelete(pod("2"))
	if obj, ok := pending(); !ok || obj != nil {
		t.Errorf("a deletion is not pending as one: %v, %v", obj, ok)
	}
}
