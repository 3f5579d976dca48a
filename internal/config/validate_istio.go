package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	extensionsapi "istio.io/api/extensions/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	extensionsv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// These follow Istio's validating webhook (pkg/config/validation) and the
// CEL rules in its CRDs. Field types and enum values were already checked
// by checkProto; what remains is the cross-field and value rules.

func validateVirtualService(vs *networkingv1.VirtualService, e *errs) {
	spec := newPath("spec")
	s := &vs.Spec
	if len(s.Hosts) == 0 {
		e.add(spec.child("hosts"), "required: a VirtualService needs at least one host")
	}
	for i, h := range s.Hosts {
		checkIstioHost(spec.child("hosts").at(i), h, e)
	}
	for i, g := range s.Gateways {
		if g == "" {
			e.add(spec.child("gateways").at(i), `must not be empty (use "mesh" for traffic inside the mesh)`)
		}
	}
	checkExportTo(s.ExportTo, spec.child("exportTo"), e)
	if len(s.Http) == 0 && len(s.Tcp) == 0 && len(s.Tls) == 0 {
		e.add(spec, "a VirtualService needs at least one http, tcp or tls route")
	}
	for i, r := range s.Http {
		validateVSHTTPRoute(r, spec.child("http").at(i), e)
	}
	for i, r := range s.Tcp {
		rp := spec.child("tcp").at(i)
		if r == nil {
			e.add(rp, "must not be null")
			continue
		}
		for j, m := range r.Match {
			validateL4Match(m.GetDestinationSubnets(), m.GetSourceSubnet(), m.GetPort(), m.GetSourceLabels(), rp.child("match").at(j), e)
		}
		validateRouteDestinations(r.Route, rp.child("route"), e)
	}
	for i, r := range s.Tls {
		rp := spec.child("tls").at(i)
		if r == nil {
			e.add(rp, "must not be null")
			continue
		}
		if len(r.Match) == 0 {
			e.add(rp.child("match"), "required: a TLS route needs at least one match with sniHosts")
		}
		for j, m := range r.Match {
			mp := rp.child("match").at(j)
			if len(m.GetSniHosts()) == 0 {
				e.add(mp.child("sniHosts"), "required")
			}
			for k, h := range m.GetSniHosts() {
				checkIstioHost(mp.child("sniHosts").at(k), h, e)
			}
			validateL4Match(m.GetDestinationSubnets(), "", m.GetPort(), m.GetSourceLabels(), mp, e)
		}
		validateRouteDestinations(r.Route, rp.child("route"), e)
	}
}

func checkExportTo(exportTo []string, p *fieldPath, e *errs) {
	for i, x := range exportTo {
		if x == "." || x == "*" || x == "~" {
			continue
		}
		if msg := checkName(dns1123Label, x); msg != "" {
			e.add(p.at(i), fmt.Sprintf(`invalid value %q: must be ".", "*", "~" or a namespace name`, x))
		}
	}
}

