package translate

// Labels and annotations users put on their objects, with Istio's names so
// manifests written for Istio ambient work unchanged.
const (
	labelDataplaneMode       = "istio.io/dataplane-mode"
	dataplaneModeAmbient     = "ambient"
	dataplaneModeNone        = "none"
	labelUseWaypoint         = "istio.io/use-waypoint"
	labelUseWaypointNS       = "istio.io/use-waypoint-namespace"
	labelWaypointFor         = "istio.io/waypoint-for"
	labelGatewayName         = "gateway.networking.k8s.io/gateway-name"
	labelPodTemplateHash     = "pod-template-hash"
	labelCanonicalName       = "service.istio.io/canonical-name"
	labelCanonicalRevision   = "service.istio.io/canonical-revision"
	labelAppName             = "app.kubernetes.io/name"
	labelAppVersion          = "app.kubernetes.io/version"
	labelTopologyRegion      = "topology.kubernetes.io/region"
	labelTopologyZone        = "topology.kubernetes.io/zone"
	labelTopologySubzone     = "topology.istio.io/subzone"
	annotTrafficDistribution = "networking.istio.io/traffic-distribution"

	// WaypointClass is the GatewayClass of waypoints.
	WaypointClass = "istio-waypoint"

	waypointForService  = "service"
	waypointForWorkload = "workload"
	waypointForAll      = "all"
	waypointForNone     = "none"
)

// selects reports whether every selector label is present in labels with the
// same value. An empty selector selects nothing: Kubernetes Services and Istio
// policies treat "no selector" specially, and callers decide that case.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
