package kube

import (
	"context"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// PodPlacement answers the CA's question "does a pod with this identity run
// on this node?" by asking the API server. The control plane asks it only
// when its model does not place the identity: a pod the CNI plugin has just
// enrolled has no IP in its status yet (the kubelet reports it after the
// plugin returns), so the model has no workload for it, while its ztunnel
// already asks for its certificate. It implements ca.IdentityChecker.
type PodPlacement struct {
	Clients *Clients
	Log     *slog.Logger
}

// NodeRuns reports whether a pod of id's namespace and service account is
// scheduled on node and not finished. Any failure to ask is a no: the
// proxy retries.
func (p *PodPlacement) NodeRuns(node string, id spiffe.ID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A consistent read: the API server answers it from its watch cache
	// once that has caught up (consistent reads from cache), so a pod that
	// just finished is not taken for running.
	list, err := p.Clients.Kube.CoreV1().Pods(id.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		if p.Log != nil {
			p.Log.Warn("CA: cannot ask the API server where pods run", "node", node, "identity", id.String(), "error", err)
		}
		return false
	}
	for i := range list.Items {
		pod := &list.Items[i]
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if sa == id.ServiceAccount && !pod.Spec.HostNetwork &&
			pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			return true
		}
	}
	return false
}