func validateVSHTTPRoute(r *networkingapi.HTTPRoute, p *fieldPath, e *errs) {
	if r == nil {
		e.add(p, "must not be null")
		return
	}
	has := 0
	for _, set := range []bool{len(r.Route) > 0, r.Redirect != nil, r.DirectResponse != nil, r.Delegate != nil} {
		if set {
			has++
		}
	}
	switch {
	case has == 0:
		e.add(p, "one of route, redirect, directResponse or delegate is required")
	case has > 1:
		e.add(p, "only one of route, redirect, directResponse and delegate may be set")
	}
	if r.Rewrite != nil && r.Redirect != nil {
		e.add(p.child("rewrite"), "must not be used together with redirect")
	}
	for i, m := range r.Match {
		validateHTTPMatchRequest(m, p.child("match").at(i), e)
	}
	validateHTTPRouteDestinations(r.Route, p.child("route"), e)
	if rd := r.Redirect; rd != nil {
		rp := p.child("redirect")
		if c := rd.RedirectCode; c != 0 && !slices.Contains([]uint32{301, 302, 303, 307, 308}, c) {
			e.add(rp.child("redirectCode"), fmt.Sprintf("invalid redirect status code %d: must be one of 301, 302, 303, 307, 308", c))
		}
		if port := rd.GetPort(); port != 0 {
			checkPort(rp.child("port"), port, e)
		}
		if rd.Uri == "" && rd.Authority == "" && rd.Scheme == "" && rd.GetPort() == 0 && rd.GetDerivePort() == 0 && rd.PrefixRewrite == "" {
			e.add(rp, "redirect must set at least one of uri, authority, scheme, port, derivePort or prefixRewrite")
		}
		if rd.Uri != "" && rd.PrefixRewrite != "" {
			e.add(rp.child("prefixRewrite"), "only one of uri and prefixRewrite may be set")
		}
	}
	if rw := r.Rewrite; rw != nil {
		rp := p.child("rewrite")
		if rw.Uri != "" && rw.UriRegexRewrite != nil {
			e.add(rp.child("uriRegexRewrite"), "only one of uri and uriRegexRewrite may be set")
		}
		if rr := rw.UriRegexRewrite; rr != nil {
			if rr.Match == "" {
				e.add(rp.child("uriRegexRewrite", "match"), "required")
			} else {
				checkRegex(rp.child("uriRegexRewrite", "match"), rr.Match, e)
			}
		}
		if rw.Uri == "" && rw.Authority == "" && rw.UriRegexRewrite == nil {
			e.add(rp, "rewrite must set at least one of uri, authority or uriRegexRewrite")
		}
	}
	if dr := r.DirectResponse; dr != nil {
		checkRange(p.child("directResponse", "status"), dr.Status, 200, 599, e)
	}
	checkIstioDuration(p.child("timeout"), r.Timeout, e)
	if rt := r.Retries; rt != nil {
		rp := p.child("retries")
		checkMin(rp.child("attempts"), rt.Attempts, 0, e)
		checkIstioDuration(rp.child("perTryTimeout"), rt.PerTryTimeout, e)
		checkIstioDuration(rp.child("backoff"), rt.Backoff, e)
		if rt.RetryOn != "" {
			for _, policy := range strings.Split(rt.RetryOn, ",") {
				policy = strings.TrimSpace(policy)
				if _, err := strconv.Atoi(policy); err == nil {
					continue // a status code, for retriable-status-codes
				}
				if !slices.Contains(retryOnPolicies, policy) {
					e.add(rp.child("retryOn"), fmt.Sprintf("unknown retry policy %q: must be a status code or one of %s", policy, strings.Join(retryOnPolicies, ", ")))
				}
			}
		}
	}
	if f := r.Fault; f != nil {
		fp := p.child("fault")
		if f.Delay == nil && f.Abort == nil {
			e.add(fp, "a fault needs a delay or an abort")
		}
		if d := f.Delay; d != nil {
			dp := fp.child("delay")
			checkRange(dp.child("percent"), d.Percent, 0, 100, e)
			checkPercent(dp.child("percentage"), d.Percentage, e)
			if d.GetFixedDelay() == nil && d.GetExponentialDelay() == nil {
				e.add(dp.child("fixedDelay"), "required")
			}
			checkIstioDuration(dp.child("fixedDelay"), d.GetFixedDelay(), e)
		}
		if a := f.Abort; a != nil {
			ap := fp.child("abort")
			checkPercent(ap.child("percentage"), a.Percentage, e)
			switch {
			case a.GetErrorType() == nil:
				e.add(ap, "one of httpStatus, grpcStatus or http2Error is required")
			case a.GetHttpStatus() != 0:
				checkRange(ap.child("httpStatus"), a.GetHttpStatus(), 200, 599, e)
			}
		}
	}
	if r.Mirror != nil {
		validateDestination(r.Mirror, p.child("mirror"), e)
	}
	checkPercent(p.child("mirrorPercentage"), r.MirrorPercentage, e)
	if mp := r.MirrorPercent; mp != nil && mp.Value > 100 {
		e.add(p.child("mirrorPercent"), fmt.Sprintf("must be <= 100, got %d", mp.Value))
	}
	for i, m := range r.Mirrors {
		mp := p.child("mirrors").at(i)
		if m.GetDestination() == nil {
			e.add(mp.child("destination"), "required")
		} else {
			validateDestination(m.Destination, mp.child("destination"), e)
		}
		checkPercent(mp.child("percentage"), m.GetPercentage(), e)
	}
	validateHeaderOps(r.Headers, p.child("headers"), e)
	if c := r.CorsPolicy; c != nil {
		for i, o := range c.AllowOrigins {
			checkStringMatch(o, p.child("corsPolicy", "allowOrigins").at(i), e)
		}
	}
}

// retryOnPolicies are the retry conditions Envoy (and ambit's waypoint) know.
var retryOnPolicies = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
	"retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
	"http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal",
	"resource-exhausted", "unavailable",
}

