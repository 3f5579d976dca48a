package state

import (
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

func TestInboundService(t *testing.T) {
	const ns = "shop"
	// web backs two services on 8080 (web and alias: the lower key wins) and
	// api on a named port resolved to 9090.
	web := svc(ns, "web", []string{"10.96.0.1"}, port(80, 8080))
	alias := svc(ns, "alias", []string{"10.96.0.2"}, port(81, 8080))
	api := svc(ns, "api", []string{"10.96.0.3"}, port(90, 0))
	pod := wl(ns, "pod", "10.0.0.1")
	backs(pod, svcKey(ns, "web"), 80, 8080)
	backs(pod, svcKey(ns, "alias"), 81, 8080)
	backs(pod, svcKey(ns, "api"), 90, 9090)
	backs(pod, svcKey(ns, "gone"), 70, 7070) // a service the ztunnel does not know
	s := NewStore(Options{})
	mustApply(t, s, services(web, alias, api), workloads(pod))
	v := s.View()
	for _, tc := range []struct {
		port uint16
		want *meshv1.Service
	}{
		{8080, alias}, // "shop/alias..." < "shop/web..."
		{9090, api},
		{7070, nil},
		{1234, nil},
	} {
		if got := v.InboundService(v.WorkloadByIP(ap("10.0.0.1:0").Addr()), tc.port); got != tc.want {
			t.Errorf("port %d: got %v, want %v", tc.port, got.GetHostname(), tc.want.GetHostname())
		}
	}
}

func TestIsWaypoint(t *testing.T) {
	const ns = "shop"
	wpKey := svcKey(ns, "waypoint")
	wpSvc := svc(ns, "waypoint", []string{"10.96.0.9"}, port(15008, 15008))
	wpSvc.SubjectAltNames = []string{"spiffe://cluster.local/ns/shop/sa/extra"}
	wp := backs(wl(ns, "waypoint-0", "10.0.9.1"), wpKey, 15008, 15008)
	sick := backs(wl(ns, "waypoint-1", "10.0.9.2"), wpKey, 15008, 15008)
	sick.ServiceAccount = "sa-sick"
	sick.Status = meshv1.WorkloadStatus_UNHEALTHY
	s := NewStore(Options{})
	mustApply(t, s, services(wpSvc), workloads(wp, sick))
	v := s.View()
	ref := &meshv1.WaypointRef{Service: wpKey, HbonePort: 15008}
	id := func(sa string) spiffe.ID {
		return spiffe.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
	}
	for _, tc := range []struct {
		name string
		ref  *meshv1.WaypointRef
		id   spiffe.ID
		want bool
	}{
		{"instance identity", ref, id("sa-waypoint-0"), true},
		{"subject alt name of the waypoint service", ref, id("extra"), true},
		{"a client", ref, id("sa-client"), false},
		{"unhealthy instance", ref, id("sa-sick"), false},
		{"no identity", ref, spiffe.ID{}, false},
		{"unknown waypoint service", &meshv1.WaypointRef{Service: svcKey(ns, "gone")}, id("sa-waypoint-0"), false},
	} {
		if got := v.IsWaypoint(tc.ref, tc.id); got != tc.want {
			t.Errorf("%s: IsWaypoint = %v, want %v", tc.name, got, tc.want)
		}
	}
}
