package translate

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

// Gateway API (GAMMA) routes: HTTPRoute and GRPCRoute attached to Services.
//
// Each (rule, match) becomes one RouteRule, because precedence is defined per
// match, not per rule, and because a rule's redirect or rewrite with
// ReplacePrefixMatch needs to know which prefix matched. A rule without
// matches gets the API default, PathPrefix "/" (HTTPRoute) or match-all
// (GRPCRoute).
//
// Cross-namespace backendRefs are accepted without a ReferenceGrant, as Istio
// does for mesh (Service-parented) routes: the conformance case
// MeshConsumerRoute requires it, and the model holds no ReferenceGrants.

// collectGatewayRoutes converts every HTTPRoute and GRPCRoute and records
// which Services (and ports) each attaches to.
func (b *routeBuilder) collectGatewayRoutes() {
	for _, k := range sortedObjectKeys(b.snap.HTTPRoutes) {
		r := b.snap.HTTPRoutes[k]
		ref := model.Ref{Kind: model.KindHTTPRoute, Namespace: k.Namespace, Name: k.Name}
		var conv *gwRoute
		b.attach(ref, r.Spec.ParentRefs, func() *gwRoute {
			if conv == nil {
				conv = b.convertHTTPRoute(ref, r)
			}
			return conv
		})
	}
	for _, k := range sortedObjectKeys(b.snap.GRPCRoutes) {
		r := b.snap.GRPCRoutes[k]
		ref := model.Ref{Kind: model.KindGRPCRoute, Namespace: k.Namespace, Name: k.Name}
		var conv *gwRoute
		b.attach(ref, r.Spec.ParentRefs, func() *gwRoute {
			if conv == nil {
				conv = b.convertGRPCRoute(ref, r)
			}
			return conv
		})
	}
}

func sortedObjectKeys[V any](m map[model.Key]V) []model.Key {
	keys := make([]model.Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortKeys(keys)
	return keys
}

// isServiceParent reports whether a parentRef names a core Service. Group
// defaults to gateway.networking.k8s.io and kind to Gateway, so a Service
// parent must say group "" (or "core") and kind Service.
func isServiceParent(p gatewayv1.ParentReference) bool {
	if p.Group == nil || (*p.Group != "" && *p.Group != "core") {
		return false
	}
	return p.Kind != nil && *p.Kind == "Service"
}

// attach records the Service parentRefs of a route. Parents of other kinds
// (Gateways) are ingress configuration, handled elsewhere.
func (b *routeBuilder) attach(ref model.Ref, parents []gatewayv1.ParentReference, conv func() *gwRoute) {
	for i, p := range parents {
		if !isServiceParent(p) {
			if p.Kind != nil && *p.Kind == "Service" {
				g := "gateway.networking.k8s.io (the default)"
				if p.Group != nil {
					g = string(*p.Group)
				}
				b.problem(nil, ref, fmt.Sprintf("spec.parentRefs[%d].group", i),
					"a Service parent needs group \"\" (core), not %s: the route is not attached to Service %s", g, p.Name)
			}
			continue
		}
		field := fmt.Sprintf("spec.parentRefs[%d]", i)
		ns := ref.Namespace
		if p.Namespace != nil && *p.Namespace != "" {
			ns = string(*p.Namespace)
		}
		k := model.Key{Namespace: ns, Name: string(p.Name)}
		svc := b.snap.Services[k]
		if svc == nil {
			b.problem(nil, ref, field, "parent Service %s not found: the route is not attached", k)
			continue
		}
		var port uint32
		if p.Port != nil {
			port = uint32(*p.Port)
			if _, ok := servicePort(svc, port); !ok {
				b.problem(&k, ref, field+".port", "Service %s has no TCP port %d: the route is not attached", k, port)
				continue
			}
		}
		if p.SectionName != nil && *p.SectionName != "" {
			name := string(*p.SectionName)
			found := false
			for _, sp := range svc.Spec.Ports {
				if sp.Name == name && isTCP(sp.Protocol) && (port == 0 || uint32(sp.Port) == port) {
					port, found = uint32(sp.Port), true
					break
				}
			}
			if !found {
				b.problem(&k, ref, field+".sectionName", "Service %s has no port named %q (with port %d): the route is not attached", k, name, port)
				continue
			}
		}
		a := gwAttachment{route: conv(), port: port, field: field}
		if ns != ref.Namespace {
			a.consumerNS = ref.Namespace
		}
		b.attachments[k] = append(b.attachments[k], a)
		// Problems found while converting the route concern this Service too.
		b.ix.problems.relate(k, ref)
	}
}

// ---- HTTPRoute -------------------------------------------------------------

func (b *routeBuilder) convertHTTPRoute(ref model.Ref, r *gatewayv1.HTTPRoute) *gwRoute {
	gr := &gwRoute{ref: ref, created: r.CreationTimestamp}
	rules := r.Spec.Rules
	if len(rules) == 0 {
		// The CRD default: one rule matching PathPrefix "/" with no backends.
		rules = []gatewayv1.HTTPRouteRule{{}}
	}
	for i, rule := range rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		base := b.httpRuleActions(ref, field, rule)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for j, m := range matches {
			mf := fmt.Sprintf("%s.matches[%d]", field, j)
			rm, key, ok := b.httpMatch(ref, mf, m)
			if !ok {
				continue
			}
			rr := proto.Clone(base).(*meshv1.RouteRule)
			rr.Origin = ruleOrigin(ref, i, j, len(matches))
			rr.Matches = []*meshv1.RouteMatch{rm}
			if rr.Redirect.GetHasReplacePrefix() || rr.Rewrite.GetHasReplacePrefix() {
				if rm.GetPath().GetType() != meshv1.PathMatch_PREFIX {
					b.problem(nil, ref, field+".filters", "ReplacePrefixMatch needs a PathPrefix match; match %d has none, so the whole path is replaced", j)
				}
			}
			gr.entries = append(gr.entries, &gwEntry{rule: rr, key: key, ruleIdx: i, matchIdx: j, route: gr})
		}
	}
	return gr
}

