package translate

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Istio VirtualServices.
//
// A VirtualService applies to the Services its hosts name (short names resolve
// in the VirtualService's namespace; "name.ns", "name.ns.svc" and FQDNs are
// accepted; wildcards match every Service under them) when it is bound to the
// mesh: gateways empty or containing "mesh". One VirtualService governs a
// host, as in Istio for sidecars and waypoints (no merging outside ingress
// gateways): an exact host wins over a wildcard, a longer wildcard over a
// shorter one, then the oldest, then namespace/name; the others are reported.
//
// Its http rules keep their order (first match wins). A rule with several
// matches becomes one RouteRule per match, in order, so that a prefix rewrite
// knows which prefix matched. Matches bound to other gateways or to another
// port are left out on this port; a rule whose matches are all left out does
// not apply to the port. When no rule applies to a port, the port keeps the
// default route.

type vsCandidate struct {
	ref     model.Ref
	key     model.Key
	vs      *networkingv1.VirtualService
	exact   bool
	hostLen int
}

// boundToMesh reports whether a VirtualService (or match) gateways list
// includes the mesh; an empty list means the mesh.
func boundToMesh(gateways []string) bool {
	if len(gateways) == 0 {
		return true
	}
	for _, g := range gateways {
		if g == "mesh" {
			return true
		}
	}
	return false
}

func (b *routeBuilder) collectVirtualServices() {
	for _, k := range sortedObjectKeys(b.snap.VirtualServices) {
		vs := b.snap.VirtualServices[k]
		ref := model.Ref{Kind: model.KindVirtualService, Namespace: k.Namespace, Name: k.Name}
		spec := &vs.Spec
		if !boundToMesh(spec.GetGateways()) {
			continue // ingress/egress gateway configuration
		}
		if len(spec.GetTcp()) > 0 {
			b.problem(nil, ref, "spec.tcp", "TCP routes are not supported by waypoints and are ignored")
		}
		if len(spec.GetTls()) > 0 {
			b.problem(nil, ref, "spec.tls", "TLS routes are not supported by waypoints and are ignored")
		}
		seen := map[model.Key]bool{}
		for i, h := range spec.GetHosts() {
			field := fmt.Sprintf("spec.hosts[%d]", i)
			fq := b.fqdn(h, k.Namespace)
			keys, exact := b.servicesForHost(fq)
			if exact && len(keys) == 0 {
				b.problem(nil, ref, field, "host %q (%s) matches no Service: ignored", h, fq)
				continue
			}
			for _, sk := range keys {
				if seen[sk] {
					continue
				}
				if !exportedTo(k.Namespace, spec.GetExportTo(), sk.Namespace) {
					if exact {
						b.problem(&sk, ref, "spec.exportTo", "not exported to namespace %s: waypoints apply routes to every client, so it does not apply to Service %s", sk.Namespace, sk)
					}
					continue
				}
				seen[sk] = true
				b.virtualServices[sk] = append(b.virtualServices[sk], vsCandidate{ref: ref, key: k, vs: vs, exact: exact, hostLen: len(fq)})
			}
		}
	}
}

// chooseVirtualService picks the VirtualService governing a Service.
func (b *routeBuilder) chooseVirtualService(k model.Key) *vsCandidate {
	cands := b.virtualServices[k]
	if len(cands) == 0 {
		return nil
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, c := cands[i], cands[j]
		if a.exact != c.exact {
			return a.exact
		}
		if a.hostLen != c.hostLen {
			return a.hostLen > c.hostLen
		}
		return objectOrder(a.vs.CreationTimestamp, c.vs.CreationTimestamp, a.key, c.key)
	})
	for _, c := range cands {
		b.ix.problems.relate(k, c.ref)
	}
	for _, c := range cands[1:] {
		b.problem(&k, c.ref, "spec.hosts", "ignored for Service %s: %s governs that host (one VirtualService per host)", k, cands[0].ref)
	}
	return &cands[0]
}

