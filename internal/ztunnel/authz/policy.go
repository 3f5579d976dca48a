package authz

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// Policy is a compiled Authorization. It is immutable once compiled and safe
// for concurrent use.
type Policy struct {
	// Key is "<namespace>/<name>", the resource name and what workloads list
	// in authorization_policies.
	Key       string
	Name      string
	Namespace string
	Scope     meshv1.Authorization_Scope
	Action    meshv1.Authorization_Action
	DryRun    bool
	// Unsupported lists the L7 attributes the ztunnel cannot evaluate, as
	// "rules[i].<field>" (see the package documentation for their effect).
	Unsupported []string
	// Source is the resource the policy was compiled from (read-only).
	Source *meshv1.Authorization

	rules []rule
}

type rule struct {
	// never: an ALLOW rule with L7 attributes, which must not match anything.
	never bool
	from  []source
	to    []operation
	when  []condition
}

type source struct {
	principals, notPrincipals []strMatch
	namespaces, notNamespaces []strMatch
	ips, notIPs               []netip.Prefix
	remoteIPs, notRemoteIPs   []netip.Prefix
}

type operation struct {
	ports, notPorts []uint16
}

type condKey uint8

const (
	condSourceIP condKey = iota + 1
	condSourceNamespace
	condSourcePrincipal
	condDestinationIP
	condDestinationPort
)

// l4Keys are the when keys the ztunnel evaluates, as istiod's
// l4WhenAttributes.
var l4Keys = map[string]condKey{
	"source.ip":        condSourceIP,
	"source.namespace": condSourceNamespace,
	"source.principal": condSourcePrincipal,
	"destination.ip":   condDestinationIP,
	"destination.port": condDestinationPort,
}

type condition struct {
	key             condKey
	strs, notStrs   []strMatch     // source.namespace, source.principal
	nets, notNets   []netip.Prefix // source.ip, destination.ip
	ports, notPorts []uint16       // destination.port
	// anyPort / notAnyPort: "*" among the values / not_values of destination.port.
	anyPort, notAnyPort bool
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchAny
)

type strMatch struct {
	kind matchKind
	s    string
}

