package waypoint

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/lb"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// Zone headers (seed 000): a request's x-destination-zone pins the zone
// that serves it; the response's x-ambit-served-zone says which did.
const (
	destinationZoneHeader = "X-Destination-Zone"
	servedZoneHeader      = "X-Ambit-Served-Zone"
)

// Endpoint choice for a destination Service (and DestinationRule subset):
// the load balancer, connection-pool limits and outlier detection of its
// DestinationRule, with Istio's defaults where it says nothing (least
// request; no limits; outlier detection only when configured).

type lbKind uint8

const (
	lbLeastRequest lbKind = iota
	lbRoundRobin
	lbRandom
	lbHash
)

type trafficPolicy struct {
	lb           lbKind
	hashHeader   string
	hashCookie   string
	hashQuery    string
	hashSourceIP bool

	maxConnections int64 // concurrent upstream requests waiting for none (0: unlimited)
	maxPending     int64 // requests that may wait for a connection slot (0: unlimited)
	maxRequests    int64 // concurrent requests; more are refused at once (0: unlimited)
	maxRetries     int64 // concurrent retries (0: unlimited)
	connectTimeout time.Duration

	outlier *outlierPolicy
	// locality overrides the Service's locality preference: nil keeps it;
	// from DestinationRule localityLbSetting, enabled: false turns it off
	// (noLocality) and enabled: true turns on "prefer the caller's zone"
	// for a Service that states no preference (preferClose).
	locality *meshv1.LoadBalancing
	// localityPolicy is localityLbSetting's distribute, failover and
	// failoverPriority (nil: none), which replace the Service's
	// preference.
	localityPolicy *lb.LocalityPolicy
}

var (
	noLocality  = &meshv1.LoadBalancing{}
	preferClose = &meshv1.LoadBalancing{
		RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_SUBZONE},
		Mode:              meshv1.LoadBalancing_FAILOVER,
	}
)

type outlierPolicy struct {
	consec5xx, consecGateway uint32
	baseEjection             time.Duration
	maxEjectionPercent       int
}

type subsetPolicy struct {
	name      string
	workloads map[string]bool
	tp        *trafficPolicy
}

type destPolicy struct {
	service string
	tp      *trafficPolicy
	subsets map[string]*subsetPolicy
}

var defaultTrafficPolicy = &trafficPolicy{}

func compileDestPolicy(dp *meshv1.DestinationPolicy) (*destPolicy, error) {
	if !validServiceKey(dp.GetService()) {
		return nil, fmt.Errorf("service: %q is not <namespace>/<hostname>", dp.GetService())
	}
	d := &destPolicy{service: dp.GetService(), subsets: map[string]*subsetPolicy{}}
	var err error
	if d.tp, err = compileTrafficPolicy("traffic_policy", dp.GetTrafficPolicy()); err != nil {
		return nil, err
	}
	for i, s := range dp.GetSubsets() {
		field := fmt.Sprintf("subsets[%d]", i)
		if s.GetName() == "" {
			return nil, fmt.Errorf("%s.name: required", field)
		}
		sp := &subsetPolicy{name: s.GetName(), workloads: map[string]bool{}, tp: d.tp}
		if s.GetTrafficPolicy() != nil {
			if sp.tp, err = compileTrafficPolicy(field+".traffic_policy", s.GetTrafficPolicy()); err != nil {
				return nil, err
			}
		}
		for _, uid := range s.GetWorkloads() {
			sp.workloads[uid] = true
		}
		d.subsets[s.GetName()] = sp
	}
	return d, nil
}

