package lb

import (
	"maps"
	"slices"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

type (
	scope = meshv1.LoadBalancing_Scope
	mode  = meshv1.LoadBalancing_Mode
)

const (
	REGION   = meshv1.LoadBalancing_REGION
	ZONE     = meshv1.LoadBalancing_ZONE
	SUBZONE  = meshv1.LoadBalancing_SUBZONE
	NODE     = meshv1.LoadBalancing_NODE
	CLUSTER  = meshv1.LoadBalancing_CLUSTER
	STRICT   = meshv1.LoadBalancing_STRICT
	FAILOVER = meshv1.LoadBalancing_FAILOVER
	NOMODE   = meshv1.LoadBalancing_MODE_UNSPECIFIED
)

func wl(ns, name, addr string) *meshv1.Workload {
	return &meshv1.Workload{Uid: "local/Pod/" + ns + "/" + name, Name: name, Namespace: ns, Addresses: []string{addr}}
}

func port(p, target uint32) *meshv1.ServicePort {
	return &meshv1.ServicePort{Port: p, TargetPort: target}
}

func ep(name, region, zone, subzone, node, cluster string, ports ...uint32) *Endpoint {
	w := wl("ns", name, "10.0.0.1")
	w.Locality = &meshv1.Locality{Region: region, Zone: zone, Subzone: subzone}
	w.Node = node
	w.ClusterId = cluster
	e := &Endpoint{Workload: w, Locality: w.Locality}
	for i := 0; i+1 < len(ports); i += 2 {
		e.Ports = append(e.Ports, &meshv1.Port{ServicePort: ports[i], TargetPort: ports[i+1]})
	}
	return e
}

// candidates returns the sorted names of the endpoints the chooser picks
// over many random draws (with 6 candidates, missing one in 600 draws has a
// probability of about 1e-47).
func candidates(t *testing.T, c LocalityChooser, r Request) []string {
	t.Helper()
	seen := map[string]bool{}
	for range 600 {
		i := c.Choose(r)
		if i < 0 {
			if len(seen) > 0 {
				t.Fatal("chooser found an endpoint, then none")
			}
			return nil
		}
		seen[r.Endpoints[i].Workload.GetName()] = true
	}
	out := slices.Collect(maps.Keys(seen))
	slices.Sort(out)
	return out
}

type ejectSet map[string]bool

func (s ejectSet) Ejected(e *Endpoint) bool { return s[e.Workload.GetName()] }

type scoreMap map[string]float64

func (s scoreMap) Score(e *Endpoint) float64 { return s[e.Workload.GetName()] }

func TestLocalityChooser(t *testing.T) {
	src := wl("ns", "src", "10.9.9.9")
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1", Subzone: "s1"}
	src.Node, src.ClusterId = "n1", "c1"
	all := []*Endpoint{
		ep("same-node", "r1", "z1", "s1", "n1", "c1", 80, 8080),
		ep("same-subzone", "r1", "z1", "s1", "n2", "c1", 80, 8080),
		ep("same-zone", "r1", "z1", "s2", "n3", "c1", 80, 8080),
		ep("same-region", "r1", "z2", "s1", "n4", "c1", 80, 8080),
		ep("other-region-z1", "r2", "z1", "s1", "n5", "c2", 80, 8080),
		ep("same-region-2", "r1", "z3", "", "n6", "c1", 80, 8080),
	}
	without := func(names ...string) []*Endpoint {
		var out []*Endpoint
		for _, e := range all {
			if !slices.Contains(names, e.Workload.GetName()) {
				out = append(out, e)
			}
		}
		return out
	}
	only := func(names ...string) []*Endpoint {
		var out []*Endpoint
		for _, e := range all {
			if slices.Contains(names, e.Workload.GetName()) {
				out = append(out, e)
			}
		}
		return out
	}
	rzsn := []scope{REGION, ZONE, SUBZONE, NODE}
	lb := func(m mode, s ...scope) *meshv1.Service {
		return &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{RoutingPreference: s, Mode: m}}
	}
	p80 := port(80, 0)
	names := func(eps []*Endpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.Workload.GetName())
		}
		return out
	}
	tests := []struct {
		name    string
		c       LocalityChooser
		svc     *meshv1.Service
		port    *meshv1.ServicePort
		eps     []*Endpoint
		src     *meshv1.Workload
		want    []string
		wantNil bool
	}{
		{name: "no load balancing: all", svc: &meshv1.Service{}, eps: all, src: src, want: names(all)},
		{name: "scopes without mode: all", svc: lb(NOMODE, rzsn...), eps: all, src: src, want: names(all)},
		{name: "strict node", svc: lb(STRICT, rzsn...), eps: all, src: src, want: []string{"same-node"}},
		{name: "strict zone", svc: lb(STRICT, REGION, ZONE), eps: all, src: src, want: []string{"same-node", "same-subzone", "same-zone"}},
		{name: "strict region", svc: lb(STRICT, REGION), eps: all, src: src, want: []string{"same-node", "same-subzone", "same-zone", "same-region", "same-region-2"}},
		{name: "strict nothing local", svc: lb(STRICT, rzsn...), eps: without("same-node"), src: src, wantNil: true},
		{name: "strict without scopes: all", svc: lb(STRICT), eps: all, src: src, want: names(all)},
		{name: "failover best tier", svc: lb(FAILOVER, rzsn...), eps: all, src: src, want: []string{"same-node"}},
		{name: "failover to subzone", svc: lb(FAILOVER, rzsn...), eps: without("same-node"), src: src, want: []string{"same-subzone"}},
		{name: "failover to zone", svc: lb(FAILOVER, rzsn...), eps: without("same-node", "same-subzone"), src: src, want: []string{"same-zone"}},
		{name: "failover to region", svc: lb(FAILOVER, rzsn...), eps: only("same-region", "other-region-z1", "same-region-2"), src: src, want: []string{"same-region", "same-region-2"}},
		{name: "failover to anything", svc: lb(FAILOVER, rzsn...), eps: only("other-region-z1"), src: src, want: []string{"other-region-z1"}},
		{name: "failover none", svc: lb(FAILOVER, rzsn...), eps: nil, src: src, wantNil: true},
		{name: "zone only compares zone names", svc: lb(STRICT, ZONE), eps: all, src: src, want: []string{"same-node", "same-subzone", "same-zone", "other-region-z1"}},
		{name: "earlier scope must match", svc: lb(STRICT, REGION, ZONE, SUBZONE), eps: only("same-region", "other-region-z1", "same-zone"), src: src, wantNil: true},
		{name: "subzone after mismatching zone", svc: lb(FAILOVER, REGION, ZONE, SUBZONE), eps: only("same-region", "same-region-2"), src: src, want: []string{"same-region", "same-region-2"}},
		{name: "node only", svc: lb(STRICT, NODE), eps: all, src: src, want: []string{"same-node"}},
		{name: "cluster", svc: lb(FAILOVER, CLUSTER), eps: all, src: src, want: []string{"same-node", "same-subzone", "same-zone", "same-region", "same-region-2"}},
		{name: "unknown source failover: all", svc: lb(FAILOVER, rzsn...), eps: all, src: nil, want: names(all)},
		{name: "unknown source strict: none", svc: lb(STRICT, REGION), eps: all, src: nil, wantNil: true},
		{name: "port filter", svc: lb(FAILOVER, rzsn...), port: p80, eps: append([]*Endpoint{ep("no-port", "r1", "z1", "s1", "n1", "c1")}, all[1:]...), src: src, want: []string{"same-subzone"}},
		{name: "port from service target", svc: &meshv1.Service{}, port: port(90, 9090), eps: all[:2], src: src, want: []string{"same-node", "same-subzone"}},
		{name: "port nowhere", svc: &meshv1.Service{}, port: port(90, 0), eps: all, src: src, wantNil: true},
		{name: "ejected skip to next tier", c: LocalityChooser{Ejector: ejectSet{"same-node": true}}, svc: lb(FAILOVER, rzsn...), eps: all, src: src, want: []string{"same-subzone"}},
		{name: "all ejected: panic", c: LocalityChooser{Ejector: ejectSet{"same-node": true, "same-subzone": true}}, svc: lb(STRICT, rzsn...), eps: all[:2], src: src, want: []string{"same-node"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := slices.Clone(tt.eps)
			slices.SortFunc(eps, CompareEndpoints)
			r := Request{Service: tt.svc, Port: tt.port, Endpoints: eps, Source: tt.src}
			got := candidates(t, tt.c, r)
			if tt.wantNil {
				if got != nil {
					t.Errorf("got %v, want no endpoint", got)
				}
				c := tt.c
				if c.Choose(r) != -1 {
					t.Error("Choose != -1")
				}
				return
			}
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("candidates = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPowerOfTwoChoices(t *testing.T) {
	eps := []*Endpoint{ep("a", "", "", "", "", ""), ep("b", "", "", "", "", ""), ep("c", "", "", "", "", "")}
	scores := scoreMap{"a": 3, "b": 1, "c": 2}
	draws := []int{}
	c := LocalityChooser{Scorer: scores, IntN: func(n int) int {
		v := draws[0]
		draws = draws[1:]
		return v
	}}
	r := Request{Service: &meshv1.Service{}, Endpoints: eps}
	for _, tt := range []struct {
		k1, k2 int
		want   string
	}{
		{0, 0, "b"}, // a vs b (k2 0 → index 1, skipping k1)
		{0, 1, "c"}, // a vs c
		{1, 0, "b"}, // b vs a
		{1, 1, "b"}, // b vs c
		{2, 1, "b"}, // c vs b
		{2, 0, "c"}, // c vs a
	} {
		draws = []int{tt.k1, tt.k2}
		if got := eps[c.Choose(r)].Workload.GetName(); got != tt.want {
			t.Errorf("draws %d,%d: got %s, want %s", tt.k1, tt.k2, got, tt.want)
		}
	}
	// One candidate: no second draw.
	draws = []int{0}
	r.Endpoints = eps[:1]
	if c.Choose(r) != 0 {
		t.Error("single endpoint")
	}
}

// TestChooserRandom: the default draws from math/rand and spreads evenly.
func TestChooserRandom(t *testing.T) {
	eps := []*Endpoint{ep("a", "", "", "", "", ""), ep("b", "", "", "", "", ""), ep("c", "", "", "", "", "")}
	var c LocalityChooser
	counts := make([]int, 3)
	for range 3000 {
		counts[c.Choose(Request{Service: &meshv1.Service{}, Endpoints: eps})]++
	}
	for i, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("endpoint %d chosen %d/3000 times", i, n)
		}
	}
}
