package translate

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	ambitlb "github.com/ambit-mesh/ambit/internal/lb"
	"github.com/ambit-mesh/ambit/internal/model"
)

// DestinationRules → DestinationPolicy.
//
// Selection for a Service, most specific first: DestinationRules whose host
// is the Service's FQDN, then wildcard hosts (longest first). Among equally
// specific ones, a DestinationRule in the Service's namespace wins over one in
// the mesh root namespace, which wins over one elsewhere; then the oldest,
// then namespace/name. Like Istio, DestinationRules for the same host in the
// same namespace are merged: subsets are combined (the first definition of a
// name wins) and the traffic policy is the first one set. Every other
// candidate is reported and ignored. exportTo "." limits a DestinationRule to
// Services of its own namespace (a waypoint applies it to every client, so a
// client-side-only rule cannot be honoured).

type drCandidate struct {
	key      model.Key
	dr       *networkingv1.DestinationRule
	host     string // resolved host
	exact    bool
	nsRank   int // 0: Service namespace, 1: root namespace, 2: other
	hostSpec int // wildcard length (more specific first)
}

func (b *routeBuilder) collectDestinationRules() {
	for _, k := range sortedObjectKeys(b.snap.DestinationRules) {
		dr := b.snap.DestinationRules[k]
		ref := model.Ref{Kind: model.KindDestinationRule, Namespace: k.Namespace, Name: k.Name}
		spec := &dr.Spec
		if spec.GetWorkloadSelector() != nil {
			b.problem(nil, ref, "spec.workloadSelector", "DestinationRules with a workloadSelector configure sidecars of the selected workloads; waypoints ignore them")
			continue
		}
		host := b.fqdn(spec.GetHost(), k.Namespace)
		if host == "" {
			b.problem(nil, ref, "spec.host", "no host: ignored")
			continue
		}
		keys, exact := b.servicesForHost(host)
		if exact && len(keys) == 0 {
			b.problem(nil, ref, "spec.host", "host %q (%s) matches no Service: ignored", spec.GetHost(), host)
			continue
		}
		for _, sk := range keys {
			if !exportedTo(k.Namespace, spec.GetExportTo(), sk.Namespace) {
				if exact {
					b.problem(&sk, ref, "spec.exportTo", "not exported to namespace %s: waypoints apply destination rules to every client, so it does not apply to Service %s", sk.Namespace, sk)
				}
				continue
			}
			c := drCandidate{key: k, dr: dr, host: host, exact: exact, nsRank: 2, hostSpec: len(host)}
			switch k.Namespace {
			case sk.Namespace:
				c.nsRank = 0
			case b.mesh.RootNamespace:
				c.nsRank = 1
			}
			b.destinationRules[sk] = append(b.destinationRules[sk], c)
		}
	}
}