// virtualServiceRules converts the http rules of a VirtualService for one
// port of a Service.
func (b *routeBuilder) virtualServiceRules(c *vsCandidate, svc model.Key, port uint32) []*meshv1.RouteRule {
	var out []*meshv1.RouteRule
	for i, r := range c.vs.Spec.GetHttp() {
		field := fmt.Sprintf("spec.http[%d]", i)
		if r.GetDelegate() != nil {
			b.problem(&svc, c.ref, field+".delegate", "delegation is not supported: the rule is ignored")
			continue
		}
		type matchAt struct {
			m   *meshv1.RouteMatch
			idx int
		}
		var matches []matchAt
		if len(r.GetMatch()) == 0 {
			matches = []matchAt{{nil, 0}}
		}
		for j, m := range r.GetMatch() {
			if !boundToMesh(m.GetGateways()) || (m.GetPort() != 0 && m.GetPort() != port) {
				continue
			}
			rm, ok := b.vsMatch(&svc, c.ref, fmt.Sprintf("%s.match[%d]", field, j), m)
			if !ok {
				continue
			}
			matches = append(matches, matchAt{rm, j})
		}
		for _, m := range matches {
			rr := b.vsRule(c, svc, port, i, r, m.m)
			rr.Origin = ruleOrigin(c.ref, i, m.idx, len(r.GetMatch()))
			out = append(out, rr)
		}
	}
	return out
}

