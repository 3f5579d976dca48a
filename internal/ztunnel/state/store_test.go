package state

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
)

func endpointUIDs(eps []*Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Workload.GetUid())
	}
	return out
}

func TestApplyAndLookups(t *testing.T) {
	s := NewStore(Options{})
	key := svcKey("default", "echo")
	a := backs(wl("default", "echo-a", "10.0.0.1", "fd00::1"), key, 80, 8080)
	b := backs(wl("default", "echo-b", "10.0.0.2"), key, 80, 8080)
	sv := svc("default", "echo", []string{"10.96.0.10", "fd00:96::10"}, port(80, 8080))
	mustApply(t, s, services(sv), workloads(b, a))

	if got := s.WorkloadByIP(netip.MustParseAddr("10.0.0.1")); got != a {
		t.Errorf("WorkloadByIP(10.0.0.1) = %v", got)
	}
	if got := s.WorkloadByIP(netip.MustParseAddr("::ffff:10.0.0.2")); got != b {
		t.Errorf("WorkloadByIP(v4-mapped) = %v", got)
	}
	if got := s.WorkloadByIP(netip.MustParseAddr("fd00::1")); got != a {
		t.Errorf("WorkloadByIP(fd00::1) = %v", got)
	}
	if got := s.WorkloadByIP(netip.MustParseAddr("10.0.0.3")); got != nil {
		t.Errorf("WorkloadByIP(unknown) = %v", got)
	}
	if got := s.WorkloadByUID(uidOf("default", "echo-b")); got != b {
		t.Errorf("WorkloadByUID = %v", got)
	}
	if got := s.ServiceByKey(key); got != sv {
		t.Errorf("ServiceByKey = %v", got)
	}
	gs, gp := s.ServiceByVIP(netip.MustParseAddrPort("10.96.0.10:80"))
	if gs != sv || gp != sv.Ports[0] {
		t.Errorf("ServiceByVIP(:80) = %v, %v", gs, gp)
	}
	gs, gp = s.ServiceByVIP(netip.MustParseAddrPort("[fd00:96::10]:81"))
	if gs != sv || gp != nil {
		t.Errorf("ServiceByVIP(v6 :81) = %v, %v; want service, nil port", gs, gp)
	}
	gs, gp = s.ServiceByVIP(netip.MustParseAddrPort("10.96.0.11:80"))
	if gs != nil || gp != nil {
		t.Errorf("ServiceByVIP(unknown) = %v, %v", gs, gp)
	}
	eps := s.Endpoints(key)
	if want := []string{a.Uid, b.Uid}; !slices.Equal(endpointUIDs(eps), want) {
		t.Errorf("Endpoints = %v, want %v", endpointUIDs(eps), want)
	}
	if eps[0].Locality != a.Locality || eps[0].Address(netip.MustParseAddr("fd00:96::10")) != netip.MustParseAddr("fd00::1") {
		t.Errorf("endpoint a = %+v", eps[0])
	}
	if tp, ok := eps[0].TargetPort(sv.Ports[0]); !ok || tp != 8080 {
		t.Errorf("TargetPort = %d, %v", tp, ok)
	}
	if c := s.View().Counts(); c != (Counts{Workloads: 2, Services: 1}) {
		t.Errorf("Counts = %+v", c)
	}
	if e, v := s.View().Version(); e != "e1" || v != 1 {
		t.Errorf("Version = %q %d", e, v)
	}

	// Update b: unhealthy, new address. Remove a.
	b2 := backs(wl("default", "echo-b", "10.0.0.22"), key, 80, 8080)
	b2.Status = meshv1.WorkloadStatus_UNHEALTHY
	old := s.View()
	mustApply(t, s, workloads(b2), removes(meshv1.TypeWorkload, a.Uid))
	if s.WorkloadByIP(netip.MustParseAddr("10.0.0.2")) != nil || s.WorkloadByIP(netip.MustParseAddr("10.0.0.1")) != nil ||
		s.WorkloadByIP(netip.MustParseAddr("fd00::1")) != nil {
		t.Error("old addresses still resolve")
	}
	if s.WorkloadByIP(netip.MustParseAddr("10.0.0.22")) != b2 {
		t.Error("new address does not resolve")
	}
	if eps := s.Endpoints(key); len(eps) != 0 {
		t.Errorf("Endpoints after update = %v, want none (a removed, b unhealthy)", endpointUIDs(eps))
	}
	if s.WorkloadByUID(a.Uid) != nil {
		t.Error("removed workload still there")
	}
	// The old view is untouched.
	if old.WorkloadByIP(netip.MustParseAddr("10.0.0.1")) != a || len(old.Endpoints(key)) != 2 {
		t.Error("old view changed")
	}
	// Removing unknown names is not an error.
	mustApply(t, s, removes(meshv1.TypeWorkload, "local/Pod/x/y"), removes(meshv1.TypeService, "x/y"))
	mustApply(t, s, removes(meshv1.TypeService, key))
	if s.ServiceByKey(key) != nil {
		t.Error("service not removed")
	}
	if gs, _ := s.ServiceByVIP(netip.MustParseAddrPort("10.96.0.10:80")); gs != nil {
		t.Error("VIP of removed service still resolves")
	}
}

