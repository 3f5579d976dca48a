//go:build linux

package redirect

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Marks, ports and routing defaults, the same as Istio's in-pod mode so that
// habits, NetworkPolicies and debugging knowledge carry over.
const (
	// ZtunnelMark is the SO_MARK the ztunnel puts on every socket it opens
	// inside a pod: packets carrying it are never captured.
	ZtunnelMark uint32 = 0x539 // 1337
	// TProxyMark marks packets that must be delivered locally: TPROXY'd
	// inbound packets, and replies to the ztunnel's transparent (spoofed
	// source) connections to the pod's own apps.
	TProxyMark uint32 = 0x111
	// MarkMask is the part of the packet mark Ambit uses.
	MarkMask uint32 = 0xfff

	OutboundPort         uint16 = 15001 // outbound capture (REDIRECT)
	InboundPlaintextPort uint16 = 15006 // inbound plaintext capture (TPROXY)
	InboundHBONEPort     uint16 = 15008 // HBONE, reached directly
	DNSPort              uint16 = 15053 // DNS proxy, when CaptureDNS

	RouteTable   = 100   // table holding "local default dev lo"
	RulePriority = 32764 // ip rule "fwmark 0x111/0xfff lookup 100"
)

// Chain names. Every chain Ambit creates starts with ChainPrefix; Remove
// deletes exactly those chains and the jumps to them.
const (
	ChainPrefix     = "AMBIT_"
	ChainPrerouting = "AMBIT_PREROUTING" // mangle
	ChainOutput     = "AMBIT_OUTPUT"     // mangle and nat
)

// DefaultExcludeInboundPorts are left alone inbound besides the ztunnel's
// own ports (15001, 15006, 15008): Istio's status (15020) and readiness
// (15021) ports.
var DefaultExcludeInboundPorts = []uint16{15020, 15021}

// Config describes the redirection inside one pod. The zero value is the
// default (Istio's values); pass the same Config to Install and Remove.
type Config struct {
	// ZtunnelMark, TProxyMark and MarkMask default to the constants above.
	ZtunnelMark, TProxyMark, MarkMask uint32
	// Ports default to the constants above.
	OutboundPort, InboundPlaintextPort, InboundHBONEPort, DNSPort uint16
	// CaptureDNS redirects the pod's DNS queries (UDP and TCP port 53, not
	// to loopback) to DNSPort.
	CaptureDNS bool
	// ExcludeInboundPorts are destination ports of inbound TCP that is not
	// captured, in addition to the ztunnel's own ports. nil means
	// DefaultExcludeInboundPorts; an empty non-nil slice means none.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports of outbound TCP that is not
	// captured (default none).
	ExcludeOutboundPorts []uint16
	// ProbeSourceIP, when set, is the source address of the node's health
	// probes (Istio SNATs kubelet probes to 169.254.7.127): traffic from and
	// to it is not captured. Must be IPv4.
	ProbeSourceIP netip.Addr
	// IPv6 also installs the rules with ip6tables and the IPv6 routing rule.
	// Remove always cleans both families.
	IPv6 bool
	// RouteTable and RulePriority default to RouteTable and RulePriority.
	RouteTable, RulePriority int
	// Backend forces an iptables backend; "" detects it (see Install).
	Backend Backend
}

func (c Config) withDefaults() Config {
	def32 := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def16 := func(v *uint16, d uint16) {
		if *v == 0 {
			*v = d
		}
	}
	def32(&c.ZtunnelMark, ZtunnelMark)
	def32(&c.TProxyMark, TProxyMark)
	def32(&c.MarkMask, MarkMask)
	def16(&c.OutboundPort, OutboundPort)
	def16(&c.InboundPlaintextPort, InboundPlaintextPort)
	def16(&c.InboundHBONEPort, InboundHBONEPort)
	def16(&c.DNSPort, DNSPort)
	if c.ExcludeInboundPorts == nil {
		c.ExcludeInboundPorts = DefaultExcludeInboundPorts
	}
	if c.RouteTable == 0 {
		c.RouteTable = RouteTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = RulePriority
	}
	return c
}

