//go:build linux

// Package netnstest provides test fixtures built on internal/netns:
// throw-away network namespaces and veth-connected pairs, all removed by
// t.Cleanup. Tests that use them need root; under CI (CI set) a non-root run
// fails instead of skipping, so the integration tests cannot silently vanish.
//
// Only test code may import this package.
package netnstest

import (
	"net/netip"
	"os"
	"testing"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// RequireRoot skips t unless running as root, or fails it when CI is set.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root (network namespaces); CI must run as root")
	}
	t.Skip("needs root (network namespaces)")
}

// New creates an anonymous network namespace with lo up, closed when the
// test ends.
func New(t testing.TB) *netns.NS {
	t.Helper()
	RequireRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("netns.New: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// Pair is two fresh namespaces joined by a veth pair: A has address AIP on
// interface "eth0", B has BIP on its "eth0", both in one /24 (or /64).
type Pair struct {
	A, B     *netns.NS
	AIP, BIP netip.Addr
}

// NewPair creates a Pair with a = AIP and b = BIP in prefix (both must be in
// it). Only private test ranges (10.244.0.0/16, fd00::/8) are accepted.
func NewPair(t testing.TB, a, b netip.Prefix) *Pair {
	t.Helper()
	for _, p := range []netip.Prefix{a, b} {
		if !testRange(p.Addr()) {
			t.Fatalf("netnstest: %s is outside the test ranges 10.244.0.0/16 and fd00::/8", p)
		}
	}
	p := &Pair{A: New(t), B: New(t), AIP: a.Addr(), BIP: b.Addr()}
	if err := netns.AddVeth(p.A, "eth0", p.B, "eth0"); err != nil {
		t.Fatalf("AddVeth: %v", err)
	}
	if err := netns.AddAddr(p.A, "eth0", a); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddAddr(p.B, "eth0", b); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	v4Range = netip.MustParsePrefix("10.244.0.0/16")
	v6Range = netip.MustParsePrefix("fd00::/8")
)

func testRange(a netip.Addr) bool { return v4Range.Contains(a) || v6Range.Contains(a) }
