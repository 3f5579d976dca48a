package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAmbient(t *testing.T) {
	ns := func(mode string) *corev1.Namespace {
		n := &corev1.Namespace{}
		if mode != "" {
			n.Labels = map[string]string{DataplaneModeLabel: mode}
		}
		return n
	}
	pod := func(mode string, hostNet bool, sidecar bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{}, Annotations: map[string]string{}}}
		if mode != "" {
			p.Labels[DataplaneModeLabel] = mode
		}
		if sidecar {
			p.Annotations[SidecarStatusAnnotation] = "{}"
		}
		p.Spec.HostNetwork = hostNet
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want bool
	}{
		{"namespace ambient", pod("", false, false), ns("ambient"), true},
		{"namespace unlabelled", pod("", false, false), ns(""), false},
		{"namespace unknown", pod("", false, false), nil, false},
		{"pod opts in", pod("ambient", false, false), ns(""), true},
		{"pod opts out", pod("none", false, false), ns("ambient"), false},
		{"host network never", pod("ambient", true, false), ns("ambient"), false},
		{"sidecar never", pod("", false, true), ns("ambient"), false},
		{"other namespace value", pod("", false, false), ns("sidecar"), false},
		{"nil pod", nil, ns("ambient"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Ambient(tc.pod, tc.ns); got != tc.want {
				t.Errorf("Ambient = %v, want %v", got, tc.want)
			}
		})
	}
}
