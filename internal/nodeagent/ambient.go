// Package nodeagent is the node agent on Kubernetes: it serves the node's
// ztunnel (internal/redirect's Agent) and the CNI plugin (internal/cni),
// and watches the pods of its node and their namespaces so that labelling
// a namespace or pod enrols its running pods in the mesh, and removing the
// label releases them, without restarting anything.
//
// Run by `ambit nodeagent` in the node DaemonSet. It links client-go, so
// the ztunnel never imports it.
package nodeagent

import (
	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations Istio users already write.
const (
	DataplaneModeLabel = "istio.io/dataplane-mode"
	ModeAmbient        = "ambient"
	ModeNone           = "none"
	// SidecarStatusAnnotation marks pods with an Istio sidecar, which
	// ambient leaves alone.
	SidecarStatusAnnotation = "sidecar.istio.io/status"
)

// Ambient says whether pod belongs in the ambient mesh, with Istio's
// rules: a pod's own label wins (ambient in, none out), otherwise its
// namespace's label decides; host-network pods and pods with a sidecar
// are never enrolled.
func Ambient(pod *corev1.Pod, ns *corev1.Namespace) bool {
	if pod == nil || pod.Spec.HostNetwork {
		return false
	}
	if _, ok := pod.Annotations[SidecarStatusAnnotation]; ok {
		return false
	}
	switch pod.Labels[DataplaneModeLabel] {
	case ModeNone:
		return false
	case ModeAmbient:
		return true
	}
	return ns != nil && ns.Labels[DataplaneModeLabel] == ModeAmbient
}