// Compile checks a and compiles it for Evaluate. Errors name the field, as in
// `rules[0].from[1].ip_blocks[2]: invalid IP address or CIDR "10.0.0.256"`.
func Compile(a *meshv1.Authorization) (*Policy, error) {
	if a == nil {
		return nil, fmt.Errorf("nil Authorization")
	}
	if a.GetName() == "" {
		return nil, fmt.Errorf("name: required")
	}
	if a.GetNamespace() == "" {
		return nil, fmt.Errorf("namespace: required")
	}
	if _, ok := meshv1.Authorization_Scope_name[int32(a.GetScope())]; !ok {
		return nil, fmt.Errorf("scope: unknown value %d", a.GetScope())
	}
	if _, ok := meshv1.Authorization_Action_name[int32(a.GetAction())]; !ok {
		return nil, fmt.Errorf("action: unknown value %d", a.GetAction())
	}
	p := &Policy{
		Key:       a.GetNamespace() + "/" + a.GetName(),
		Name:      a.GetName(),
		Namespace: a.GetNamespace(),
		Scope:     a.GetScope(),
		Action:    a.GetAction(),
		DryRun:    a.GetDryRun(),
		Source:    a,
	}
	allow := a.GetAction() == meshv1.Authorization_ALLOW
	for i, r := range a.GetRules() {
		rp := "rules[" + strconv.Itoa(i) + "]"
		if r == nil {
			return nil, fmt.Errorf("%s: null rule", rp)
		}
		cr, l7, err := compileRule(rp, r)
		if err != nil {
			return nil, err
		}
		if len(l7) > 0 {
			p.Unsupported = append(p.Unsupported, l7...)
			// ALLOW: a rule needing L7 attributes allows nothing. DENY and
			// AUDIT: the L7 parts were dropped, i.e. count as matching.
			cr.never = allow
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

func compileRule(rp string, r *meshv1.Rule) (rule, []string, error) {
	var out rule
	var l7 []string
	for j, f := range r.GetFrom() {
		fp := rp + ".from[" + strconv.Itoa(j) + "]"
		if f == nil {
			return out, nil, fmt.Errorf("%s: null source", fp)
		}
		var s source
		var err error
		lists := []struct {
			name string
			in   []*meshv1.StringMatch
			out  *[]strMatch
		}{
			{"principals", f.GetPrincipals(), &s.principals},
			{"not_principals", f.GetNotPrincipals(), &s.notPrincipals},
			{"namespaces", f.GetNamespaces(), &s.namespaces},
			{"not_namespaces", f.GetNotNamespaces(), &s.notNamespaces},
		}
		for _, l := range lists {
			if *l.out, err = compileStrings(fp+"."+l.name, l.in); err != nil {
				return out, nil, err
			}
		}
		nets := []struct {
			name string
			in   []string
			out  *[]netip.Prefix
		}{
			{"ip_blocks", f.GetIpBlocks(), &s.ips},
			{"not_ip_blocks", f.GetNotIpBlocks(), &s.notIPs},
			{"remote_ip_blocks", f.GetRemoteIpBlocks(), &s.remoteIPs},
			{"not_remote_ip_blocks", f.GetNotRemoteIpBlocks(), &s.notRemoteIPs},
		}
		for _, l := range nets {
			if *l.out, err = compileNets(fp+"."+l.name, l.in); err != nil {
				return out, nil, err
			}
		}
		// Request principals come from a JWT: L7. Still validated.
		for _, l := range []struct {
			name string
			in   []*meshv1.StringMatch
		}{{"request_principals", f.GetRequestPrincipals()}, {"not_request_principals", f.GetNotRequestPrincipals()}} {
			if len(l.in) == 0 {
				continue
			}
			if _, err := compileStrings(fp+"."+l.name, l.in); err != nil {
				return out, nil, err
			}
			l7 = append(l7, fp+"."+l.name)
		}
		out.from = append(out.from, s)
	}
	for j, t := range r.GetTo() {
		tp := rp + ".to[" + strconv.Itoa(j) + "]"
		if t == nil {
			return out, nil, fmt.Errorf("%s: null operation", tp)
		}
		var o operation
		var err error
		if o.ports, err = compilePorts(tp+".ports", t.GetPorts()); err != nil {
			return out, nil, err
		}
		if o.notPorts, err = compilePorts(tp+".not_ports", t.GetNotPorts()); err != nil {
			return out, nil, err
		}
		for _, l := range []struct {
			name string
			in   []*meshv1.StringMatch
		}{
			{"hosts", t.GetHosts()}, {"not_hosts", t.GetNotHosts()},
			{"methods", t.GetMethods()}, {"not_methods", t.GetNotMethods()},
			{"paths", t.GetPaths()}, {"not_paths", t.GetNotPaths()},
		} {
			if len(l.in) == 0 {
				continue
			}
			if _, err := compileStrings(tp+"."+l.name, l.in); err != nil {
				return out, nil, err
			}
			l7 = append(l7, tp+"."+l.name)
		}
		out.to = append(out.to, o)
	}
	for j, c := range r.GetWhen() {
		cp := rp + ".when[" + strconv.Itoa(j) + "]"
		if c == nil {
			return out, nil, fmt.Errorf("%s: null condition", cp)
		}
		if c.GetKey() == "" {
			return out, nil, fmt.Errorf("%s.key: required", cp)
		}
		if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
			return out, nil, fmt.Errorf("%s: one of values and not_values is required", cp)
		}
		key, ok := l4Keys[c.GetKey()]
		if !ok {
			if _, err := compileStrings(cp+".values", c.GetValues()); err != nil {
				return out, nil, err
			}
			if _, err := compileStrings(cp+".not_values", c.GetNotValues()); err != nil {
				return out, nil, err
			}
			l7 = append(l7, cp+" "+strconv.Quote(c.GetKey()))
			continue
		}
		cond, err := compileCondition(cp, key, c)
		if err != nil {
			return out, nil, err
		}
		out.when = append(out.when, cond)
	}
	return out, l7, nil
}

func compileCondition(cp string, key condKey, c *meshv1.Condition) (condition, error) {
	cond := condition{key: key}
	var err error
	switch key {
	case condSourceNamespace, condSourcePrincipal:
		if cond.strs, err = compileStrings(cp+".values", c.GetValues()); err != nil {
			return cond, err
		}
		if cond.notStrs, err = compileStrings(cp+".not_values", c.GetNotValues()); err != nil {
			return cond, err
		}
	case condSourceIP, condDestinationIP:
		if cond.nets, err = condNets(cp+".values", c.GetValues()); err != nil {
			return cond, err
		}
		if cond.notNets, err = condNets(cp+".not_values", c.GetNotValues()); err != nil {
			return cond, err
		}
	case condDestinationPort:
		if cond.ports, cond.anyPort, err = condPorts(cp+".values", c.GetValues()); err != nil {
			return cond, err
		}
		if cond.notPorts, cond.notAnyPort, err = condPorts(cp+".not_values", c.GetNotValues()); err != nil {
			return cond, err
		}
	}
	return cond, nil
}

func compileStrings(field string, in []*meshv1.StringMatch) ([]strMatch, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]strMatch, 0, len(in))
	for i, m := range in {
		sm, err := compileString(m)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", field, i, err)
		}
		out = append(out, sm)
	}
	return out, nil
}