func validateHTTPMatchRequest(m *networkingapi.HTTPMatchRequest, p *fieldPath, e *errs) {
	if m == nil {
		e.add(p, "must not be null")
		return
	}
	for _, f := range []struct {
		name string
		sm   *networkingapi.StringMatch
	}{{"uri", m.Uri}, {"scheme", m.Scheme}, {"method", m.Method}, {"authority", m.Authority}} {
		if f.sm != nil {
			checkStringMatch(f.sm, p.child(f.name), e)
		}
	}
	for _, f := range []struct {
		name string
		m    map[string]*networkingapi.StringMatch
	}{{"headers", m.Headers}, {"queryParams", m.QueryParams}, {"withoutHeaders", m.WithoutHeaders}} {
		for _, k := range sortedMapKeys(f.m) {
			kp := p.child(f.name).key(k)
			if k == "" {
				e.add(kp, "name must not be empty")
			}
			if sm := f.m[k]; sm != nil && sm.GetMatchType() != nil {
				checkStringMatch(sm, kp, e)
			}
		}
	}
	if m.Port != 0 {
		checkPort(p.child("port"), m.Port, e)
	}
	validateLabels(m.SourceLabels, p.child("sourceLabels"), e)
	if ns := m.SourceNamespace; ns != "" {
		if msg := checkName(dns1123Label, ns); msg != "" {
			e.add(p.child("sourceNamespace"), strings.Replace(msg, "invalid name", "invalid namespace", 1))
		}
	}
}

// checkStringMatch: exactly one of exact, prefix, regex (checkProto already
// rejected two), not empty, and a regex that compiles.
func checkStringMatch(sm *networkingapi.StringMatch, p *fieldPath, e *errs) {
	switch t := sm.GetMatchType().(type) {
	case nil:
		e.add(p, "one of exact, prefix or regex is required")
	case *networkingapi.StringMatch_Prefix:
		if t.Prefix == "" {
			e.add(p.child("prefix"), "must not be empty")
		}
	case *networkingapi.StringMatch_Regex:
		if t.Regex == "" {
			e.add(p.child("regex"), "must not be empty")
		} else {
			checkRegex(p.child("regex"), t.Regex, e)
		}
	}
}

func validateHTTPRouteDestinations(ds []*networkingapi.HTTPRouteDestination, p *fieldPath, e *errs) {
	var total int64
	for i, d := range ds {
		dp := p.at(i)
		if d == nil {
			e.add(dp, "must not be null")
			continue
		}
		if d.Destination == nil {
			e.add(dp.child("destination"), "required")
		} else {
			validateDestination(d.Destination, dp.child("destination"), e)
		}
		checkMin(dp.child("weight"), d.Weight, 0, e)
		if d.Weight > 0 {
			total += int64(d.Weight)
		}
		validateHeaderOps(d.Headers, dp.child("headers"), e)
	}
	checkTotalWeight(len(ds), total, p, e)
}

func validateRouteDestinations(ds []*networkingapi.RouteDestination, p *fieldPath, e *errs) {
	if len(ds) == 0 {
		e.add(p, "required: a route needs at least one destination")
	}
	var total int64
	for i, d := range ds {
		dp := p.at(i)
		if d == nil {
			e.add(dp, "must not be null")
			continue
		}
		if d.Destination == nil {
			e.add(dp.child("destination"), "required")
		} else {
			validateDestination(d.Destination, dp.child("destination"), e)
		}
		checkMin(dp.child("weight"), d.Weight, 0, e)
		if d.Weight > 0 {
			total += int64(d.Weight)
		}
	}
	checkTotalWeight(len(ds), total, p, e)
}

// checkTotalWeight applies Istio's rule for weighted destinations. Weights
// are relative (a destination gets weight/sum of the traffic), so they need
// not add up to 100; but with several destinations they must not all be 0,
// which would leave nowhere to send traffic.
func checkTotalWeight(n int, total int64, p *fieldPath, e *errs) {
	if n > 1 && total == 0 {
		e.add(p, fmt.Sprintf("total weight of the %d destinations is 0: give at least one a positive weight", n))
	}
	if total > math.MaxUint32 {
		e.add(p, fmt.Sprintf("total weight %d is too large (at most %d)", total, uint32(math.MaxUint32)))
	}
}

func validateDestination(d *networkingapi.Destination, p *fieldPath, e *errs) {
	switch {
	case d.Host == "":
		e.add(p.child("host"), "required")
	case d.Host == "*":
		e.add(p.child("host"), `invalid destination host "*": name a service`)
	default:
		checkIstioHost(p.child("host"), d.Host, e)
	}
	if d.Subset != "" {
		if msg := checkName(dns1123Label, d.Subset); msg != "" {
			e.add(p.child("subset"), strings.Replace(msg, "invalid name", "invalid subset name", 1))
		}
	}
	if d.Port != nil {
		checkPort(p.child("port", "number"), d.Port.Number, e)
	}
}