func ruleOrigin(ref model.Ref, rule, match, matches int) string {
	s := fmt.Sprintf("%s %s/%s rule %d", ref.Kind, ref.Namespace, ref.Name, rule+1)
	if matches > 1 {
		s += fmt.Sprintf(" match %d", match+1)
	}
	return s
}

// httpMatch converts one HTTPRouteMatch, applying the API defaults (a
// missing path is PathPrefix "/"). ok is false when the match can never be
// honoured (an invalid regular expression); it is then left out.
func (b *routeBuilder) httpMatch(ref model.Ref, field string, m gatewayv1.HTTPRouteMatch) (*meshv1.RouteMatch, precedenceKey, bool) {
	rm := &meshv1.RouteMatch{}
	key := precedenceKey{}
	typ, value := gatewayv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		if m.Path.Value != nil {
			value = *m.Path.Value
		}
	}
	switch typ {
	case gatewayv1.PathMatchExact:
		rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_EXACT, Value: value}
		key.rank, key.len1 = pathRankExact, len(value)
	case gatewayv1.PathMatchPathPrefix:
		if v := strings.TrimRight(value, "/"); v != "" {
			value = v
		} else {
			value = "/"
		}
		rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: value}
		key.rank, key.len1 = pathRankPrefix, len(value)
	case gatewayv1.PathMatchRegularExpression:
		if err := checkRegex(value); err != nil {
			b.problem(nil, ref, field+".path.value", "invalid regular expression %q (%v): the match is ignored", value, err)
			return nil, key, false
		}
		rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: value}
		key.rank, key.len1 = pathRankRegex, len(value)
	default:
		b.problem(nil, ref, field+".path.type", "unsupported path match type %q: the match is ignored", typ)
		return nil, key, false
	}
	seen := map[string]bool{}
	for i, h := range m.Headers {
		// "If multiple entries specify equivalent header names, only the
		// first entry with an equivalent name MUST be considered."
		name := strings.ToLower(string(h.Name))
		if seen[name] {
			continue
		}
		seen[name] = true
		hm, ok := b.gwValueMatch(ref, fmt.Sprintf("%s.headers[%d]", field, i), string(h.Name), h.Value, (*string)(h.Type))
		if !ok {
			return nil, key, false
		}
		rm.Headers = append(rm.Headers, hm)
	}
	seenQ := map[string]bool{}
	for i, q := range m.QueryParams {
		name := string(q.Name)
		if seenQ[name] {
			continue
		}
		seenQ[name] = true
		qm, ok := b.gwValueMatch(ref, fmt.Sprintf("%s.queryParams[%d]", field, i), name, q.Value, (*string)(q.Type))
		if !ok {
			return nil, key, false
		}
		rm.QueryParams = append(rm.QueryParams, qm)
	}
	if m.Method != nil && *m.Method != "" {
		rm.Method = string(*m.Method)
		key.method = true
	}
	key.headers, key.query = len(rm.Headers), len(rm.QueryParams)
	return rm, key, true
}