// policy returns the DestinationPolicy of a Service (memoized; nil when no
// DestinationRule applies).
func (b *routeBuilder) policy(k model.Key) *meshv1.DestinationPolicy {
	if b.policyDone[k] {
		return b.ix.policies[k]
	}
	b.policyDone[k] = true
	cands := b.destinationRules[k]
	if len(cands) == 0 {
		return nil
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, c := cands[i], cands[j]
		if a.exact != c.exact {
			return a.exact
		}
		if a.hostSpec != c.hostSpec {
			return a.hostSpec > c.hostSpec
		}
		if a.nsRank != c.nsRank {
			return a.nsRank < c.nsRank
		}
		return objectOrder(a.dr.CreationTimestamp, c.dr.CreationTimestamp, a.key, c.key)
	})
	first := cands[0]
	firstRef := model.Ref{Kind: model.KindDestinationRule, Namespace: first.key.Namespace, Name: first.key.Name}
	dp := &meshv1.DestinationPolicy{
		Service: b.serviceKey(k),
		Origin:  "DestinationRule " + first.key.String(),
	}
	var top *networkingapi.TrafficPolicy
	topFrom := first.key
	type subsetAt struct {
		s     *networkingapi.Subset
		from  model.Key
		index int
	}
	subsetFrom := map[string]model.Key{}
	var subsets []subsetAt
	for _, c := range cands {
		ref := model.Ref{Kind: model.KindDestinationRule, Namespace: c.key.Namespace, Name: c.key.Name}
		b.ix.problems.relate(k, ref)
		if c.key != first.key && (c.host != first.host || c.key.Namespace != first.key.Namespace) {
			b.problem(&k, ref, "spec.host", "ignored for Service %s: %s applies (one DestinationRule per host; only those of one namespace are merged)", k, firstRef)
			continue
		}
		spec := &c.dr.Spec
		if tp := spec.GetTrafficPolicy(); tp != nil {
			if top == nil {
				top, topFrom = tp, c.key
			} else {
				b.problem(&k, ref, "spec.trafficPolicy", "ignored: merged with DestinationRule %s, whose traffic policy applies", topFrom)
			}
		}
		for i, s := range spec.GetSubsets() {
			if s.GetName() == "" {
				b.problem(&k, ref, fmt.Sprintf("spec.subsets[%d].name", i), "subset without a name: ignored")
				continue
			}
			if from, dup := subsetFrom[s.GetName()]; dup {
				b.problem(&k, ref, fmt.Sprintf("spec.subsets[%d]", i), "subset %q is already defined by DestinationRule %s: ignored", s.GetName(), from)
				continue
			}
			subsetFrom[s.GetName()] = c.key
			subsets = append(subsets, subsetAt{s: s, from: c.key, index: i})
		}
	}
	topRef := model.Ref{Kind: model.KindDestinationRule, Namespace: topFrom.Namespace, Name: topFrom.Name}
	dp.TrafficPolicy = b.trafficPolicy(&k, topRef, "spec.trafficPolicy", top)
	for _, sa := range subsets {
		s := sa.s
		ref := model.Ref{Kind: model.KindDestinationRule, Namespace: sa.from.Namespace, Name: sa.from.Name}
		field := fmt.Sprintf("spec.subsets[%d].trafficPolicy", sa.index)
		ds := &meshv1.DestinationPolicy_Subset{Name: s.GetName(), Labels: s.GetLabels()}
		if s.GetTrafficPolicy() != nil {
			ds.TrafficPolicy = b.trafficPolicy(&k, ref, field, mergeTrafficPolicy(top, s.GetTrafficPolicy()))
		} else {
			ds.TrafficPolicy = dp.TrafficPolicy
		}
		dp.Subsets = append(dp.Subsets, ds)
	}
	b.ix.policies[k] = dp
	return dp
}

// subset looks up a subset of a Service's DestinationPolicy.
func (b *routeBuilder) subset(k model.Key, name string) (*meshv1.DestinationPolicy_Subset, bool) {
	for _, s := range b.policy(k).GetSubsets() {
		if s.GetName() == name {
			return s, true
		}
	}
	return nil, false
}

// mergeTrafficPolicy applies a subset's policy over the top-level one, field
// by field, as Istio does: what the subset sets wins, the rest is inherited.
func mergeTrafficPolicy(top, sub *networkingapi.TrafficPolicy) *networkingapi.TrafficPolicy {
	if sub == nil {
		return top
	}
	if top == nil {
		return sub
	}
	out := proto.Clone(top).(*networkingapi.TrafficPolicy)
	if sub.LoadBalancer != nil {
		out.LoadBalancer = sub.LoadBalancer
	}
	if sub.ConnectionPool != nil {
		out.ConnectionPool = sub.ConnectionPool
	}
	if sub.OutlierDetection != nil {
		out.OutlierDetection = sub.OutlierDetection
	}
	if sub.Tls != nil {
		out.Tls = sub.Tls
	}
	if len(sub.PortLevelSettings) > 0 {
		out.PortLevelSettings = sub.PortLevelSettings
	}
	if sub.Tunnel != nil {
		out.Tunnel = sub.Tunnel
	}
	if sub.ProxyProtocol != nil {
		out.ProxyProtocol = sub.ProxyProtocol
	}
	if sub.RetryBudget != nil {
		out.RetryBudget = sub.RetryBudget
	}
	return out
}