func validateL4Match(dstSubnets []string, srcSubnet string, port uint32, srcLabels map[string]string, p *fieldPath, e *errs) {
	for i, s := range dstSubnets {
		checkIPOrCIDR(p.child("destinationSubnets").at(i), s, e)
	}
	if srcSubnet != "" {
		checkIPOrCIDR(p.child("sourceSubnet"), srcSubnet, e)
	}
	if port != 0 {
		checkPort(p.child("port"), port, e)
	}
	validateLabels(srcLabels, p.child("sourceLabels"), e)
}

func validateHeaderOps(h *networkingapi.Headers, p *fieldPath, e *errs) {
	if h == nil {
		return
	}
	for _, side := range []struct {
		name string
		ops  *networkingapi.Headers_HeaderOperations
	}{{"request", h.Request}, {"response", h.Response}} {
		if side.ops == nil {
			continue
		}
		sp := p.child(side.name)
		for _, k := range sortedMapKeys(side.ops.Set) {
			checkHeaderOpName(sp.child("set").key(k), k, e)
		}
		for _, k := range sortedMapKeys(side.ops.Add) {
			checkHeaderOpName(sp.child("add").key(k), k, e)
		}
		for i, k := range side.ops.Remove {
			checkHeaderOpName(sp.child("remove").at(i), k, e)
		}
	}
}

func checkHeaderOpName(p *fieldPath, name string, e *errs) {
	switch {
	case name == "":
		e.add(p, "header name must not be empty")
	case strings.HasPrefix(name, ":") || strings.EqualFold(name, "host"):
		e.add(p, fmt.Sprintf("header %q cannot be modified here (use rewrite.authority for the host)", name))
	default:
		var he errs
		headerNameRule.check(p, name, &he)
		*e = append(*e, he...)
	}
}

func checkPercent(p *fieldPath, pc *networkingapi.Percent, e *errs) {
	if pc != nil && (pc.Value < 0 || pc.Value > 100 || math.IsNaN(pc.Value)) {
		e.add(p.child("value"), fmt.Sprintf("must be between 0 and 100, got %v", pc.Value))
	}
}

// checkIstioDuration: Istio's proxies work in milliseconds, so a duration
// must be 0 (meaning "none" where that is allowed) or at least 1ms.
func checkIstioDuration(p *fieldPath, d *durationpb.Duration, e *errs) {
	if d == nil {
		return
	}
	v := d.AsDuration()
	switch {
	case v < 0:
		e.add(p, fmt.Sprintf("must not be negative, got %s", v))
	case v > 0 && v < time.Millisecond:
		e.add(p, fmt.Sprintf("must be at least 1ms, got %s", v))
	}
}

func validateDestinationRule(dr *networkingv1.DestinationRule, e *errs) {
	spec := newPath("spec")
	s := &dr.Spec
	if s.Host == "" {
		e.add(spec.child("host"), "required")
	} else {
		checkIstioHost(spec.child("host"), s.Host, e)
	}
	checkExportTo(s.ExportTo, spec.child("exportTo"), e)
	validateWorkloadSelector(s.WorkloadSelector, spec.child("workloadSelector"), e)
	validateTrafficPolicy(s.TrafficPolicy, spec.child("trafficPolicy"), e)
	names := map[string]int{}
	for i, sub := range s.Subsets {
		sp := spec.child("subsets").at(i)
		if sub == nil {
			e.add(sp, "must not be null")
			continue
		}
		switch {
		case sub.Name == "":
			e.add(sp.child("name"), "required")
		case checkName(dns1123Label, sub.Name) != "":
			e.add(sp.child("name"), strings.Replace(checkName(dns1123Label, sub.Name), "invalid name", "invalid subset name", 1))
		default:
			if j, dup := names[sub.Name]; dup {
				e.add(sp.child("name"), fmt.Sprintf("duplicate subset name %q (also subsets[%d])", sub.Name, j))
			}
			names[sub.Name] = i
		}
		if len(sub.Labels) == 0 {
			e.add(sp.child("labels"), "required: a subset selects endpoints by labels; without them it is the whole service")
		}
		validateLabels(sub.Labels, sp.child("labels"), e)
		validateTrafficPolicy(sub.TrafficPolicy, sp.child("trafficPolicy"), e)
	}
}

func validateTrafficPolicy(tp *networkingapi.TrafficPolicy, p *fieldPath, e *errs) {
	if tp == nil {
		return
	}
	validatePortPolicy(tp.LoadBalancer, tp.ConnectionPool, tp.OutlierDetection, tp.Tls, p, e)
	ports := map[uint32]int{}
	for i, pl := range tp.PortLevelSettings {
		pp := p.child("portLevelSettings").at(i)
		if pl == nil {
			e.add(pp, "must not be null")
			continue
		}
		if pl.Port == nil || pl.Port.Number == 0 {
			e.add(pp.child("port", "number"), "required")
		} else {
			checkPort(pp.child("port", "number"), pl.Port.Number, e)
			if j, dup := ports[pl.Port.Number]; dup {
				e.add(pp.child("port", "number"), fmt.Sprintf("duplicate port %d (also portLevelSettings[%d])", pl.Port.Number, j))
			}
			ports[pl.Port.Number] = i
		}
		validatePortPolicy(pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection, pl.Tls, pp, e)
	}
}