// gwValueMatch converts a header or query parameter match (Exact or
// RegularExpression).
func (b *routeBuilder) gwValueMatch(ref model.Ref, field, name, value string, typ *string) (*meshv1.HeaderMatch, bool) {
	t := "Exact"
	if typ != nil && *typ != "" {
		t = *typ
	}
	switch t {
	case "Exact":
		return &meshv1.HeaderMatch{Name: name, Type: meshv1.HeaderMatch_EXACT, Value: value}, true
	case "RegularExpression":
		if err := checkRegex(value); err != nil {
			b.problem(nil, ref, field+".value", "invalid regular expression %q (%v): the match is ignored", value, err)
			return nil, false
		}
		return &meshv1.HeaderMatch{Name: name, Type: meshv1.HeaderMatch_REGEX, Value: value}, true
	}
	b.problem(nil, ref, field+".type", "unsupported match type %q: the match is ignored", t)
	return nil, false
}

// checkRegex validates an RE2 pattern as the waypoint will use it (anchored).
func checkRegex(p string) error {
	_, err := regexp.Compile(routematch.Anchored(p))
	return err
}

// httpRuleActions converts what a rule does — filters, backends, timeouts,
// retry — once for all its matches.
func (b *routeBuilder) httpRuleActions(ref model.Ref, field string, rule gatewayv1.HTTPRouteRule) *meshv1.RouteRule {
	rr := &meshv1.RouteRule{}
	if rule.Name != nil {
		rr.Name = string(*rule.Name)
	}
	failClosed := ""
	for i, f := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			rr.RequestHeaders = mergeHeaderModifier(rr.RequestHeaders, gwHeaderModifier(f.RequestHeaderModifier))
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			rr.ResponseHeaders = mergeHeaderModifier(rr.ResponseHeaders, gwHeaderModifier(f.ResponseHeaderModifier))
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			rr.Redirect = b.gwRedirect(ref, ff, f.RequestRedirect)
		case gatewayv1.HTTPRouteFilterURLRewrite:
			rr.Rewrite = gwRewrite(f.URLRewrite)
		case gatewayv1.HTTPRouteFilterRequestMirror:
			if m := b.gwMirror(ref, ff, f.RequestMirror); m != nil {
				rr.Mirrors = append(rr.Mirrors, m)
			}
		case gatewayv1.HTTPRouteFilterCORS:
			b.problem(nil, ref, ff, "CORS filters are not supported and are ignored: responses carry no CORS headers, so browsers refuse cross-origin reads")
		default:
			failClosed = fmt.Sprintf("filter %s is not supported", f.Type)
			b.problem(nil, ref, ff, "unsupported filter type %q: requests matching this rule answer 500", f.Type)
		}
	}
	if rr.Redirect != nil && rr.Rewrite != nil {
		b.problem(nil, ref, field+".filters", "RequestRedirect and URLRewrite cannot be combined: the redirect applies and the rewrite is ignored")
		rr.Rewrite = nil
	}
	if t := rule.Timeouts; t != nil {
		if t.Request != nil {
			rr.TimeoutMs = b.gwDuration(ref, field+".timeouts.request", *t.Request)
		}
		if t.BackendRequest != nil {
			rr.BackendTimeoutMs = b.gwDuration(ref, field+".timeouts.backendRequest", *t.BackendRequest)
		}
	}
	if r := rule.Retry; r != nil {
		rt := &meshv1.Retry{Attempts: 2} // Istio's default when attempts is unset
		if r.Attempts != nil {
			rt.Attempts = uint32(max(*r.Attempts, 0))
		}
		for _, c := range r.Codes {
			rt.Codes = append(rt.Codes, uint32(c))
		}
		if r.Backoff != nil {
			rt.BackoffMs = b.gwDuration(ref, field+".retry.backoff", *r.Backoff)
		}
		rr.Retry = rt
	}
	if rule.SessionPersistence != nil {
		b.problem(nil, ref, field+".sessionPersistence", "session persistence is not supported and is ignored")
	}
	refs := make([]gwBackendRef, len(rule.BackendRefs))
	for i, br := range rule.BackendRefs {
		refs[i].ref = br.BackendRef
		for _, f := range br.Filters {
			refs[i].filters = append(refs[i].filters, gwBackendFilter{string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier})
		}
	}
	weights := b.gwBackends(ref, field, rr, refs)
	switch {
	case failClosed != "":
		rr.Backends, rr.Redirect, rr.Rewrite, rr.Mirrors = nil, nil, nil, nil
		rr.DirectStatus, rr.DirectBody = 500, failClosed+"\n"
	case rr.Redirect != nil:
		if len(rr.Backends) > 0 {
			b.problem(nil, ref, field+".backendRefs", "a rule with a RequestRedirect filter must not have backendRefs: the redirect applies and the backends are ignored")
			rr.Backends = nil
		}
	case weights == 0:
		// "If all entries in BackendRefs are invalid, and there are also no
		// filters specified in this route rule, all traffic which matches
		// this rule MUST receive a 500 status code"; a rule with no backend
		// of positive weight has nowhere to send traffic either.
		rr.Backends = nil
		rr.DirectStatus = 500
	}
	return rr
}

