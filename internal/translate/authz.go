package translate

import (
	"sort"
	"strconv"
	"strings"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

func hasTargetRefs(p *securityv1.AuthorizationPolicy) bool {
	return len(p.Spec.GetTargetRefs()) > 0 || p.Spec.GetTargetRef() != nil
}

// authorizations translates the AuthorizationPolicies enforced by ztunnels:
// those without targetRefs. (Policies with targetRefs attach to waypoints.)
func (t *translator) authorizations() map[string]*meshv1.Authorization {
	out := map[string]*meshv1.Authorization{}
	for k, p := range t.snap.AuthorizationPolicies {
		if hasTargetRefs(p) {
			continue
		}
		if a := t.authorization(k, p); a != nil {
			out[k.String()] = a
		}
	}
	return out
}

func (t *translator) scopeOf(namespace string, selector *typeapi.WorkloadSelector) meshv1.Authorization_Scope {
	switch {
	case len(selector.GetMatchLabels()) > 0:
		return meshv1.Authorization_WORKLOAD_SELECTOR
	case namespace == t.mesh.RootNamespace:
		return meshv1.Authorization_GLOBAL
	default:
		return meshv1.Authorization_NAMESPACE
	}
}

func (t *translator) authorization(k model.Key, p *securityv1.AuthorizationPolicy) *meshv1.Authorization {
	ref := model.Ref{Kind: model.KindAuthorizationPolicy, Namespace: k.Namespace, Name: k.Name}
	a := &meshv1.Authorization{
		Name:      k.Name,
		Namespace: k.Namespace,
		Scope:     t.scopeOf(k.Namespace, p.Spec.GetSelector()),
		DryRun:    p.Annotations["istio.io/dry-run"] == "true",
	}
	switch p.Spec.GetAction() {
	case securityapi.AuthorizationPolicy_ALLOW:
		a.Action = meshv1.Authorization_ALLOW
	case securityapi.AuthorizationPolicy_DENY:
		a.Action = meshv1.Authorization_DENY
	case securityapi.AuthorizationPolicy_AUDIT:
		a.Action = meshv1.Authorization_AUDIT
	default:
		t.problem(ref, "spec.action", "action %s is not supported (no external authorizer); the policy is not applied", p.Spec.GetAction())
		return nil
	}
	for i, r := range p.Spec.GetRules() {
		rule, ok := t.rule(ref, i, r)
		if !ok {
			// A rule we cannot represent must not widen access: for ALLOW it
			// is dropped (matches nothing), for DENY the policy denies all the
			// traffic it selects.
			if a.Action == meshv1.Authorization_DENY {
				rule = &meshv1.Rule{}
			} else {
				continue
			}
		}
		a.Rules = append(a.Rules, rule)
	}
	return a
}

// rule translates one rule; false when part of it cannot be represented.
func (t *translator) rule(ref model.Ref, i int, r *securityapi.Rule) (*meshv1.Rule, bool) {
	field := "spec.rules[" + strconv.Itoa(i) + "]"
	out := &meshv1.Rule{}
	for j, f := range r.GetFrom() {
		s := f.GetSource()
		src := &meshv1.Source{
			Principals:           stringMatches(s.GetPrincipals()),
			NotPrincipals:        stringMatches(s.GetNotPrincipals()),
			Namespaces:           stringMatches(s.GetNamespaces()),
			NotNamespaces:        stringMatches(s.GetNotNamespaces()),
			IpBlocks:             s.GetIpBlocks(),
			NotIpBlocks:          s.GetNotIpBlocks(),
			RemoteIpBlocks:       s.GetRemoteIpBlocks(),
			NotRemoteIpBlocks:    s.GetNotRemoteIpBlocks(),
			RequestPrincipals:    stringMatches(s.GetRequestPrincipals()),
			NotRequestPrincipals: stringMatches(s.GetNotRequestPrincipals()),
		}
		if msg := identityFields(src, s, ref.Namespace); msg != "" {
			t.problem(ref, field+".from["+strconv.Itoa(j)+"].source", "%s; the rule is not applied as written (an ALLOW rule allows nothing, a DENY rule denies all it selects)", msg)
			return nil, false
		}
		out.From = append(out.From, src)
	}
	for j, to := range r.GetTo() {
		op := to.GetOperation()
		ports, ok1 := t.ports(ref, field+".to["+strconv.Itoa(j)+"].operation.ports", op.GetPorts())
		notPorts, ok2 := t.ports(ref, field+".to["+strconv.Itoa(j)+"].operation.notPorts", op.GetNotPorts())
		if !ok1 || !ok2 {
			return nil, false
		}
		out.To = append(out.To, &meshv1.Operation{
			Ports:      ports,
			NotPorts:   notPorts,
			Hosts:      stringMatches(op.GetHosts()),
			NotHosts:   stringMatches(op.GetNotHosts()),
			Methods:    stringMatches(op.GetMethods()),
			NotMethods: stringMatches(op.GetNotMethods()),
			Paths:      stringMatches(op.GetPaths()),
			NotPaths:   stringMatches(op.GetNotPaths()),
		})
	}
	for _, c := range r.GetWhen() {
		out.When = append(out.When, &meshv1.Condition{
			Key:       c.GetKey(),
			Values:    stringMatches(c.GetValues()),
			NotValues: stringMatches(c.GetNotValues()),
		})
	}
	return out, true
}

// identityFields folds serviceAccounts and trustDomains (and their not-forms)
// into principal matches, which is exact: a principal is
// "<trust domain>/ns/<namespace>/sa/<service account>". Istio forbids
// combining them with principals; a combination, or a trust-domain suffix
// match that principals cannot express, is reported rather than widened.
func identityFields(src *meshv1.Source, s *securityapi.Source, policyNS string) string {
	sa := func(in []string) []*meshv1.StringMatch {
		var out []*meshv1.StringMatch
		for _, v := range in {
			ns, name, ok := strings.Cut(v, "/")
			if !ok {
				ns, name = policyNS, v
			}
			out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Suffix{Suffix: "/ns/" + ns + "/sa/" + name}})
		}
		return out
	}
	td := func(in []string) ([]*meshv1.StringMatch, string) {
		var out []*meshv1.StringMatch
		for _, v := range in {
			switch {
			case v == "*":
				out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Any{Any: true}})
			case strings.HasSuffix(v, "*"):
				out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Prefix{Prefix: strings.TrimSuffix(v, "*")}})
			case strings.HasPrefix(v, "*"):
				return nil, "trust domain suffix match " + strconv.Quote(v) + " is not supported"
			default:
				out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Prefix{Prefix: v + "/"}})
			}
		}
		return out, ""
	}
	allow := [][]*meshv1.StringMatch{src.Principals}
	deny := [][]*meshv1.StringMatch{src.NotPrincipals}
	allow = append(allow, sa(s.GetServiceAccounts()))
	deny = append(deny, sa(s.GetNotServiceAccounts()))
	tds, msg := td(s.GetTrustDomains())
	if msg != "" {
		return msg
	}
	notTDs, msg := td(s.GetNotTrustDomains())
	if msg != "" {
		return msg
	}
	allow = append(allow, tds)
	deny = append(deny, notTDs)
	// Positive lists are ANDed in Istio (each field must match), so at most
	// one of principals, serviceAccounts, trustDomains may be set to fold
	// them into one OR list. Negative lists are ORed exclusions and merge.
	set := 0
	for _, l := range allow {
		if len(l) > 0 {
			set++
			src.Principals = l
		}
	}
	if set > 1 {
		return "principals, serviceAccounts and trustDomains cannot be combined in one source"
	}
	src.NotPrincipals = nil
	for _, l := range deny {
		src.NotPrincipals = append(src.NotPrincipals, l...)
	}
	return ""
}

