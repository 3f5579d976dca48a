//go:build linux

package redirect

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// Backend is an iptables flavour. Both speak the same rule language; what
// matters is not mixing them inside one namespace.
type Backend string

const (
	// BackendAuto detects the backend (see DetectBackend).
	BackendAuto Backend = ""
	// BackendNFT is iptables-nft: rules live in nf_tables.
	BackendNFT Backend = "nft"
	// BackendLegacy is iptables-legacy: rules live in x_tables.
	BackendLegacy Backend = "legacy"
)

// tools are the save/restore binaries of one backend.
type tools struct {
	backend Backend
	save    map[Family]string
	restore map[Family]string
}

// lookTools finds the binaries of backend b: iptables-<b>-save and friends,
// or the unsuffixed iptables-save when it reports being that flavour.
func lookTools(b Backend) (tools, error) {
	t := tools{backend: b, save: map[Family]string{}, restore: map[Family]string{}}
	for _, fam := range []Family{IPv4, IPv6} {
		prog := "iptables"
		if fam == IPv6 {
			prog = "ip6tables"
		}
		for _, kind := range []string{"save", "restore"} {
			p, err := exec.LookPath(prog + "-" + string(b) + "-" + kind)
			if err != nil {
				p, err = exec.LookPath(prog + "-" + kind)
				if err == nil && plainFlavour(p) != b {
					err = errors.New("other flavour")
				}
			}
			if err != nil {
				continue
			}
			if kind == "save" {
				t.save[fam] = p
			} else {
				t.restore[fam] = p
			}
		}
	}
	if t.save[IPv4] == "" || t.restore[IPv4] == "" {
		return t, fmt.Errorf("redirect: iptables (%s) not found: install the iptables package", b)
	}
	return t, nil
}

// plainFlavour asks an unsuffixed binary which flavour it is: "(nf_tables)"
// or "(legacy)" in its version string; versions before 1.8 are legacy.
func plainFlavour(path string) Backend {
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		// iptables-restore of old versions has no --version; -V works.
		out, err = exec.Command(path, "-V").CombinedOutput()
		if err != nil {
			return ""
		}
	}
	if strings.Contains(string(out), "nf_tables") {
		return BackendNFT
	}
	return BackendLegacy
}

// availableTools lists the backends installed on this machine.
func availableTools() []tools {
	var ts []tools
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		if t, err := lookTools(b); err == nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// DetectBackend chooses the iptables backend for ns. Mixing backends inside
// one namespace leaves two independent rule sets, so: the backend that
// already holds rules in ns wins (the one with more if both do); otherwise
// the flavour the unsuffixed `iptables` command has on this machine (the
// distribution's choice); otherwise nft.
func DetectBackend(ns *netns.NS) (Backend, error) {
	ts := availableTools()
	switch len(ts) {
	case 0:
		return "", errors.New("redirect: no iptables found (neither iptables-nft nor iptables-legacy): install the iptables package")
	case 1:
		return ts[0].backend, nil
	}
	counts := make([]int, len(ts))
	for i, t := range ts {
		for _, fam := range []Family{IPv4, IPv6} {
			if t.save[fam] == "" {
				continue
			}
			out, err := netns.Output(ns, "", t.save[fam])
			if err != nil {
				continue
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "-A ") {
					counts[i]++
				}
			}
		}
	}
	if counts[0] != counts[1] {
		if counts[0] > counts[1] {
			return ts[0].backend, nil
		}
		return ts[1].backend, nil
	}
	if p, err := exec.LookPath("iptables"); err == nil {
		if f := plainFlavour(p); f != "" {
			return f, nil
		}
	}
	return BackendNFT, nil
}

func (t tools) saveIn(ns *netns.NS, fam Family) (map[string]*savedTable, error) {
	out, err := netns.Output(ns, "", t.save[fam])
	if err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	return parseSave(out)
}

