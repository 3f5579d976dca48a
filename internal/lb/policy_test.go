package lb

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

type (
	localityLb = meshv1.LoadBalancerPolicy_LocalityLb
	distribute = meshv1.LoadBalancerPolicy_LocalityLb_Distribute
	failover   = meshv1.LoadBalancerPolicy_LocalityLb_Failover
)

func mustCompile(t *testing.T, l *localityLb) *LocalityPolicy {
	t.Helper()
	p, err := CompileLocality(l)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompileLocality(t *testing.T) {
	tests := []struct {
		name string
		in   *localityLb
		err  string // "" for success; "nil" when nothing is compiled
	}{
		{"enabled only: nothing to apply", &localityLb{Enabled: true}, "nil"},
		{"disabled: nothing applies", &localityLb{Failover: []*failover{{From: "r1", To: "r2"}}}, "nil"},
		{"distribute", &localityLb{Enabled: true, Distribute: []*distribute{{From: "r1/z1/*", To: map[string]uint32{"r1/z1/*": 80, "r1/*": 20}}}}, ""},
		{"weights not 100", &localityLb{Enabled: true, Distribute: []*distribute{{From: "*", To: map[string]uint32{"r1/*": 80}}}}, "add up to 80"},
		{"too deep", &localityLb{Enabled: true, Distribute: []*distribute{{From: "a/b/c/d", To: map[string]uint32{"*": 100}}}}, "distribute[0].from"},
		{"empty field", &localityLb{Enabled: true, Distribute: []*distribute{{From: "*", To: map[string]uint32{"r1//z": 100}}}}, "empty field"},
		{"distribute wins over failover", &localityLb{Enabled: true, Distribute: []*distribute{{From: "*", To: map[string]uint32{"*": 100}}}, Failover: []*failover{{From: "r1", To: "r2/x"}}}, ""},
		{"failover with zones", &localityLb{Enabled: true, Failover: []*failover{{From: "r1/z1", To: "r2"}}}, "region names"},
		{"failoverPriority without a name", &localityLb{Enabled: true, FailoverPriority: []string{"=x"}}, "no label name"},
		{"failoverPriority", &localityLb{Enabled: true, FailoverPriority: []string{"topology.istio.io/network", "app=x"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompileLocality(tt.in)
			switch {
			case tt.err == "nil":
				if p != nil || err != nil {
					t.Fatalf("got %v, %v; want nothing", p, err)
				}
			case tt.err == "":
				if p == nil || err != nil {
					t.Fatalf("got %v, %v", p, err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.err):
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

// shares draws n choices and returns the fraction per zone.
func shares(t *testing.T, c LocalityChooser, r Request, n int) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for range n {
		i := c.Choose(r)
		if i < 0 {
			t.Fatal("no endpoint chosen")
		}
		out[r.Endpoints[i].Locality.GetZone()] += 1 / float64(n)
	}
	return out
}

func seeded() LocalityChooser {
	return LocalityChooser{IntN: rand.New(rand.NewPCG(1, 2)).IntN}
}

func TestDistribute(t *testing.T) {
	caller := func(region, zone string) *meshv1.Workload {
		w := wl("ns", "caller", "10.9.9.9")
		w.Locality = &meshv1.Locality{Region: region, Zone: zone}
		return w
	}
	all := sorted(
		ep("a1", "r1", "z1", "", "n1", ""), ep("a2", "r1", "z1", "", "n1", ""),
		ep("b1", "r1", "z2", "", "n2", ""),
		ep("c1", "r1", "z3", "", "n3", ""), ep("c2", "r1", "z3", "", "n3", ""), ep("c3", "r1", "z3", "", "n3", ""),
		ep("d1", "r2", "z4", "", "n4", ""),
	)
	policy := mustCompile(t, &localityLb{Enabled: true, Distribute: []*distribute{
		// First match wins: z1's callers keep 80 % at home.
		{From: "r1/z1/*", To: map[string]uint32{"r1/z1/*": 80, "r1/z2/*": 20}},
		{From: "r1/*", To: map[string]uint32{"r1/z3": 50, "r1/*": 25, "r2": 25}},
	}})
	closeLB := &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{REGION, ZONE}, Mode: FAILOVER}
	tests := []struct {
		name    string
		src     *meshv1.Workload
		prepare func(*Health, *clock)
		want    map[string]float64
	}{
		{"first rule, exact weights", caller("r1", "z1"), nil, map[string]float64{"z1": 0.8, "z2": 0.2}},
		// r1/z3 takes 50 %; r1/* the rest of r1 (z1, z2: 25 % split by
		// endpoints, 2:1); r2 25 %.
		{"wildcards, most specific first", caller("r1", "z2"), nil, map[string]float64{"z3": 0.5, "z1": 0.25 * 2 / 3, "z2": 0.25 / 3, "z4": 0.25}},
		{"ejected locality's share goes to the others", caller("r1", "z1"), func(h *Health, _ *clock) {
			for _, e := range all[:2] { // a1, a2
				for range 5 {
					h.Observe(e, 0, false, 0)
				}
			}
		}, map[string]float64{"z2": 1}},
		{"an endpoint ejected: its locality keeps its share through the others", caller("r1", "z2"), func(h *Health, _ *clock) {
			for range 5 {
				h.Observe(all[2], 0, false, 0) // b1, z2's only endpoint; r1/* still has z1's
			}
		}, map[string]float64{"z3": 0.5, "z1": 0.25, "z4": 0.25}},
		{"degraded locality's share goes to the others", caller("r1", "z2"), func(h *Health, c *clock) { slowZone(h, c, all, "z3") }, map[string]float64{"z1": 0.25 / 0.5 * 2 / 3, "z2": 0.25 / 0.5 / 3, "z4": 0.25 / 0.5}},
		{"no rule for the caller: every endpoint alike", caller("r2", "z4"), nil, map[string]float64{"z1": 2. / 7, "z2": 1. / 7, "z3": 3. / 7, "z4": 1. / 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := steadyHealth(tt.prepare)
			r := Request{Service: &meshv1.Service{}, LoadBalancing: closeLB, Locality: policy, Endpoints: all, Source: tt.src, Health: h}
			got := shares(t, seeded(), r, 20000)
			for z, w := range tt.want {
				if math.Abs(got[z]-w) > 0.02 {
					t.Errorf("zone %s: share %.3f, want %.3f (all: %v)", z, got[z], w, got)
				}
			}
			for z, g := range got {
				if _, ok := tt.want[z]; !ok {
					t.Errorf("zone %s got %.3f, want none", z, g)
				}
			}
		})
	}
}

// TestDistributeProbes: probes keep degraded weighted zones measured but
// never reach a zone the caller's rule gives no weight.
func TestDistributeProbes(t *testing.T) {
	src := wl("ns", "src", "10.9.9.9")
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1"}
	all := sorted(zoned("a", "z1"), zoned("b", "z2"), zoned("c", "z3"))
	policy := mustCompile(t, &localityLb{Enabled: true, Distribute: []*distribute{{From: "*", To: map[string]uint32{"r1/z1": 90, "r1/z2": 10}}}})
	c := newClock()
	h := NewHealth(HealthConfig{Now: c.now, ProbeInterval: time.Second})
	r := Request{Service: &meshv1.Service{}, Locality: policy, Endpoints: all, Source: src, Health: h}
	for range 1000 {
		c.advance(10 * time.Millisecond)
		var ch LocalityChooser
		e := all[ch.Choose(r)]
		if e.Locality.GetZone() == "z3" {
			t.Fatal("a request (probe) went to z3, which the rule gives no weight")
		}
		h.Observe(e, ms(1), true, 0)
	}
}

func TestFailoverAndPriority(t *testing.T) {
	labelled := func(e *Endpoint, kv ...string) *Endpoint {
		e.Workload.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Workload.Labels[kv[i]] = kv[i+1]
		}
		return e
	}
	// Istio's failover task: the caller in r1/z1.
	src := labelled(ep("src", "r1", "z1", "s1", "n0", ""), "topology.istio.io/network", "net1", "tier", "gold").Workload
	a := labelled(ep("a", "r1", "z1", "s1", "n1", ""), "topology.istio.io/network", "net1", "tier", "gold")
	b := labelled(ep("b", "r1", "z1", "s2", "n1", ""), "topology.istio.io/network", "net1", "tier", "silver")
	c := labelled(ep("c", "r1", "z2", "", "n2", ""), "topology.istio.io/network", "net1", "tier", "gold")
	d := labelled(ep("d", "r2", "z3", "", "n3", ""), "topology.istio.io/network", "net2", "tier", "gold")
	e := labelled(ep("e", "r3", "z4", "", "n4", ""), "topology.istio.io/network", "net1", "tier", "gold")
	all := sorted(a, b, c, d, e)
	byName := map[string]*Endpoint{"a": a, "b": b, "c": c, "d": d, "e": e}

	fo := &localityLb{Enabled: true, Failover: []*failover{{From: "r2", To: "r1"}, {From: "r1", To: "r3"}}}
	foUnnamed := &localityLb{Enabled: true, Failover: []*failover{{From: "r2", To: "r1"}}}
	net := &localityLb{Enabled: true, FailoverPriority: []string{"topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"}}
	pod := &localityLb{Enabled: true, FailoverPriority: []string{"tier"}}
	fixed := &localityLb{Enabled: true, FailoverPriority: []string{"tier=silver"}}
	both := &localityLb{Enabled: true, FailoverPriority: []string{"topology.istio.io/network"}, Failover: []*failover{{From: "r1", To: "r2"}}}

	tests := []struct {
		name     string
		policy   *localityLb
		ejected  []string
		degraded string // zone made slow before choosing
		want     []string
	}{
		{"failover: same subzone first", fo, nil, "", []string{"a"}},
		{"failover: then the zone", fo, []string{"a"}, "", []string{"b"}},
		{"failover: then the region", fo, []string{"a", "b"}, "", []string{"c"}},
		{"failover: then the named region, not r2", fo, []string{"a", "b", "c"}, "", []string{"e"}},
		{"failover: then any", fo, []string{"a", "b", "c", "e"}, "", []string{"d"}},
		{"no failover rule for r1: other regions alike", foUnnamed, []string{"a", "b", "c"}, "", []string{"d", "e"}},
		{"failover: degraded zone avoided", fo, nil, "z1", []string{"c"}},
		{"priority: all three labels", net, nil, "", []string{"a", "b"}},
		{"priority: network and region", net, []string{"a", "b"}, "", []string{"c"}},
		// e shares the network (1 label), d nothing: e first.
		{"priority: network only beats nothing", net, []string{"a", "b", "c"}, "", []string{"e"}},
		{"priority: degraded zone avoided", net, nil, "z1", []string{"c"}},
		{"priority: a pod label", pod, nil, "", []string{"a", "c", "d", "e"}},
		{"priority: a pod label, best tier gone", pod, []string{"a", "c", "d", "e"}, "", []string{"b"}},
		{"priority: label=value overrides the caller's", fixed, nil, "", []string{"b"}},
		{"priority and failover: network tier, then locality", both, []string{"a", "b", "c"}, "", []string{"e"}},
		{"priority and failover: other network, failover region first", both, []string{"a", "b", "c", "e"}, "", []string{"d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := steadyHealth(func(h *Health, c *clock) {
				if tt.degraded != "" {
					slowZone(h, c, all, tt.degraded)
				}
				for _, n := range tt.ejected {
					for range 5 {
						h.Observe(byName[n], 0, false, 0)
					}
				}
			})
			r := Request{Service: &meshv1.Service{}, Locality: mustCompile(t, tt.policy), Endpoints: all, Source: src, Health: h}
			if got := candidates(t, LocalityChooser{}, r); !slices.Equal(got, tt.want) {
				t.Errorf("candidates = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLocalityPolicyNoAlloc: the policy paths allocate nothing.
func TestLocalityPolicyNoAlloc(t *testing.T) {
	src := wl("ns", "src", "10.9.9.9")
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1"}
	all := sorted(zoned("a", "z1"), zoned("b", "z2"), zoned("c", "z3"))
	h := NewHealth(HealthConfig{})
	for _, l := range []*localityLb{
		{Enabled: true, Distribute: []*distribute{{From: "*", To: map[string]uint32{"r1/z1": 70, "r1/*": 30}}}},
		{Enabled: true, Failover: []*failover{{From: "r1", To: "r2"}}},
		{Enabled: true, FailoverPriority: []string{"topology.kubernetes.io/zone", "app"}},
	} {
		r := Request{Service: &meshv1.Service{}, Locality: mustCompile(t, l), Endpoints: all, Source: src, Health: h}
		c := LocalityChooser{Scorer: scoreMap{}}
		if n := testing.AllocsPerRun(100, func() { c.Choose(r) }); n != 0 {
			t.Errorf("%v: %v allocations per choice", l, n)
		}
	}
}
