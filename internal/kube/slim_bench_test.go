package kube

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

// realisticPod is a pod as the API server sends it: managed fields,
// kubectl's last-applied copy, a container with env, resources, probes and
// volumes, status conditions.
func realisticPod(i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("web-7d9f8c6b5-%05d", i), Namespace: "shop", UID: "uid",
			Labels:        map[string]string{"app": "web", "pod-template-hash": "7d9f8c6b5", "version": "v1"},
			Annotations:   map[string]string{lastApplied: string(make([]byte, 1500))},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: "Update", FieldsV1: &metav1.FieldsV1{Raw: make([]byte, 2000)}}},
		},
		Spec: corev1.PodSpec{
			NodeName: "node-a", ServiceAccountName: "web",
			Containers: []corev1.Container{{
				Name: "web", Image: "registry.example/web:1.2.3", Args: []string{"--port", "8080", "--log-level", "info"},
				Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Env:          []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "C", Value: "3"}},
				Resources:    corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
				VolumeMounts: []corev1.VolumeMount{{Name: "token", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			}},
			Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: "True"}, {Type: corev1.PodScheduled, Status: "True"}, {Type: corev1.ContainersReady, Status: "True"}}},
	}
}

func heapAfter(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.GC()
	runtime.ReadMemStats(&b)
	return b.HeapAlloc - a.HeapAlloc
}

// What the informer cache keeps per pod, before and after the transform.
// go test -run XXX -bench SlimPod ./internal/kube/
func BenchmarkSlimPod(b *testing.B) {
	const n = 10000
	tr := transform(model.KindPod)
	var full, slim []any
	fullBytes := heapAfter(func() {
		for i := range n {
			full = append(full, realisticPod(i))
		}
	})
	slimBytes := heapAfter(func() {
		for i := range n {
			o, _ := tr(realisticPod(i))
			slim = append(slim, o)
		}
	})
	b.ResetTimer()
	for i := range b.N {
		tr(realisticPod(i))
	}
	b.ReportMetric(float64(fullBytes)/n, "full-bytes/pod")
	b.ReportMetric(float64(slimBytes)/n, "cached-bytes/pod")
	runtime.KeepAlive(full)
	runtime.KeepAlive(slim)
}
