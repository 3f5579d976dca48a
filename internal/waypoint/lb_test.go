package waypoint

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

func endpoints(n int) []*state.Endpoint {
	out := make([]*state.Endpoint, n)
	for i := range out {
		out[i] = &state.Endpoint{Workload: &meshv1.Workload{Uid: fmt.Sprintf("w%d", i)}}
	}
	return out
}

func policy(t *testing.T, tp *meshv1.TrafficPolicy) *trafficPolicy {
	t.Helper()
	p, err := compileTrafficPolicy("traffic_policy", tp)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPick(t *testing.T) {
	eps := endpoints(4)
	for _, c := range []struct {
		name string
		lb   *meshv1.LoadBalancerPolicy
		// check gets the counts per endpoint after 4000 picks.
		check func(t *testing.T, counts map[string]int)
	}{
		{"round robin is exact", &meshv1.LoadBalancerPolicy{Simple: meshv1.LoadBalancerPolicy_ROUND_ROBIN}, func(t *testing.T, counts map[string]int) {
			for _, e := range eps {
				if counts[e.Workload.Uid] != 1000 {
					t.Errorf("%v", counts)
				}
			}
		}},
		{"random spreads", &meshv1.LoadBalancerPolicy{Simple: meshv1.LoadBalancerPolicy_RANDOM}, func(t *testing.T, counts map[string]int) {
			for _, e := range eps {
				if c := counts[e.Workload.Uid]; c < 800 || c > 1200 {
					t.Errorf("%v", counts)
				}
			}
		}},
		{"consistent hash sticks", &meshv1.LoadBalancerPolicy{HashHeader: "x-user"}, func(t *testing.T, counts map[string]int) {
			if len(counts) != 1 {
				t.Errorf("one key went to %d endpoints: %v", len(counts), counts)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cs clusters
			cl := cs.get("svc", policy(t, &meshv1.TrafficPolicy{LoadBalancer: c.lb}), nil)
			counts := map[string]int{}
			for range 4000 {
				counts[cl.pick(eps, nil, hashString("user-1"), true, nil).Workload.Uid]++
			}
			c.check(t, counts)
		})
	}
}

func TestPickLeastRequestAvoidsBusy(t *testing.T) {
	eps := endpoints(2)
	var cs clusters
	cl := cs.get("svc", defaultTrafficPolicy, nil)
	cl.statsOf("w0").active.Store(100)
	counts := map[string]int{}
	for range 1000 {
		counts[cl.pick(eps, nil, 0, false, nil).Workload.Uid]++
	}
	// Two random choices: the busy one wins only when drawn twice (1/4).
	if counts["w0"] > 320 {
		t.Errorf("busy endpoint chosen %d of 1000 times", counts["w0"])
	}
}

func TestHashMovesFewKeys(t *testing.T) {
	eps := endpoints(10)
	var cs clusters
	cl := cs.get("svc", policy(t, &meshv1.TrafficPolicy{LoadBalancer: &meshv1.LoadBalancerPolicy{HashCookie: "session"}}), nil)
	before := map[int]string{}
	for k := range 1000 {
		before[k] = cl.pick(eps, nil, hashString(fmt.Sprint(k)), true, nil).Workload.Uid
	}
	moved := 0
	for k := range 1000 {
		if cl.pick(eps[:9], nil, hashString(fmt.Sprint(k)), true, nil).Workload.Uid != before[k] {
			moved++
		}
	}
	// Only the keys of the removed endpoint (about a tenth) move.
	if moved > 150 {
		t.Errorf("%d of 1000 keys moved when one of 10 endpoints left", moved)
	}
}

func TestOutlierDetection(t *testing.T) {
	eps := endpoints(2)
	now := time.Unix(1000, 0)
	cs := clusters{now: func() time.Time { return now }}
	cl := cs.get("svc", policy(t, &meshv1.TrafficPolicy{OutlierDetection: &meshv1.OutlierDetection{Consecutive_5XxErrors: 3, BaseEjectionTimeMs: 60_000, MaxEjectionPercent: 50}}), nil)
	for i := range 3 {
		if cl.health.Ejected(eps[0]) {
			t.Fatalf("ejected after %d errors", i)
		}
		cl.observe(eps, eps[0], 503, time.Millisecond)
	}
	if !cl.health.Ejected(eps[0]) {
		t.Fatal("not ejected after 3 consecutive 5xx")
	}
	for range 100 {
		if e := cl.pick(eps, nil, 0, false, nil); e == eps[0] {
			t.Fatal("ejected endpoint picked")
		}
	}
	// max_ejection_percent 50 of 2: the second one stays.
	for range 5 {
		cl.observe(eps, eps[1], 500, time.Millisecond)
	}
	if cl.health.Ejected(eps[1]) {
		t.Error("ejected beyond max_ejection_percent")
	}
	// Every endpoint excluded: the waypoint still tries one (panic mode).
	if cl.pick(eps[:1], nil, 0, false, nil) != eps[0] {
		t.Error("no endpoint when all are ejected")
	}
	// base_ejection_time: back after 60 s.
	now = now.Add(time.Minute)
	if cl.health.Ejected(eps[0]) {
		t.Error("still ejected after base_ejection_time")
	}
	// Only gateway errors count when only consecutiveGatewayErrors is set.
	gw := cs.get("gw", policy(t, &meshv1.TrafficPolicy{OutlierDetection: &meshv1.OutlierDetection{ConsecutiveGatewayErrors: 2, MaxEjectionPercent: 100}}), nil)
	gw.observe(eps, eps[0], 500, 0)
	gw.observe(eps, eps[0], 500, 0)
	if gw.health.Ejected(eps[0]) {
		t.Error("500s ejected with only consecutiveGatewayErrors set")
	}
	gw.observe(eps, eps[0], 502, 0)
	gw.observe(eps, eps[0], 0, 0)
	if !gw.health.Ejected(eps[0]) {
		t.Error("two gateway errors did not eject")
	}
}

func TestConnectionPoolLimits(t *testing.T) {
	var cs clusters
	cl := cs.get("svc", policy(t, &meshv1.TrafficPolicy{ConnectionPool: &meshv1.ConnectionPool{MaxConnections: 1, MaxPendingRequests: 1}}), nil)
	if err := cl.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cl.acquire(context.Background()) }()
	// The second waits (pending); a third overflows at once.
	deadline := time.Now().Add(10 * time.Second)
	for cl.pending.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("second request is not pending")
		}
		time.Sleep(time.Millisecond)
	}
	if err := cl.acquire(context.Background()); !errors.Is(err, errOverflow) {
		t.Fatalf("third request: %v, want overflow", err)
	}
	cl.release()
	if err := <-waited; err != nil {
		t.Fatalf("pending request: %v", err)
	}
	cl.release()

	cl = cs.get("svc2", policy(t, &meshv1.TrafficPolicy{ConnectionPool: &meshv1.ConnectionPool{MaxRequests: 2}}), nil)
	cl.acquire(context.Background())
	cl.acquire(context.Background())
	if err := cl.acquire(context.Background()); !errors.Is(err, errOverflow) {
		t.Fatalf("max_requests: %v", err)
	}
}

