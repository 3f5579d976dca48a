package waypoint

import (
	"fmt"
	"net/http"
	"strings"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
)

// L7 AuthorizationPolicy: the policies attached to the waypoint (targetRefs
// Gateway) or to a Service bound to it (targetRefs Service), with Istio's
// semantics: AUDIT never decides, any matching DENY denies, and when ALLOW
// policies apply one of them must match.
//
// The L4 half of every rule — principals, namespaces, IP blocks, ports and
// the source.*/destination.* conditions — is evaluated by the ztunnel's
// authz package, so both proxies read those fields identically. A rule is
// OR over its from × to pairs, so each pair compiles to a one-rule L4
// policy; the HTTP half (hosts, methods, paths, request.headers[...]) is
// matched here. For traffic the waypoint relays at L4 (TCP ports) the HTTP
// half is treated as Istio's L4 filters do: an ALLOW rule that needs it
// matches nothing, a DENY rule is enforced without it (denies more, never
// less). Request principals (JWT) are never present: the waypoint
// validates no JWTs, so a source requiring one never matches.

type l7Policy struct {
	key      string
	action   meshv1.Authorization_Action
	dryRun   bool
	services map[string]bool // nil: every Service of the waypoint
	rules    []l7Rule
}

type l7Rule struct {
	pairs []l7Pair // any
	when  []l7Cond // all
}

type l7Pair struct {
	l4      []*authz.Policy // one ALLOW policy holding the pair's L4 half
	op      *meshv1.Operation
	needsRP bool // the source requires a request principal
	http    bool // op needs HTTP attributes
}

type l7Cond struct {
	header            string // request.headers[name], canonical; "" for an attribute the waypoint never has
	values, notValues []*meshv1.StringMatch
}

// l4WhenKeys are the conditions the L4 half evaluates; remote.ip is the
// connection's source (the waypoint trusts no X-Forwarded-For).
var l4WhenKeys = map[string]string{
	"source.ip": "source.ip", "remote.ip": "source.ip", "source.namespace": "source.namespace",
	"source.principal": "source.principal", "destination.ip": "destination.ip", "destination.port": "destination.port",
}