func compileTrafficPolicy(field string, tp *meshv1.TrafficPolicy) (*trafficPolicy, error) {
	if tp == nil {
		return defaultTrafficPolicy, nil
	}
	out := &trafficPolicy{}
	lbp := tp.GetLoadBalancer()
	switch lbp.GetSimple() {
	case meshv1.LoadBalancerPolicy_DEFAULT, meshv1.LoadBalancerPolicy_LEAST_REQUEST, meshv1.LoadBalancerPolicy_PASSTHROUGH:
		out.lb = lbLeastRequest
	case meshv1.LoadBalancerPolicy_ROUND_ROBIN:
		out.lb = lbRoundRobin
	case meshv1.LoadBalancerPolicy_RANDOM:
		out.lb = lbRandom
	default:
		return nil, fmt.Errorf("%s.load_balancer.simple: unknown value %d", field, lbp.GetSimple())
	}
	if lbp.GetHashHeader() != "" || lbp.GetHashCookie() != "" || lbp.GetHashQueryParam() != "" || lbp.GetHashSourceIp() {
		out.lb = lbHash
		out.hashHeader, out.hashCookie, out.hashQuery, out.hashSourceIP = lbp.GetHashHeader(), lbp.GetHashCookie(), lbp.GetHashQueryParam(), lbp.GetHashSourceIp()
	}
	if l := lbp.GetLocality(); l != nil {
		out.locality = noLocality
		if l.GetEnabled() {
			out.locality = preferClose
		}
		var err error
		if out.localityPolicy, err = lb.CompileLocality(l); err != nil {
			return nil, fmt.Errorf("%s.load_balancer.locality: %w", field, err)
		}
	}
	if cp := tp.GetConnectionPool(); cp != nil {
		if cp.GetConnectTimeoutMs() < 0 {
			return nil, fmt.Errorf("%s.connection_pool.connect_timeout_ms: negative", field)
		}
		out.maxConnections, out.maxPending = int64(cp.GetMaxConnections()), int64(cp.GetMaxPendingRequests())
		out.maxRequests, out.maxRetries = int64(cp.GetMaxRequests()), int64(cp.GetMaxRetries())
		out.connectTimeout = ms(cp.GetConnectTimeoutMs())
	}
	if od := tp.GetOutlierDetection(); od != nil {
		if od.GetBaseEjectionTimeMs() < 0 || od.GetMaxEjectionPercent() > 100 {
			return nil, fmt.Errorf("%s.outlier_detection: base_ejection_time_ms must not be negative and max_ejection_percent at most 100", field)
		}
		o := &outlierPolicy{consec5xx: od.GetConsecutive_5XxErrors(), consecGateway: od.GetConsecutiveGatewayErrors(),
			baseEjection: ms(od.GetBaseEjectionTimeMs()), maxEjectionPercent: int(od.GetMaxEjectionPercent())}
		// Istio's defaults.
		if o.consec5xx == 0 && o.consecGateway == 0 {
			o.consec5xx = 5
		}
		if o.baseEjection == 0 {
			o.baseEjection = 30 * time.Second
		}
		if o.maxEjectionPercent == 0 {
			o.maxEjectionPercent = 10
		}
		out.outlier = o
	}
	return out, nil
}

// cluster is the runtime state of one destination (Service, subset): the
// counters behind connection-pool limits, round robin and outlier
// detection. Clusters outlive configuration changes; one whose policy
// changed is replaced (requests in flight finish on the old one).
type cluster struct {
	key      string
	tp       *trafficPolicy
	subset   *subsetPolicy
	inflight atomic.Int64
	pending  atomic.Int64
	retries  atomic.Int64
	rr       atomic.Uint64
	slots    chan struct{} // maxConnections, nil when unlimited
	stats    sync.Map      // workload uid → *endpointStats
	filtered atomic.Pointer[endpointCache]
	// health is what this waypoint observed of the destination's
	// endpoints: response time EWMAs per endpoint and zone, passive
	// ejection (DestinationRule outlierDetection's settings when given,
	// else five consecutive 5xx), degraded zones.
	health *lb.Health
}

type endpointCache struct {
	// src is the first slot of the source list's backing array, for
	// identity: the ztunnel state never edits a published list, it
	// publishes a new one. (Comparing the first endpoint instead would miss
	// a list whose later endpoints were replaced — pods of one zone
	// replaced while another zone's sort first — and keep sending to
	// addresses that are gone.)
	src **state.Endpoint
	n   int
	out []*state.Endpoint
}