func TestSubsetEndpoints(t *testing.T) {
	eps := endpoints(3)
	var cs clusters
	cl := cs.get("svc|v2", defaultTrafficPolicy, &subsetPolicy{name: "v2", workloads: map[string]bool{"w1": true, "w2": true}, tp: defaultTrafficPolicy})
	got := cl.endpoints(eps)
	if len(got) != 2 || got[0] != eps[1] || got[1] != eps[2] {
		t.Fatalf("subset endpoints %v", got)
	}
	if again := cl.endpoints(eps); &again[0] != &got[0] {
		t.Error("the filtered list is not cached")
	}
	if got := cl.endpoints(eps[:2]); len(got) != 1 {
		t.Errorf("after the list changed: %d endpoints", len(got))
	}
	// A new list of the same length and first endpoint (another zone's
	// pods replaced) is a new list.
	all := cs.get("svc", defaultTrafficPolicy, nil)
	all.endpoints(eps)
	replaced := append([]*state.Endpoint{}, eps...)
	replaced[2] = &state.Endpoint{Workload: &meshv1.Workload{Uid: "w2-new"}}
	if got := all.endpoints(replaced); got[2].Workload.Uid != "w2-new" {
		t.Errorf("replaced endpoint not seen: %s", got[2].Workload.Uid)
	}
}

