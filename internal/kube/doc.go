// Package kube is Ambit's Kubernetes side of the control plane: the API
// clients, the Source that turns the API server's objects into
// model.Snapshots (client-go informers, objects slimmed before they are
// cached), leader election for work only one replica may do, the CA root
// kept in a Secret, and the pod-based checks of which identities a node may
// hold.
//
// Only control-plane code and the node agent may import it: it links
// client-go, the Gateway API and Istio clientsets, which the ztunnel must
// never carry (internal/deps).
package kube