// gwBackend converts a backendRef. Weight-0 backends receive no traffic and
// are left out (nil), but are still checked so mistakes are reported.
// gwBackendRef is what rule translation reads of an HTTPRoute or GRPCRoute
// backendRef: the two kinds share the reference and header-modifier types.
type gwBackendRef struct {
	ref     gatewayv1.BackendRef
	filters []gwBackendFilter
}

type gwBackendFilter struct {
	typ               string
	request, response *gatewayv1.HTTPHeaderFilter
}

// gwBackends adds a rule's backends to rr and returns their total weight.
// Header modifiers are the only filters a backendRef may carry in the mesh;
// any other makes requests sent to that backend answer 500.
func (b *routeBuilder) gwBackends(ref model.Ref, field string, rr *meshv1.RouteRule, backends []gwBackendRef) int {
	weights := 0
	for i, br := range backends {
		bf := fmt.Sprintf("%s.backendRefs[%d]", field, i)
		wb := b.gwBackend(ref, bf, br.ref)
		for j, f := range br.filters {
			ff := fmt.Sprintf("%s.filters[%d]", bf, j)
			switch f.typ {
			case string(gatewayv1.HTTPRouteFilterRequestHeaderModifier):
				if wb != nil {
					wb.RequestHeaders = mergeHeaderModifier(wb.RequestHeaders, gwHeaderModifier(f.request))
				}
			case string(gatewayv1.HTTPRouteFilterResponseHeaderModifier):
				if wb != nil {
					wb.ResponseHeaders = mergeHeaderModifier(wb.ResponseHeaders, gwHeaderModifier(f.response))
				}
			default:
				b.problem(nil, ref, ff, "filter type %q is not supported on a backendRef: requests sent to this backend answer 500", f.typ)
				if wb != nil && wb.InvalidReason == "" {
					wb.InvalidReason = fmt.Sprintf("backend filter %s is not supported", f.typ)
				}
			}
		}
		if wb != nil {
			weights += int(wb.Weight)
			rr.Backends = append(rr.Backends, wb)
		}
	}
	return weights
}