// trafficPolicy converts an Istio traffic policy, resolving Envoy's defaults
// where the proxy would otherwise need to know them. Fields Ambit cannot honour
// are reported.
func (b *routeBuilder) trafficPolicy(svc *model.Key, ref model.Ref, field string, tp *networkingapi.TrafficPolicy) *meshv1.TrafficPolicy {
	if tp == nil {
		return nil
	}
	out := &meshv1.TrafficPolicy{}
	var ignored []string
	if lb := tp.GetLoadBalancer(); lb != nil {
		out.LoadBalancer = loadBalancerPolicy(lb, &ignored)
	}
	if cp := tp.GetConnectionPool(); cp != nil {
		out.ConnectionPool = connectionPool(cp, &ignored)
	}
	if od := tp.GetOutlierDetection(); od != nil {
		out.OutlierDetection = outlierDetection(od, &ignored)
	}
	if t := tp.GetTls(); t != nil && t.GetMode() != networkingapi.ClientTLSSettings_ISTIO_MUTUAL {
		ignored = append(ignored, "tls (mode "+t.GetMode().String()+"; mesh traffic always uses HBONE mTLS)")
	}
	if len(tp.GetPortLevelSettings()) > 0 {
		ignored = append(ignored, "portLevelSettings")
	}
	if tp.GetTunnel() != nil {
		ignored = append(ignored, "tunnel")
	}
	if tp.GetProxyProtocol() != nil {
		ignored = append(ignored, "proxyProtocol")
	}
	if tp.GetRetryBudget() != nil {
		ignored = append(ignored, "retryBudget")
	}
	if len(ignored) > 0 {
		b.problem(svc, ref, field, "not supported, ignored: %s", strings.Join(ignored, ", "))
	}
	return out
}

func loadBalancerPolicy(lb *networkingapi.LoadBalancerSettings, ignored *[]string) *meshv1.LoadBalancerPolicy {
	out := &meshv1.LoadBalancerPolicy{}
	switch p := lb.GetLbPolicy().(type) {
	case *networkingapi.LoadBalancerSettings_Simple:
		switch p.Simple {
		case networkingapi.LoadBalancerSettings_ROUND_ROBIN:
			out.Simple = meshv1.LoadBalancerPolicy_ROUND_ROBIN
		case networkingapi.LoadBalancerSettings_LEAST_REQUEST, networkingapi.LoadBalancerSettings_LEAST_CONN: //nolint:staticcheck // LEAST_CONN is LEAST_REQUEST's deprecated alias.
			out.Simple = meshv1.LoadBalancerPolicy_LEAST_REQUEST
		case networkingapi.LoadBalancerSettings_RANDOM:
			out.Simple = meshv1.LoadBalancerPolicy_RANDOM
		case networkingapi.LoadBalancerSettings_PASSTHROUGH:
			out.Simple = meshv1.LoadBalancerPolicy_PASSTHROUGH
		}
	case *networkingapi.LoadBalancerSettings_ConsistentHash:
		ch := p.ConsistentHash
		switch k := ch.GetHashKey().(type) {
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
			out.HashHeader = k.HttpHeaderName
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
			out.HashCookie = k.HttpCookie.GetName()
			if k.HttpCookie.GetTtl() != nil || k.HttpCookie.GetPath() != "" || len(k.HttpCookie.GetAttributes()) > 0 {
				*ignored = append(*ignored, "loadBalancer.consistentHash.httpCookie ttl/path/attributes (no cookie is generated)")
			}
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
			out.HashSourceIp = k.UseSourceIp
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
			out.HashQueryParam = k.HttpQueryParameterName
		}
	}
	if l := lb.GetLocalityLbSetting(); l != nil {
		ll := &meshv1.LoadBalancerPolicy_LocalityLb{Enabled: true}
		if l.GetEnabled() != nil {
			ll.Enabled = l.GetEnabled().GetValue()
		}
		for _, d := range l.GetDistribute() {
			ll.Distribute = append(ll.Distribute, &meshv1.LoadBalancerPolicy_LocalityLb_Distribute{From: d.GetFrom(), To: d.GetTo()})
		}
		for _, f := range l.GetFailover() {
			ll.Failover = append(ll.Failover, &meshv1.LoadBalancerPolicy_LocalityLb_Failover{From: f.GetFrom(), To: f.GetTo()})
		}
		ll.FailoverPriority = append(ll.FailoverPriority, l.GetFailoverPriority()...)
		// The waypoint applies all of it (internal/lb.LocalityPolicy); the
		// pod labels failoverPriority names reach it on the Workloads
		// (priorityLabels). What it could not compile is dropped here, so
		// the rest of the DestinationRule still applies.
		if _, err := ambitlb.CompileLocality(ll); err != nil {
			*ignored = append(*ignored, "loadBalancer.localityLbSetting distribute/failover/failoverPriority ("+err.Error()+")")
			ll.Distribute, ll.Failover, ll.FailoverPriority = nil, nil, nil
		}
		out.Locality = ll
	}
	if lb.GetZoneAwareLbSetting() != nil {
		*ignored = append(*ignored, "loadBalancer.zoneAwareLbSetting")
	}
	if lb.GetWarmup() != nil || lb.GetWarmupDurationSecs() != nil { //nolint:staticcheck // reported, not used
		*ignored = append(*ignored, "loadBalancer.warmup")
	}
	return out
}

