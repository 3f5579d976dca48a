package lb

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Endpoint is a healthy workload backing a service. Endpoints are immutable
// and shared between views.
type Endpoint struct {
	Workload *meshv1.Workload
	Locality *meshv1.Locality
	// Addresses are the workload's addresses, parsed (IPv4-mapped IPv6
	// unmapped). Read-only.
	Addresses []netip.Addr
	// Ports is the workload's mapping for this service
	// (Workload.services[key]). Read-only.
	Ports []*meshv1.Port
}

// TargetPort returns the workload port that serves service port sp: the
// workload's own mapping (named target ports differ per workload), else the
// service's numeric target_port. False when the workload does not serve sp
// (a named target port the workload lacks).
func (e *Endpoint) TargetPort(sp *meshv1.ServicePort) (uint16, bool) {
	for _, p := range e.Ports {
		if p.GetServicePort() == sp.GetPort() {
			if tp := p.GetTargetPort(); tp != 0 {
				return uint16(tp), true
			}
			break
		}
	}
	if tp := sp.GetTargetPort(); tp != 0 {
		return uint16(tp), true
	}
	return 0, false
}

// Address returns the endpoint's address of the same family as like (so a
// connection to an IPv6 VIP goes to an IPv6 pod address), else its first.
func (e *Endpoint) Address(like netip.Addr) netip.Addr {
	for _, a := range e.Addresses {
		if a.Is4() == like.Is4() {
			return a
		}
	}
	if len(e.Addresses) > 0 {
		return e.Addresses[0]
	}
	return netip.Addr{}
}

// Identity is the SPIFFE identity the endpoint's workload presents.
func (e *Endpoint) Identity() spiffe.ID {
	w := e.Workload
	return spiffe.ID{TrustDomain: w.GetTrustDomain(), Namespace: w.GetNamespace(), ServiceAccount: w.GetServiceAccount()}
}

// localityField returns e's i-th field in the canonical order: region,
// zone, subzone, node.
func (e *Endpoint) localityField(i int) string {
	switch i {
	case 0:
		return e.Locality.GetRegion()
	case 1:
		return e.Locality.GetZone()
	case 2:
		return e.Locality.GetSubzone()
	}
	return e.Workload.GetNode()
}

func sourceField(src *meshv1.Workload, i int) string {
	switch i {
	case 0:
		return src.GetLocality().GetRegion()
	case 1:
		return src.GetLocality().GetZone()
	case 2:
		return src.GetLocality().GetSubzone()
	}
	return src.GetNode()
}

// CompareEndpoints is the order of View.Endpoints lists: region, zone,
// subzone, node, then uid. Every locality tier is then a contiguous range.
func CompareEndpoints(a, b *Endpoint) int {
	for i := range 4 {
		if c := strings.Compare(a.localityField(i), b.localityField(i)); c != 0 {
			return c
		}
	}
	return strings.Compare(a.Workload.GetUid(), b.Workload.GetUid())
}

// canonical is the scope order the endpoint lists are sorted by.
var canonical = [...]meshv1.LoadBalancing_Scope{
	meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_SUBZONE, meshv1.LoadBalancing_NODE,
}

// isCanonicalPrefix: the scopes are REGION, ZONE, SUBZONE, NODE or a prefix
// of that (what trafficDistribution produces), so tiers are ranges.
func isCanonicalPrefix(scopes []meshv1.LoadBalancing_Scope) bool {
	if len(scopes) > len(canonical) {
		return false
	}
	for i, s := range scopes {
		if s != canonical[i] {
			return false
		}
	}
	return true
}