func compileL7Policy(a *meshv1.Authorization, scoped map[string][]string) (*l7Policy, error) {
	if a.GetName() == "" || a.GetNamespace() == "" {
		return nil, fmt.Errorf("name and namespace: required")
	}
	p := &l7Policy{key: a.GetNamespace() + "/" + a.GetName(), action: a.GetAction(), dryRun: a.GetDryRun()}
	if _, ok := meshv1.Authorization_Action_name[int32(p.action)]; !ok {
		return nil, fmt.Errorf("action: unknown value %d", p.action)
	}
	if svcs, ok := scoped[p.key]; ok {
		p.services = map[string]bool{}
		for _, s := range svcs {
			p.services[s] = true
		}
	}
	for i, r := range a.GetRules() {
		field := fmt.Sprintf("rules[%d]", i)
		if r == nil {
			return nil, fmt.Errorf("%s: null rule", field)
		}
		var cr l7Rule
		var l4When []*meshv1.Condition
		for j, c := range r.GetWhen() {
			if c == nil || c.GetKey() == "" {
				return nil, fmt.Errorf("%s.when[%d].key: required", field, j)
			}
			if k, ok := l4WhenKeys[c.GetKey()]; ok {
				l4When = append(l4When, &meshv1.Condition{Key: k, Values: c.GetValues(), NotValues: c.GetNotValues()})
				continue
			}
			cond := l7Cond{values: c.GetValues(), notValues: c.GetNotValues()}
			if name, ok := strings.CutPrefix(c.GetKey(), "request.headers["); ok && strings.HasSuffix(name, "]") {
				cond.header = http.CanonicalHeaderKey(strings.TrimSuffix(name, "]"))
			}
			if err := checkStringMatches(fmt.Sprintf("%s.when[%d]", field, j), append(append([]*meshv1.StringMatch(nil), c.GetValues()...), c.GetNotValues()...)); err != nil {
				return nil, err
			}
			cr.when = append(cr.when, cond)
		}
		froms := r.GetFrom()
		if len(froms) == 0 {
			froms = []*meshv1.Source{nil}
		}
		tos := r.GetTo()
		if len(tos) == 0 {
			tos = []*meshv1.Operation{nil}
		}
		for _, f := range froms {
			for _, t := range tos {
				pair, err := compilePair(a, field, f, t, l4When)
				if err != nil {
					return nil, err
				}
				cr.pairs = append(cr.pairs, pair)
			}
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

func compilePair(a *meshv1.Authorization, field string, f *meshv1.Source, t *meshv1.Operation, when []*meshv1.Condition) (l7Pair, error) {
	rule := &meshv1.Rule{When: when}
	var pair l7Pair
	if f != nil {
		pair.needsRP = len(f.GetRequestPrincipals()) > 0
		rule.From = []*meshv1.Source{{
			Principals: f.GetPrincipals(), NotPrincipals: f.GetNotPrincipals(),
			Namespaces: f.GetNamespaces(), NotNamespaces: f.GetNotNamespaces(),
			IpBlocks: f.GetIpBlocks(), NotIpBlocks: f.GetNotIpBlocks(),
			RemoteIpBlocks: f.GetRemoteIpBlocks(), NotRemoteIpBlocks: f.GetNotRemoteIpBlocks(),
		}}
	}
	if t != nil {
		if len(t.GetPorts()) > 0 || len(t.GetNotPorts()) > 0 {
			rule.To = []*meshv1.Operation{{Ports: t.GetPorts(), NotPorts: t.GetNotPorts()}}
		}
		pair.op = t
		pair.http = len(t.GetHosts())+len(t.GetNotHosts())+len(t.GetMethods())+len(t.GetNotMethods())+len(t.GetPaths())+len(t.GetNotPaths()) > 0
		var all []*meshv1.StringMatch
		for _, l := range [][]*meshv1.StringMatch{t.GetHosts(), t.GetNotHosts(), t.GetMethods(), t.GetNotMethods(), t.GetPaths(), t.GetNotPaths()} {
			all = append(all, l...)
		}
		if err := checkStringMatches(field+".to", all); err != nil {
			return pair, err
		}
	}
	l4, err := authz.Compile(&meshv1.Authorization{Name: a.GetName(), Namespace: a.GetNamespace(), Scope: meshv1.Authorization_GLOBAL,
		Action: meshv1.Authorization_ALLOW, Rules: []*meshv1.Rule{rule}})
	if err != nil {
		return pair, fmt.Errorf("%s: %w", field, err)
	}
	pair.l4 = []*authz.Policy{l4}
	return pair, nil
}

func checkStringMatches(field string, ms []*meshv1.StringMatch) error {
	for i, m := range ms {
		if m.GetKind() == nil {
			return fmt.Errorf("%s: string match %d has no kind", field, i)
		}
	}
	return nil
}

// requestAttrs are the HTTP attributes of a request; nil for L4 traffic.
type requestAttrs struct {
	host, method, path string
	header             http.Header
}

// authorize decides a request (req nil: an L4 connection) to svc. It
// returns whether it may proceed and the deciding policy's key.
func (c *config) authorize(svc string, conn *authz.Conn, req *requestAttrs) (bool, string) {
	firstAllow, matchedAllow := "", ""
	for _, p := range c.policies {
		if p.dryRun || (p.services != nil && !p.services[svc]) {
			continue
		}
		switch p.action {
		case meshv1.Authorization_DENY:
			if p.matches(conn, req) {
				return false, p.key
			}
		case meshv1.Authorization_ALLOW:
			if firstAllow == "" {
				firstAllow = p.key
			}
			if matchedAllow == "" && p.matches(conn, req) {
				matchedAllow = p.key
			}
		}
	}
	switch {
	case matchedAllow != "":
		return true, matchedAllow
	case firstAllow != "":
		return false, firstAllow
	}
	return true, ""
}

// matches: any rule matches (a policy without rules matches nothing).
func (p *l7Policy) matches(conn *authz.Conn, req *requestAttrs) bool {
	allow := p.action == meshv1.Authorization_ALLOW
	for i := range p.rules {
		if p.rules[i].matches(conn, req, allow) {
			return true
		}
	}
	return false
}

func (r *l7Rule) matches(conn *authz.Conn, req *requestAttrs, allow bool) bool {
	for i := range r.when {
		if req == nil {
			if allow {
				return false // needs HTTP: an L4 ALLOW rule matches nothing
			}
			continue // an L4 DENY rule is enforced without its HTTP half
		}
		if !r.when[i].matches(req) {
			return false
		}
	}
	for i := range r.pairs {
		if r.pairs[i].matches(conn, req, allow) {
			return true
		}
	}
	return false
}

func (pr *l7Pair) matches(conn *authz.Conn, req *requestAttrs, allow bool) bool {
	if pr.needsRP && (req != nil || allow) {
		return false
	}
	if pr.http && req == nil && allow {
		return false
	}
	if authz.Evaluate(*conn, authz.Policies{Global: pr.l4}).Reason != authz.ReasonAllowed {
		return false
	}
	if req == nil || pr.op == nil {
		return true
	}
	op := pr.op
	return listMatch(op.GetHosts(), op.GetNotHosts(), req.host, matchHost) &&
		listMatch(op.GetMethods(), op.GetNotMethods(), req.method, matchString) &&
		listMatch(op.GetPaths(), op.GetNotPaths(), req.path, matchString)
}

func (c *l7Cond) matches(req *requestAttrs) bool {
	v, present := "", false
	if c.header != "" {
		if vs := req.header[c.header]; len(vs) > 0 {
			v, present = strings.Join(vs, ","), true
		}
	}
	if len(c.values) > 0 {
		if !present {
			return false
		}
		ok := false
		for _, m := range c.values {
			if matchString(m, v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if present {
		for _, m := range c.notValues {
			if matchString(m, v) {
				return false
			}
		}
	}
	return true
}

func listMatch(pos, neg []*meshv1.StringMatch, v string, match func(*meshv1.StringMatch, string) bool) bool {
	if len(pos) > 0 {
		ok := false
		for _, m := range pos {
			if match(m, v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, m := range neg {
		if match(m, v) {
			return false
		}
	}
	return true
}

// matchString is Istio's string match: exact, prefix, suffix, or "*" (any
// non-empty value).
func matchString(m *meshv1.StringMatch, v string) bool {
	switch k := m.GetKind().(type) {
	case *meshv1.StringMatch_Exact:
		return v == k.Exact
	case *meshv1.StringMatch_Prefix:
		return strings.HasPrefix(v, k.Prefix)
	case *meshv1.StringMatch_Suffix:
		return strings.HasSuffix(v, k.Suffix)
	case *meshv1.StringMatch_Any:
		return v != ""
	}
	return false
}

// matchHost matches a Host header case-insensitively, with or without its
// port, as Istio's hosts field does.
func matchHost(m *meshv1.StringMatch, host string) bool {
	if matchFold(m, host) {
		return true
	}
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.HasSuffix(host, "]") {
		return matchFold(m, host[:i])
	}
	return false
}

func matchFold(m *meshv1.StringMatch, v string) bool {
	switch k := m.GetKind().(type) {
	case *meshv1.StringMatch_Exact:
		return strings.EqualFold(v, k.Exact)
	case *meshv1.StringMatch_Prefix:
		return len(v) >= len(k.Prefix) && strings.EqualFold(v[:len(k.Prefix)], k.Prefix)
	case *meshv1.StringMatch_Suffix:
		return len(v) >= len(k.Suffix) && strings.EqualFold(v[len(v)-len(k.Suffix):], k.Suffix)
	case *meshv1.StringMatch_Any:
		return v != ""
	}
	return false
}
