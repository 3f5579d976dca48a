package state

import (
	"net/netip"
	"reflect"
	"slices"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// Departed returns the addresses that belonged to a workload in prev and, in
// next, belong to none or to another workload (another uid, name or
// identity): a pod that left, or whose address a new pod was given. Pooled
// connections to those addresses reach a pod that is gone; the proxies drain
// them so that the next connection dials afresh. A workload updated in place
// (same uid, name and identity) has not departed. For consecutive views the
// update's own list is returned (its cost is what the update touched);
// otherwise only the index shards that differ are compared. The result is
// sorted and must not be modified.
func Departed(prev, next *View) []netip.Addr {
	if prev == nil || next == nil {
		return nil
	}
	ps, ns := prev.addrs.shards, next.addrs.shards
	if ps == nil || ps == ns {
		return nil
	}
	if next.departedFrom == ps {
		return next.departed
	}
	var out []netip.Addr
	for i, shard := range ps {
		if len(shard) == 0 || (ns != nil && sameMap(shard, ns[i])) {
			continue
		}
		for a, e := range shard {
			cur, ok := next.addrs.lookup(a)
			if ok && (cur == e || sameWorkload(cur.w, e.w)) {
				continue
			}
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// sameMap reports whether a and b are the same map (a shard a builder did
// not touch is shared by both views).
func sameMap[K comparable, V any](a, b map[K]V) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func sameWorkload(a, b *meshv1.Workload) bool {
	return a.GetUid() == b.GetUid() && a.GetName() == b.GetName() && identityOf(a) == identityOf(b)
}
