package translate

import (
	"google.golang.org/protobuf/proto"
	"maps"
	"slices"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

const hbonePort = 15008

// isWaypoint reports whether gw is a waypoint Gateway.
func isWaypoint(gw *gatewayv1.Gateway) bool {
	return gw != nil && string(gw.Spec.GatewayClassName) == WaypointClass
}

// waypointFor is the traffic a waypoint accepts, from its istio.io/waypoint-for
// label; Istio's default is "service".
func waypointFor(gw *gatewayv1.Gateway) string {
	if v := gw.Labels[labelWaypointFor]; v != "" {
		return v
	}
	return waypointForService
}

// useWaypoint resolves the waypoint an object binds to: its own
// istio.io/use-waypoint label, else its namespace's. "none" on the object opts
// out of a namespace-wide binding. want is the traffic kind ("service" or
// "workload"); a waypoint that does not accept it is not used. ref names the
// object for problems.
func (t *translator) useWaypoint(ref model.Ref, objLabels map[string]string, want string) *meshv1.WaypointRef {
	name, ns := objLabels[labelUseWaypoint], objLabels[labelUseWaypointNS]
	if name == "" {
		nsLabels := t.namespaceLabels(ref.Namespace)
		name, ns = nsLabels[labelUseWaypoint], nsLabels[labelUseWaypointNS]
	}
	if name == "" || name == dataplaneModeNone {
		return nil
	}
	if ns == "" {
		ns = ref.Namespace
	}
	gw := t.snap.Gateways[model.Key{Namespace: ns, Name: name}]
	if !isWaypoint(gw) {
		t.problem(ref, "metadata.labels["+labelUseWaypoint+"]", "waypoint %s/%s not found (no Gateway with gatewayClassName %s); traffic is not sent to a waypoint", ns, name, WaypointClass)
		return nil
	}
	switch waypointFor(gw) {
	case waypointForAll:
	case waypointForNone:
		return nil
	default:
		if waypointFor(gw) != want {
			// Not an error: e.g. a namespace label binds both services and
			// pods, and a service-only waypoint simply ignores the pods.
			return nil
		}
	}
	return &meshv1.WaypointRef{Service: t.serviceKey(ns, name), HbonePort: hbonePort}
}

// waypoints builds one WaypointConfig per waypoint Gateway, holding the routes
// of every Service bound to it.
func (t *translator) waypoints(services map[string]*meshv1.Service) map[string]*meshv1.WaypointConfig {
	out := map[string]*meshv1.WaypointConfig{}
	if len(t.snap.Gateways) == 0 {
		return out
	}
	routes := BuildRoutes(t.snap, t.mesh)
	t.problems = append(t.problems, routes.Problems()...)
	byWaypointService := map[string]*meshv1.WaypointConfig{}
	for k, gw := range t.snap.Gateways {
		if !isWaypoint(gw) {
			continue
		}
		wc := &meshv1.WaypointConfig{Name: k.Name, Namespace: k.Namespace, WaypointFor: waypointFor(gw)}
		out[k.String()] = wc
		byWaypointService[t.serviceKey(k.Namespace, k.Name)] = wc
	}
	for _, key := range slices.Sorted(maps.Keys(services)) {
		svc := services[key]
		if svc.Waypoint == nil {
			continue
		}
		wc := byWaypointService[svc.Waypoint.Service]
		if wc == nil {
			continue
		}
		sk := model.Key{Namespace: svc.Namespace, Name: svc.Name}
		sr := proto.Clone(routes.ServiceRoutes(sk)).(*meshv1.ServiceRoutes)
		consumers := routes.ConsumerRoutes(sk)
		for _, ns := range slices.Sorted(maps.Keys(consumers)) {
			for _, pr := range consumers[ns].GetPorts() {
				pr = proto.Clone(pr).(*meshv1.PortRoutes)
				pr.ConsumerNamespace = ns
				sr.Ports = append(sr.Ports, pr)
			}
		}
		wc.Services = append(wc.Services, sr)
		if dp := routes.DestinationPolicy(sk); dp != nil {
			wc.DestinationPolicies = append(wc.DestinationPolicies, dp)
		}
	}
	t.attachL7Policies(out, services)
	return out
}