func (t *translator) ports(ref model.Ref, field string, in []string) ([]uint32, bool) {
	var out []uint32
	for _, p := range in {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			t.problem(ref, field, "port %q is not a number in 1-65535", p)
			return nil, false
		}
		out = append(out, uint32(n))
	}
	return out, true
}

// stringMatches applies Istio's matching convention: "*" any, "x*" prefix,
// "*x" suffix, otherwise exact.
func stringMatches(in []string) []*meshv1.StringMatch {
	var out []*meshv1.StringMatch
	for _, s := range in {
		var m *meshv1.StringMatch
		switch {
		case s == "*":
			m = &meshv1.StringMatch{Kind: &meshv1.StringMatch_Any{Any: true}}
		case strings.HasSuffix(s, "*"):
			m = &meshv1.StringMatch{Kind: &meshv1.StringMatch_Prefix{Prefix: strings.TrimSuffix(s, "*")}}
		case strings.HasPrefix(s, "*"):
			m = &meshv1.StringMatch{Kind: &meshv1.StringMatch_Suffix{Suffix: strings.TrimPrefix(s, "*")}}
		default:
			m = &meshv1.StringMatch{Kind: &meshv1.StringMatch_Exact{Exact: s}}
		}
		out = append(out, m)
	}
	return out
}

