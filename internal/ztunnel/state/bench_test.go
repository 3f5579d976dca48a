package state

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
)

// mesh is a synthetic mesh: n workloads in 100 namespaces, each backing one
// of n/100 services (100 endpoints each) across 3 zones, plus one big
// service backed by every 10th workload (n/10 endpoints).
type mesh struct {
	workloads []*meshv1.Workload
	services  []*meshv1.Service
	policies  []*meshv1.Authorization
}

func addrOf(i int) string { return fmt.Sprintf("10.%d.%d.%d", 1+i>>16, (i>>8)&255, i&255) }

func vipOf(i int) string { return fmt.Sprintf("10.96.%d.%d", i>>8, i&255) }

func bigKey() string { return svcKey("ns0", "big") }

func newMesh(n int) *mesh {
	m := &mesh{}
	nsvc := max(n/100, 1)
	for i := 0; i < nsvc; i++ {
		ns := fmt.Sprintf("ns%d", i%100)
		s := svc(ns, fmt.Sprintf("svc%d", i), []string{vipOf(i)}, port(80, 8080))
		s.LoadBalancing = &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE}, Mode: meshv1.LoadBalancing_FAILOVER}
		m.services = append(m.services, s)
	}
	m.services = append(m.services, svc("ns0", "big", []string{"10.95.0.1"}, port(80, 8080)))
	for i := 0; i < n; i++ {
		si := i % nsvc
		s := m.services[si]
		w := wl(s.Namespace, fmt.Sprintf("pod%d", i), addrOf(i))
		w.Locality.Zone = fmt.Sprintf("z%d", i%3)
		w.Node = fmt.Sprintf("node%d", i%50)
		w.AuthorizationPolicies = []string{s.Namespace + "/sel"}
		backs(w, s.Namespace+"/"+s.Hostname, 80, 8080)
		if i%10 == 0 {
			backs(w, bigKey(), 80, 8080)
		}
		m.workloads = append(m.workloads, w)
	}
	for i := 0; i < 100; i++ {
		ns := fmt.Sprintf("ns%d", i)
		m.policies = append(m.policies,
			&meshv1.Authorization{Name: "allow-ns", Namespace: ns, Scope: meshv1.Authorization_NAMESPACE, Rules: []*meshv1.Rule{
				{From: []*meshv1.Source{{Namespaces: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Exact{Exact: ns}}}}}}}},
			&meshv1.Authorization{Name: "sel", Namespace: ns, Scope: meshv1.Authorization_WORKLOAD_SELECTOR, Action: meshv1.Authorization_DENY, Rules: []*meshv1.Rule{
				{To: []*meshv1.Operation{{Ports: []uint32{6060}}}}}})
	}
	return m
}

func (m *mesh) store(tb testing.TB) *Store {
	tb.Helper()
	s := NewStore(Options{})
	if err := s.Apply(update(services(m.services...), workloads(m.workloads...), authorizations(m.policies...))); err != nil {
		tb.Fatal(err)
	}
	return s
}

// variant returns a copy of w with another address (10.<200+slot>.x.y,
// distinct per slot and i) and, for odd i, unhealthy.
func variant(w *meshv1.Workload, slot, i int) *meshv1.Workload {
	c := wl(w.Namespace, w.Name, fmt.Sprintf("10.%d.%d.%d", 200+slot, (i>>8)&255, i&255))
	c.Locality, c.Node = w.Locality, w.Node
	c.Services, c.AuthorizationPolicies = w.Services, w.AuthorizationPolicies
	if i%2 == 1 {
		c.Status = meshv1.WorkloadStatus_UNHEALTHY
	}
	return c
}

var benchSizes = []int{10_000, 100_000}

