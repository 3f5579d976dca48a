package model

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// LocalClusterGroup is the API group of Ambit's own kinds.
const LocalClusterGroup = "ambit.dev"

// LocalCluster describes the machines of a mesh started with `ambit up`:
// its nodes, their zones, and the address ranges. Optional; without one a
// local cluster has three nodes in zones zone-a, zone-b and zone-c of
// region "local".
//
//	apiVersion: ambit.dev/v1alpha1
//	kind: LocalCluster
//	metadata:
//	  name: demo
//	spec:
//	  nodes:
//	  - {name: node-a, zone: zone-a}
//	  - {name: node-b, zone: zone-b}
type LocalCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              LocalClusterSpec `json:"spec"`
}

// LocalClusterSpec is the shape of a local cluster.
type LocalClusterSpec struct {
	// Nodes of the cluster, each a network namespace with its own ztunnel.
	Nodes []LocalNode `json:"nodes,omitempty"`
	// PodCIDR is split into one /24 per node (default 10.244.0.0/16).
	PodCIDR string `json:"podCIDR,omitempty"`
	// ServiceCIDR holds Service VIPs (default 10.96.0.0/16).
	ServiceCIDR string `json:"serviceCIDR,omitempty"`
}

// LocalNode is one node; its locality becomes the node labels
// topology.kubernetes.io/region, topology.kubernetes.io/zone and
// topology.istio.io/subzone.
type LocalNode struct {
	Name    string `json:"name"`
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
	// Labels are added to the node's labels.
	Labels map[string]string `json:"labels,omitempty"`
}
