package state

import (
	"net/netip"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func id(ns, sa string) spiffe.ID {
	return spiffe.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
}

func TestResolve(t *testing.T) {
	const ns = "default"
	echo := svcKey(ns, "echo")
	plain := svcKey(ns, "plain")
	named := svcKey(ns, "named")
	empty := svcKey(ns, "empty")
	viaWP := svcKey(ns, "reviews")
	lostWP := svcKey(ns, "lost")
	wpKey := svcKey(ns, "waypoint")
	deadWPKey := svcKey(ns, "dead-waypoint")
	zonal := svcKey(ns, "zonal")

	src := wl(ns, "client", "10.0.9.1")
	echoA := backs(wl(ns, "echo-a", "10.0.0.1", "fd00::1"), echo, 80, 8080)
	echoB := backs(wl(ns, "echo-b", "10.0.0.2"), echo, 80, 8080)
	legacy := backs(wl(ns, "legacy", "10.0.1.1"), plain, 80, 8080)
	legacy.TunnelProtocol = meshv1.TunnelProtocol_NONE
	legacy.TrustDomain, legacy.ServiceAccount = "", ""
	namedPod := backs(wl(ns, "named-pod", "10.0.2.1"), named, 80, 9000)
	reviews := backs(wl(ns, "reviews", "10.0.3.1"), viaWP, 9080, 9080)
	wp0 := backs(wl(ns, "waypoint-0", "10.0.4.1", "fd00::4:1"), wpKey, 15008, 15008)
	wp0.WaypointGateway = ns + "/waypoint"
	podWithWP := wl(ns, "pinned", "10.0.5.1")
	podWithWP.Waypoint = &meshv1.WaypointRef{Service: wpKey, HbonePort: 15008}
	near := backs(wl(ns, "near", "10.0.6.1"), zonal, 80, 80)
	far := backs(wl(ns, "far", "10.0.6.2"), zonal, 80, 80)
	far.Locality = &meshv1.Locality{Region: "r1", Zone: "z2"}
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1"}
	// far sorts before near, so a locality-blind first pick would take far.
	far.Uid, far.Name = uidOf(ns, "a-far"), "a-far"

	echoSvc := svc(ns, "echo", []string{"10.96.0.10", "fd00:96::10"}, port(80, 8080))
	echoSvc.SubjectAltNames = []string{"spiffe://cluster.local/ns/default/sa/echo-legacy"}
	namedSvc := svc(ns, "named", []string{"10.96.0.12"}, port(80, 0))
	reviewsSvc := svc(ns, "reviews", []string{"10.96.0.14"}, port(9080, 9080))
	reviewsSvc.Waypoint = &meshv1.WaypointRef{Service: wpKey, HbonePort: 15008}
	lostSvc := svc(ns, "lost", []string{"10.96.0.15"}, port(80, 80))
	lostSvc.Waypoint = &meshv1.WaypointRef{Service: svcKey(ns, "gone"), HbonePort: 15008}
	deadSvc := svc(ns, "dead", []string{"10.96.0.16"}, port(80, 80))
	deadSvc.Waypoint = &meshv1.WaypointRef{Service: deadWPKey, HbonePort: 15008}
	wpSvc := svc(ns, "waypoint", []string{"10.96.0.20"}, port(15008, 15008))
	wpSvc.SubjectAltNames = []string{"spiffe://cluster.local/ns/default/sa/waypoint-shared"}
	zonalSvc := svc(ns, "zonal", []string{"10.96.0.17"}, port(80, 80))
	zonalSvc.LoadBalancing = &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE}, Mode: meshv1.LoadBalancing_FAILOVER}

	s := NewStore(Options{Chooser: firstChooser()})
	mustApply(t, s,
		services(echoSvc, svc(ns, "plain", []string{"10.96.0.11"}, port(80, 8080)), namedSvc,
			svc(ns, "empty", []string{"10.96.0.13"}, port(80, 80)), reviewsSvc, lostSvc, deadSvc, wpSvc,
			svc(ns, "dead-waypoint", []string{"10.96.0.21"}, port(15008, 15008)), zonalSvc),
		workloads(src, echoA, echoB, legacy, namedPod, reviews, wp0, podWithWP, near, far))
	_ = empty
	_ = lostWP

	tests := []struct {
		name string
		dst  string
		src  *meshv1.Workload
		want Destination
	}{
		{"service hbone", "10.96.0.10:80", src, Destination{
			Kind: KindService, Original: ap("10.96.0.10:80"), Dial: ap("10.0.0.1:15008"), Target: ap("10.0.0.1:8080"), HBONE: true,
			Service: echoSvc, ServicePort: echoSvc.Ports[0], Workload: echoA,
			Identity: id(ns, "sa-echo-a"), AltNames: []spiffe.ID{id(ns, "echo-legacy")}}},
		{"service v6 VIP picks v6 address", "[fd00:96::10]:80", src, Destination{
			Kind: KindService, Original: ap("[fd00:96::10]:80"), Dial: ap("[fd00::1]:15008"), Target: ap("[fd00::1]:8080"), HBONE: true,
			Service: echoSvc, ServicePort: echoSvc.Ports[0], Workload: echoA,
			Identity: id(ns, "sa-echo-a"), AltNames: []spiffe.ID{id(ns, "echo-legacy")}}},
		{"service unknown port", "10.96.0.10:81", src, Destination{
			Kind: KindNoEndpoint, Original: ap("10.96.0.10:81"), Dial: ap("10.96.0.10:81"), Target: ap("10.96.0.10:81"),
			Service: echoSvc, Reason: ReasonUnknownPort}},
		{"service plain endpoint", "10.96.0.11:80", src, Destination{
			Kind: KindService, Original: ap("10.96.0.11:80"), Dial: ap("10.0.1.1:8080"), Target: ap("10.0.1.1:8080"),
			Service: s.ServiceByKey(plain), ServicePort: s.ServiceByKey(plain).Ports[0], Workload: legacy}},
		{"named target port", "10.96.0.12:80", src, Destination{
			Kind: KindService, Original: ap("10.96.0.12:80"), Dial: ap("10.0.2.1:15008"), Target: ap("10.0.2.1:9000"), HBONE: true,
			Service: namedSvc, ServicePort: namedSvc.Ports[0], Workload: namedPod, Identity: id(ns, "sa-named-pod")}},
		{"no endpoints", "10.96.0.13:80", src, Destination{
			Kind: KindNoEndpoint, Original: ap("10.96.0.13:80"), Dial: ap("10.96.0.13:80"), Target: ap("10.96.0.13:80"),
			Service: s.ServiceByKey(empty), ServicePort: s.ServiceByKey(empty).Ports[0], Reason: ReasonNoHealthyEndpoint}},
		{"service waypoint", "10.96.0.14:9080", src, Destination{
			Kind: KindWaypoint, Original: ap("10.96.0.14:9080"), Dial: ap("10.0.4.1:15008"), Target: ap("10.96.0.14:9080"), HBONE: true,
			Service: reviewsSvc, ServicePort: reviewsSvc.Ports[0], Workload: wp0, Waypoint: wpSvc,
			Identity: id(ns, "sa-waypoint-0"), AltNames: []spiffe.ID{id(ns, "waypoint-shared")}}},
		{"waypoint itself goes direct", "10.96.0.14:9080", wp0, Destination{
			Kind: KindService, Original: ap("10.96.0.14:9080"), Dial: ap("10.0.3.1:15008"), Target: ap("10.0.3.1:9080"), HBONE: true,
			Service: reviewsSvc, ServicePort: reviewsSvc.Ports[0], Workload: reviews, Identity: id(ns, "sa-reviews")}},
		{"unknown waypoint is not bypassed", "10.96.0.15:80", src, Destination{
			Kind: KindNoEndpoint, Original: ap("10.96.0.15:80"), Dial: ap("10.96.0.15:80"), Target: ap("10.96.0.15:80"),
			Service: lostSvc, ServicePort: lostSvc.Ports[0], Reason: ReasonWaypointMissing}},
		{"waypoint without endpoints", "10.96.0.16:80", src, Destination{
			Kind: KindNoEndpoint, Original: ap("10.96.0.16:80"), Dial: ap("10.96.0.16:80"), Target: ap("10.96.0.16:80"),
			Service: deadSvc, ServicePort: deadSvc.Ports[0], Waypoint: s.ServiceByKey(deadWPKey), Reason: ReasonWaypointNoEndpoint}},
		{"pod ip hbone", "10.0.0.2:8080", src, Destination{
			Kind: KindWorkload, Original: ap("10.0.0.2:8080"), Dial: ap("10.0.0.2:15008"), Target: ap("10.0.0.2:8080"), HBONE: true,
			Workload: echoB, Identity: id(ns, "sa-echo-b")}},
		{"pod ip v4-mapped", "[::ffff:10.0.0.2]:8080", src, Destination{
			Kind: KindWorkload, Original: ap("[::ffff:10.0.0.2]:8080"), Dial: ap("10.0.0.2:15008"), Target: ap("10.0.0.2:8080"), HBONE: true,
			Workload: echoB, Identity: id(ns, "sa-echo-b")}},
		{"pod ip plain", "10.0.1.1:8080", src, Destination{
			Kind: KindWorkload, Original: ap("10.0.1.1:8080"), Dial: ap("10.0.1.1:8080"), Target: ap("10.0.1.1:8080"), Workload: legacy}},
		{"pod ip waypoint", "10.0.5.1:7000", src, Destination{
			Kind: KindWaypoint, Original: ap("10.0.5.1:7000"), Dial: ap("10.0.4.1:15008"), Target: ap("10.0.5.1:7000"), HBONE: true,
			Workload: wp0, Waypoint: wpSvc, Identity: id(ns, "sa-waypoint-0"), AltNames: []spiffe.ID{id(ns, "waypoint-shared")}}},
		{"pod ip waypoint from the waypoint", "10.0.5.1:7000", wp0, Destination{
			Kind: KindWorkload, Original: ap("10.0.5.1:7000"), Dial: ap("10.0.5.1:15008"), Target: ap("10.0.5.1:7000"), HBONE: true,
			Workload: podWithWP, Identity: id(ns, "sa-pinned")}},
		{"locality", "10.96.0.17:80", src, Destination{
			Kind: KindService, Original: ap("10.96.0.17:80"), Dial: ap("10.0.6.1:15008"), Target: ap("10.0.6.1:80"), HBONE: true,
			Service: zonalSvc, ServicePort: zonalSvc.Ports[0], Workload: near, Identity: id(ns, "sa-near")}},
		{"passthrough", "93.184.216.34:443", src, Destination{
			Kind: KindPassthrough, Original: ap("93.184.216.34:443"), Dial: ap("93.184.216.34:443"), Target: ap("93.184.216.34:443")}},
		{"unknown source", "10.96.0.10:80", nil, Destination{
			Kind: KindService, Original: ap("10.96.0.10:80"), Dial: ap("10.0.0.1:15008"), Target: ap("10.0.0.1:8080"), HBONE: true,
			Service: echoSvc, ServicePort: echoSvc.Ports[0], Workload: echoA,
			Identity: id(ns, "sa-echo-a"), AltNames: []spiffe.ID{id(ns, "echo-legacy")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.Resolve(ap(tt.dst), tt.src)
			if !sameDestination(got, tt.want) {
				t.Errorf("Resolve(%s) =\n  %s\nwant\n  %s", tt.dst, describe(got), describe(tt.want))
			}
		})
	}
}

