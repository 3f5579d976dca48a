//go:build linux

package redirect

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// Install sets up in-pod redirection inside the pod's network namespace ns:
// the iptables rules of [Rules] (IPv4, and IPv6 when cfg.IPv6) and the
// routing rule "fwmark TProxyMark/MarkMask lookup RouteTable" with
// "local default dev lo" in that table. It is idempotent: installing again
// replaces Ambit's chains and jumps in one iptables-restore transaction per
// table, without a window where the pod's traffic escapes.
//
// The backend is cfg.Backend, or DetectBackend's choice. Install refuses the
// host namespace. If a first install fails half-way it removes what it
// added; a failed re-install leaves the previous rules in place.
func Install(ns *netns.NS, cfg Config) error {
	if err := netns.Guard(ns); err != nil {
		return err
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return err
	}
	b := c.Backend
	if b == BackendAuto {
		var err error
		if b, err = DetectBackend(ns); err != nil {
			return err
		}
	}
	t, err := lookTools(b)
	if err != nil {
		return err
	}
	fams := []Family{IPv4}
	if c.IPv6 {
		if t.save[IPv6] == "" || t.restore[IPv6] == "" {
			return fmt.Errorf("redirect: ip6tables (%s) not found", b)
		}
		fams = append(fams, IPv6)
	}
	saved := map[Family]map[string]*savedTable{}
	fresh := true
	for _, fam := range fams {
		s, err := t.saveIn(ns, fam)
		if err != nil {
			return err
		}
		saved[fam] = s
		for _, tb := range s {
			if tb.hasAmbit() {
				fresh = false
			}
		}
	}
	fail := func(err error) error {
		if fresh {
			err = errors.Join(err, Remove(ns, cfg))
		}
		return err
	}
	// Routing first: harmless on its own, and needed as soon as the TPROXY
	// rules start marking packets.
	if err := installRoutes(ns, c, fams); err != nil {
		return fail(err)
	}
	for _, fam := range fams {
		script := restoreScript(ruleset(c, fam), saved[fam])
		if err := t.restoreIn(ns, fam, script, true); err != nil {
			return fail(err)
		}
	}
	return nil
}

// Remove undoes Install in ns: it deletes every AMBIT_* chain and every jump
// to one, in both families and with every installed iptables backend, and
// the routing rule and route Install added (cfg gives their table,
// priority and marks; the zero Config means the defaults). Rules that are
// not Ambit's are left exactly as they were. With iptables-nft, a table
// that only Ambit's chains kept non-empty is deleted, so iptables-save shows
// the same as before Install; legacy iptables cannot delete tables, so there
// an emptied table stays listed (with no rules). Removing what is not
// installed is not an error.
func Remove(ns *netns.NS, cfg Config) error {
	if err := netns.Guard(ns); err != nil {
		return err
	}
	c := cfg.withDefaults()
	var errs []error
	for _, t := range availableTools() {
		for _, fam := range []Family{IPv4, IPv6} {
			if t.save[fam] == "" || t.restore[fam] == "" {
				continue
			}
			saved, err := t.saveIn(ns, fam)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			script, drop := removeScripts(saved, t.backend)
			if script != "" {
				if err := t.restoreIn(ns, fam, script, true); err != nil {
					errs = append(errs, err)
				}
			}
			if len(drop) > 0 {
				var s string
				for _, name := range drop {
					s += "*" + name + "\nCOMMIT\n"
				}
				if err := t.restoreIn(ns, fam, s, false); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := removeRoutes(ns, c); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func nlFamily(f Family) int {
	if f == IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func ourRule(c Config, fam Family) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = nlFamily(fam)
	r.Priority = c.RulePriority
	r.Table = c.RouteTable
	r.Mark = c.TProxyMark
	mask := c.MarkMask
	r.Mask = &mask
	return r
}

func isOurRule(r netlink.Rule, c Config) bool {
	return r.Priority == c.RulePriority && r.Table == c.RouteTable && r.Mark == c.TProxyMark &&
		r.Mask != nil && *r.Mask == c.MarkMask && !r.Invert && r.Src == nil && r.Dst == nil &&
		r.IifName == "" && r.OifName == ""
}

func ourRoute(c Config, fam Family, lo int) *netlink.Route {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if fam == IPv6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{
		Family:    nlFamily(fam),
		Table:     c.RouteTable,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Dst:       dst,
		LinkIndex: lo,
	}
}

func isOurRoute(r netlink.Route, c Config, lo int) bool {
	ones := -1
	if r.Dst != nil {
		ones, _ = r.Dst.Mask.Size()
	}
	return r.Table == c.RouteTable && r.Type == unix.RTN_LOCAL && r.LinkIndex == lo && (r.Dst == nil || ones == 0)
}

// installRoutes adds, per family, "ip rule add fwmark 0x111/0xfff pref
// 32764 lookup 100" (unless present) and "ip route replace local default
// dev lo table 100": packets carrying the TPROXY mark — TPROXY'd inbound
// packets and replies to the ztunnel's transparent connections — are
// delivered locally, whatever their destination address.
func installRoutes(ns *netns.NS, c Config, fams []Family) error {
	h, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("redirect: lo in %s: %w", ns, err)
	}
	for _, fam := range fams {
		rules, err := h.RuleList(nlFamily(fam))
		if err != nil {
			return fmt.Errorf("redirect: list %s rules: %w", fam, err)
		}
		have := false
		for _, r := range rules {
			if isOurRule(r, c) {
				have = true
			}
		}
		if !have {
			if err := h.RuleAdd(ourRule(c, fam)); err != nil {
				return fmt.Errorf("redirect: add %s rule: %w", fam, err)
			}
		}
		if err := h.RouteReplace(ourRoute(c, fam, lo.Attrs().Index)); err != nil {
			return fmt.Errorf("redirect: add %s local route to table %d: %w", fam, c.RouteTable, err)
		}
	}
	return nil
}

func removeRoutes(ns *netns.NS, c Config) error {
	h, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("redirect: lo in %s: %w", ns, err)
	}
	var errs []error
	for _, fam := range []Family{IPv4, IPv6} {
		rules, err := h.RuleList(nlFamily(fam))
		if err != nil {
			if fam == IPv6 && errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			errs = append(errs, fmt.Errorf("redirect: list %s rules: %w", fam, err))
			continue
		}
		for _, r := range rules {
			if isOurRule(r, c) {
				if err := h.RuleDel(ourRule(c, fam)); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("redirect: delete %s rule: %w", fam, err))
				}
			}
		}
		routes, err := h.RouteListFiltered(nlFamily(fam), &netlink.Route{Table: c.RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, fmt.Errorf("redirect: list %s routes: %w", fam, err))
			continue
		}
		for _, r := range routes {
			if isOurRoute(r, c, lo.Attrs().Index) {
				if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("redirect: delete %s route: %w", fam, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