func (b *routeBuilder) gwBackend(ref model.Ref, field string, br gatewayv1.BackendRef) *meshv1.WeightedBackend {
	weight := int32(1)
	if br.Weight != nil {
		weight = *br.Weight
	}
	dest, invalid := b.gwBackendDestination(ref, br.BackendObjectReference)
	if invalid != "" {
		if weight > 0 {
			b.problem(nil, ref, field, "%s: requests sent to this backend answer 500", invalid)
		} else {
			b.problem(nil, ref, field, "%s (weight 0: it receives no traffic)", invalid)
		}
	}
	if weight <= 0 {
		return nil
	}
	return &meshv1.WeightedBackend{Destination: dest, Weight: uint32(weight), InvalidReason: invalid}
}

// gwBackendDestination resolves a backend object reference to a Service port.
func (b *routeBuilder) gwBackendDestination(ref model.Ref, o gatewayv1.BackendObjectReference) (*meshv1.Destination, string) {
	ns := ref.Namespace
	if o.Namespace != nil && *o.Namespace != "" {
		ns = string(*o.Namespace)
	}
	k := model.Key{Namespace: ns, Name: string(o.Name)}
	group, kind := "", "Service"
	if o.Group != nil {
		group = string(*o.Group)
	}
	if o.Kind != nil {
		kind = string(*o.Kind)
	}
	if (group != "" && group != "core") || kind != "Service" {
		gk := kind
		if group != "" {
			gk = kind + "." + group
		}
		return &meshv1.Destination{Service: ns + "/" + string(o.Name)}, fmt.Sprintf("backend kind %s is not supported (only core Services)", gk)
	}
	var port uint32
	if o.Port != nil {
		port = uint32(*o.Port)
	}
	if port == 0 {
		d, invalid := b.serviceDestination(k, 0)
		if b.snap.Services[k] == nil {
			return d, invalid
		}
		return d, fmt.Sprintf("backendRef to service %s has no port (port is required for Service backends)", k)
	}
	return b.serviceDestination(k, port)
}

func (b *routeBuilder) gwDuration(ref model.Ref, field string, d gatewayv1.Duration) int64 {
	v, err := time.ParseDuration(string(d))
	if err != nil || v < 0 {
		b.problem(nil, ref, field, "invalid duration %q: ignored", d)
		return 0
	}
	if v > 0 && v < time.Millisecond {
		return 1
	}
	return v.Milliseconds()
}

func gwHeaderModifier(f *gatewayv1.HTTPHeaderFilter) *meshv1.HeaderModifier {
	if f == nil {
		return nil
	}
	hm := &meshv1.HeaderModifier{}
	for _, h := range f.Set {
		hm.Set = append(hm.Set, &meshv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		hm.Add = append(hm.Add, &meshv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
	}
	hm.Remove = append(hm.Remove, f.Remove...)
	return hm
}

// mergeHeaderModifier appends b's operations to a's (either may be nil).
func mergeHeaderModifier(a, b *meshv1.HeaderModifier) *meshv1.HeaderModifier {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	a.Set = append(a.Set, b.Set...)
	a.Add = append(a.Add, b.Add...)
	a.Remove = append(a.Remove, b.Remove...)
	return a
}

func (b *routeBuilder) gwRedirect(ref model.Ref, field string, f *gatewayv1.HTTPRequestRedirectFilter) *meshv1.Redirect {
	r := &meshv1.Redirect{StatusCode: 302}
	if f == nil {
		return r
	}
	if f.Scheme != nil {
		r.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		r.Hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		r.Port = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		switch *f.StatusCode {
		case 301, 302, 303, 307, 308:
			r.StatusCode = uint32(*f.StatusCode)
		default:
			b.problem(nil, ref, field+".requestRedirect.statusCode", "unsupported redirect status %d: 302 is used", *f.StatusCode)
		}
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			if p.ReplaceFullPath != nil {
				r.FullPath = *p.ReplaceFullPath
			}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			if p.ReplacePrefixMatch != nil {
				r.ReplacePrefix, r.HasReplacePrefix = *p.ReplacePrefixMatch, true
			}
		default:
			b.problem(nil, ref, field+".requestRedirect.path.type", "unsupported path modifier %q: the path is kept", p.Type)
		}
	}
	return r
}

func gwRewrite(f *gatewayv1.HTTPURLRewriteFilter) *meshv1.Rewrite {
	r := &meshv1.Rewrite{}
	if f == nil {
		return r
	}
	if f.Hostname != nil {
		r.Hostname = string(*f.Hostname)
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			if p.ReplaceFullPath != nil {
				r.FullPath = *p.ReplaceFullPath
			}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			if p.ReplacePrefixMatch != nil {
				r.ReplacePrefix, r.HasReplacePrefix = *p.ReplacePrefixMatch, true
			}
		}
	}
	return r
}

