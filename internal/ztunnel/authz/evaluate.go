package authz

import (
	"net/netip"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Conn is what the destination ztunnel knows of an inbound connection.
type Conn struct {
	// Source is the peer's identity from its mTLS certificate. The zero ID
	// means a plaintext peer: no principal, no namespace.
	Source        spiffe.ID
	SourceIP      netip.Addr
	DestinationIP netip.Addr
	// DestinationPort is the port on the destination workload (the target
	// port, not the service port), which is what ports / notPorts and
	// destination.port match in Istio.
	DestinationPort uint16
	// The destination workload, for logs; not used by the matching.
	DestinationNamespace string
	DestinationName      string
}

// Authenticated reports whether the peer presented an identity.
func (c *Conn) Authenticated() bool { return c.Source != spiffe.ID{} }

// Resolver finds a compiled policy by key ("<namespace>/<name>"); nil when
// unknown. internal/ztunnel/state implements it on its snapshots; PolicyMap
// is a simple implementation.
type Resolver interface {
	Policy(key string) *Policy
}

// PolicyMap is a Resolver backed by a map.
type PolicyMap map[string]*Policy

// Policy implements Resolver.
func (m PolicyMap) Policy(key string) *Policy { return m[key] }

// Policies are the policies that apply to one destination workload.
type Policies struct {
	// Global: GLOBAL-scoped policies (root namespace, no selector).
	Global []*Policy
	// Namespace: NAMESPACE-scoped policies of the workload's namespace.
	Namespace []*Policy
	// Selected: keys of the WORKLOAD_SELECTOR policies selecting the
	// workload (Workload.authorization_policies), resolved by Resolver. A key
	// that does not resolve denies the connection (fail closed: it may be a
	// DENY or the only ALLOW policy); a key resolving to a policy of another
	// scope is ignored (that policy is already in Global or Namespace).
	Selected []string
	Resolver Resolver
}

// Reason says why a Decision was made. Its String form is meant for metric
// labels and logs.
type Reason uint8

const (
	// ReasonNoPolicy: no enforced ALLOW or DENY policy matched or applies.
	ReasonNoPolicy Reason = iota
	// ReasonDenied: a DENY policy matched.
	ReasonDenied
	// ReasonAllowed: an ALLOW policy matched.
	ReasonAllowed
	// ReasonNotAllowed: ALLOW policies apply but none matched.
	ReasonNotAllowed
	// ReasonUnresolvedPolicy: the workload lists a policy the proxy does not
	// hold.
	ReasonUnresolvedPolicy
)

var reasonNames = [...]string{
	ReasonNoPolicy:         "no_policy",
	ReasonDenied:           "denied",
	ReasonAllowed:          "allowed",
	ReasonNotAllowed:       "not_allowed",
	ReasonUnresolvedPolicy: "unresolved_policy",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Decision is the result of Evaluate.
type Decision struct {
	Allow  bool
	Reason Reason
	// Policy is the key of the policy that decided: the matching DENY or
	// ALLOW policy, the unresolved key, or for ReasonNotAllowed the first
	// ALLOW policy that applied. Empty for ReasonNoPolicy.
	Policy string
	// Audit is the key of the first AUDIT policy that matched, if any: the
	// connection should be audit-logged. AUDIT never changes Allow.
	Audit string
	// DryRun is what the dry-run policies alone would decide.
	DryRun DryRun
}

// DryRun is the shadow decision of the dry-run policies.
type DryRun struct {
	// Applied: at least one dry-run ALLOW or DENY policy applies; the other
	// fields are meaningful only then.
	Applied bool
	Allow   bool
	Reason  Reason
	Policy  string
}

// verdict accumulates the evaluation of one class of policies (enforced, or
// dry-run).
type verdict struct {
	deny       string // first matching DENY
	allow      string // first matching ALLOW
	firstAllow string // first applicable ALLOW
	allowSeen  bool
	any        bool
}

func (v *verdict) visit(p *Policy, c *Conn) {
	switch p.Action {
	case meshv1.Authorization_DENY:
		v.any = true
		if v.deny == "" && p.matches(c) {
			v.deny = p.Key
		}
	case meshv1.Authorization_ALLOW:
		v.any = true
		if !v.allowSeen {
			v.allowSeen = true
			v.firstAllow = p.Key
		}
		if v.deny == "" && v.allow == "" && p.matches(c) {
			v.allow = p.Key
		}
	}
}

func (v *verdict) decide(unresolved string) (bool, Reason, string) {
	switch {
	case v.deny != "":
		return false, ReasonDenied, v.deny
	case unresolved != "":
		return false, ReasonUnresolvedPolicy, unresolved
	case v.allow != "":
		return true, ReasonAllowed, v.allow
	case v.allowSeen:
		return false, ReasonNotAllowed, v.firstAllow
	}
	return true, ReasonNoPolicy, ""
}

type evaluator struct {
	c                Conn
	enforced, dryRun verdict
	audit            string
	unresolved       string
}

func (e *evaluator) visit(p *Policy) {
	switch {
	case p.Action == meshv1.Authorization_AUDIT:
		if e.audit == "" && !p.DryRun && p.matches(&e.c) {
			e.audit = p.Key
		}
	case p.DryRun:
		e.dryRun.visit(p, &e.c)
	default:
		e.enforced.visit(p, &e.c)
	}
}

// Evaluate decides whether the connection may proceed under the policies.
// It does not allocate.
func Evaluate(c Conn, ps Policies) Decision {
	e := evaluator{c: c}
	e.c.SourceIP = c.SourceIP.Unmap()
	e.c.DestinationIP = c.DestinationIP.Unmap()
	for _, p := range ps.Global {
		e.visit(p)
	}
	for _, p := range ps.Namespace {
		e.visit(p)
	}
	for _, k := range ps.Selected {
		var p *Policy
		if ps.Resolver != nil {
			p = ps.Resolver.Policy(k)
		}
		switch {
		case p == nil:
			if e.unresolved == "" {
				e.unresolved = k
			}
		case p.Scope == meshv1.Authorization_WORKLOAD_SELECTOR:
			e.visit(p)
		}
	}
	var d Decision
	d.Allow, d.Reason, d.Policy = e.enforced.decide(e.unresolved)
	d.Audit = e.audit
	if e.dryRun.any {
		d.DryRun.Applied = true
		d.DryRun.Allow, d.DryRun.Reason, d.DryRun.Policy = e.dryRun.decide("")
	}
	return d
}

// matches: any rule matches; no rules, nothing matches.
func (p *Policy) matches(c *Conn) bool {
	for i := range p.rules {
		if p.rules[i].matches(c) {
			return true
		}
	}
	return false
}

func (r *rule) matches(c *Conn) bool {
	if r.never {
		return false
	}
	if len(r.from) > 0 {
		ok := false
		for i := range r.from {
			if r.from[i].matches(c) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.to) > 0 {
		ok := false
		for i := range r.to {
			if r.to[i].matches(c) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.when {
		if !r.when[i].matches(c) {
			return false
		}
	}
	return true
}

func (s *source) matches(c *Conn) bool {
	return principalsMatch(s.principals, s.notPrincipals, c) &&
		namespacesMatch(s.namespaces, s.notNamespaces, c) &&
		netsMatch(s.ips, s.notIPs, c.SourceIP) &&
		netsMatch(s.remoteIPs, s.notRemoteIPs, c.SourceIP)
}

func (o *operation) matches(c *Conn) bool {
	return portsMatch(o.ports, o.notPorts, c.DestinationPort)
}

func (cd *condition) matches(c *Conn) bool {
	switch cd.key {
	case condSourceIP:
		return netsMatch(cd.nets, cd.notNets, c.SourceIP)
	case condDestinationIP:
		return netsMatch(cd.nets, cd.notNets, c.DestinationIP)
	case condSourceNamespace:
		return namespacesMatch(cd.strs, cd.notStrs, c)
	case condSourcePrincipal:
		return principalsMatch(cd.strs, cd.notStrs, c)
	case condDestinationPort:
		if len(cd.ports) > 0 || cd.anyPort {
			if !cd.anyPort && !containsPort(cd.ports, c.DestinationPort) {
				return false
			}
		}
		if cd.notAnyPort || containsPort(cd.notPorts, c.DestinationPort) {
			return false
		}
		return true
	}
	return false
}

// principalsMatch: a plaintext peer has no principal, so no entry matches it
// and no not-entry excludes it.
func principalsMatch(pos, neg []strMatch, c *Conn) bool {
	if !c.Authenticated() {
		return len(pos) == 0
	}
	if len(pos) > 0 {
		ok := false
		for i := range pos {
			if pos[i].matchPrincipal(&c.Source) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range neg {
		if neg[i].matchPrincipal(&c.Source) {
			return false
		}
	}
	return true
}

func namespacesMatch(pos, neg []strMatch, c *Conn) bool {
	if !c.Authenticated() {
		return len(pos) == 0
	}
	ns := c.Source.Namespace
	if len(pos) > 0 {
		ok := false
		for i := range pos {
			if pos[i].match(ns) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range neg {
		if neg[i].match(ns) {
			return false
		}
	}
	return true
}

func netsMatch(pos, neg []netip.Prefix, a netip.Addr) bool {
	if len(pos) > 0 {
		ok := false
		for _, p := range pos {
			if p.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, p := range neg {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

func portsMatch(pos, neg []uint16, port uint16) bool {
	if len(pos) > 0 && !containsPort(pos, port) {
		return false
	}
	return !containsPort(neg, port)
}

func containsPort(ps []uint16, port uint16) bool {
	for _, p := range ps {
		if p == port {
			return true
		}
	}
	return false
}

// match applies Istio's string match: "*" (any) requires a non-empty value.
func (m *strMatch) match(v string) bool {
	switch m.kind {
	case matchExact:
		return v == m.s
	case matchPrefix:
		return len(v) >= len(m.s) && v[:len(m.s)] == m.s
	case matchSuffix:
		return len(v) >= len(m.s) && v[len(v)-len(m.s):] == m.s
	case matchAny:
		return v != ""
	}
	return false
}

// matchPrincipal matches against id.Principal() ("td/ns/<ns>/sa/<sa>")
// without building the string.
func (m *strMatch) matchPrincipal(id *spiffe.ID) bool {
	parts := [5]string{id.TrustDomain, "/ns/", id.Namespace, "/sa/", id.ServiceAccount}
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	switch m.kind {
	case matchExact:
		return total == len(m.s) && hasPrefixParts(&parts, m.s)
	case matchPrefix:
		return total >= len(m.s) && hasPrefixParts(&parts, m.s)
	case matchSuffix:
		return total >= len(m.s) && hasSuffixParts(&parts, m.s)
	case matchAny:
		return total > 0
	}
	return false
}

// hasPrefixParts reports whether the concatenation of parts starts with s.
func hasPrefixParts(parts *[5]string, s string) bool {
	for _, p := range parts {
		if s == "" {
			return true
		}
		n := min(len(p), len(s))
		if p[:n] != s[:n] {
			return false
		}
		s = s[n:]
	}
	return s == ""
}

// hasSuffixParts reports whether the concatenation of parts ends with s.
func hasSuffixParts(parts *[5]string, s string) bool {
	for i := len(parts) - 1; i >= 0; i-- {
		if s == "" {
			return true
		}
		p := parts[i]
		n := min(len(p), len(s))
		if p[len(p)-n:] != s[len(s)-n:] {
			return false
		}
		s = s[:len(s)-n]
	}
	return s == ""
}