// vsMatch converts one HTTPMatchRequest. ok is false when the match cannot be
// honoured by a waypoint; it is then left out (and reported).
func (b *routeBuilder) vsMatch(svc *model.Key, ref model.Ref, field string, m *networkingapi.HTTPMatchRequest) (*meshv1.RouteMatch, bool) {
	if len(m.GetSourceLabels()) > 0 || m.GetSourceNamespace() != "" {
		b.problem(svc, ref, field, "sourceLabels and sourceNamespace are not supported by waypoints: the match is ignored")
		return nil, false
	}
	rm := &meshv1.RouteMatch{}
	if u := m.GetUri(); u != nil {
		pm, ok := b.vsPathMatch(svc, ref, field+".uri", u, m.GetIgnoreUriCase())
		if !ok {
			return nil, false
		}
		rm.Path = pm
	}
	if mm := m.GetMethod(); mm != nil {
		if e, ok := mm.GetMatchType().(*networkingapi.StringMatch_Exact); ok {
			rm.Method = e.Exact
		} else {
			hm, ok := b.vsStringMatch(svc, ref, field+".method", ":method", mm)
			if !ok {
				return nil, false
			}
			rm.Headers = append(rm.Headers, hm)
		}
	}
	for _, pseudo := range []struct {
		name string
		sm   *networkingapi.StringMatch
	}{{":authority", m.GetAuthority()}, {":scheme", m.GetScheme()}} {
		if pseudo.sm == nil {
			continue
		}
		hm, ok := b.vsStringMatch(svc, ref, field+"."+strings.TrimPrefix(pseudo.name, ":"), pseudo.name, pseudo.sm)
		if !ok {
			return nil, false
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range slices.Sorted(maps.Keys(m.GetHeaders())) {
		hm, ok := b.vsStringMatch(svc, ref, field+".headers."+name, strings.ToLower(name), m.GetHeaders()[name])
		if !ok {
			return nil, false
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range slices.Sorted(maps.Keys(m.GetWithoutHeaders())) {
		hm, ok := b.vsStringMatch(svc, ref, field+".withoutHeaders."+name, strings.ToLower(name), m.GetWithoutHeaders()[name])
		if !ok {
			return nil, false
		}
		hm.Invert = true
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range slices.Sorted(maps.Keys(m.GetQueryParams())) {
		qm, ok := b.vsStringMatch(svc, ref, field+".queryParams."+name, name, m.GetQueryParams()[name])
		if !ok {
			return nil, false
		}
		rm.QueryParams = append(rm.QueryParams, qm)
	}
	return rm, true
}

func (b *routeBuilder) vsPathMatch(svc *model.Key, ref model.Ref, field string, u *networkingapi.StringMatch, ignoreCase bool) (*meshv1.PathMatch, bool) {
	switch t := u.GetMatchType().(type) {
	case *networkingapi.StringMatch_Exact:
		if ignoreCase {
			return &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "(?i)" + regexp.QuoteMeta(t.Exact)}, true
		}
		return &meshv1.PathMatch{Type: meshv1.PathMatch_EXACT, Value: t.Exact}, true
	case *networkingapi.StringMatch_Prefix:
		if ignoreCase {
			return &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "(?i)" + regexp.QuoteMeta(t.Prefix) + ".*"}, true
		}
		return &meshv1.PathMatch{Type: meshv1.PathMatch_STRING_PREFIX, Value: t.Prefix}, true
	case *networkingapi.StringMatch_Regex:
		p := t.Regex
		if ignoreCase {
			p = "(?i)" + p
		}
		if err := checkRegex(p); err != nil {
			b.problem(svc, ref, field, "invalid regular expression %q (%v): the match is ignored", t.Regex, err)
			return nil, false
		}
		return &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: p}, true
	}
	return nil, true // empty: any path
}

// vsStringMatch converts a header-like StringMatch. An empty StringMatch
// checks presence.
func (b *routeBuilder) vsStringMatch(svc *model.Key, ref model.Ref, field, name string, sm *networkingapi.StringMatch) (*meshv1.HeaderMatch, bool) {
	switch t := sm.GetMatchType().(type) {
	case *networkingapi.StringMatch_Exact:
		return &meshv1.HeaderMatch{Name: name, Type: meshv1.HeaderMatch_EXACT, Value: t.Exact}, true
	case *networkingapi.StringMatch_Prefix:
		return &meshv1.HeaderMatch{Name: name, Type: meshv1.HeaderMatch_PREFIX, Value: t.Prefix}, true
	case *networkingapi.StringMatch_Regex:
		if err := checkRegex(t.Regex); err != nil {
			b.problem(svc, ref, field, "invalid regular expression %q (%v): the match is ignored", t.Regex, err)
			return nil, false
		}
		return &meshv1.HeaderMatch{Name: name, Type: meshv1.HeaderMatch_REGEX, Value: t.Regex}, true
	}
	return &meshv1.HeaderMatch{Name: name, Type: meshv1.HeaderMatch_PRESENT}, true
}

// vsRule converts what an http rule does, for one of its matches (m may be
// nil: match everything).
func (b *routeBuilder) vsRule(c *vsCandidate, svc model.Key, port uint32, i int, r *networkingapi.HTTPRoute, m *meshv1.RouteMatch) *meshv1.RouteRule {
	ref := c.ref
	field := fmt.Sprintf("spec.http[%d]", i)
	ns := c.key.Namespace
	rr := &meshv1.RouteRule{Name: r.GetName()}
	if m != nil {
		rr.Matches = []*meshv1.RouteMatch{m}
	}
	switch {
	case r.GetRedirect() != nil:
		rr.Redirect = vsRedirect(r.GetRedirect())
	case r.GetDirectResponse() != nil:
		dr := r.GetDirectResponse()
		rr.DirectStatus = dr.GetStatus()
		if rr.DirectStatus < 200 || rr.DirectStatus > 599 {
			b.problem(&svc, ref, field+".directResponse.status", "invalid status %d: 500 is answered", rr.DirectStatus)
			rr.DirectStatus = 500
		}
		if body := dr.GetBody(); body != nil {
			if s, ok := body.GetSpecifier().(*networkingapi.HTTPBody_String_); ok {
				rr.DirectBody = s.String_
			} else {
				rr.DirectBody = string(body.GetBytes())
			}
		}
	default:
		rr.Backends = b.vsBackends(&svc, ref, field, ns, port, r.GetRoute())
		if len(rr.Backends) == 0 {
			b.problem(&svc, ref, field+".route", "no destination: requests matching this rule answer 500")
			rr.DirectStatus = 500
		}
	}
	if rw := r.GetRewrite(); rw != nil && rr.Redirect == nil && rr.DirectStatus == 0 {
		rr.Rewrite = &meshv1.Rewrite{Hostname: rw.GetAuthority()}
		if u := rw.GetUri(); u != "" {
			// Envoy's prefix_rewrite, which Istio uses: the matched prefix is
			// replaced; an exact (or regex) match has the whole path replaced;
			// with no uri match the implied prefix is "/".
			switch m.GetPath().GetType() {
			case meshv1.PathMatch_STRING_PREFIX, meshv1.PathMatch_PREFIX:
				rr.Rewrite.ReplacePrefix, rr.Rewrite.HasReplacePrefix = u, true
			case meshv1.PathMatch_EXACT, meshv1.PathMatch_REGEX:
				if m.GetPath() != nil {
					rr.Rewrite.FullPath = u
					break
				}
				fallthrough
			default:
				rr.Rewrite.ReplacePrefix, rr.Rewrite.HasReplacePrefix = u, true
				rr.Matches = withPathPrefixSlash(rr.Matches)
			}
		}
		if rx := rw.GetUriRegexRewrite(); rx != nil {
			if err := checkRegexUnanchored(rx.GetMatch()); err != nil {
				b.problem(&svc, ref, field+".rewrite.uriRegexRewrite.match", "invalid regular expression %q (%v): ignored", rx.GetMatch(), err)
			} else {
				rr.Rewrite.Regex, rr.Rewrite.RegexSubstitution = rx.GetMatch(), rx.GetRewrite()
			}
		}
	}
	if rr.Redirect != nil && rr.Redirect.HasReplacePrefix {
		switch m.GetPath().GetType() {
		case meshv1.PathMatch_STRING_PREFIX, meshv1.PathMatch_PREFIX:
		default:
			if m.GetPath() == nil {
				rr.Matches = withPathPrefixSlash(rr.Matches)
			}
		}
	}
	if t := r.GetTimeout(); t != nil {
		rr.TimeoutMs = durationMs(t)
	}
	if rt := r.GetRetries(); rt != nil {
		rr.Retry = vsRetry(rt)
	}
	if f := r.GetFault(); f != nil {
		rr.Fault = b.vsFault(&svc, ref, field+".fault", f)
	}
	if md := r.GetMirror(); md != nil {
		pct := 100.0
		switch {
		case r.GetMirrorPercentage() != nil:
			pct = r.GetMirrorPercentage().GetValue()
		case r.GetMirrorPercent() != nil: //nolint:staticcheck // deprecated alias still honoured
			pct = float64(r.GetMirrorPercent().GetValue()) //nolint:staticcheck
		}
		if mm := b.vsMirror(&svc, ref, field+".mirror", ns, port, md, pct); mm != nil {
			rr.Mirrors = append(rr.Mirrors, mm)
		}
	}
	for j, mp := range r.GetMirrors() {
		pct := 100.0
		if mp.GetPercentage() != nil {
			pct = mp.GetPercentage().GetValue()
		}
		if mm := b.vsMirror(&svc, ref, fmt.Sprintf("%s.mirrors[%d]", field, j), ns, port, mp.GetDestination(), pct); mm != nil {
			rr.Mirrors = append(rr.Mirrors, mm)
		}
	}
	if h := r.GetHeaders(); h != nil {
		rr.RequestHeaders = vsHeaderOps(h.GetRequest())
		rr.ResponseHeaders = vsHeaderOps(h.GetResponse())
	}
	if r.GetCorsPolicy() != nil {
		b.problem(&svc, ref, field+".corsPolicy", "CORS policies are not supported and are ignored: responses carry no CORS headers, so browsers refuse cross-origin reads")
	}
	return rr
}

// withPathPrefixSlash makes an implied "any path" explicit as prefix "/", so
// that a prefix rewrite or redirect knows the prefix it replaces.
func withPathPrefixSlash(ms []*meshv1.RouteMatch) []*meshv1.RouteMatch {
	if len(ms) == 0 {
		return []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_STRING_PREFIX, Value: "/"}}}
	}
	for _, m := range ms {
		if m.Path == nil {
			m.Path = &meshv1.PathMatch{Type: meshv1.PathMatch_STRING_PREFIX, Value: "/"}
		}
	}
	return ms
}