func TestEndpointsIncremental(t *testing.T) {
	s := NewStore(Options{})
	k1, k2 := svcKey("ns", "one"), svcKey("ns", "two")
	var ws []*meshv1.Workload
	for _, n := range []string{"c", "a", "e", "b", "d"} {
		ws = append(ws, backs(backs(wl("ns", n, "10.1.0."+string(rune('0'+len(ws)+1))), k1, 80, 8080), k2, 90, 9090))
	}
	mustApply(t, s, workloads(ws...))
	want := []string{uidOf("ns", "a"), uidOf("ns", "b"), uidOf("ns", "c"), uidOf("ns", "d"), uidOf("ns", "e")}
	if got := endpointUIDs(s.Endpoints(k1)); !slices.Equal(got, want) {
		t.Fatalf("Endpoints(one) = %v", got)
	}
	// c leaves service two, f joins both, a is removed, e goes unhealthy.
	c := backs(wl("ns", "c", "10.1.0.1"), k1, 80, 8080)
	f := backs(backs(wl("ns", "f", "10.1.0.9"), k1, 80, 8080), k2, 90, 9090)
	e := backs(wl("ns", "e", "10.1.0.3"), k1, 80, 8080)
	e.Status = meshv1.WorkloadStatus_UNHEALTHY
	mustApply(t, s, workloads(c, f, e), removes(meshv1.TypeWorkload, uidOf("ns", "a")))
	if got, want := endpointUIDs(s.Endpoints(k1)), []string{uidOf("ns", "b"), uidOf("ns", "c"), uidOf("ns", "d"), uidOf("ns", "f")}; !slices.Equal(got, want) {
		t.Errorf("Endpoints(one) = %v, want %v", got, want)
	}
	if got, want := endpointUIDs(s.Endpoints(k2)), []string{uidOf("ns", "b"), uidOf("ns", "d"), uidOf("ns", "f")}; !slices.Equal(got, want) {
		t.Errorf("Endpoints(two) = %v, want %v", got, want)
	}
	// The endpoint carries the new workload version.
	for _, ep := range s.Endpoints(k1) {
		if ep.Workload.GetUid() == c.Uid && ep.Workload != c {
			t.Error("endpoint c not updated")
		}
	}
	// Endpoints exist before their Service arrives.
	mustApply(t, s, services(svc("ns", "one", []string{"10.96.1.1"}, port(80, 0))))
	if len(s.Endpoints(k1)) != 4 {
		t.Error("endpoints lost when the service arrived")
	}
}