func connectionPool(cp *networkingapi.ConnectionPoolSettings, ignored *[]string) *meshv1.ConnectionPool {
	out := &meshv1.ConnectionPool{}
	if t := cp.GetTcp(); t != nil {
		out.MaxConnections = nonNegative(t.GetMaxConnections())
		out.ConnectTimeoutMs = durationMs(t.GetConnectTimeout())
		out.IdleTimeoutMs = durationMs(t.GetIdleTimeout())
		if t.GetTcpKeepalive() != nil {
			*ignored = append(*ignored, "connectionPool.tcp.tcpKeepalive")
		}
		if t.GetMaxConnectionDuration() != nil {
			*ignored = append(*ignored, "connectionPool.tcp.maxConnectionDuration")
		}
	}
	if h := cp.GetHttp(); h != nil {
		out.MaxPendingRequests = nonNegative(h.GetHttp1MaxPendingRequests())
		out.MaxRequests = nonNegative(h.GetHttp2MaxRequests())
		out.MaxRequestsPerConnection = nonNegative(h.GetMaxRequestsPerConnection())
		out.MaxRetries = nonNegative(h.GetMaxRetries())
		if h.GetIdleTimeout() != nil {
			// HTTP's idle timeout is the one that matters for an L7 pool.
			out.IdleTimeoutMs = durationMs(h.GetIdleTimeout())
		}
		if h.GetH2UpgradePolicy() != networkingapi.ConnectionPoolSettings_HTTPSettings_DEFAULT || h.GetUseClientProtocol() {
			*ignored = append(*ignored, "connectionPool.http.h2UpgradePolicy/useClientProtocol")
		}
		if h.GetMaxConcurrentStreams() != 0 || h.GetHttp2KeepAlive() != nil {
			*ignored = append(*ignored, "connectionPool.http.maxConcurrentStreams/http2KeepAlive")
		}
	}
	return out
}

// outlierDetection resolves Envoy's defaults (which Istio inherits): 5
// consecutive 5xx, 10s interval, 30s base ejection time, 10% max ejection.
// consecutive5xxErrors: 0 disables the 5xx check.
func outlierDetection(od *networkingapi.OutlierDetection, ignored *[]string) *meshv1.OutlierDetection {
	out := &meshv1.OutlierDetection{
		Consecutive_5XxErrors: 5,
		IntervalMs:            10_000,
		BaseEjectionTimeMs:    30_000,
		MaxEjectionPercent:    10,
	}
	switch {
	case od.GetConsecutive_5XxErrors() != nil:
		out.Consecutive_5XxErrors = od.GetConsecutive_5XxErrors().GetValue()
	case od.GetConsecutiveErrors() > 0: //nolint:staticcheck // deprecated alias still honoured
		out.Consecutive_5XxErrors = uint32(od.GetConsecutiveErrors()) //nolint:staticcheck
	}
	if v := od.GetConsecutiveGatewayErrors(); v != nil {
		out.ConsecutiveGatewayErrors = v.GetValue()
	}
	if od.GetInterval() != nil {
		out.IntervalMs = durationMs(od.GetInterval())
	}
	if od.GetBaseEjectionTime() != nil {
		out.BaseEjectionTimeMs = durationMs(od.GetBaseEjectionTime())
	}
	if od.GetMaxEjectionPercent() != 0 {
		out.MaxEjectionPercent = uint32(min(max(od.GetMaxEjectionPercent(), 0), 100))
	}
	if od.GetSplitExternalLocalOriginErrors() || od.GetConsecutiveLocalOriginFailures() != nil {
		*ignored = append(*ignored, "outlierDetection local origin errors")
	}
	if od.GetMinHealthPercent() != 0 {
		*ignored = append(*ignored, "outlierDetection.minHealthPercent")
	}
	if len(od.GetOutlierDetectionHttpErrorCodes()) > 0 {
		*ignored = append(*ignored, "outlierDetection.outlierDetectionHttpErrorCodes")
	}
	return out
}

func nonNegative(v int32) uint32 {
	if v < 0 {
		return 0
	}
	return uint32(v)
}

// durationMs converts a protobuf duration to milliseconds (a positive
// sub-millisecond duration rounds up to 1 so it does not read as "unset").
func durationMs(d *durationpb.Duration) int64 {
	if d == nil {
		return 0
	}
	v := d.AsDuration()
	if v <= 0 {
		return 0
	}
	if v < time.Millisecond {
		return 1
	}
	return v.Milliseconds()
}