// The default balancer honours the destination Service's locality
// preference (trafficDistribution) relative to the client, as the ztunnel does.
func TestPickPrefersClientZone(t *testing.T) {
	loc := func(zone string) *meshv1.Locality { return &meshv1.Locality{Region: "r", Zone: zone} }
	eps := []*state.Endpoint{
		{Workload: &meshv1.Workload{Uid: "a1"}, Locality: loc("zone-a")},
		{Workload: &meshv1.Workload{Uid: "a2"}, Locality: loc("zone-a")},
		{Workload: &meshv1.Workload{Uid: "b1"}, Locality: loc("zone-b")},
	}
	svc := &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{Mode: meshv1.LoadBalancing_FAILOVER,
		RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE}}}
	var cs clusters
	cl := cs.get("svc", defaultTrafficPolicy, nil)
	client := &meshv1.Workload{Locality: loc("zone-b")}
	for range 100 {
		if e := cl.pick(eps, &state.Request{Service: svc, Source: client}, 0, false, nil); e.Workload.Uid != "b1" {
			t.Fatalf("picked %s, want the client's zone", e.Workload.Uid)
		}
	}
	// Ejected: failover to the next tier.
	cl = cs.get("svc2", policy(t, &meshv1.TrafficPolicy{OutlierDetection: &meshv1.OutlierDetection{Consecutive_5XxErrors: 1, MaxEjectionPercent: 100}}), nil)
	cl.observe(eps, eps[2], 500, 0)
	if e := cl.pick(eps, &state.Request{Service: svc, Source: client}, 0, false, nil); e.Workload.Uid == "b1" {
		t.Fatal("the ejected endpoint was picked")
	}
	// A pinned zone wins over the client's.
	for range 20 {
		if e := cl.pick(eps, &state.Request{Service: svc, Source: client, Zone: "zone-a"}, 0, false, nil); e.Locality.GetZone() != "zone-a" {
			t.Fatalf("pinned zone-a, got %s", e.Workload.Uid)
		}
	}
	// A retry (exclude: the endpoint that failed) stays in the tier when it
	// can, fails over when it cannot, and never leaves a pinned zone.
	clientA := &meshv1.Workload{Locality: loc("zone-a")}
	for range 20 {
		if e := cl.pick(eps, &state.Request{Service: svc, Source: clientA}, 0, false, eps[:1]); e.Workload.Uid != "a2" {
			t.Fatalf("retry after a1 failed: %s, want a2", e.Workload.Uid)
		}
		if e := cs.get("svc", defaultTrafficPolicy, nil).pick(eps, &state.Request{Service: svc, Source: client}, 0, false, eps[2:3]); e.Locality.GetZone() != "zone-a" {
			t.Fatalf("retry after the only zone-b endpoint failed: %s, want zone-a", e.Workload.Uid)
		}
		if e := cs.get("svc", defaultTrafficPolicy, nil).pick(eps, &state.Request{Service: svc, Source: clientA, Zone: "zone-b"}, 0, false, eps[2:3]); e.Workload.Uid != "b1" {
			t.Fatalf("retry pinned to zone-b: %s, want b1 again", e.Workload.Uid)
		}
	}
	// Round robin keeps to the tier too; without locality it rotates over all.
	rr := cs.get("svc-rr", policy(t, &meshv1.TrafficPolicy{LoadBalancer: &meshv1.LoadBalancerPolicy{Simple: meshv1.LoadBalancerPolicy_ROUND_ROBIN}}), nil)
	for range 20 {
		if e := rr.pick(eps, &state.Request{Service: svc, Source: client}, 0, false, nil); e.Workload.Uid != "b1" {
			t.Fatalf("round robin with locality: picked %s, want the client's zone", e.Workload.Uid)
		}
	}
	rot := map[string]int{}
	for range 30 {
		rot[rr.pick(eps, &state.Request{Service: &meshv1.Service{}, Source: client}, 0, false, nil).Workload.Uid]++
	}
	if rot["a1"] != 10 || rot["a2"] != 10 || rot["b1"] != 10 {
		t.Errorf("round robin without locality: %v, want 10 each", rot)
	}
	// DestinationRule localityLbSetting enabled: false turns locality off.
	off := cs.get("svc3", policy(t, &meshv1.TrafficPolicy{LoadBalancer: &meshv1.LoadBalancerPolicy{Locality: &meshv1.LoadBalancerPolicy_LocalityLb{Enabled: false}}}), nil)
	seen := map[string]bool{}
	for range 200 {
		seen[off.pick(eps, &state.Request{Service: svc, Source: client}, 0, false, nil).Workload.Uid] = true
	}
	if len(seen) != 3 {
		t.Errorf("locality disabled by the DestinationRule: picked %v, want all three", seen)
	}
	// enabled: true prefers the client's zone for a Service stating nothing.
	on := cs.get("svc4", policy(t, &meshv1.TrafficPolicy{LoadBalancer: &meshv1.LoadBalancerPolicy{Locality: &meshv1.LoadBalancerPolicy_LocalityLb{Enabled: true}}}), nil)
	for range 100 {
		if e := on.pick(eps, &state.Request{Service: &meshv1.Service{}, Source: client}, 0, false, nil); e.Workload.Uid != "b1" {
			t.Fatalf("localityLbSetting enabled: picked %s, want the client's zone", e.Workload.Uid)
		}
	}
}
