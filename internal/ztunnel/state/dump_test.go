package state

import (
	"encoding/json"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

func TestDump(t *testing.T) {
	s := NewStore(Options{})
	key := svcKey("default", "echo")
	b := backs(wl("default", "echo-b", "10.0.0.2"), key, 80, 8080)
	a := backs(wl("default", "echo-a", "10.0.0.1"), key, 80, 8080)
	a.Waypoint = &meshv1.WaypointRef{Service: "default/wp.default.svc.cluster.local", HbonePort: 15008}
	a.AuthorizationPolicies = []string{"default/sel"}
	sv := svc("default", "echo", []string{"10.96.0.10"}, port(80, 8080))
	sv.LoadBalancing = &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE}, Mode: meshv1.LoadBalancing_FAILOVER}
	pol := &meshv1.Authorization{Name: "sel", Namespace: "default", Action: meshv1.Authorization_DENY, Rules: []*meshv1.Rule{{
		From: []*meshv1.Source{{Principals: []*meshv1.StringMatch{
			{Kind: &meshv1.StringMatch_Prefix{Prefix: "cluster.local/ns/x/"}},
			{Kind: &meshv1.StringMatch_Any{Any: true}},
		}, IpBlocks: []string{"10.0.0.0/8"}}},
		To:   []*meshv1.Operation{{Ports: []uint32{80}, Methods: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Exact{Exact: "GET"}}}}},
		When: []*meshv1.Condition{{Key: "source.namespace", NotValues: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Suffix{Suffix: "-prod"}}}}},
	}}}
	pa := selPA("default", "strict", MSTRICT, portModes{8080: PERMISSIVE}, a.Uid)
	mustApply(t, s) // an empty update is fine
	mustApply(t, s, workloads(b, a), services(sv), authorizations(pol), peerAuths(pa))

	d := s.Dump()
	if d.Counts != (Counts{Workloads: 2, Services: 1, Policies: 1, PeerAuthentications: 1}) {
		t.Errorf("Counts = %+v", d.Counts)
	}
	if d.Workloads[0].UID != a.Uid || d.Workloads[1].UID != b.Uid {
		t.Errorf("workloads not sorted: %s, %s", d.Workloads[0].UID, d.Workloads[1].UID)
	}
	if got := d.Workloads[0].Identity; got != "spiffe://cluster.local/ns/default/sa/sa-echo-a" {
		t.Errorf("identity %q", got)
	}
	if got := d.Services[0].Endpoints; len(got) != 2 || got[0] != a.Uid {
		t.Errorf("service endpoints %v", got)
	}
	out, err := json.MarshalIndent(d, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	js := string(out)
	for _, want := range []string{
		`"protocol": "HBONE"`, `"status": "HEALTHY"`, `"hbonePort": 15008`,
		`"routingPreference": [`, `"REGION"`, `"mode": "FAILOVER"`, `"appProtocol": "HTTP"`,
		`"action": "DENY"`, `"scope": "WORKLOAD_SELECTOR"`, `"cluster.local/ns/x/*"`, `"*"`, `"*-prod"`,
		`"unsupported": [`, `"rules[0].to[0].methods"`,
		`"mode": "STRICT"`, `"8080": "PERMISSIVE"`,
		`"servicePort": 80`, `"targetPort": 8080`,
	} {
		if !strings.Contains(js, want) {
			t.Errorf("dump lacks %s", want)
		}
	}
	// An empty store dumps empty lists, not nulls.
	empty, _ := json.Marshal(NewStore(Options{}).Dump())
	if strings.Contains(string(empty), "null") {
		t.Errorf("empty dump has nulls: %s", empty)
	}
}