// go test -run '^$' -bench 'Apply' -benchmem ./internal/ztunnel/state/
func BenchmarkApplyOneWorkload(b *testing.B) {
	for _, n := range benchSizes {
		m := newMesh(n)
		s := m.store(b)
		// Workload 10 backs a 100-endpoint service and the n/10-endpoint one;
		// workload 11 only a 100-endpoint service.
		for _, tc := range []struct {
			name string
			idx  int
		}{{"small-service", 11}, {"plus-big-service", 10}} {
			base := m.workloads[tc.idx]
			ups := []*xds.Update{
				update(workloads(variant(base, tc.idx, 0))),
				update(workloads(variant(base, tc.idx, 1))),
				update(workloads(base)),
			}
			b.Run(fmt.Sprintf("workloads=%d/%s", n, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := s.Apply(ups[i%len(ups)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

func BenchmarkApplyOnePolicy(b *testing.B) {
	m := newMesh(100_000)
	s := m.store(b)
	ups := []*xds.Update{
		update(authorizations(&meshv1.Authorization{Name: "x", Namespace: "ns1", Scope: meshv1.Authorization_NAMESPACE})),
		update(removes(meshv1.TypeAuthorization, "ns1/x")),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Apply(ups[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkApplyFullState(b *testing.B) {
	m := newMesh(100_000)
	u := update(services(m.services...), workloads(m.workloads...), authorizations(m.policies...))
	b.ReportAllocs()
	for b.Loop() {
		s := NewStore(Options{})
		if err := s.Apply(u); err != nil {
			b.Fatal(err)
		}
	}
}

// TestApplyDeltaFast guards the incremental apply: a one-workload delta on
// a 100,000-workload store must stay well under a millisecond. Skipped with
// -short and under the race detector, whose overhead makes timings
// meaningless; the benchmark gives precise numbers.
// A one-workload delta must cost in proportion to the change, not to the
// mesh: counted in allocations, which are deterministic, rather than timed
// (BenchmarkApplyOneWorkload measures the time). A rebuild of any index of
// 100,000 workloads would allocate thousands of times.
func TestApplyDeltaIsIncremental(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	m := newMesh(100_000)
	s := m.store(t)
	base := m.workloads[11]
	ups := []*xds.Update{update(workloads(variant(base, 0, 0))), update(workloads(variant(base, 0, 1))), update(workloads(base))}
	i := 0
	allocs := testing.AllocsPerRun(30, func() {
		if err := s.Apply(ups[i%3]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs > 200 {
		t.Errorf("a one-workload delta on 100k workloads allocates %v times; the indexes are being rebuilt", allocs)
	}
}

func BenchmarkLookups(b *testing.B) {
	m := newMesh(100_000)
	s := m.store(b)
	v := s.View()
	src := m.workloads[1]
	podIP := netip.MustParseAddr(addrOf(54321))
	vip := netip.MustParseAddrPort(vipOf(17) + ":80")
	svcKey17 := m.services[17].Namespace + "/" + m.services[17].Hostname
	b.Run("WorkloadByIP", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if v.WorkloadByIP(podIP) == nil {
				b.Fatal("miss")
			}
		}
	})
	b.Run("WorkloadByUID", func(b *testing.B) {
		b.ReportAllocs()
		uid := m.workloads[54321].Uid
		for b.Loop() {
			if v.WorkloadByUID(uid) == nil {
				b.Fatal("miss")
			}
		}
	})
	b.Run("ServiceByVIP", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if s, p := v.ServiceByVIP(vip); s == nil || p == nil {
				b.Fatal("miss")
			}
		}
	})
	b.Run("Endpoints", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(v.Endpoints(svcKey17)) == 0 {
				b.Fatal("miss")
			}
		}
	})
	b.Run("Resolve/VIP-100-endpoints-failover", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := v.Resolve(vip, src); d.Kind != KindService {
				b.Fatal(d.Kind)
			}
		}
	})
	b.Run("Resolve/VIP-10000-endpoints", func(b *testing.B) {
		b.ReportAllocs()
		big := netip.MustParseAddrPort("10.95.0.1:80")
		for b.Loop() {
			if d := v.Resolve(big, src); d.Kind != KindService {
				b.Fatal(d.Kind)
			}
		}
	})
	b.Run("Resolve/pod", func(b *testing.B) {
		b.ReportAllocs()
		dst := netip.AddrPortFrom(podIP, 8080)
		for b.Loop() {
			if d := v.Resolve(dst, src); d.Kind != KindWorkload {
				b.Fatal(d.Kind)
			}
		}
	})
	b.Run("PoliciesAndEvaluate", func(b *testing.B) {
		b.ReportAllocs()
		w := v.WorkloadByIP(podIP)
		c := authz.Conn{Source: spiffe.ID{TrustDomain: "cluster.local", Namespace: w.Namespace, ServiceAccount: "x"},
			SourceIP: netip.MustParseAddr("10.1.0.1"), DestinationIP: podIP, DestinationPort: 8080}
		for b.Loop() {
			if d := authz.Evaluate(c, v.Policies(w)); !d.Allow {
				b.Fatal(d)
			}
		}
	})
	b.Run("PeerAuthMode", func(b *testing.B) {
		b.ReportAllocs()
		w := v.WorkloadByIP(podIP)
		for b.Loop() {
			v.PeerAuthMode(w, 8080)
		}
	})
}

func TestLookupsDoNotAllocate(t *testing.T) {
	m := newMesh(5_000)
	s := m.store(t)
	mustApply(t, s, peerAuths(globalPA("g", MSTRICT), nsPA("ns3", "p", UNSET, nil)))
	v := s.View()
	src := m.workloads[1]
	podIP := netip.MustParseAddr(addrOf(4003))
	w := v.WorkloadByIP(podIP)
	if w == nil {
		t.Fatal("no workload")
	}
	vip := netip.MustParseAddrPort(vipOf(17) + ":80")
	key := m.services[17].Namespace + "/" + m.services[17].Hostname
	conn := authz.Conn{Source: spiffe.ID{TrustDomain: "cluster.local", Namespace: w.Namespace, ServiceAccount: "x"},
		SourceIP: netip.MustParseAddr("10.1.0.1"), DestinationIP: podIP, DestinationPort: 8080}
	v6 := netip.MustParseAddr("fd00::1")
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"WorkloadByIP", func() { v.WorkloadByIP(podIP) }},
		{"WorkloadByIP v6 miss", func() { v.WorkloadByIP(v6) }},
		{"WorkloadByUID", func() { v.WorkloadByUID(w.Uid) }},
		{"ServiceByKey", func() { v.ServiceByKey(key) }},
		{"ServiceByVIP", func() { v.ServiceByVIP(vip) }},
		{"Endpoints", func() { v.Endpoints(key) }},
		{"Resolve VIP", func() { v.Resolve(vip, src) }},
		{"Resolve pod", func() { v.Resolve(netip.AddrPortFrom(podIP, 8080), src) }},
		{"Resolve passthrough", func() { v.Resolve(netip.MustParseAddrPort("1.1.1.1:443"), src) }},
		{"Policies", func() { v.Policies(w) }},
		{"Policies+Evaluate", func() { authz.Evaluate(conn, v.Policies(w)) }},
		{"PeerAuthMode", func() { v.PeerAuthMode(w, 8080) }},
		{"Store.Resolve", func() { s.Resolve(vip, src) }},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s allocates %v times per call", tc.name, n)
		}
	}
}

// TestConcurrentReadersAndApply runs lookups while updates are applied
// (meaningful under -race).
func TestConcurrentReadersAndApply(t *testing.T) {
	m := newMesh(2_000)
	s := m.store(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vip := netip.MustParseAddrPort(vipOf(3) + ":80")
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := s.View()
				d := v.Resolve(vip, m.workloads[0])
				if d.Kind != KindService && d.Kind != KindNoEndpoint {
					t.Errorf("kind %v", d.Kind)
					return
				}
				for _, e := range v.Endpoints(m.services[3].Namespace + "/" + m.services[3].Hostname) {
					_ = e.Workload.GetUid()
				}
				authz.Evaluate(authz.Conn{}, v.Policies(m.workloads[3]))
			}
		}()
	}
	for i := 0; i < 200; i++ {
		w := m.workloads[3+20*(i%50)]
		if err := s.Apply(update(workloads(variant(w, 0, i)))); err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(update(workloads(w))); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