func checkRegexUnanchored(p string) error {
	_, err := regexp.Compile(p)
	return err
}

// vsBackends converts route destinations with their weights. A single
// destination takes all traffic whatever its weight; with several, weight-0
// destinations take none (and are left out), unless all weights are unset, in
// which case traffic is split evenly.
func (b *routeBuilder) vsBackends(svc *model.Key, ref model.Ref, field, ns string, port uint32, dests []*networkingapi.HTTPRouteDestination) []*meshv1.WeightedBackend {
	allZero := true
	for _, d := range dests {
		if d.GetWeight() > 0 {
			allZero = false
		}
	}
	var out []*meshv1.WeightedBackend
	for j, d := range dests {
		df := fmt.Sprintf("%s.route[%d]", field, j)
		weight := uint32(max(d.GetWeight(), 0))
		if len(dests) == 1 || allZero {
			weight = 1
		}
		dest, invalid := b.vsDestination(ns, port, d.GetDestination())
		if invalid != "" {
			if weight > 0 {
				b.problem(svc, ref, df+".destination", "%s: requests sent to this destination answer 500", invalid)
			} else {
				b.problem(svc, ref, df+".destination", "%s (weight 0: it receives no traffic)", invalid)
			}
		}
		if weight == 0 {
			continue
		}
		wb := &meshv1.WeightedBackend{Destination: dest, Weight: weight, InvalidReason: invalid}
		if h := d.GetHeaders(); h != nil {
			wb.RequestHeaders = vsHeaderOps(h.GetRequest())
			wb.ResponseHeaders = vsHeaderOps(h.GetResponse())
		}
		out = append(out, wb)
	}
	return out
}

