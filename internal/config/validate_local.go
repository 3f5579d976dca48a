package config

import (
	"fmt"
	"net/netip"

	"github.com/ambit-mesh/ambit/internal/model"
)

// validateLocalCluster checks what `ambit up` needs before it creates
// anything: node names usable as namespace names, and address ranges that
// fit the nodes and do not overlap.
func validateLocalCluster(lc *model.LocalCluster, e *errs) {
	spec := newPath("spec")
	seen := map[string]int{}
	for i, n := range lc.Spec.Nodes {
		np := spec.child("nodes").at(i)
		if n.Name == "" {
			e.add(np.child("name"), "required")
		} else if msg := checkName(dns1123Label, n.Name); msg != "" {
			e.add(np.child("name"), msg)
		} else if j, dup := seen[n.Name]; dup {
			e.add(np.child("name"), fmt.Sprintf("node %q is already defined at spec.nodes[%d]", n.Name, j))
		} else {
			seen[n.Name] = i
		}
	}
	pod := checkPrefix(spec.child("podCIDR"), lc.Spec.PodCIDR, e)
	svc := checkPrefix(spec.child("serviceCIDR"), lc.Spec.ServiceCIDR, e)
	if pod.IsValid() {
		if pod.Bits() > 24 {
			e.add(spec.child("podCIDR"), fmt.Sprintf("%s is too small: each node gets a /24, so it must be /24 or larger", pod))
		} else if nodes, room := len(lc.Spec.Nodes), 1<<(24-pod.Bits()); nodes > room {
			e.add(spec.child("podCIDR"), fmt.Sprintf("%s holds %d /24 node ranges, but %d nodes are defined", pod, room, nodes))
		}
	}
	if svc.IsValid() && svc.Bits() > 28 {
		e.add(spec.child("serviceCIDR"), fmt.Sprintf("%s is too small: use a /28 or larger", svc))
	}
	if pod.IsValid() && svc.IsValid() && pod.Overlaps(svc) {
		e.add(spec.child("serviceCIDR"), fmt.Sprintf("%s overlaps podCIDR %s", svc, pod))
	}
}

// checkPrefix parses an optional IPv4 CIDR; the zero Prefix when empty or invalid.
func checkPrefix(p *fieldPath, s string, e *errs) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		e.add(p, fmt.Sprintf("%q is not a CIDR such as 10.244.0.0/16", s))
	case !pfx.Addr().Is4():
		e.add(p, fmt.Sprintf("%s: only IPv4 ranges are supported", s))
	case pfx.Masked() != pfx:
		e.add(p, fmt.Sprintf("%s has host bits set; did you mean %s?", s, pfx.Masked()))
	default:
		return pfx
	}
	return netip.Prefix{}
}