func TestAddressMovesWithinUpdate(t *testing.T) {
	s := NewStore(Options{})
	mustApply(t, s, workloads(wl("ns", "a", "10.0.0.1"), wl("ns", "b", "10.0.0.2")))
	// Swap addresses in one update.
	a, b := wl("ns", "a", "10.0.0.2"), wl("ns", "b", "10.0.0.1")
	mustApply(t, s, workloads(a, b))
	if s.WorkloadByIP(netip.MustParseAddr("10.0.0.2")) != a || s.WorkloadByIP(netip.MustParseAddr("10.0.0.1")) != b {
		t.Error("swap failed")
	}
	// An address may pass from a removed workload to a new one.
	c := wl("ns", "c", "10.0.0.2")
	mustApply(t, s, workloads(c), removes(meshv1.TypeWorkload, a.Uid))
	if s.WorkloadByIP(netip.MustParseAddr("10.0.0.2")) != c {
		t.Error("address not taken over")
	}
	// VIPs too.
	mustApply(t, s, services(svc("ns", "x", []string{"10.96.0.1"}), svc("ns", "y", []string{"10.96.0.2"})))
	y := svc("ns", "y", []string{"10.96.0.1"})
	mustApply(t, s, services(y), removes(meshv1.TypeService, svcKey("ns", "x")))
	if gs, _ := s.ServiceByVIP(netip.MustParseAddrPort("10.96.0.1:80")); gs != y {
		t.Error("VIP not taken over")
	}
}