// restoreIn feeds script to iptables-restore inside ns. The child process
// is forked from a thread switched into ns (netns.Output), so it inherits
// that namespace; no nsenter binary is needed.
func (t tools) restoreIn(ns *netns.NS, fam Family, script string, noflush bool) error {
	args := []string{}
	if noflush {
		args = append(args, "--noflush")
	}
	if t.backend == BackendLegacy {
		// Legacy iptables serialises writers with /run/xtables.lock.
		args = append(args, "--wait=10")
	}
	if _, err := netns.Output(ns, script, t.restore[fam], args...); err != nil {
		return fmt.Errorf("redirect: %s restore in %s: %w\ninput:\n%s", fam, ns, err, script)
	}
	return nil
}

// chainName is an iptables chain name.
type chainName string

func (c chainName) isAmbit() bool { return strings.HasPrefix(string(c), ChainPrefix) }

var builtinChains = []chainName{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// savedRule is one "-A CHAIN spec" line of iptables-save.
type savedRule struct {
	chain chainName
	spec  string
}

func (r savedRule) jumpsToAmbit() bool {
	f := strings.Fields(r.spec)
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "-j", "--jump", "-g", "--goto":
			if chainName(f[i+1]).isAmbit() {
				return true
			}
		}
	}
	return false
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	name       string
	chainOrder []chainName
	policy     map[chainName]string // "ACCEPT", "DROP" or "-" (user chain)
	rules      []savedRule
}

func (t *savedTable) hasAmbit() bool {
	return slices.ContainsFunc(t.chainOrder, chainName.isAmbit)
}

// emptyWithoutAmbit reports whether, once the Ambit chains and the jumps to
// them are gone, t holds nothing: built-in chains only, all with policy
// ACCEPT, no rules. Such a table behaves exactly as no table.
func (t *savedTable) emptyWithoutAmbit() bool {
	for _, ch := range t.chainOrder {
		if ch.isAmbit() {
			continue
		}
		if !slices.Contains(builtinChains, ch) || t.policy[ch] != "ACCEPT" {
			return false
		}
	}
	for _, r := range t.rules {
		if !r.chain.isAmbit() && !r.jumpsToAmbit() {
			return false
		}
	}
	return true
}

// parseSave parses iptables-save output (comments and counters ignored).
func parseSave(out string) (map[string]*savedTable, error) {
	tables := map[string]*savedTable{}
	var cur *savedTable
	for n, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{name: line[1:], policy: map[chainName]string{}}
			tables[cur.name] = cur
		case cur == nil:
			return nil, fmt.Errorf("redirect: iptables-save line %d outside a table: %q", n+1, line)
		case line == "COMMIT":
			cur = nil
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("redirect: iptables-save line %d: bad chain %q", n+1, line)
			}
			cur.chainOrder = append(cur.chainOrder, chainName(f[0]))
			cur.policy[chainName(f[0])] = f[1]
		case strings.HasPrefix(line, "-A "):
			f := strings.SplitN(line, " ", 3)
			spec := ""
			if len(f) == 3 {
				spec = f[2]
			}
			cur.rules = append(cur.rules, savedRule{chain: chainName(f[1]), spec: spec})
		default:
			return nil, fmt.Errorf("redirect: iptables-save line %d: unexpected %q", n+1, line)
		}
	}
	return tables, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// removeScripts plans the removal of every Ambit chain from the saved
// tables: targeted deletions for `iptables-restore --noflush`, and, for nft,
// the names of tables that would be left empty — those are deleted whole
// (an empty "*table COMMIT" restored without --noflush drops an nft table),
// so that the namespace looks exactly as before Ambit created them.
func removeScripts(saved map[string]*savedTable, b Backend) (noflush string, dropTables []string) {
	var sb strings.Builder
	for _, name := range sortedKeys(saved) {
		t := saved[name]
		if !t.hasAmbit() {
			continue
		}
		if b == BackendNFT && t.emptyWithoutAmbit() {
			dropTables = append(dropTables, name)
			continue
		}
		sb.WriteString("*" + name + "\n")
		writeCleanup(&sb, t, nil)
		sb.WriteString("COMMIT\n")
	}
	return sb.String(), dropTables
}