// vsDestination resolves an Istio Destination. With no port, a Service with a
// single port uses it; otherwise the request's port. The subset's labels come
// from the destination Service's DestinationRule.
func (b *routeBuilder) vsDestination(ns string, reqPort uint32, d *networkingapi.Destination) (*meshv1.Destination, string) {
	if d.GetHost() == "" {
		return &meshv1.Destination{}, "destination has no host"
	}
	fq := b.fqdn(d.GetHost(), ns)
	k, ok := b.hosts[fq]
	if !ok {
		return &meshv1.Destination{Service: hostKey(fq, b.mesh.DomainSuffix), Port: d.GetPort().GetNumber(), Subset: d.GetSubset()},
			fmt.Sprintf("host %q (%s) matches no Service", d.GetHost(), fq)
	}
	port := d.GetPort().GetNumber()
	if port == 0 {
		var tcp []uint32
		for _, sp := range b.snap.Services[k].Spec.Ports {
			if isTCP(sp.Protocol) {
				tcp = append(tcp, uint32(sp.Port))
			}
		}
		if len(tcp) == 1 {
			port = tcp[0]
		} else {
			port = reqPort
		}
	}
	dest, invalid := b.serviceDestination(k, port)
	if invalid != "" {
		return dest, invalid
	}
	if name := d.GetSubset(); name != "" {
		dest.Subset = name
		s, ok := b.subset(k, name)
		if !ok {
			if p := b.policy(k); p != nil {
				return dest, fmt.Sprintf("subset %q is not defined in %s for host %s", name, p.GetOrigin(), fq)
			}
			return dest, fmt.Sprintf("subset %q: no DestinationRule defines subsets for host %s", name, fq)
		}
		dest.SubsetLabels = s.GetLabels()
	}
	return dest, ""
}

// hostKey guesses the "<namespace>/<hostname>" key of a host that matches no
// Service, for logs.
func hostKey(fq, domainSuffix string) string {
	if rest, ok := strings.CutSuffix(fq, ".svc."+domainSuffix); ok {
		if _, ns, ok := strings.Cut(rest, "."); ok && !strings.Contains(ns, ".") {
			return ns + "/" + fq
		}
	}
	return fq
}

func (b *routeBuilder) vsMirror(svc *model.Key, ref model.Ref, field, ns string, port uint32, d *networkingapi.Destination, pct float64) *meshv1.Mirror {
	dest, invalid := b.vsDestination(ns, port, d)
	if invalid != "" {
		b.problem(svc, ref, field, "%s: requests are not mirrored", invalid)
		return nil
	}
	return &meshv1.Mirror{Destination: dest, Percent: min(max(pct, 0), 100)}
}

func vsHeaderOps(h *networkingapi.Headers_HeaderOperations) *meshv1.HeaderModifier {
	if h == nil || (len(h.GetSet()) == 0 && len(h.GetAdd()) == 0 && len(h.GetRemove()) == 0) {
		return nil
	}
	hm := &meshv1.HeaderModifier{}
	for _, n := range slices.Sorted(maps.Keys(h.GetSet())) {
		hm.Set = append(hm.Set, &meshv1.HeaderModifier_Header{Name: n, Value: h.GetSet()[n]})
	}
	for _, n := range slices.Sorted(maps.Keys(h.GetAdd())) {
		hm.Add = append(hm.Add, &meshv1.HeaderModifier_Header{Name: n, Value: h.GetAdd()[n]})
	}
	hm.Remove = append(hm.Remove, h.GetRemove()...)
	return hm
}