func sameDestination(a, b Destination) bool {
	if len(a.AltNames) != len(b.AltNames) {
		return false
	}
	for i := range a.AltNames {
		if a.AltNames[i] != b.AltNames[i] {
			return false
		}
	}
	return a.Kind == b.Kind && a.Original == b.Original && a.Dial == b.Dial && a.Target == b.Target &&
		a.HBONE == b.HBONE && a.Service == b.Service && a.ServicePort == b.ServicePort && a.Workload == b.Workload &&
		a.Waypoint == b.Waypoint && a.Identity == b.Identity && a.Reason == b.Reason
}

func describe(d Destination) string {
	name := func(w *meshv1.Workload) string { return w.GetName() }
	return d.Kind.String() + " orig=" + d.Original.String() + " dial=" + d.Dial.String() + " target=" + d.Target.String() +
		" hbone=" + map[bool]string{true: "y", false: "n"}[d.HBONE] + " svc=" + d.Service.GetName() + " port=" +
		d.ServicePort.GetName() + " wl=" + name(d.Workload) + " wp=" + d.Waypoint.GetName() + " id=" + d.Identity.Principal() +
		" reason=" + d.Reason
}

func TestDestinationAccepts(t *testing.T) {
	d := Destination{Identity: id("a", "x"), AltNames: []spiffe.ID{id("b", "y")}}
	for _, tt := range []struct {
		id   spiffe.ID
		want bool
	}{{id("a", "x"), true}, {id("b", "y"), true}, {id("a", "y"), false}, {spiffe.ID{}, false}} {
		if got := d.Accepts(tt.id); got != tt.want {
			t.Errorf("Accepts(%v) = %v", tt.id, got)
		}
	}
	var plain Destination
	if plain.Accepts(spiffe.ID{}) {
		t.Error("zero destination accepts zero identity")
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindPassthrough: "passthrough", KindService: "service", KindWorkload: "workload",
		KindWaypoint: "waypoint", KindNoEndpoint: "no_endpoint", Kind(77): "unknown"} {
		if k.String() != want {
			t.Errorf("%d: %q", k, k.String())
		}
	}
}
