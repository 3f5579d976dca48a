package translate

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

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
func (t *translator) waypoints(services map[string]*meshv1.Service, workloads map[string]*meshv1.Workload) map[string]*meshv1.WaypointConfig {
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
	}
	members := t.serviceMembers(workloads)
	for _, wc := range out {
		for _, dk := range waypointDestinations(wc) {
			svc := services[dk]
			if svc == nil {
				continue
			}
			if dp := routes.DestinationPolicy(model.Key{Namespace: svc.Namespace, Name: svc.Name}); dp != nil {
				wc.DestinationPolicies = append(wc.DestinationPolicies, t.withSubsetWorkloads(dp, members[dk]))
			}
		}
	}
	t.attachL7Policies(out, services)
	return out
}

// waypointDestinations lists, sorted, the Services a waypoint sends to: those
// bound to it and every backend or mirror of their routes. The waypoint
// applies each one's DestinationRule (load balancing, subsets, connection
// pool, outlier detection), as Istio's waypoints do for the hosts they route to.
func waypointDestinations(wc *meshv1.WaypointConfig) []string {
	seen := map[string]bool{}
	for _, sr := range wc.GetServices() {
		seen[sr.GetService()] = true
		for _, pr := range sr.GetPorts() {
			for _, r := range pr.GetRules() {
				for _, b := range r.GetBackends() {
					seen[b.GetDestination().GetService()] = true
				}
				for _, m := range r.GetMirrors() {
					seen[m.GetDestination().GetService()] = true
				}
			}
		}
	}
	delete(seen, "")
	return slices.Sorted(maps.Keys(seen))
}

// serviceMembers maps each Service key to the workloads backing it, sorted
// by uid.
func (t *translator) serviceMembers(workloads map[string]*meshv1.Workload) map[string][]*meshv1.Workload {
	out := map[string][]*meshv1.Workload{}
	for _, uid := range slices.Sorted(maps.Keys(workloads)) {
		w := workloads[uid]
		for sk := range w.GetServices() {
			out[sk] = append(out[sk], w)
		}
	}
	return out
}

// withSubsetWorkloads returns dp with each subset's workloads resolved: the
// Service's workloads whose pods carry the subset's labels. dp is shared by
// the route index, so it is cloned when there is anything to fill in.
func (t *translator) withSubsetWorkloads(dp *meshv1.DestinationPolicy, members []*meshv1.Workload) *meshv1.DestinationPolicy {
	if len(dp.GetSubsets()) == 0 {
		return dp
	}
	dp = proto.Clone(dp).(*meshv1.DestinationPolicy)
	for _, s := range dp.Subsets {
		for _, w := range members {
			pod := t.snap.Pods[model.Key{Namespace: w.GetNamespace(), Name: w.GetName()}]
			if pod != nil && (len(s.GetLabels()) == 0 || selects(s.GetLabels(), pod.Labels)) {
				s.Workloads = append(s.Workloads, w.GetUid())
			}
		}
	}
	return dp
}