func validatePortPolicy(lb *networkingapi.LoadBalancerSettings, cp *networkingapi.ConnectionPoolSettings,
	od *networkingapi.OutlierDetection, tls *networkingapi.ClientTLSSettings, p *fieldPath, e *errs) {
	if lb != nil {
		lp := p.child("loadBalancer")
		if ch := lb.GetConsistentHash(); ch != nil {
			hp := lp.child("consistentHash")
			if ch.GetHashKey() == nil {
				e.add(hp, "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required")
			}
			if c := ch.GetHttpCookie(); c != nil {
				if c.Name == "" {
					e.add(hp.child("httpCookie", "name"), "required")
				}
				checkIstioDuration(hp.child("httpCookie", "ttl"), c.Ttl, e)
			}
			if h := ch.GetHttpHeaderName(); ch.GetHashKey() != nil && h == "" && ch.GetHttpCookie() == nil && !ch.GetUseSourceIp() && ch.GetHttpQueryParameterName() == "" {
				e.add(hp, "the hash key must not be empty")
			}
		}
		if l := lb.LocalityLbSetting; l != nil {
			validateLocality(l, lp.child("localityLbSetting"), e)
		}
		checkIstioDuration(lp.child("warmupDurationSecs"), lb.WarmupDurationSecs, e)
		if lb.WarmupDurationSecs != nil && lb.Warmup != nil {
			e.add(lp.child("warmup"), "only one of warmupDurationSecs and warmup may be set")
		}
		if w := lb.Warmup; w != nil {
			checkIstioDuration(lp.child("warmup", "duration"), w.Duration, e)
			if mp := w.MinimumPercent; mp != nil && (mp.Value < 0 || mp.Value > 100) {
				e.add(lp.child("warmup", "minimumPercent"), fmt.Sprintf("must be between 0 and 100, got %v", mp.Value))
			}
			if ag := w.Aggression; ag != nil && ag.Value < 1 {
				e.add(lp.child("warmup", "aggression"), fmt.Sprintf("must be >= 1, got %v", ag.Value))
			}
		}
	}
	if cp != nil {
		pp := p.child("connectionPool")
		if t := cp.Tcp; t != nil {
			tp := pp.child("tcp")
			checkMin(tp.child("maxConnections"), t.MaxConnections, 0, e)
			checkIstioDuration(tp.child("connectTimeout"), t.ConnectTimeout, e)
			checkIstioDuration(tp.child("maxConnectionDuration"), t.MaxConnectionDuration, e)
			checkIstioDuration(tp.child("idleTimeout"), t.IdleTimeout, e)
			if ka := t.TcpKeepalive; ka != nil {
				checkIstioDuration(tp.child("tcpKeepalive", "time"), ka.Time, e)
				checkIstioDuration(tp.child("tcpKeepalive", "interval"), ka.Interval, e)
			}
		}
		if h := cp.Http; h != nil {
			hp := pp.child("http")
			checkMin(hp.child("http1MaxPendingRequests"), h.Http1MaxPendingRequests, 0, e)
			checkMin(hp.child("http2MaxRequests"), h.Http2MaxRequests, 0, e)
			checkMin(hp.child("maxRequestsPerConnection"), h.MaxRequestsPerConnection, 0, e)
			checkMin(hp.child("maxRetries"), h.MaxRetries, 0, e)
			checkMin(hp.child("maxConcurrentStreams"), h.MaxConcurrentStreams, 0, e)
			checkIstioDuration(hp.child("idleTimeout"), h.IdleTimeout, e)
		}
	}
	if od != nil {
		op := p.child("outlierDetection")
		checkMin(op.child("consecutiveErrors"), od.ConsecutiveErrors, 0, e)
		checkIstioDuration(op.child("interval"), od.Interval, e)
		checkIstioDuration(op.child("baseEjectionTime"), od.BaseEjectionTime, e)
		checkRange(op.child("maxEjectionPercent"), od.MaxEjectionPercent, 0, 100, e)
		checkRange(op.child("minHealthPercent"), od.MinHealthPercent, 0, 100, e)
		for i, c := range od.OutlierDetectionHttpErrorCodes {
			checkRange(op.child("outlierDetectionHttpErrorCodes").at(i), c, 100, 599, e)
		}
	}
	if tls != nil {
		tp := p.child("tls")
		if tls.Mode == networkingapi.ClientTLSSettings_MUTUAL && tls.CredentialName == "" {
			if tls.ClientCertificate == "" {
				e.add(tp.child("clientCertificate"), "required for mode MUTUAL unless credentialName is set")
			}
			if tls.PrivateKey == "" {
				e.add(tp.child("privateKey"), "required for mode MUTUAL unless credentialName is set")
			}
		}
	}
}