type endpointStats struct {
	active atomic.Int64
}

type clusters struct {
	m sync.Map // key → *cluster
	// noServedZone turns the x-ambit-served-zone response header off.
	noServedZone bool
	// now is the clock of the clusters' health (tests); nil: time.Now.
	now func() time.Time
	// log, if set, receives the health's events (zones degraded and
	// recovered, endpoints ejected).
	log *slog.Logger
}

func (cs *clusters) get(key string, tp *trafficPolicy, subset *subsetPolicy) *cluster {
	if v, ok := cs.m.Load(key); ok {
		c := v.(*cluster)
		if c.tp == tp && c.subset == subset {
			return c
		}
	}
	hc := healthConfig(tp, cs.now)
	if cs.log != nil {
		log := cs.log.With("destination", key)
		hc.Event = func(msg string, args ...any) { log.Info(msg, args...) }
	}
	c := &cluster{key: key, tp: tp, subset: subset, health: lb.NewHealth(hc)}
	if tp.maxConnections > 0 {
		c.slots = make(chan struct{}, tp.maxConnections)
	}
	cs.m.Store(key, c)
	return c
}

// healthConfig: passive health as the DestinationRule's outlierDetection
// asks (Envoy's max ejection time, 300 s), else the mesh's default — five
// consecutive 5xx eject for 1 s, doubling up to 5 s.
func healthConfig(tp *trafficPolicy, now func() time.Time) lb.HealthConfig {
	cfg := lb.HealthConfig{Now: now}
	if o := tp.outlier; o != nil {
		cfg.EjectAfter = int(o.consec5xx)
		if o.consec5xx == 0 {
			cfg.EjectAfter = int(o.consecGateway)
		}
		cfg.BaseEjection, cfg.MaxEjection = o.baseEjection, 300*time.Second
		cfg.MaxEjectionPercent = o.maxEjectionPercent
	}
	return cfg
}

// errOverflow: a connection-pool limit refused the request (Envoy's UO).
var errOverflow = fmt.Errorf("upstream connection pool overflow")

// acquire takes a request slot, waiting for a connection slot while the
// pending queue has room. release must be called when the request is done.
func (c *cluster) acquire(ctx context.Context) error {
	if max := c.tp.maxRequests; max > 0 && c.inflight.Load() >= max {
		return errOverflow
	}
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
		default:
			if max := c.tp.maxPending; max > 0 && c.pending.Add(1) > max {
				c.pending.Add(-1)
				return errOverflow
			} else if max <= 0 {
				c.pending.Add(1)
			}
			select {
			case c.slots <- struct{}{}:
				c.pending.Add(-1)
			case <-ctx.Done():
				c.pending.Add(-1)
				return ctx.Err()
			}
		}
	}
	c.inflight.Add(1)
	return nil
}

func (c *cluster) release() {
	c.inflight.Add(-1)
	if c.slots != nil {
		<-c.slots
	}
}

// retryAllowed takes a retry slot (maxRetries); releaseRetry gives it back.
func (c *cluster) retryAllowed() bool {
	if max := c.tp.maxRetries; max > 0 && c.retries.Add(1) > max {
		c.retries.Add(-1)
		return false
	}
	if c.tp.maxRetries <= 0 {
		c.retries.Add(1)
	}
	return true
}

func (c *cluster) releaseRetry() { c.retries.Add(-1) }

func (c *cluster) statsOf(uid string) *endpointStats {
	if v, ok := c.stats.Load(uid); ok {
		return v.(*endpointStats)
	}
	v, _ := c.stats.LoadOrStore(uid, &endpointStats{})
	return v.(*endpointStats)
}