func TestApplyRejects(t *testing.T) {
	okW := wl("ns", "ok", "10.0.0.1")
	mut := func(f func(w *meshv1.Workload)) *meshv1.Workload {
		w := wl("ns", "w", "10.0.0.9")
		f(w)
		return w
	}
	mutS := func(f func(s *meshv1.Service)) *meshv1.Service {
		s := svc("ns", "s", []string{"10.96.0.9"}, port(80, 8080))
		f(s)
		return s
	}
	wName := `Workload "local/Pod/ns/w": `
	sName := `Service "ns/s.ns.svc.cluster.local": `
	tests := []struct {
		name string
		u    *xds.Update
		want string
	}{
		{"bad ip", update(workloads(mut(func(w *meshv1.Workload) { w.Addresses = []string{"10.0.0.9", "10.0.0.300"} }))), wName + `addresses[1]: invalid IP address "10.0.0.300"`},
		{"zone", update(workloads(mut(func(w *meshv1.Workload) { w.Addresses = []string{"fe80::1%eth0"} }))), wName + `addresses[0]: IP address "fe80::1%eth0" has a zone`},
		{"dup ip in workload", update(workloads(mut(func(w *meshv1.Workload) { w.Addresses = []string{"10.0.0.9", "::ffff:10.0.0.9"} }))), wName + `addresses[1]: duplicate address 10.0.0.9`},
		{"empty uid", update(xds.TypeUpdate{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Name: "x", Message: &meshv1.Workload{}}}}), `Workload "x": uid: required`},
		{"uid differs", update(xds.TypeUpdate{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Name: "x", Message: wl("ns", "w")}}}), `Workload "x": uid: "local/Pod/ns/w" differs from the resource name`},
		{"no namespace", update(workloads(mut(func(w *meshv1.Workload) { w.Namespace = "" }))), wName + `namespace: required`},
		{"bad protocol", update(workloads(mut(func(w *meshv1.Workload) { w.TunnelProtocol = 7 }))), wName + `tunnel_protocol: unknown value 7`},
		{"bad status", update(workloads(mut(func(w *meshv1.Workload) { w.Status = 3 }))), wName + `status: unknown value 3`},
		{"hbone without identity", update(workloads(mut(func(w *meshv1.Workload) { w.ServiceAccount = "" }))), wName + `trust_domain: an HBONE workload needs trust_domain and service_account`},
		{"bad identity", update(workloads(mut(func(w *meshv1.Workload) { w.TrustDomain = "Bad/TD" }))), wName + `service_account: identity: SPIFFE ID "spiffe://Bad/TD/ns/ns/sa/sa-w": want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`},
		{"bad waypoint", update(workloads(mut(func(w *meshv1.Workload) { w.Waypoint = &meshv1.WaypointRef{Service: "wp", HbonePort: 15008} }))), wName + `waypoint.service: want a service key <namespace>/<hostname>, got "wp"`},
		{"bad waypoint port", update(workloads(mut(func(w *meshv1.Workload) { w.Waypoint = &meshv1.WaypointRef{Service: "ns/wp", HbonePort: 0} }))), wName + `waypoint.hbone_port: invalid port 0: want 1-65535`},
		{"bad service key", update(workloads(mut(func(w *meshv1.Workload) { backs(w, "nokey", 80, 80) }))), wName + `services["nokey"]: want a service key <namespace>/<hostname>`},
		{"bad service port", update(workloads(mut(func(w *meshv1.Workload) { backs(w, "ns/x", 0, 80) }))), wName + `services["ns/x"].ports[0].service_port: invalid port 0: want 1-65535`},
		{"bad target port", update(workloads(mut(func(w *meshv1.Workload) { backs(w, "ns/x", 80, 70000) }))), wName + `services["ns/x"].ports[0].target_port: invalid port 70000: want 0-65535`},
		{"dup service port", update(workloads(mut(func(w *meshv1.Workload) { backs(w, "ns/x", 80, 1, 80, 2) }))), wName + `services["ns/x"].ports[1].service_port: duplicate port 80`},
		{"bad policy ref", update(workloads(mut(func(w *meshv1.Workload) { w.AuthorizationPolicies = []string{"x"} }))), wName + `authorization_policies[0]: want <namespace>/<name>, got "x"`},
		{"dup address across workloads", update(workloads(okW, mut(func(w *meshv1.Workload) { w.Addresses = []string{"10.0.0.1"} }))), wName + `addresses[0]: address 10.0.0.1 is also the address of workload "local/Pod/ns/ok"`},
		{"wrong message type", update(xds.TypeUpdate{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Name: "x", Message: &meshv1.Service{}}}}), `Workload "x": message is *meshv1.Service, want *meshv1.Workload`},
		{"nil message", update(xds.TypeUpdate{TypeURL: meshv1.TypeService, Upserts: []xds.Resource{{Name: "x"}}}), `Service "x": message is <nil>, want *meshv1.Service`},
		{"unknown type", update(xds.TypeUpdate{TypeURL: meshv1.TypeWaypointConfig}), `type type.googleapis.com/ambit.mesh.v1.WaypointConfig is not handled by the ztunnel state`},
		{"type twice", &xds.Update{Types: []xds.TypeUpdate{workloads(), workloads()}}, `type type.googleapis.com/ambit.mesh.v1.Workload appears twice in the update`},
		{"name twice", update(workloads(okW, okW)), `Workload "local/Pod/ns/ok": appears twice in the update`},
		{"upsert and remove", update(xds.TypeUpdate{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Name: okW.Uid, Message: okW}}, Removes: []string{okW.Uid}}), `Workload "local/Pod/ns/ok": both updated and removed in the update`},
		{"empty name", update(xds.TypeUpdate{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Message: okW}}}), `Workload with an empty resource name`},

		{"service bad vip", update(services(mutS(func(s *meshv1.Service) { s.Addresses = []string{"vip"} }))), sName + `addresses[0]: invalid IP address "vip"`},
		{"service name mismatch", update(xds.TypeUpdate{TypeURL: meshv1.TypeService, Upserts: []xds.Resource{{Name: "ns/s", Message: mutS(func(*meshv1.Service) {})}}}), `Service "ns/s": resource name must be <namespace>/<hostname> = "ns/s.ns.svc.cluster.local"`},
		{"service no hostname", update(xds.TypeUpdate{TypeURL: meshv1.TypeService, Upserts: []xds.Resource{{Name: "ns/", Message: mutS(func(s *meshv1.Service) { s.Hostname = "" })}}}), `Service "ns/": hostname: required`},
		{"service port 0", update(services(mutS(func(s *meshv1.Service) { s.Ports = append(s.Ports, port(0, 1)) }))), sName + `ports[1].port: invalid port 0: want 1-65535`},
		{"service dup port", update(services(mutS(func(s *meshv1.Service) { s.Ports = append(s.Ports, port(80, 1)) }))), sName + `ports[1].port: duplicate port 80`},
		{"service bad app protocol", update(services(mutS(func(s *meshv1.Service) { s.Ports[0].AppProtocol = 42 }))), sName + `ports[0].app_protocol: unknown value 42`},
		{"service bad san", update(services(mutS(func(s *meshv1.Service) { s.SubjectAltNames = []string{"spiffe://td/ns/a"} }))), sName + `subject_alt_names[0]: SPIFFE ID "spiffe://td/ns/a": want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`},
		{"service bad scope", update(services(mutS(func(s *meshv1.Service) {
			s.LoadBalancing = &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_ZONE, 9}}
		}))), sName + `load_balancing.routing_preference[1]: unknown scope 9`},
		{"service dup scope", update(services(mutS(func(s *meshv1.Service) {
			s.LoadBalancing = &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_ZONE}}
		}))), sName + `load_balancing.routing_preference[1]: duplicate scope ZONE`},
		{"service bad mode", update(services(mutS(func(s *meshv1.Service) { s.LoadBalancing = &meshv1.LoadBalancing{Mode: 5} }))), sName + `load_balancing.mode: unknown value 5`},
		{"service dup vip", update(services(svc("ns", "t", []string{"10.96.0.9"}), mutS(func(*meshv1.Service) {}))), sName + `addresses[0]: address 10.96.0.9 is also a VIP of service "ns/t.ns.svc.cluster.local"`},

		{"authz bad cidr", update(authorizations(&meshv1.Authorization{Name: "p", Namespace: "ns", Rules: []*meshv1.Rule{{From: []*meshv1.Source{{IpBlocks: []string{"1.2.3.4/40"}}}}}})),
			`Authorization "ns/p": rules[0].from[0].ip_blocks[0]: invalid IP address or CIDR "1.2.3.4/40"`},
		{"authz bad action", update(authorizations(&meshv1.Authorization{Name: "p", Namespace: "ns", Action: 5})), `Authorization "ns/p": action: unknown value 5`},
		{"authz name mismatch", update(xds.TypeUpdate{TypeURL: meshv1.TypeAuthorization, Upserts: []xds.Resource{{Name: "ns/q", Message: &meshv1.Authorization{Name: "p", Namespace: "ns"}}}}),
			`Authorization "ns/q": resource name must be <namespace>/<name> = "ns/p"`},

		{"peerauth bad mode", update(peerAuths(&meshv1.PeerAuthentication{Name: "p", Namespace: "ns", Mode: 8})), `PeerAuthentication "ns/p": mode: unknown value 8`},
		{"peerauth bad scope", update(peerAuths(&meshv1.PeerAuthentication{Name: "p", Namespace: "ns", Scope: 8})), `PeerAuthentication "ns/p": scope: unknown value 8`},
		{"peerauth bad port", update(peerAuths(&meshv1.PeerAuthentication{Name: "p", Namespace: "ns", PortModes: map[uint32]meshv1.PeerAuthentication_Mode{70000: 1}})), `PeerAuthentication "ns/p": port_modes[70000]: invalid port 70000: want 1-65535`},
		{"peerauth bad port mode", update(peerAuths(&meshv1.PeerAuthentication{Name: "p", Namespace: "ns", PortModes: map[uint32]meshv1.PeerAuthentication_Mode{80: 9}})), `PeerAuthentication "ns/p": port_modes[80]: unknown mode 9`},
		{"peerauth empty uid", update(peerAuths(&meshv1.PeerAuthentication{Name: "p", Namespace: "ns", Workloads: []string{""}})), `PeerAuthentication "ns/p": workloads[0]: empty uid`},
		{"nil update", nil, "nil update"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(Options{})
			base := svc("ns", "base", []string{"10.96.0.1"}, port(80, 80))
			mustApply(t, s, services(base), workloads(wl("ns", "base", "10.0.0.100")))
			before := s.View()
			var err error
			if tt.u == nil {
				err = s.Apply(nil)
			} else {
				err = s.Apply(tt.u)
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("Apply error = %v\nwant %s", err, tt.want)
			}
			if s.View() != before {
				t.Error("a rejected update changed the view")
			}
		})
	}
}