func (c Config) validate() error {
	if c.ZtunnelMark&^c.MarkMask != 0 || c.TProxyMark&^c.MarkMask != 0 {
		return fmt.Errorf("redirect: marks %#x and %#x must fit in mask %#x", c.ZtunnelMark, c.TProxyMark, c.MarkMask)
	}
	if c.ZtunnelMark == c.TProxyMark {
		return fmt.Errorf("redirect: ztunnel mark and tproxy mark are both %#x", c.ZtunnelMark)
	}
	if c.ProbeSourceIP.IsValid() && !c.ProbeSourceIP.Is4() {
		return fmt.Errorf("redirect: probe source %s is not IPv4", c.ProbeSourceIP)
	}
	if c.RouteTable <= 0 || c.RouteTable >= 253 && c.RouteTable <= 255 {
		return fmt.Errorf("redirect: route table %d is reserved", c.RouteTable)
	}
	return nil
}

// Family selects iptables or ip6tables.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// table is one iptables table of the ruleset: the chains Ambit owns, the
// jumps from built-in chains to them (inserted first), and their rules.
type table struct {
	name   string
	chains []string
	jumps  [][2]string // {built-in chain, Ambit chain}
	rules  []string    // "-A CHAIN ..." lines
}

// ruleset returns the tables Ambit installs for family, in order.
func ruleset(c Config, fam Family) []table {
	ztm := fmt.Sprintf("%#x/%#x", c.ZtunnelMark, c.MarkMask)
	tpm := fmt.Sprintf("%#x/%#x", c.TProxyMark, c.MarkMask)
	anyIP := "0.0.0.0"
	if fam == IPv6 {
		anyIP = "::"
	}
	probe := fam == IPv4 && c.ProbeSourceIP.IsValid()

	mangle := table{
		name:   "mangle",
		chains: []string{ChainPrerouting, ChainOutput},
		jumps:  [][2]string{{"PREROUTING", ChainPrerouting}, {"OUTPUT", ChainOutput}},
	}
	pre := func(s string) { mangle.rules = append(mangle.rules, "-A "+ChainPrerouting+" "+s) }
	// The ztunnel's own connections to the pod's apps loop back through lo;
	// remember them so that the apps' replies (addressed to a spoofed,
	// non-local client IP) are routed back to the ztunnel's socket.
	pre("-m mark --mark " + ztm + " -j CONNMARK --set-xmark " + tpm)
	// Traffic from the pod to itself (and redirected outbound) is local.
	pre("-i lo -j RETURN")
	// Only new connections are steered; the rest follow their socket.
	pre("-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
	if probe {
		pre("-s " + c.ProbeSourceIP.String() + "/32 -p tcp -j RETURN")
	}
	inExcl := append([]uint16{c.OutboundPort, c.InboundPlaintextPort, c.InboundHBONEPort}, c.ExcludeInboundPorts...)
	for _, ports := range portLists(inExcl) {
		pre("-p tcp -m multiport --dports " + ports + " -j RETURN")
	}
	// Everything else inbound (TCP) goes to the plaintext inbound listener,
	// keeping its destination address and port (TPROXY, no NAT).
	pre(fmt.Sprintf("-p tcp -m mark ! --mark %s -j TPROXY --on-port %d --on-ip %s --tproxy-mark %s",
		ztm, c.InboundPlaintextPort, anyIP, tpm))
	// Replies of connections marked above get the mark back, so that the
	// routing rule delivers them locally.
	mangle.rules = append(mangle.rules, fmt.Sprintf("-A %s -m connmark --mark %s -j CONNMARK --restore-mark --nfmask %#x --ctmask %#x",
		ChainOutput, tpm, c.MarkMask, c.MarkMask))

	nat := table{
		name:   "nat",
		chains: []string{ChainOutput},
		jumps:  [][2]string{{"OUTPUT", ChainOutput}},
	}
	out := func(s string) { nat.rules = append(nat.rules, "-A "+ChainOutput+" "+s) }
	out("-o lo -j RETURN")
	out("-m mark --mark " + ztm + " -j RETURN")
	if probe {
		out("-d " + c.ProbeSourceIP.String() + "/32 -p tcp -j RETURN")
	}
	if c.CaptureDNS {
		out(fmt.Sprintf("-p udp -m udp --dport 53 -j REDIRECT --to-ports %d", c.DNSPort))
		out(fmt.Sprintf("-p tcp -m tcp --dport 53 -j REDIRECT --to-ports %d", c.DNSPort))
	}
	for _, ports := range portLists(c.ExcludeOutboundPorts) {
		out("-p tcp -m multiport --dports " + ports + " -j RETURN")
	}
	out(fmt.Sprintf("-p tcp -j REDIRECT --to-ports %d", c.OutboundPort))
	return []table{mangle, nat}
}

// portLists dedups and sorts ports and splits them into multiport lists
// (at most 15 ports each).
func portLists(ports []uint16) []string {
	ps := slices.Clone(ports)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	if len(ps) > 0 && ps[0] == 0 {
		ps = ps[1:]
	}
	var lists []string
	for len(ps) > 0 {
		n := min(len(ps), 15)
		s := make([]string, n)
		for i, p := range ps[:n] {
			s[i] = strconv.Itoa(int(p))
		}
		lists = append(lists, strings.Join(s, ","))
		ps = ps[n:]
	}
	return lists
}

// Rules returns the iptables-restore input that Install feeds to
// `iptables-restore --noflush` (or ip6tables-restore for IPv6) inside a pod
// namespace holding no Ambit rules yet. (When Ambit rules are already there,
// Install adds lines deleting the old jumps first, in the same transaction.)
func Rules(c Config, fam Family) string {
	c = c.withDefaults()
	return restoreScript(ruleset(c, fam), nil)
}

// restoreScript renders tables for `iptables-restore --noflush`. existing
// is the parsed iptables-save output: jumps to Ambit chains found there are
// deleted, and Ambit chains no longer in the ruleset are flushed and
// removed, before the new rules go in — all in one transaction per table.
func restoreScript(tables []table, existing map[string]*savedTable) string {
	var b strings.Builder
	done := map[string]bool{}
	for _, t := range tables {
		done[t.name] = true
		b.WriteString("*" + t.name + "\n")
		for _, ch := range t.chains {
			// Declaring a chain creates it, or flushes it if it exists.
			b.WriteString(":" + ch + " - [0:0]\n")
		}
		old := existing[t.name]
		if old != nil {
			writeCleanup(&b, old, t.chains)
		}
		// -I in reverse so that the jumps end up first, in order.
		for i := len(t.jumps) - 1; i >= 0; i-- {
			j := t.jumps[i]
			fmt.Fprintf(&b, "-I %s 1 -j %s\n", j[0], j[1])
		}
		for _, r := range t.rules {
			b.WriteString(r + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	// Tables Ambit no longer uses but that still hold Ambit chains.
	for _, name := range sortedKeys(existing) {
		if done[name] || !existing[name].hasAmbit() {
			continue
		}
		b.WriteString("*" + name + "\n")
		writeCleanup(&b, existing[name], nil)
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// writeCleanup deletes, from the saved table t, every rule outside Ambit
// chains that jumps to an Ambit chain, then flushes and deletes the Ambit
// chains not in keep.
func writeCleanup(b *strings.Builder, t *savedTable, keep []string) {
	for _, r := range t.rules {
		if r.chain.isAmbit() || !r.jumpsToAmbit() {
			continue
		}
		b.WriteString("-D " + string(r.chain) + " " + r.spec + "\n")
	}
	var drop []string
	for _, ch := range t.chainOrder {
		if ch.isAmbit() && !slices.Contains(keep, string(ch)) {
			drop = append(drop, string(ch))
		}
	}
	for _, ch := range drop {
		b.WriteString("-F " + ch + "\n")
	}
	for _, ch := range drop {
		b.WriteString("-X " + ch + "\n")
	}
}
