package state

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
)

// with returns a new view: v plus the changes. v is not modified; on error
// the partly built view is dropped.
func (v *View) with(ch *changes) (*View, error) {
	n := *v
	n.departed, n.departedFrom = nil, v.addrs.shards
	if len(ch.workloads)+len(ch.removedWorkloads) > 0 {
		if err := n.applyWorkloads(ch); err != nil {
			return nil, err
		}
	}
	if len(ch.services)+len(ch.removedServices) > 0 {
		if err := n.applyServices(ch); err != nil {
			return nil, err
		}
	}
	if len(ch.policies)+len(ch.removedPolicies) > 0 {
		n.applyPolicies(ch)
	}
	if len(ch.peerAuths)+len(ch.removedPeerAuths) > 0 {
		n.applyPeerAuths(ch)
	}
	return &n, nil
}

// endpointDelta collects the changes to one service's endpoint list.
type endpointDelta struct {
	drop []*Endpoint // keys of the old endpoints that go
	add  []*Endpoint
}

func (v *View) applyWorkloads(ch *changes) error {
	wb := newStrBuilder(v.workloads)
	ab := newAddrBuilder(v.addrs)
	deltas := map[string]*endpointDelta{}
	delta := func(key string) *endpointDelta {
		d := deltas[key]
		if d == nil {
			d = &endpointDelta{}
			deltas[key] = d
		}
		return d
	}
	// First take out everything the removed and replaced workloads held, so
	// that addresses may move between workloads within one update.
	var forgotten []*workloadEntry
	forget := func(prev *workloadEntry) {
		forgotten = append(forgotten, prev)
		for _, a := range prev.addrs {
			if cur, ok := ab.lookup(a); ok && cur == prev {
				ab.remove(a)
			}
		}
		if isEndpoint(prev) {
			probe := &Endpoint{Workload: prev.w, Locality: prev.w.GetLocality()}
			for key := range prev.w.GetServices() {
				d := delta(key)
				d.drop = append(d.drop, probe)
			}
		}
	}
	for _, uid := range ch.removedWorkloads {
		if prev, ok := wb.lookup(uid); ok {
			forget(prev)
			wb.remove(uid)
		}
	}
	for _, e := range ch.workloads {
		if prev, ok := wb.lookup(e.w.GetUid()); ok {
			forget(prev)
		}
		wb.put(e.w.GetUid(), e)
	}
	for _, e := range ch.workloads {
		for i, a := range e.addrs {
			if cur, ok := ab.lookup(a); ok {
				return resourceError(meshv1.TypeWorkload, e.w.GetUid(), fmt.Sprintf("addresses[%d]", i),
					"address %s is also the address of workload %q", a, cur.w.GetUid())
			}
			ab.put(a, e)
		}
		if isEndpoint(e) {
			for key, pl := range e.w.GetServices() {
				d := delta(key)
				d.add = append(d.add, &Endpoint{Workload: e.w, Locality: e.w.GetLocality(), Addresses: e.addrs, Ports: pl.GetPorts()})
			}
		}
	}
	for _, prev := range forgotten {
		for _, a := range prev.addrs {
			if cur, ok := ab.lookup(a); !ok || !sameWorkload(cur.w, prev.w) {
				v.departed = append(v.departed, a)
			}
		}
	}
	slices.SortFunc(v.departed, netip.Addr.Compare)
	v.departed = slices.Compact(v.departed)
	eb := newStrBuilder(v.endpoints)
	for key, d := range deltas {
		old, _ := eb.lookup(key)
		merged := mergeEndpoints(old, d)
		if len(merged) == 0 {
			eb.remove(key)
		} else {
			eb.put(key, merged)
		}
	}
	v.workloads, v.addrs, v.endpoints = wb.done(), ab.done(), eb.done()
	return nil
}

// isEndpoint: only healthy workloads with an address receive traffic.
func isEndpoint(e *workloadEntry) bool {
	return e.w.GetStatus() == meshv1.WorkloadStatus_HEALTHY && len(e.addrs) > 0
}

// mergeEndpoints returns old minus d.drop plus d.add, in CompareEndpoints
// order. Dropped entries are found by binary search and the list is copied
// in runs, so a delta costs a memmove of the pointers plus O(k log n).
func mergeEndpoints(old []*Endpoint, d *endpointDelta) []*Endpoint {
	drops := make([]int, 0, len(d.drop))
	for _, probe := range d.drop {
		if i, found := slices.BinarySearchFunc(old, probe, CompareEndpoints); found {
			drops = append(drops, i)
		}
	}
	slices.Sort(drops)
	drops = slices.Compact(drops)
	add := d.add
	slices.SortFunc(add, CompareEndpoints)
	out := make([]*Endpoint, 0, len(old)-len(drops)+len(add))
	// emit appends a run of old entries, inserting the pending additions
	// that sort inside it.
	emit := func(run []*Endpoint) {
		for len(add) > 0 {
			j, _ := slices.BinarySearchFunc(run, add[0], CompareEndpoints)
			if j == len(run) {
				break
			}
			out = append(out, run[:j]...)
			out = append(out, add[0])
			add, run = add[1:], run[j:]
		}
		out = append(out, run...)
	}
	start := 0
	for _, i := range drops {
		emit(old[start:i])
		start = i + 1
	}
	emit(old[start:])
	return append(out, add...)
}