// attachL7Policies gives each waypoint the policies whose targetRefs name it
// (kind Gateway) or a Service bound to it (kind Service).
func (t *translator) attachL7Policies(waypoints map[string]*meshv1.WaypointConfig, services map[string]*meshv1.Service) {
	keys := make([]model.Key, 0, len(t.snap.AuthorizationPolicies))
	for k, p := range t.snap.AuthorizationPolicies {
		if hasTargetRefs(p) {
			keys = append(keys, k)
		}
	}
	sortKeys(keys)
	gatewayOfService := map[string]string{} // waypoint Service key → Gateway key
	for gk, wc := range waypoints {
		gatewayOfService[t.serviceKey(wc.Namespace, wc.Name)] = gk
	}
	for _, k := range keys {
		p := t.snap.AuthorizationPolicies[k]
		a := t.authorization(k, p)
		if a == nil {
			continue
		}
		a.Scope = meshv1.Authorization_WORKLOAD_SELECTOR
		refs := p.Spec.GetTargetRefs()
		if r := p.Spec.GetTargetRef(); r != nil {
			refs = append([]*typeapi.PolicyTargetReference{r}, refs...)
		}
		pref := model.Ref{Kind: model.KindAuthorizationPolicy, Namespace: k.Namespace, Name: k.Name}
		attached := map[string][]string{} // waypoint key → services ("" = all)
		for i, r := range refs {
			ns := firstNonEmpty(r.GetNamespace(), k.Namespace)
			field := "spec.targetRefs[" + strconv.Itoa(i) + "]"
			switch r.GetKind() {
			case "Gateway":
				gk := model.Key{Namespace: ns, Name: r.GetName()}
				if !isWaypoint(t.snap.Gateways[gk]) {
					t.problem(pref, field, "Gateway %s is not a waypoint (gatewayClassName %s); the policy is not applied there", gk, WaypointClass)
					continue
				}
				attached[gk.String()] = append(attached[gk.String()], "")
			case "Service":
				sk := t.serviceKey(ns, r.GetName())
				svc := services[sk]
				if svc == nil {
					t.problem(pref, field, "Service %s/%s not found", ns, r.GetName())
					continue
				}
				if svc.Waypoint == nil {
					t.problem(pref, field, "Service %s/%s does not use a waypoint; L7 policy on it is not enforced (add the istio.io/use-waypoint label)", ns, r.GetName())
					continue
				}
				wk := gatewayOfService[svc.Waypoint.Service]
				attached[wk] = append(attached[wk], sk)
			default:
				t.problem(pref, field, "targetRefs kind %q is not supported (want Gateway or Service)", r.GetKind())
			}
		}
		for wk, svcs := range attached {
			wc := waypoints[wk]
			if wc == nil {
				continue
			}
			wc.Policies = append(wc.Policies, a)
			all := false
			for _, s := range svcs {
				all = all || s == ""
			}
			if !all {
				sort.Strings(svcs)
				if wc.PolicyServices == nil {
					wc.PolicyServices = map[string]*meshv1.ServiceList{}
				}
				wc.PolicyServices[k.String()] = &meshv1.ServiceList{Services: svcs}
			}
		}
	}
}

// peerAuthentications translates PeerAuthentication with its scope resolved.
func (t *translator) peerAuthentications() map[string]*meshv1.PeerAuthentication {
	out := map[string]*meshv1.PeerAuthentication{}
	for k, p := range t.snap.PeerAuthentications {
		pa := &meshv1.PeerAuthentication{
			Name:      k.Name,
			Namespace: k.Namespace,
			Scope:     t.scopeOf(k.Namespace, p.Spec.GetSelector()),
			Mode:      peerMode(p.Spec.GetMtls()),
		}
		for port, m := range p.Spec.GetPortLevelMtls() {
			if pa.PortModes == nil {
				pa.PortModes = map[uint32]meshv1.PeerAuthentication_Mode{}
			}
			pa.PortModes[port] = peerMode(m)
		}
		if pa.Scope == meshv1.Authorization_WORKLOAD_SELECTOR {
			sel := p.Spec.GetSelector().GetMatchLabels()
			for pk, pod := range t.snap.Pods {
				// Unlike AuthorizationPolicy, a selector PeerAuthentication
				// in the root namespace selects only that namespace's pods,
				// as in Istio.
				if pk.Namespace == k.Namespace && selects(sel, pod.Labels) {
					pa.Workloads = append(pa.Workloads, WorkloadUID(t.mesh, pk.Namespace, pk.Name))
				}
			}
			sort.Strings(pa.Workloads)
		}
		out[k.String()] = pa
	}
	return out
}

func peerMode(m *securityapi.PeerAuthentication_MutualTLS) meshv1.PeerAuthentication_Mode {
	switch m.GetMode() {
	case securityapi.PeerAuthentication_MutualTLS_PERMISSIVE:
		return meshv1.PeerAuthentication_PERMISSIVE
	case securityapi.PeerAuthentication_MutualTLS_STRICT:
		return meshv1.PeerAuthentication_STRICT
	case securityapi.PeerAuthentication_MutualTLS_DISABLE:
		return meshv1.PeerAuthentication_DISABLE
	}
	return meshv1.PeerAuthentication_UNSET
}