// tierRange returns [lo, hi): the endpoints sharing src's first j canonical
// locality fields, by binary search.
func tierRange(eps []*Endpoint, src *meshv1.Workload, j int) (int, int) {
	cmp := func(e *Endpoint) int {
		for i := range j {
			if c := strings.Compare(e.localityField(i), sourceField(src, i)); c != 0 {
				return c
			}
		}
		return 0
	}
	lo, hi := 0, len(eps)
	for lo < hi { // first with cmp >= 0
		m := int(uint(lo+hi) >> 1)
		if cmp(eps[m]) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	start := lo
	hi = len(eps)
	for lo < hi { // first with cmp > 0
		m := int(uint(lo+hi) >> 1)
		if cmp(eps[m]) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return start, lo
}

// Request is what a Chooser picks from.
type Request struct {
	// Service gives the load balancing settings (Service.load_balancing).
	Service *meshv1.Service
	// Port: only endpoints serving this service port are eligible; nil:
	// every endpoint (waypoints, reached on their HBONE port).
	Port *meshv1.ServicePort
	// Endpoints, sorted by CompareEndpoints (as View.Endpoints returns
	// them).
	Endpoints []*Endpoint
	// Source is the connecting workload; nil when unknown, in which case no
	// locality scope matches.
	Source *meshv1.Workload
	// LoadBalancing, when set, is used instead of Service.load_balancing
	// (a proxy's default for Services that state none).
	LoadBalancing *meshv1.LoadBalancing
	// Zone, when set, pins the choice to endpoints in that zone (the
	// waypoint's x-destination-zone header): locality ranking, degraded
	// zones and probes do not apply, and no endpoint there means none.
	Zone string
	// Health, when set, is what this proxy observed of the destination:
	// its ejected endpoints are avoided and, when the Service asks for
	// locality (FAILOVER), so are its degraded zones — the closest tier
	// with an endpoint in a healthy zone wins — and now and then one
	// request probes a random endpoint so every zone's latency stays known.
	Health *Health
	// Locality, when set, is a DestinationRule's distribute, failover or
	// failoverPriority, applied relative to Source's locality (and labels);
	// it replaces the routing preference. Health applies as with FAILOVER.
	Locality *LocalityPolicy

	// What Choose resolved of Locality for this request.
	dist   *distributeRule // the distribute rule matching Source
	entry  int             // 1 + the distribute locality chosen; 0: not yet
	tiered bool            // failover / failoverPriority tiers
}

// LoadBalancingMode is the mode in force: MODE_UNSPECIFIED when locality
// does not apply.
func (r *Request) LoadBalancingMode() meshv1.LoadBalancing_Mode {
	return r.loadBalancing().GetMode()
}

func (r *Request) loadBalancing() *meshv1.LoadBalancing {
	if r.LoadBalancing != nil {
		return r.LoadBalancing
	}
	return r.Service.GetLoadBalancing()
}

// Chooser picks the endpoint for a new connection. Implementations must be
// safe for concurrent use and should not allocate.
type Chooser interface {
	// Choose returns an index into r.Endpoints, or -1 when none is eligible.
	Choose(r Request) int
}

// Scorer ranks endpoints for power-of-two-choices: lower is better (e.g. an
// EWMA of latency times outstanding requests).
type Scorer interface {
	Score(e *Endpoint) float64
}

// Ejector removes endpoints from consideration (passive health checking).
type Ejector interface {
	Ejected(e *Endpoint) bool
}

// LocalityChooser implements Service.load_balancing as Istio's ztunnel does.
//
// Endpoints are ranked by how many of the routing_preference scopes, in the
// order listed, they share with the source: an endpoint matches a scope only
// if it matches every earlier one too (REGION, ZONE, SUBZONE compare the
// locality fields, NODE the node name, CLUSTER the cluster id). Mode STRICT
// keeps only the endpoints matching every scope (possibly none); FAILOVER
// keeps the best-ranked tier with an eligible endpoint; MODE_UNSPECIFIED (or
// no load_balancing) ignores locality. Within the tier the choice is
// uniformly random, or power-of-two-choices when a Scorer is set.
//
// Cost: when routing_preference is REGION, ZONE, SUBZONE, NODE or a prefix
// of it (all trafficDistribution values) tiers are found by binary search,
// O(log n); other orders scan the list, O(n). Nothing is allocated.
type LocalityChooser struct {
	// Scorer, when set, picks the better of two random endpoints of the tier.
	Scorer Scorer
	// Ejector, when set, makes ejected endpoints ineligible; if that leaves
	// none it is ignored (panic mode, like Envoy's panic threshold).
	Ejector Ejector
	// IntN returns a uniform random int in [0, n); nil: math/rand/v2.IntN.
	IntN func(n int) int
}

func (c *LocalityChooser) intN(n int) int {
	if c.IntN != nil {
		return c.IntN(n)
	}
	return rand.IntN(n)
}

// Avoidance levels, relaxed in turn until an endpoint is found: with
// health, degraded zones and ejected endpoints are avoided; then only
// ejected ones; then nothing (Envoy's panic mode: better an ejected
// endpoint than none).
const (
	avoidNothing = iota
	avoidEjected
	avoidDegraded
)

// Choose implements Chooser. When a probe is due, the request itself is
// the probe: it goes to the zone to be measured (a degraded zone only when
// nothing has measured it for DegradedProbeInterval — see ChooseShadow).
func (c *LocalityChooser) Choose(r Request) int {
	i, _ := c.choose2(r, false)
	return i
}

// ChooseShadow is Choose for a request that may be sent twice (idempotent,
// no body): the request goes where the policy says, and when a probe is due
// probe is the endpoint a copy should go to — its response timed for
// Health.Observe and discarded — so no client waits on a probe (Envoy's
// request mirroring, put to measuring). probe is -1 when none is due.
func (c *LocalityChooser) ChooseShadow(r Request) (choice, probe int) {
	return c.choose2(r, true)
}

func (c *LocalityChooser) choose2(r Request, shadow bool) (int, int) {
	top := avoidNothing
	if c.Ejector != nil || r.Health != nil {
		top = avoidEjected
	}
	r.resolveLocality()
	probe := -1
	if r.Health != nil && r.Zone == "" && r.localized() {
		top = avoidDegraded
		if r.Health.probeDue() {
			if probe = c.probe(r, shadow); probe >= 0 && !shadow {
				return probe, -1
			}
		}
	}
	for lvl := top; lvl >= avoidNothing; lvl-- {
		if i := c.choose(r, lvl); i >= 0 {
			if i == probe {
				probe = -1 // measured by the request itself
			}
			return i, probe
		}
	}
	return -1, -1
}

// localized reports whether locality keeps r's traffic to some zones
// (which is when degraded zones are avoided and the others probed).
func (r *Request) localized() bool {
	if r.Locality != nil {
		return r.dist != nil || r.tiered
	}
	lb := r.loadBalancing()
	return lb.GetMode() == meshv1.LoadBalancing_FAILOVER && len(lb.GetRoutingPreference()) > 0
}

// probe picks an endpoint of the zone observed least recently (never
// observed first; a degraded zone by a request of its own only every
// DegradedProbeInterval), uniformly, not by the Scorer: the probe is for
// the zones traffic does not reach. Endpoints are sorted by region and zone, so each
// zone is a run.
func (c *LocalityChooser) probe(r Request, shadow bool) int {
	eps := r.Endpoints
	now := r.Health.cfg.Now().UnixNano()
	bestLo, bestHi, bestLast := -1, -1, int64(0)
	for lo := 0; lo < len(eps); {
		hi := lo + 1
		for hi < len(eps) && eps[hi].Locality.GetZone() == eps[lo].Locality.GetZone() && eps[hi].Locality.GetRegion() == eps[lo].Locality.GetRegion() {
			hi++
		}
		if last, ok := r.Health.lastSample(eps[lo], now, shadow); ok && (bestLo < 0 || last < bestLast) && r.anyDistributed(lo, hi) {
			bestLo, bestHi, bestLast = lo, hi, last
		}
		lo = hi
	}
	if bestLo < 0 {
		return -1
	}
	uniform := LocalityChooser{Ejector: c.Ejector, IntN: c.IntN}
	return uniform.pickIn(r, bestLo, bestHi, avoidEjected)
}

// anyDistributed reports whether distribute lets any of eps[lo:hi] have
// traffic (a probe never goes where the policy sends none).
func (r *Request) anyDistributed(lo, hi int) bool {
	for _, e := range r.Endpoints[lo:hi] {
		if r.distributed(e) {
			return true
		}
	}
	return false
}

func (c *LocalityChooser) choose(r Request, lvl int) int {
	switch {
	case r.Zone != "":
		return c.pickIn(r, 0, len(r.Endpoints), lvl)
	case r.dist != nil:
		return c.chooseDistributed(r, lvl)
	case r.tiered:
		return c.chooseByScan(r, nil, meshv1.LoadBalancing_FAILOVER, lvl)
	case r.Locality != nil:
		// Distribute with no rule for this caller, or no caller: no
		// locality, as in Istio.
		return c.pickIn(r, 0, len(r.Endpoints), lvl)
	}
	lb := r.loadBalancing()
	scopes, mode := lb.GetRoutingPreference(), lb.GetMode()
	if mode == meshv1.LoadBalancing_MODE_UNSPECIFIED {
		scopes = nil
	}
	if r.Source == nil && len(scopes) > 0 {
		if mode == meshv1.LoadBalancing_STRICT {
			return -1
		}
		scopes = nil // FAILOVER: everything ranks 0
	}
	if !isCanonicalPrefix(scopes) {
		return c.chooseByScan(r, scopes, mode, lvl)
	}
	k := len(scopes)
	if mode == meshv1.LoadBalancing_STRICT {
		lo, hi := tierRange(r.Endpoints, r.Source, k)
		return c.pickIn(r, lo, hi, lvl)
	}
	for j := k; j >= 0; j-- {
		lo, hi := tierRange(r.Endpoints, r.Source, j)
		if i := c.pickIn(r, lo, hi, lvl); i >= 0 {
			return i
		}
	}
	return -1
}

func (c *LocalityChooser) eligible(r *Request, e *Endpoint, lvl int) bool {
	if r.Port != nil {
		if _, ok := e.TargetPort(r.Port); !ok {
			return false
		}
	}
	if r.Zone != "" && e.Locality.GetZone() != r.Zone {
		return false
	}
	if !r.distributed(e) {
		return false
	}
	if lvl >= avoidEjected {
		if c.Ejector != nil && c.Ejector.Ejected(e) {
			return false
		}
		if r.Health != nil && r.Health.Ejected(e) {
			return false
		}
	}
	return lvl < avoidDegraded || !r.Health.Degraded(e)
}

// pickIn picks among the eligible endpoints of r.Endpoints[lo:hi]: random
// probes first (uniform over the eligible ones), an exact count-and-select
// scan when they keep missing.
func (c *LocalityChooser) pickIn(r Request, lo, hi int, lvl int) int {
	n := hi - lo
	if n <= 0 {
		return -1
	}
	eps := r.Endpoints
	first := -1
	for range 4 {
		if i := lo + c.intN(n); c.eligible(&r, eps[i], lvl) {
			first = i
			break
		}
	}
	if first < 0 {
		if first = c.scanPick(&r, lo, hi, -1, lvl); first < 0 {
			return -1
		}
	}
	if c.Scorer == nil || n == 1 {
		return first
	}
	second := -1
	for range 4 {
		i := lo + c.intN(n-1)
		if i >= first {
			i++
		}
		if c.eligible(&r, eps[i], lvl) {
			second = i
			break
		}
	}
	if second < 0 {
		if second = c.scanPick(&r, lo, hi, first, lvl); second < 0 {
			return first
		}
	}
	if c.Scorer.Score(eps[second]) < c.Scorer.Score(eps[first]) {
		return second
	}
	return first
}

// scanPick picks uniformly among the eligible endpoints of [lo, hi) other
// than skip.
func (c *LocalityChooser) scanPick(r *Request, lo, hi, skip int, lvl int) int {
	n := 0
	for i := lo; i < hi; i++ {
		if i != skip && c.eligible(r, r.Endpoints[i], lvl) {
			n++
		}
	}
	if n == 0 {
		return -1
	}
	k := c.intN(n)
	for i := lo; i < hi; i++ {
		if i != skip && c.eligible(r, r.Endpoints[i], lvl) {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return -1
}

// rank counts the leading routing_preference scopes e shares with src.
func rank(scopes []meshv1.LoadBalancing_Scope, src *meshv1.Workload, e *Endpoint) int {
	sl, el := src.GetLocality(), e.Locality
	for i, s := range scopes {
		var same bool
		switch s {
		case meshv1.LoadBalancing_REGION:
			same = sl.GetRegion() == el.GetRegion()
		case meshv1.LoadBalancing_ZONE:
			same = sl.GetZone() == el.GetZone()
		case meshv1.LoadBalancing_SUBZONE:
			same = sl.GetSubzone() == el.GetSubzone()
		case meshv1.LoadBalancing_NODE:
			same = src.GetNode() == e.Workload.GetNode()
		case meshv1.LoadBalancing_CLUSTER:
			same = src.GetClusterId() == e.Workload.GetClusterId()
		}
		if !same {
			return i
		}
	}
	return len(scopes)
}

// rankOf is e's rank for r, higher first: the routing_preference scopes
// shared with the source, or minus the policy's failover priority.
func (r *Request) rankOf(scopes []meshv1.LoadBalancing_Scope, e *Endpoint) int {
	if r.tiered {
		return -r.Locality.priority(r.Source, e)
	}
	return rank(scopes, r.Source, e)
}

// chooseByScan handles any routing_preference order, and failover
// priorities, in two passes.
func (c *LocalityChooser) chooseByScan(r Request, scopes []meshv1.LoadBalancing_Scope, mode meshv1.LoadBalancing_Mode, lvl int) int {
	best, n := math.MinInt, 0
	for _, e := range r.Endpoints {
		if !c.eligible(&r, e, lvl) {
			continue
		}
		rk := r.rankOf(scopes, e)
		switch {
		case mode == meshv1.LoadBalancing_STRICT:
			if rk == len(scopes) {
				n++
			}
		case rk > best:
			best, n = rk, 1
		case rk == best:
			n++
		}
	}
	if mode == meshv1.LoadBalancing_STRICT {
		best = len(scopes)
	}
	if n == 0 {
		return -1
	}
	k1, k2 := c.intN(n), -1
	if c.Scorer != nil && n > 1 {
		if k2 = c.intN(n - 1); k2 >= k1 {
			k2++
		}
	}
	i1, i2, k := -1, -1, 0
	for i, e := range r.Endpoints {
		if !c.eligible(&r, e, lvl) || r.rankOf(scopes, e) != best {
			continue
		}
		if k == k1 {
			i1 = i
		}
		if k == k2 {
			i2 = i
		}
		k++
	}
	if i2 >= 0 && c.Scorer.Score(r.Endpoints[i2]) < c.Scorer.Score(r.Endpoints[i1]) {
		return i2
	}
	return i1
}