func validateLocality(l *networkingapi.LocalityLoadBalancerSetting, p *fieldPath, e *errs) {
	if len(l.Distribute) > 0 && len(l.Failover) > 0 {
		e.add(p, "only one of distribute and failover may be set")
	}
	for i, d := range l.Distribute {
		dp := p.child("distribute").at(i)
		if d.GetFrom() == "" {
			e.add(dp.child("from"), "required")
		}
		var sum uint64
		for _, w := range d.GetTo() {
			sum += uint64(w)
		}
		if sum != 100 {
			e.add(dp.child("to"), fmt.Sprintf("weights must add up to 100, got %d", sum))
		}
	}
	for i, f := range l.Failover {
		fp := p.child("failover").at(i)
		if f.GetFrom() == "" {
			e.add(fp.child("from"), "required")
		}
		if f.GetTo() == "" {
			e.add(fp.child("to"), "required")
		}
		if f.GetFrom() != "" && f.GetFrom() == f.GetTo() {
			e.add(fp.child("to"), fmt.Sprintf("must differ from from (%q)", f.GetFrom()))
		}
		if strings.Contains(f.GetFrom(), "/") || strings.Contains(f.GetTo(), "/") {
			e.add(fp, "failover is between regions: from and to must be region names, without '/'")
		}
	}
}

func validateWorkloadSelector(s *typeapi.WorkloadSelector, p *fieldPath, e *errs) {
	if s == nil {
		return
	}
	for _, k := range sortedMapKeys(s.MatchLabels) {
		if strings.Contains(k, "*") {
			e.add(p.child("matchLabels").key(k), "wildcards are not allowed in label keys")
		}
	}
	validateLabels(s.MatchLabels, p.child("matchLabels"), e)
}

// validateTargets enforces "selector or targetRefs, not both" and what a
// policy may be attached to.
func validateTargets(sel *typeapi.WorkloadSelector, ref *typeapi.PolicyTargetReference, refs []*typeapi.PolicyTargetReference, spec *fieldPath, e *errs) {
	if sel != nil && (ref != nil || len(refs) > 0) {
		e.add(spec.child("selector"), "only one of selector and targetRefs may be set")
	}
	if ref != nil && len(refs) > 0 {
		e.add(spec.child("targetRef"), "only one of targetRef and targetRefs may be set (targetRef is deprecated)")
	}
	validateWorkloadSelector(sel, spec.child("selector"), e)
	check := func(r *typeapi.PolicyTargetReference, p *fieldPath) {
		if r == nil {
			e.add(p, "must not be null")
			return
		}
		if r.Name == "" {
			e.add(p.child("name"), "required")
		}
		if r.Namespace != "" {
			e.add(p.child("namespace"), "cross-namespace references are not supported; leave it empty")
		}
		allowed := map[string]string{
			"Gateway":      "gateway.networking.k8s.io",
			"GatewayClass": "gateway.networking.k8s.io",
			"Service":      "",
			"ServiceEntry": "networking.istio.io",
		}
		group, ok := allowed[r.Kind]
		switch {
		case r.Kind == "":
			e.add(p.child("kind"), "required; one of Gateway, GatewayClass, Service, ServiceEntry")
		case !ok:
			e.add(p.child("kind"), fmt.Sprintf("invalid kind %q: must be one of Gateway, GatewayClass, Service, ServiceEntry", r.Kind))
		case r.Group != group:
			e.add(p.child("group"), fmt.Sprintf("must be %q for kind %s, got %q", group, r.Kind, r.Group))
		}
	}
	if ref != nil {
		check(ref, spec.child("targetRef"))
	}
	for i, r := range refs {
		check(r, spec.child("targetRefs").at(i))
	}
}