func compileString(m *meshv1.StringMatch) (strMatch, error) {
	switch k := m.GetKind().(type) {
	case *meshv1.StringMatch_Exact:
		return strMatch{kind: matchExact, s: k.Exact}, nil
	case *meshv1.StringMatch_Prefix:
		return strMatch{kind: matchPrefix, s: k.Prefix}, nil
	case *meshv1.StringMatch_Suffix:
		return strMatch{kind: matchSuffix, s: k.Suffix}, nil
	case *meshv1.StringMatch_Any:
		if !k.Any {
			return strMatch{}, fmt.Errorf("any: must be true when set")
		}
		return strMatch{kind: matchAny}, nil
	case nil:
		return strMatch{}, fmt.Errorf("no match kind set (want exact, prefix, suffix or any)")
	default:
		return strMatch{}, fmt.Errorf("unknown match kind %T", k)
	}
}

// parseNet accepts "10.0.0.1", "10.0.0.0/8", "2001:db8::/32"; a single
// address is a full-length prefix. Zones are refused.
func parseNet(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid IP address or CIDR %q", s)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid IP address or CIDR %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func compileNets(field string, in []string) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		p, err := parseNet(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", field, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

var everyAddress = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// condNets compiles source.ip / destination.ip values: exact strings holding
// an address or CIDR, or "*" (every address).
func condNets(field string, in []*meshv1.StringMatch) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, m := range in {
		sm, err := compileString(m)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", field, i, err)
		}
		switch sm.kind {
		case matchAny:
			out = append(out, everyAddress...)
		case matchExact:
			p, err := parseNet(sm.s)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %v", field, i, err)
			}
			out = append(out, p)
		default:
			return nil, fmt.Errorf("%s[%d]: an IP condition takes an address or CIDR, not a prefix or suffix match", field, i)
		}
	}
	return out, nil
}

// condPorts compiles destination.port values: exact port numbers or "*".
func condPorts(field string, in []*meshv1.StringMatch) ([]uint16, bool, error) {
	var out []uint16
	anyPort := false
	for i, m := range in {
		sm, err := compileString(m)
		if err != nil {
			return nil, false, fmt.Errorf("%s[%d]: %v", field, i, err)
		}
		switch sm.kind {
		case matchAny:
			anyPort = true
		case matchExact:
			n, err := strconv.ParseUint(sm.s, 10, 16)
			if err != nil || n == 0 {
				return nil, false, fmt.Errorf("%s[%d]: invalid port %q: want a number in 1-65535", field, i, sm.s)
			}
			out = append(out, uint16(n))
		default:
			return nil, false, fmt.Errorf("%s[%d]: a port condition takes a number, not a prefix or suffix match", field, i)
		}
	}
	return out, anyPort, nil
}

func compilePorts(field string, in []uint32) ([]uint16, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]uint16, 0, len(in))
	for i, p := range in {
		if p == 0 || p > 65535 {
			return nil, fmt.Errorf("%s[%d]: invalid port %d: want 1-65535", field, i, p)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}