func (v *View) applyServices(ch *changes) error {
	sb := newStrBuilder(v.services)
	vb := newAddrBuilder(v.vips)
	forget := func(prev *serviceEntry) {
		for _, a := range prev.vips {
			if cur, ok := vb.lookup(a); ok && cur == prev {
				vb.remove(a)
			}
		}
	}
	for _, key := range ch.removedServices {
		if prev, ok := sb.lookup(key); ok {
			forget(prev)
			sb.remove(key)
		}
	}
	for _, e := range ch.services {
		if prev, ok := sb.lookup(e.key); ok {
			forget(prev)
		}
		sb.put(e.key, e)
	}
	for _, e := range ch.services {
		for i, a := range e.vips {
			if cur, ok := vb.lookup(a); ok {
				return resourceError(meshv1.TypeService, e.key, fmt.Sprintf("addresses[%d]", i),
					"address %s is also a VIP of service %q", a, cur.key)
			}
			vb.put(a, e)
		}
	}
	v.services, v.vips = sb.done(), vb.done()
	return nil
}

func (v *View) applyPolicies(ch *changes) {
	m := maps.Clone(v.policies)
	if m == nil {
		m = map[string]*authz.Policy{}
	}
	for _, k := range ch.removedPolicies {
		delete(m, k)
	}
	for _, p := range ch.policies {
		m[p.Key] = p
	}
	var global []*authz.Policy
	byNS := map[string][]*authz.Policy{}
	for _, p := range m {
		switch p.Scope {
		case meshv1.Authorization_GLOBAL:
			global = append(global, p)
		case meshv1.Authorization_NAMESPACE:
			byNS[p.Namespace] = append(byNS[p.Namespace], p)
		}
	}
	byKey := func(a, b *authz.Policy) int { return cmp.Compare(a.Key, b.Key) }
	slices.SortFunc(global, byKey)
	for _, l := range byNS {
		slices.SortFunc(l, byKey)
	}
	v.policies, v.globalPolicies, v.nsPolicies = m, global, byNS
}

func (v *View) applyPeerAuths(ch *changes) {
	m := maps.Clone(v.peerAuths)
	if m == nil {
		m = map[string]*peerAuthEntry{}
	}
	for _, k := range ch.removedPeerAuths {
		delete(m, k)
	}
	for _, e := range ch.peerAuths {
		m[e.key] = e
	}
	// Istio picks the oldest policy of each level; creation times are not
	// pushed, so the lowest key wins, deterministically.
	var global *peerAuthEntry
	ns := map[string]*peerAuthEntry{}
	wl := map[string][]*peerAuthEntry{}
	for _, e := range m {
		switch e.pa.GetScope() {
		case meshv1.Authorization_GLOBAL:
			if global == nil || e.key < global.key {
				global = e
			}
		case meshv1.Authorization_NAMESPACE:
			if cur := ns[e.pa.GetNamespace()]; cur == nil || e.key < cur.key {
				ns[e.pa.GetNamespace()] = e
			}
		case meshv1.Authorization_WORKLOAD_SELECTOR:
			for _, uid := range e.pa.GetWorkloads() {
				wl[uid] = append(wl[uid], e)
			}
		}
	}
	for _, l := range wl {
		slices.SortFunc(l, func(a, b *peerAuthEntry) int { return cmp.Compare(a.key, b.key) })
	}
	v.peerAuths, v.paGlobal, v.paNS, v.paWorkload = m, global, ns, wl
}

// PeerAuthMode returns the effective mTLS mode for connections to w on port
// (the workload's port), PERMISSIVE or STRICT, with Istio's precedence: a
// WORKLOAD_SELECTOR policy of w's own namespace that lists w, then w's
// namespace policy, then the global (root namespace) policy; UNSET inherits
// from the next level, and the default is PERMISSIVE. Port-level modes apply
// only from the workload policy (as in Istio) and an UNSET port mode inherits
// the workload's. DISABLE counts as PERMISSIVE: the ztunnel always accepts
// HBONE (Istio ambient ignores DISABLE). Selector policies from another
// namespace (Istio ignores root-namespace selector policies for peer
// authentication) are not used. w nil: the global mode.
func (v *View) PeerAuthMode(w *meshv1.Workload, port uint16) meshv1.PeerAuthentication_Mode {
	mode := meshv1.PeerAuthentication_PERMISSIVE
	if p := v.paGlobal; p != nil && p.pa.GetMode() != meshv1.PeerAuthentication_UNSET {
		mode = p.pa.GetMode()
	}
	if w != nil {
		if p := v.paNS[w.GetNamespace()]; p != nil && p.pa.GetMode() != meshv1.PeerAuthentication_UNSET {
			mode = p.pa.GetMode()
		}
		for _, p := range v.paWorkload[w.GetUid()] {
			if p.pa.GetNamespace() != w.GetNamespace() {
				continue
			}
			if p.pa.GetMode() != meshv1.PeerAuthentication_UNSET {
				mode = p.pa.GetMode()
			}
			if pm, ok := p.pa.GetPortModes()[uint32(port)]; ok && pm != meshv1.PeerAuthentication_UNSET {
				mode = pm
			}
			break
		}
	}
	if mode == meshv1.PeerAuthentication_DISABLE {
		mode = meshv1.PeerAuthentication_PERMISSIVE
	}
	return mode
}
