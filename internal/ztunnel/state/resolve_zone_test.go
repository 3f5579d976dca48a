package state

import (
	"net/netip"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/lb"
)

// TestResolveZoneAware: the waypoint hop prefers an instance in the
// caller's zone even when the waypoint's Service states no preference, and
// connection outcomes reported to the Destination's Health steer later
// choices.
func TestResolveZoneAware(t *testing.T) {
	ns := "default"
	wpKey, apiKey := svcKey(ns, "waypoint"), svcKey(ns, "api")
	zoned := func(w *meshv1.Workload, zone string) *meshv1.Workload {
		w.Locality = &meshv1.Locality{Region: "r1", Zone: zone}
		w.Node = "node-" + zone
		return w
	}
	var wps []*meshv1.Workload
	for i, z := range []string{"z1", "z2", "z3"} {
		w := zoned(backs(wl(ns, "waypoint-"+z, "10.0.4."+string(rune('1'+i))), wpKey, 15008, 15008), z)
		w.WaypointGateway = ns + "/waypoint"
		wps = append(wps, w)
	}
	apiA := zoned(backs(wl(ns, "api-z1", "10.0.5.1"), apiKey, 80, 8080), "z1")
	apiB := zoned(backs(wl(ns, "api-z2", "10.0.5.2"), apiKey, 80, 8080), "z2")
	src := zoned(wl(ns, "client", "10.0.1.1"), "z2")

	routed := svc(ns, "routed", []string{"10.96.0.30"}, port(80, 8080))
	routed.Waypoint = &meshv1.WaypointRef{Service: wpKey, HbonePort: 15008}
	api := svc(ns, "api", []string{"10.96.0.31"}, port(80, 8080))
	api.LoadBalancing = &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE}, Mode: meshv1.LoadBalancing_FAILOVER}

	health := lb.NewRegistry(lb.HealthConfig{EjectAfter: 3})
	s := NewStore(Options{Health: health})
	mustApply(t, s, services(routed, api, svc(ns, "waypoint", []string{"10.96.0.20"}, port(15008, 15008))),
		workloads(append(wps, apiA, apiB, src)...))

	for range 50 {
		d := s.Resolve(netip.MustParseAddrPort("10.96.0.30:80"), src)
		if d.Kind != KindWaypoint || d.Workload.GetName() != "waypoint-z2" {
			t.Fatalf("waypoint hop from z2 went to %v %s, want waypoint-z2", d.Kind, d.Workload.GetName())
		}
		if d.Health != health.Get(wpKey) || d.Endpoint == nil {
			t.Fatal("waypoint destination carries no health to report to")
		}
	}
	d := s.Resolve(netip.MustParseAddrPort("10.96.0.31:80"), src)
	if d.Workload.GetName() != "api-z2" {
		t.Fatalf("api from z2 went to %s, want the local api-z2", d.Workload.GetName())
	}
	// Three connect failures eject the local endpoint: fail over to z1.
	for range 3 {
		d.Health.Observe(d.Endpoint, 0, false, 0)
	}
	for range 50 {
		if d := s.Resolve(netip.MustParseAddrPort("10.96.0.31:80"), src); d.Workload.GetName() != "api-z1" {
			t.Fatalf("after the local endpoint was ejected: %s, want api-z1", d.Workload.GetName())
		}
	}
}