// TestApplyAllOrNothing: a cross-resource conflict found while building the
// new view leaves nothing applied, including the valid changes of other types.
func TestApplyAllOrNothing(t *testing.T) {
	s := NewStore(Options{})
	mustApply(t, s, workloads(wl("ns", "a", "10.0.0.1")))
	before := s.View()
	err := s.Apply(update(
		authorizations(&meshv1.Authorization{Name: "p", Namespace: "ns"}),
		services(svc("ns", "s", []string{"10.96.0.1"})),
		workloads(wl("ns", "b", "10.0.0.2"), wl("ns", "c", "10.0.0.1")),
	))
	if err == nil || !strings.Contains(err.Error(), "is also the address of workload") {
		t.Fatalf("err = %v", err)
	}
	if s.View() != before || s.ServiceByKey(svcKey("ns", "s")) != nil || s.WorkloadByUID(uidOf("ns", "b")) != nil || s.View().Policy("ns/p") != nil {
		t.Error("partial apply")
	}
}

func TestPoliciesFor(t *testing.T) {
	s := NewStore(Options{})
	w := wl("app", "w", "10.0.0.1")
	w.AuthorizationPolicies = []string{"app/sel"}
	mustApply(t, s,
		workloads(w),
		authorizations(
			&meshv1.Authorization{Name: "g2", Namespace: "istio-system", Scope: meshv1.Authorization_GLOBAL},
			&meshv1.Authorization{Name: "g1", Namespace: "istio-system", Scope: meshv1.Authorization_GLOBAL},
			&meshv1.Authorization{Name: "ns", Namespace: "app", Scope: meshv1.Authorization_NAMESPACE},
			&meshv1.Authorization{Name: "other", Namespace: "other", Scope: meshv1.Authorization_NAMESPACE},
			&meshv1.Authorization{Name: "sel", Namespace: "app", Scope: meshv1.Authorization_WORKLOAD_SELECTOR},
		))
	ps := s.Policies(w)
	keys := func(l []*authz.Policy) []string {
		var out []string
		for _, p := range l {
			out = append(out, p.Key)
		}
		return out
	}
	if got := keys(ps.Global); !slices.Equal(got, []string{"istio-system/g1", "istio-system/g2"}) {
		t.Errorf("Global = %v", got)
	}
	if got := keys(ps.Namespace); !slices.Equal(got, []string{"app/ns"}) {
		t.Errorf("Namespace = %v", got)
	}
	if !slices.Equal(ps.Selected, []string{"app/sel"}) || ps.Resolver.Policy("app/sel") == nil {
		t.Errorf("Selected = %v", ps.Selected)
	}
	mustApply(t, s, removes(meshv1.TypeAuthorization, "istio-system/g1", "app/ns"))
	ps = s.Policies(w)
	if got := keys(ps.Global); !slices.Equal(got, []string{"istio-system/g2"}) || len(ps.Namespace) != 0 {
		t.Errorf("after removal: %v %v", got, keys(ps.Namespace))
	}
}
