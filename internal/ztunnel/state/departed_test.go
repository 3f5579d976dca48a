package state

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/xds"
)

func TestDeparted(t *testing.T) {
	s := NewStore(Options{})
	var got [][]netip.Addr
	stop := s.Watch(func(prev, next *View) { got = append(got, Departed(prev, next)) })
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range ss {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	step := func(name string, want []netip.Addr, tus ...xds.TypeUpdate) {
		t.Helper()
		got = nil
		if err := s.Apply(update(tus...)); err != nil {
			t.Fatalf("%s: Apply: %v", name, err)
		}
		if len(got) != 1 || !slices.Equal(got[0], want) {
			t.Errorf("%s: Departed = %v, want [%v]", name, got, want)
		}
	}
	a, b := wl("ns", "a", "10.0.0.1", "fd00::1"), wl("ns", "b", "10.0.0.2")
	step("first workloads", nil, workloads(a, b))
	first := s.View()
	// An update in place (status, labels) is no departure.
	a2 := wl("ns", "a", "10.0.0.1", "fd00::1")
	a2.Status = meshv1.WorkloadStatus_UNHEALTHY
	step("updated in place", nil, workloads(a2))
	step("services only", nil, services(svc("ns", "x", []string{"10.96.0.1"})))
	// A new pod given b's address: b's connections must go.
	c := wl("ns", "c", "10.0.0.2")
	step("address reused", addrs("10.0.0.2"), workloads(c), removes(meshv1.TypeWorkload, b.Uid))
	// Same uid, another identity.
	c2 := wl("ns", "c", "10.0.0.2")
	c2.ServiceAccount = "other"
	step("identity changed", addrs("10.0.0.2"), workloads(c2))
	// Removed: every address of it.
	step("removed", addrs("10.0.0.1", "fd00::1"), removes(meshv1.TypeWorkload, a.Uid))
	// Among many workloads (every shard in use) only the one that left.
	var many []*meshv1.Workload
	for i := range 2000 {
		many = append(many, wl("big", fmt.Sprint("w", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)))
	}
	step("many added", nil, workloads(many...))
	step("one of many removed", addrs("10.1.3.8"), removes(meshv1.TypeWorkload, many[757].Uid))
	stop()
	got = nil
	mustApply(t, s, removes(meshv1.TypeWorkload, c.Uid))
	if got != nil {
		t.Errorf("called after stop: %v", got)
	}
	// Views further apart: compared shard by shard.
	if d, want := Departed(first, s.View()), addrs("10.0.0.1", "10.0.0.2", "fd00::1"); !slices.Equal(d, want) {
		t.Errorf("Departed(first, last) = %v, want %v", d, want)
	}
	if d := Departed(s.View(), first); len(d) != len(many)-1 || !slices.Contains(d, netip.MustParseAddr("10.1.0.1")) {
		t.Errorf("Departed(last, first): %d addresses, want the %d of the workloads first lacks", len(d), len(many)-1)
	}
	if d := Departed(nil, s.View()); d != nil {
		t.Errorf("Departed(nil, v) = %v", d)
	}
}
