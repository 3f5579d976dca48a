//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Handle returns a netlink handle whose sockets live in ns, for calls these
// helpers do not cover. It refuses the host namespace. Close it when done.
func Handle(ns *NS) (*netlink.Handle, error) {
	if err := guard(ns); err != nil {
		return nil, err
	}
	return handle(ns)
}

// handle creates the netlink sockets inside ns (through Do, so a failed
// switch-back retires the thread) without the host-namespace guard.
func handle(ns *NS) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := Do(ns, func() error {
		var err error
		h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: netlink handle in %s: %w", ns, err)
	}
	return h, nil
}

func withHandle(ns *NS, f func(h *netlink.Handle) error) error {
	h, err := Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	return f(h)
}

// SetLinkUp brings interface name in ns up.
func SetLinkUp(ns *NS, name string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("netns: link %s in %s: %w", name, ns, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("netns: set %s up in %s: %w", name, ns, err)
		}
		return nil
	})
}

// AddVeth creates a veth pair with end aName in namespace a and end bName in
// namespace b, and brings both up. Each end is created directly in its
// namespace; neither namespace may be the host's.
func AddVeth(a *NS, aName string, b *NS, bName string) error {
	if err := guard(b); err != nil {
		return err
	}
	err := withHandle(a, func(h *netlink.Handle) error {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: aName},
			PeerName:      bName,
			PeerNamespace: netlink.NsFd(b.Fd()),
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("netns: add veth %s/%s: %w", aName, bName, err)
		}
		l, err := h.LinkByName(aName)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		return err
	})
	if err != nil {
		return err
	}
	return SetLinkUp(b, bName)
}

// AddAddr adds prefix (address/len) to interface name in ns. IPv6 addresses
// skip duplicate address detection so they are usable at once.
func AddAddr(ns *NS, name string, prefix netip.Prefix) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("netns: link %s in %s: %w", name, ns, err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{
			IP:   prefix.Addr().AsSlice(),
			Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen()),
		}}
		if prefix.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("netns: add %s to %s in %s: %w", prefix, name, ns, err)
		}
		return nil
	})
}

// AddRoute adds a route to dst in ns through gateway gw (optional) and/or
// interface dev (optional).
func AddRoute(ns *NS, dst netip.Prefix, gw netip.Addr, dev string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		r := &netlink.Route{Dst: &net.IPNet{
			IP:   dst.Masked().Addr().AsSlice(),
			Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen()),
		}}
		if gw.IsValid() {
			r.Gw = gw.AsSlice()
		}
		if dev != "" {
			l, err := h.LinkByName(dev)
			if err != nil {
				return fmt.Errorf("netns: link %s in %s: %w", dev, ns, err)
			}
			r.LinkIndex = l.Attrs().Index
		}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("netns: add route %s via %s dev %q in %s: %w", dst, gw, dev, ns, err)
		}
		return nil
	})
}

// AddBridge creates bridge name in ns and brings it up.
func AddBridge(ns *NS, name string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("netns: add bridge %s in %s: %w", name, ns, err)
		}
		return h.LinkSetUp(br)
	})
}

// AttachToBridge connects ns to bridge (in bridgeNS) with a veth pair:
// ifName inside ns gets addrs, port is the bridge-side end, enslaved to the
// bridge. Both ends end up up.
func AttachToBridge(bridgeNS *NS, bridge string, ns *NS, ifName, port string, addrs ...netip.Prefix) error {
	if err := AddVeth(ns, ifName, bridgeNS, port); err != nil {
		return err
	}
	err := withHandle(bridgeNS, func(h *netlink.Handle) error {
		br, err := h.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("netns: bridge %s in %s: %w", bridge, bridgeNS, err)
		}
		p, err := h.LinkByName(port)
		if err != nil {
			return err
		}
		if err := h.LinkSetMaster(p, br); err != nil {
			return fmt.Errorf("netns: enslave %s to %s: %w", port, bridge, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := AddAddr(ns, ifName, a); err != nil {
			return err
		}
	}
	return nil
}

// SetSysctl writes value to the sysctl key (for example
// "net.ipv4.ip_forward") as seen from ns. Only net.* keys are per namespace,
// so only those are accepted.
func SetSysctl(ns *NS, key, value string) error {
	if err := guard(ns); err != nil {
		return err
	}
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "..") {
		return fmt.Errorf("netns: sysctl %q is not a per-namespace net.* key", key)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return Do(ns, func() error {
		// /proc/sys/net resolves against the opening thread's namespace.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("netns: sysctl %s: %w", key, err)
		}
		_, werr := f.WriteString(value)
		return errors.Join(werr, f.Close())
	})
}

// Sysctl reads the sysctl key as seen from ns.
func Sysctl(ns *NS, key string) (string, error) {
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "..") {
		return "", fmt.Errorf("netns: sysctl %q is not a per-namespace net.* key", key)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	var out string
	err := Do(ns, func() error {
		b, err := os.ReadFile(path)
		out = strings.TrimSpace(string(b))
		return err
	})
	return out, err
}
