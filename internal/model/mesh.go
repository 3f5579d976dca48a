package model

import "github.com/ambit-mesh/ambit/internal/spiffe"

// MeshConfig holds the mesh-wide settings Istio keeps in its MeshConfig.
type MeshConfig struct {
	// TrustDomain of every workload identity; Istio's default is "cluster.local".
	TrustDomain string
	// RootNamespace holds mesh-wide policies (AuthorizationPolicy, PeerAuthentication).
	RootNamespace string
	// ClusterID prefixes workload uids.
	ClusterID string
	// DomainSuffix of Service hostnames: <name>.<namespace>.svc.<suffix>.
	DomainSuffix string
	// DefaultTrafficDistribution is the traffic distribution of Services
	// that set none (spec.trafficDistribution, or the
	// networking.istio.io/traffic-distribution annotation on the Service or
	// its Namespace): PreferClose / PreferSameZone ("prefer the caller's
	// zone, fail over elsewhere"), PreferSameNode, or "" for none.
	DefaultTrafficDistribution string
}

// DefaultMeshConfig returns Istio's defaults.
func DefaultMeshConfig() MeshConfig {
	return MeshConfig{TrustDomain: "cluster.local", RootNamespace: "istio-system", ClusterID: "Kubernetes", DomainSuffix: "cluster.local"}
}

// Identity is the SPIFFE ID of a service account in this mesh.
func (m MeshConfig) Identity(namespace, serviceAccount string) spiffe.ID {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return spiffe.ID{TrustDomain: m.TrustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
}

// Hostname is the FQDN of a Service.
func (m MeshConfig) Hostname(namespace, name string) string {
	return name + "." + namespace + ".svc." + m.DomainSuffix
}