func validateAuthorizationPolicy(ap *securityv1.AuthorizationPolicy, e *errs) {
	spec := newPath("spec")
	s := &ap.Spec
	validateTargets(s.Selector, s.TargetRef, s.TargetRefs, spec, e)
	if s.Action == securityapi.AuthorizationPolicy_CUSTOM {
		if s.GetProvider() == nil || s.GetProvider().Name == "" {
			e.add(spec.child("provider", "name"), "required for action CUSTOM")
		}
	} else if s.GetProvider() != nil {
		e.add(spec.child("provider"), fmt.Sprintf("may only be set for action CUSTOM, not %s", s.Action))
	}
	for i, r := range s.Rules {
		rp := spec.child("rules").at(i)
		if r == nil {
			e.add(rp, "must not be null (an empty rule is written {})")
			continue
		}
		for j, f := range r.From {
			fp := rp.child("from").at(j)
			if f.GetSource() == nil {
				e.add(fp.child("source"), "required")
				continue
			}
			validateSource(f.Source, fp.child("source"), e)
		}
		for j, t := range r.To {
			tp := rp.child("to").at(j)
			if t.GetOperation() == nil {
				e.add(tp.child("operation"), "required")
				continue
			}
			validateOperation(t.Operation, tp.child("operation"), e)
		}
		for j, c := range r.When {
			validateCondition(c, rp.child("when").at(j), e)
		}
	}
}