// gwMirror converts a RequestMirror filter; nil (with a problem) when its
// backend is unusable, since there is nothing to mirror to.
func (b *routeBuilder) gwMirror(ref model.Ref, field string, f *gatewayv1.HTTPRequestMirrorFilter) *meshv1.Mirror {
	if f == nil {
		return nil
	}
	dest, invalid := b.gwBackendDestination(ref, f.BackendRef)
	if invalid != "" {
		b.problem(nil, ref, field+".requestMirror.backendRef", "%s: requests are not mirrored", invalid)
		return nil
	}
	m := &meshv1.Mirror{Destination: dest, Percent: 100}
	switch {
	case f.Percent != nil:
		m.Percent = float64(min(max(*f.Percent, 0), 100))
	case f.Fraction != nil:
		den := int32(100)
		if f.Fraction.Denominator != nil {
			den = *f.Fraction.Denominator
		}
		if den <= 0 {
			b.problem(nil, ref, field+".requestMirror.fraction", "denominator must be positive: all requests are mirrored")
			break
		}
		m.Percent = min(max(float64(f.Fraction.Numerator)*100/float64(den), 0), 100)
	}
	return m
}

// ---- GRPCRoute -------------------------------------------------------------

func (b *routeBuilder) convertGRPCRoute(ref model.Ref, r *gatewayv1.GRPCRoute) *gwRoute {
	gr := &gwRoute{ref: ref, created: r.CreationTimestamp, grpc: true}
	rules := r.Spec.Rules
	if len(rules) == 0 {
		rules = []gatewayv1.GRPCRouteRule{{}}
	}
	for i, rule := range rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		base := b.grpcRuleActions(ref, field, rule)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.GRPCRouteMatch{{}}
		}
		for j, m := range matches {
			rm, key, ok := b.grpcMatch(ref, fmt.Sprintf("%s.matches[%d]", field, j), m)
			if !ok {
				continue
			}
			rr := proto.Clone(base).(*meshv1.RouteRule)
			rr.Origin = ruleOrigin(ref, i, j, len(matches))
			if rm != nil {
				rr.Matches = []*meshv1.RouteMatch{rm}
			}
			gr.entries = append(gr.entries, &gwEntry{rule: rr, key: key, ruleIdx: i, matchIdx: j, route: gr})
		}
	}
	return gr
}