// vsRedirect converts an HTTPRedirect. Istio's default status is 301.
func vsRedirect(r *networkingapi.HTTPRedirect) *meshv1.Redirect {
	out := &meshv1.Redirect{
		Scheme:     r.GetScheme(),
		Hostname:   r.GetAuthority(),
		Port:       r.GetPort(),
		FullPath:   r.GetUri(),
		StatusCode: r.GetRedirectCode(),
	}
	if out.StatusCode == 0 {
		out.StatusCode = 301
	}
	if p := r.GetPrefixRewrite(); p != "" && out.FullPath == "" {
		out.ReplacePrefix, out.HasReplacePrefix = p, true
	}
	return out
}

// vsRetry converts retries: numeric retryOn entries become status codes, the
// others (5xx, gateway-error, connect-failure, ...) are kept by name.
func vsRetry(r *networkingapi.HTTPRetry) *meshv1.Retry {
	out := &meshv1.Retry{
		Attempts:        uint32(max(r.GetAttempts(), 0)),
		PerTryTimeoutMs: durationMs(r.GetPerTryTimeout()),
		BackoffMs:       durationMs(r.GetBackoff()),
	}
	for _, tok := range strings.Split(r.GetRetryOn(), ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		if code, err := strconv.ParseUint(tok, 10, 32); err == nil {
			out.Codes = append(out.Codes, uint32(code))
			continue
		}
		out.RetryOn = append(out.RetryOn, tok)
	}
	return out
}

// grpcCodes maps gRPC status names (as Istio accepts them in
// fault.abort.grpcStatus) to codes.
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
	"NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
	"INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// vsFault converts fault injection. As in Istio, a delay or abort without a
// percentage applies to no request.
func (b *routeBuilder) vsFault(svc *model.Key, ref model.Ref, field string, f *networkingapi.HTTPFaultInjection) *meshv1.Fault {
	out := &meshv1.Fault{}
	if d := f.GetDelay(); d != nil {
		switch t := d.GetHttpDelayType().(type) {
		case *networkingapi.HTTPFaultInjection_Delay_FixedDelay:
			out.DelayMs = durationMs(t.FixedDelay)
		default:
			b.problem(svc, ref, field+".delay", "only fixedDelay is supported: no delay is injected")
		}
		switch {
		case d.GetPercentage() != nil:
			out.DelayPercent = d.GetPercentage().GetValue()
		case d.GetPercent() != 0: //nolint:staticcheck // deprecated alias still honoured
			out.DelayPercent = float64(d.GetPercent()) //nolint:staticcheck
		default:
			b.problem(svc, ref, field+".delay.percentage", "no percentage: as in Istio, no request is delayed")
		}
		if out.DelayMs == 0 {
			out.DelayPercent = 0
		}
	}
	if a := f.GetAbort(); a != nil {
		aborts := false
		switch t := a.GetErrorType().(type) {
		case *networkingapi.HTTPFaultInjection_Abort_HttpStatus:
			out.AbortStatus = uint32(max(t.HttpStatus, 0))
			aborts = out.AbortStatus != 0
		case *networkingapi.HTTPFaultInjection_Abort_GrpcStatus:
			code, ok := grpcCodes[strings.ToUpper(t.GrpcStatus)]
			if !ok {
				if n, err := strconv.ParseUint(t.GrpcStatus, 10, 32); err == nil && n <= 16 {
					code, ok = uint32(n), true
				}
			}
			if !ok {
				b.problem(svc, ref, field+".abort.grpcStatus", "unknown gRPC status %q: no request is aborted", t.GrpcStatus)
			} else {
				out.AbortGrpcStatus = code
				aborts = true
			}
		default:
			b.problem(svc, ref, field+".abort", "only httpStatus and grpcStatus aborts are supported: no request is aborted")
		}
		if a.GetPercentage() != nil {
			out.AbortPercent = a.GetPercentage().GetValue()
		} else {
			b.problem(svc, ref, field+".abort.percentage", "no percentage: as in Istio, no request is aborted")
		}
		if !aborts {
			out.AbortPercent = 0
		}
	}
	out.DelayPercent = min(max(out.DelayPercent, 0), 100)
	out.AbortPercent = min(max(out.AbortPercent, 0), 100)
	return out
}