// endpoints narrows the Service's endpoints to the subset, caching the
// result for as long as the Service's endpoint list is the same. When the
// list changes, the counters of endpoints that left are dropped, so a
// long-running waypoint does not keep every pod it ever saw.
func (c *cluster) endpoints(eps []*state.Endpoint) []*state.Endpoint {
	var first **state.Endpoint
	if len(eps) > 0 {
		first = &eps[0]
	}
	if fc := c.filtered.Load(); fc != nil && fc.src == first && fc.n == len(eps) {
		return fc.out
	}
	out := eps
	if c.subset != nil {
		out = make([]*state.Endpoint, 0, len(eps))
		for _, e := range eps {
			if c.subset.workloads[e.Workload.GetUid()] {
				out = append(out, e)
			}
		}
	}
	c.filtered.Store(&endpointCache{src: first, n: len(eps), out: out})
	live := make(map[string]bool, len(out))
	for _, e := range out {
		live[e.Workload.GetUid()] = true
	}
	c.stats.Range(func(k, _ any) bool {
		if !live[k.(string)] {
			c.stats.Delete(k)
		}
		return true
	})
	return out
}

// pick chooses an endpoint by the cluster's load balancer, avoiding ejected
// endpoints and tried (the endpoints a retried request's earlier attempts
// failed on: Envoy's previous_hosts predicate, part of Istio's default retry
// policy) while any other remains. hash is the consistent-hash key (used
// when hasHash).
//
// With the default policy (least request), loc (the
// destination Service and port, the client's workload, a pinned zone) goes
// to the chooser the ztunnel uses (internal/lb): the Service's locality
// preference (trafficDistribution, or the DestinationRule's
// localityLbSetting) picks the tier, avoiding ejected endpoints and
// degraded zones; within it the better of two random endpoints by response
// time × outstanding requests (Linkerd's peak-EWMA idea).
func (c *cluster) pick(eps []*state.Endpoint, loc *state.Request, hash uint64, hasHash bool, tried []*state.Endpoint) *state.Endpoint {
	e, _ := c.pickShadow(eps, loc, hash, hasHash, tried, false)
	return e
}

// pickShadow is pick for a request that may be copied (shadow): when a
// probe of another zone is due, the request still goes where the policy
// says, and probe is the endpoint a copy of it should measure (see
// lb.LocalityChooser.ChooseShadow); nil when none is due.
func (c *cluster) pickShadow(eps []*state.Endpoint, loc *state.Request, hash uint64, hasHash bool, tried []*state.Endpoint, shadow bool) (e, probe *state.Endpoint) {
	n := len(eps)
	if n == 0 {
		return nil, nil
	}
	if loc != nil {
		r := *loc
		r.Endpoints = eps
		r.Health = c.health
		if c.tp.locality != nil {
			r.LoadBalancing = c.tp.locality
		}
		r.Locality = c.tp.localityPolicy
		// Least request scores the two choices; round robin and random
		// take the chooser's uniform pick within the tier when locality
		// applies (the tier changes from one request to the next, so a
		// rotation over it would mean little). Consistent hashing keeps
		// its own choice: moving keys by zone would defeat it.
		localized := r.LoadBalancingMode() != meshv1.LoadBalancing_MODE_UNSPECIFIED
		if c.tp.lb == lbLeastRequest || r.Zone != "" || (localized && (c.tp.lb == lbRoundRobin || c.tp.lb == lbRandom)) {
			lc := lb.LocalityChooser{}
			if c.tp.lb == lbLeastRequest {
				lc.Scorer = c
			}
			if len(tried) > 0 {
				// A retry: an endpoint of the same tier (or pinned zone)
				// not tried yet if there is one, else the next tier.
				lc.Ejector = excluded(tried)
			}
			i, p := -1, -1
			if shadow {
				i, p = lc.ChooseShadow(r)
			} else {
				i = lc.Choose(r)
			}
			if p >= 0 && p < n {
				probe = eps[p]
			}
			if i >= 0 && i < n {
				return eps[i], probe
			}
			return nil, nil
		}
	}
	ok := func(e *state.Endpoint, strict int) bool {
		if strict >= 2 && slices.Contains(tried, e) {
			return false
		}
		if strict >= 1 && c.health.Ejected(e) {
			return false
		}
		return true
	}
	// Relax the constraints step by step: every endpoint ejected (Envoy's
	// panic mode) or excluded still leaves one to try.
	for strict := 2; strict >= 0; strict-- {
		var e *state.Endpoint
		switch {
		case c.tp.lb == lbHash && hasHash:
			e = hrw(eps, hash, func(e *state.Endpoint) bool { return ok(e, strict) })
		case c.tp.lb == lbRoundRobin:
			e = scan(eps, int(c.rr.Add(1)%uint64(n)), func(e *state.Endpoint) bool { return ok(e, strict) })
		case c.tp.lb == lbRandom:
			e = scan(eps, rand.IntN(n), func(e *state.Endpoint) bool { return ok(e, strict) })
		default:
			// Least request: the less busy of two random choices.
			a := scan(eps, rand.IntN(n), func(e *state.Endpoint) bool { return ok(e, strict) })
			b := scan(eps, rand.IntN(n), func(e *state.Endpoint) bool { return ok(e, strict) })
			e = a
			if a != nil && b != nil && c.Score(b) < c.Score(a) {
				e = b
			}
		}
		if e != nil {
			return e, nil
		}
	}
	return nil, nil
}