// grpcMatch converts a GRPCRouteMatch to a path match on "/<service>/<method>"
// plus headers. Its precedence key follows the GRPCRoute rules — most
// characters in the matching service, then in the method, then most header
// matches — mapped onto precedenceKey: an exact service and method is an Exact
// path; a service alone a prefix; a method alone (or a regular expression)
// ranks below; no method match at all ranks last.
func (b *routeBuilder) grpcMatch(ref model.Ref, field string, m gatewayv1.GRPCRouteMatch) (*meshv1.RouteMatch, precedenceKey, bool) {
	rm := &meshv1.RouteMatch{}
	key := precedenceKey{rank: pathRankNone}
	if mm := m.Method; mm != nil {
		svc, method := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		typ := gatewayv1.GRPCMethodMatchExact
		if mm.Type != nil {
			typ = *mm.Type
		}
		key.len1, key.len2 = len(svc), len(method)
		switch {
		case svc == "" && method == "":
		case typ == gatewayv1.GRPCMethodMatchExact && svc != "" && method != "":
			rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_EXACT, Value: "/" + svc + "/" + method}
			key.rank = pathRankExact
		case typ == gatewayv1.GRPCMethodMatchExact && svc != "":
			rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: "/" + svc}
			key.rank = pathRankPrefix
		case typ == gatewayv1.GRPCMethodMatchExact:
			rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "/[^/]+/" + regexp.QuoteMeta(method)}
			key.rank = pathRankRegex
		case typ == gatewayv1.GRPCMethodMatchRegularExpression:
			s, me := "[^/]+", "[^/]+"
			if svc != "" {
				s = svc
				key.rank = pathRankPrefix
			} else {
				key.rank = pathRankRegex
			}
			if method != "" {
				me = method
			}
			p := "/(?:" + s + ")/(?:" + me + ")"
			if err := checkRegex(p); err != nil {
				b.problem(nil, ref, field+".method", "invalid regular expression (%v): the match is ignored", err)
				return nil, key, false
			}
			rm.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: p}
		default:
			b.problem(nil, ref, field+".method.type", "unsupported method match type %q: the match is ignored", typ)
			return nil, key, false
		}
	}
	seen := map[string]bool{}
	for i, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if seen[name] {
			continue
		}
		seen[name] = true
		hm, ok := b.gwValueMatch(ref, fmt.Sprintf("%s.headers[%d]", field, i), string(h.Name), h.Value, (*string)(h.Type))
		if !ok {
			return nil, key, false
		}
		rm.Headers = append(rm.Headers, hm)
	}
	key.headers = len(rm.Headers)
	if rm.Path == nil && len(rm.Headers) == 0 {
		return nil, key, true // match everything
	}
	return rm, key, true
}

func (b *routeBuilder) grpcRuleActions(ref model.Ref, field string, rule gatewayv1.GRPCRouteRule) *meshv1.RouteRule {
	rr := &meshv1.RouteRule{}
	if rule.Name != nil {
		rr.Name = string(*rule.Name)
	}
	failClosed := ""
	for i, f := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch f.Type {
		case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
			rr.RequestHeaders = mergeHeaderModifier(rr.RequestHeaders, gwHeaderModifier(f.RequestHeaderModifier))
		case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
			rr.ResponseHeaders = mergeHeaderModifier(rr.ResponseHeaders, gwHeaderModifier(f.ResponseHeaderModifier))
		case gatewayv1.GRPCRouteFilterRequestMirror:
			if m := b.gwMirror(ref, ff, f.RequestMirror); m != nil {
				rr.Mirrors = append(rr.Mirrors, m)
			}
		default:
			failClosed = fmt.Sprintf("filter %s is not supported", f.Type)
			b.problem(nil, ref, ff, "unsupported filter type %q: requests matching this rule answer 500", f.Type)
		}
	}
	if rule.SessionPersistence != nil {
		b.problem(nil, ref, field+".sessionPersistence", "session persistence is not supported and is ignored")
	}
	refs := make([]gwBackendRef, len(rule.BackendRefs))
	for i, br := range rule.BackendRefs {
		refs[i].ref = br.BackendRef
		for _, f := range br.Filters {
			refs[i].filters = append(refs[i].filters, gwBackendFilter{string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier})
		}
	}
	weights := b.gwBackends(ref, field, rr, refs)
	switch {
	case failClosed != "":
		rr.Backends, rr.Mirrors = nil, nil
		rr.DirectStatus, rr.DirectBody = 500, failClosed+"\n"
	case weights == 0:
		rr.Backends = nil
		rr.DirectStatus = 500
	}
	return rr
}