func validateSource(s *securityapi.Source, p *fieldPath, e *errs) {
	lists := []struct {
		name string
		vals []string
	}{
		{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
		{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
		{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
		{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts},
		{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks},
		{"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks},
		{"trustDomains", s.TrustDomains}, {"notTrustDomains", s.NotTrustDomains},
	}
	empty := true
	for _, l := range lists {
		if len(l.vals) > 0 {
			empty = false
		}
		for i, v := range l.vals {
			vp := p.child(l.name).at(i)
			switch {
			case v == "":
				e.add(vp, "empty value")
			case strings.HasSuffix(l.name, "pBlocks") || strings.HasSuffix(l.name, "IpBlocks"):
				checkIPOrCIDR(vp, v, e)
			case strings.HasSuffix(strings.ToLower(l.name), "serviceaccounts"):
				// "<namespace>/<name>", or "<name>" in the policy's namespace.
				if ns, name, ok := strings.Cut(v, "/"); (ok && (ns == "" || name == "" || strings.Contains(name, "/"))) || strings.Contains(v, "*") {
					e.add(vp, fmt.Sprintf("invalid service account %q: must be <namespace>/<name> or <name> (no wildcards)", v))
				}
			default:
				checkWildcard(vp, v, e)
			}
		}
	}
	if empty {
		e.add(p, "must not be empty: set at least one of principals, namespaces, serviceAccounts, ipBlocks...")
	}
	if len(s.ServiceAccounts)+len(s.NotServiceAccounts) > 0 && len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces) > 0 {
		e.add(p.child("serviceAccounts"), "cannot be combined with principals or namespaces")
	}
}

// checkWildcard: Istio matches values exactly, by prefix ("abc*"), by
// suffix ("*abc") or always ("*"); a '*' anywhere else is taken literally,
// which is never what was meant.
func checkWildcard(p *fieldPath, v string, e *errs) {
	inner := strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*")
	if strings.Contains(inner, "*") {
		e.add(p, fmt.Sprintf("invalid value %q: '*' is only allowed at the start or end", v))
	}
}

func validateOperation(o *securityapi.Operation, p *fieldPath, e *errs) {
	lists := []struct {
		name string
		vals []string
	}{
		{"hosts", o.Hosts}, {"notHosts", o.NotHosts}, {"ports", o.Ports}, {"notPorts", o.NotPorts},
		{"methods", o.Methods}, {"notMethods", o.NotMethods}, {"paths", o.Paths}, {"notPaths", o.NotPaths},
	}
	empty := true
	for _, l := range lists {
		if len(l.vals) > 0 {
			empty = false
		}
		for i, v := range l.vals {
			vp := p.child(l.name).at(i)
			switch {
			case v == "":
				e.add(vp, "empty value")
			case l.name == "ports" || l.name == "notPorts":
				n, err := strconv.Atoi(v)
				if err != nil {
					e.add(vp, fmt.Sprintf("invalid port %q: must be a number", v))
				} else {
					checkPort(vp, n, e)
				}
			case l.name == "paths" || l.name == "notPaths":
				if !strings.HasPrefix(v, "/") && v != "*" && !strings.HasPrefix(v, "*") {
					e.add(vp, fmt.Sprintf("invalid path %q: must start with '/' (or be a '*' match)", v))
				}
			case l.name == "hosts" || l.name == "notHosts":
				checkWildcard(vp, v, e)
			}
		}
	}
	if empty {
		e.add(p, "must not be empty: set at least one of hosts, ports, methods, paths...")
	}
}

// authzKeys are the attributes an AuthorizationPolicy condition may test;
// the bracketed ones take a name, as in request.headers[x-user].
var authzKeys = []string{
	"request.headers[]", "source.ip", "remote.ip", "source.namespace", "source.principal",
	"source.serviceAccount", "request.auth.principal", "request.auth.audiences",
	"request.auth.presenter", "request.auth.claims[]", "destination.ip", "destination.port",
	"connection.sni", "experimental.envoy.filters.",
}

func validateCondition(c *securityapi.Condition, p *fieldPath, e *errs) {
	if c == nil {
		e.add(p, "must not be null")
		return
	}
	known := false
	for _, k := range authzKeys {
		switch {
		case strings.HasSuffix(k, "[]"):
			base := strings.TrimSuffix(k, "]")
			if strings.HasPrefix(c.Key, base) && strings.HasSuffix(c.Key, "]") && len(c.Key) > len(base)+1 {
				known = true
			}
		case strings.HasSuffix(k, "."):
			known = known || strings.HasPrefix(c.Key, k)
		default:
			known = known || c.Key == k
		}
	}
	switch {
	case c.Key == "":
		e.add(p.child("key"), "required")
	case !known:
		e.add(p.child("key"), fmt.Sprintf("unknown key %q: must be one of source.ip, remote.ip, source.namespace, source.principal, request.headers[<name>], request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni", c.Key))
	}
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		e.add(p, "one of values and notValues is required")
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"values", c.Values}, {"notValues", c.NotValues}} {
		for i, v := range l.vals {
			vp := p.child(l.name).at(i)
			switch {
			case v == "":
				e.add(vp, "empty value")
			case c.Key == "source.ip" || c.Key == "remote.ip" || c.Key == "destination.ip":
				checkIPOrCIDR(vp, v, e)
			case c.Key == "destination.port":
				n, err := strconv.Atoi(v)
				if err != nil {
					e.add(vp, fmt.Sprintf("invalid port %q: must be a number", v))
				} else {
					checkPort(vp, n, e)
				}
			}
		}
	}
}

func validatePeerAuthentication(pa *securityv1.PeerAuthentication, e *errs) {
	spec := newPath("spec")
	s := &pa.Spec
	validateWorkloadSelector(s.Selector, spec.child("selector"), e)
	if len(s.PortLevelMtls) > 0 && len(s.GetSelector().GetMatchLabels()) == 0 {
		e.add(spec.child("portLevelMtls"), "requires a workload selector: port-level settings apply to the selected workloads' ports")
	}
	ports := make([]uint32, 0, len(s.PortLevelMtls))
	for port := range s.PortLevelMtls {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	for _, port := range ports {
		kp := spec.child("portLevelMtls").key(strconv.FormatUint(uint64(port), 10))
		checkPort(kp, port, e)
		if s.PortLevelMtls[port] == nil {
			e.add(kp, "must not be null; set mode")
		}
	}
}

func validateWasmPlugin(w *extensionsv1alpha1.WasmPlugin, e *errs) {
	spec := newPath("spec")
	s := &w.Spec
	validateTargets(s.Selector, s.TargetRef, s.TargetRefs, spec, e)
	switch {
	case s.Url == "":
		e.add(spec.child("url"), "required")
	case strings.Contains(s.Url, "://"):
		scheme, _, _ := strings.Cut(s.Url, "://")
		if !slices.Contains([]string{"http", "https", "oci", "file"}, scheme) {
			e.add(spec.child("url"), fmt.Sprintf("invalid URL scheme %q: must be one of http, https, oci, file (or no scheme, for an OCI image)", scheme))
		}
	}
	if h := s.Sha256; h != "" && !isSHA256(h) {
		e.add(spec.child("sha256"), fmt.Sprintf("invalid value %q: must be 64 lowercase hex digits", truncate(h, 70)))
	}
	if n := len(s.PluginName); n > 256 {
		e.add(spec.child("pluginName"), fmt.Sprintf("too long: %d characters, at most 256 allowed", n))
	}
	if vm := s.VmConfig; vm != nil {
		names := map[string]int{}
		for i, env := range vm.Env {
			ep := spec.child("vmConfig", "env").at(i)
			if env.GetName() == "" {
				e.add(ep.child("name"), "required")
			} else if j, dup := names[env.Name]; dup {
				e.add(ep.child("name"), fmt.Sprintf("duplicate variable %q (also env[%d])", env.Name, j))
			} else {
				names[env.Name] = i
			}
			if env.GetValueFrom() == extensionsapi.EnvValueSource_HOST && env.GetValue() != "" {
				e.add(ep.child("value"), "may only be set when valueFrom is INLINE")
			}
		}
	}
	for i, m := range s.Match {
		for j, port := range m.GetPorts() {
			checkPort(spec.child("match").at(i).child("ports").at(j).child("number"), port.GetNumber(), e)
		}
	}
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
