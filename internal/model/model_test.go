package model

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "echo"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "echo", Containers: []corev1.Container{
			{Name: "app", Image: "echo:1", Command: []string{"echo"}, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
			{Name: "sidecar", Image: "x"},
		}},
		Status: corev1.PodStatus{PodIP: ip, Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionFalse}}},
	}
}

func TestAddPutDelete(t *testing.T) {
	s := NewSnapshot()
	first := Origin{File: "a.yaml", Document: 1}
	if err := s.Add(pod("p", "10.0.0.1"), first); err != nil {
		t.Fatal(err)
	}
	err := s.Add(pod("p", "10.0.0.2"), Origin{File: "b.yaml", Document: 3})
	var dup *DuplicateError
	if !errors.As(err, &dup) || !strings.Contains(err.Error(), "b.yaml: document 3: Pod shop/p: already defined at a.yaml: document 1") {
		t.Fatalf("duplicate: %v", err)
	}
	if got := s.Pods[Key{"shop", "p"}].Status.PodIP; got != "10.0.0.1" {
		t.Errorf("a refused duplicate replaced the object: IP %s", got)
	}
	if err := s.Put(pod("p", "10.0.0.3"), Origin{File: "c.yaml"}); err != nil {
		t.Fatal(err)
	}
	if got := s.Pods[Key{"shop", "p"}].Status.PodIP; got != "10.0.0.3" || s.Origins[Ref{KindPod, "shop", "p"}].File != "c.yaml" {
		t.Errorf("Put did not replace: IP %s origin %v", got, s.Origins[Ref{KindPod, "shop", "p"}])
	}
	c := s.Clone()
	c.Delete(Ref{KindPod, "shop", "p"})
	if len(c.Pods) != 0 || c.Len() != 0 {
		t.Errorf("Delete left %d pods, %d origins", len(c.Pods), c.Len())
	}
	if len(s.Pods) != 1 || s.Len() != 1 {
		t.Error("Delete on a clone changed the original")
	}
	if _, err := RefOf(&corev1.ConfigMap{}); err == nil {
		t.Error("RefOf accepted an unsupported kind")
	}
}

func TestSlimPodKeepsWhatTranslationReads(t *testing.T) {
	s := NewSnapshot()
	if err := s.Add(pod("p", "10.0.0.1"), Origin{}); err != nil {
		t.Fatal(err)
	}
	p := s.Pods[Key{"shop", "p"}]
	switch {
	case p.ManagedFields != nil:
		t.Error("managed fields kept")
	case len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Image != "" || p.Spec.Containers[0].Ports[0].Name != "http":
		t.Errorf("containers: %+v (want only named ports)", p.Spec.Containers)
	case p.Spec.NodeName != "node-a" || p.Spec.ServiceAccountName != "echo" || p.Labels["app"] != "echo":
		t.Errorf("lost identity or placement: %+v", p)
	case len(p.Status.Conditions) != 1 || p.Status.Conditions[0].Type != corev1.PodReady || p.Status.PodIP != "10.0.0.1":
		t.Errorf("status: %+v", p.Status)
	}
}

func TestRefsSorted(t *testing.T) {
	s := NewSnapshot()
	for _, n := range []string{"b", "a"} {
		_ = s.Add(pod(n, "10.0.0.1"), Origin{})
	}
	_ = s.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, Origin{})
	var got []string
	for _, r := range s.Refs() {
		got = append(got, r.String())
	}
	if want := "Namespace shop,Pod shop/a,Pod shop/b"; strings.Join(got, ",") != want {
		t.Errorf("Refs = %v, want %s", got, want)
	}
}