// caller is the workload locality is judged from: the client, except
// under a DestinationRule's distribute, failover or failoverPriority, which
// Istio applies from the proxy's own locality and labels (Envoy's) — this
// waypoint instance's, when the view knows it (else still the client's).
func (c *cluster) caller(view *state.View, t *tunnel, client *meshv1.Workload) *meshv1.Workload {
	if c.tp.localityPolicy != nil {
		if w := view.WorkloadByIP(t.self); w != nil {
			return w
		}
	}
	return client
}

// Score implements lb.Scorer: (outstanding requests + 1) × response time
// EWMA. An endpoint not measured yet counts as fast, so it is measured
// soon.
func (c *cluster) Score(e *state.Endpoint) float64 {
	return float64(c.statsOf(e.Workload.GetUid()).active.Load()+1) * float64(max(c.health.Latency(e), time.Microsecond))
}

// excluded makes the endpoints a request has tried ineligible while another
// remains.
type excluded []*state.Endpoint

func (x excluded) Ejected(e *state.Endpoint) bool { return slices.Contains(x, e) }

func scan(eps []*state.Endpoint, start int, ok func(*state.Endpoint) bool) *state.Endpoint {
	for i := range eps {
		if e := eps[(start+i)%len(eps)]; ok(e) {
			return e
		}
	}
	return nil
}

// hrw is rendezvous hashing: the endpoint with the highest hash of (key,
// workload uid). Adding or removing an endpoint moves only the keys that
// belonged to it.
func hrw(eps []*state.Endpoint, key uint64, ok func(*state.Endpoint) bool) *state.Endpoint {
	var best *state.Endpoint
	var bestScore uint64
	for _, e := range eps {
		if !ok(e) {
			continue
		}
		if s := mix(key ^ hashString(e.Workload.GetUid())); best == nil || s > bestScore {
			best, bestScore = e, s
		}
	}
	return best
}

// hashString is 64-bit FNV-1a: stable across processes, so every waypoint
// instance sends a key to the same endpoint.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finalizer: it spreads nearby keys apart.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// observe feeds a finished attempt to the destination's health: status is
// the response code, or 0 when the endpoint could not be reached; latency
// is the time to response headers. A 5xx (or, when the DestinationRule
// counts only gateway errors, a 502/503/504) or no response is a failure.
func (c *cluster) observe(eps []*state.Endpoint, e *state.Endpoint, status int, latency time.Duration) {
	fail := status == 0 || status >= 500
	if o := c.tp.outlier; o != nil && o.consec5xx == 0 {
		fail = status == 0 || status == 502 || status == 503 || status == 504
	}
	c.health.Observe(e, latency, !fail, len(eps))
}

// servedZone is the x-ambit-served-zone value for a response from e, ""
// when the header is off.
func (cs *clusters) servedZone(e *state.Endpoint) string {
	if cs.noServedZone || e == nil {
		return ""
	}
	return e.Locality.GetZone()
}
