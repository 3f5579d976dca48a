package lb

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// HealthConfig tunes a Health. Zero fields take the defaults noted.
type HealthConfig struct {
	// Factor and Floor: a zone is degraded when its latency EWMA exceeds
	// Factor × the best zone's plus Floor (defaults 2, as in seed 000:
	// "prefer the local zone unless its latency is over 2× another's", and
	// 20 ms: leaving the zone costs a cross-zone hop and egress, worth it
	// for a real degradation, not for the jitter of a busy node — on a
	// loaded two-core machine the zones' EWMAs wander by 10 ms).
	Factor float64
	Floor  time.Duration
	// FailBackFactor: a degraded zone is used again once its EWMA is at most
	// FailBackFactor × the best zone's plus Floor (default halfway between
	// 1 and Factor) and it has been degraded for at least HoldDown
	// (default 5 s). The gap and the hold are the hysteresis.
	FailBackFactor float64
	HoldDown       time.Duration
	// Sustain: a zone is degraded only once its EWMA has stayed over the
	// threshold this long (default 250 ms) — a real degradation lasts, a
	// node's briefest stalls do not. Every request sent meanwhile is slow:
	// at 100 requests/s, 250 ms is 25 of them.
	Sustain time.Duration
	// Evidence: this many requests to a zone, each slower than twice the
	// degradation threshold (Factor × the best other zone's EWMA plus
	// Floor), mark it degraded at once (default 5), without waiting for its
	// EWMA to climb and Sustain to pass — every request sent meanwhile is
	// slow, and at 100 requests/s that wait is some 30 of them. Either as
	// many consecutive answers that slow, or, when the proxy reports what
	// it sends (Begin), as many requests unanswered for that long: a
	// request outstanding that long is at least that slow, and is known to
	// be long before its answer comes. A stall shorter than that many
	// requests, or any fast answer among consecutive ones, does not.
	Evidence int
	// Tau is the EWMA's time constant (default 1 s): a sample Δt after the
	// previous one weighs 1-exp(-Δt/Tau), so the average follows changes in
	// about Tau whatever the request rate.
	Tau time.Duration
	// ProbeInterval: while locality keeps traffic in one zone, once per
	// interval the zone observed least recently is probed (default 1 s) —
	// by a copy of a request where the proxy can make one (ChooseShadow),
	// else by the request itself — so every zone's latency stays known:
	// the only way a degraded zone can be seen to recover, and a local
	// zone's degradation be compared with the others.
	ProbeInterval time.Duration
	// DegradedProbeInterval: a degraded zone is probed by a request of its
	// own at most this often (default 5 s): each such probe is a slow
	// request. Copies of requests (LocalityChooser.ChooseShadow) probe it
	// like any zone: no client waits on them.
	DegradedProbeInterval time.Duration
	// EjectAfter consecutive failures (connect failures at L4, 5xx at L7)
	// eject an endpoint (default 5) for BaseEjection (default 1 s), doubled
	// on each consecutive ejection up to MaxEjection (default 5 s, so an
	// endpoint that comes back is used again within seconds).
	EjectAfter   int
	BaseEjection time.Duration
	MaxEjection  time.Duration
	// MaxEjectionPercent caps the share of endpoints ejected at once (0: no
	// cap; the chooser still picks an ejected endpoint when no other is
	// left). Ejection needs the endpoint count: see Observe.
	MaxEjectionPercent int
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// Event, if set, is told of changes: "zone degraded" and "zone
	// recovered" (region, zone, ewma, best) and "endpoint ejected" (uid,
	// for). Called synchronously: keep it short (a log line).
	Event func(msg string, args ...any)
}

func (c *HealthConfig) defaults() {
	if c.Factor <= 0 {
		c.Factor = 2
	}
	if c.Floor <= 0 {
		c.Floor = 20 * time.Millisecond
	}
	if c.FailBackFactor <= 0 || c.FailBackFactor > c.Factor {
		c.FailBackFactor = 1 + (c.Factor-1)/2
	}
	if c.HoldDown <= 0 {
		c.HoldDown = 5 * time.Second
	}
	if c.Sustain <= 0 {
		c.Sustain = 250 * time.Millisecond
	}
	if c.Evidence <= 0 {
		c.Evidence = 5
	}
	if c.DegradedProbeInterval <= 0 {
		c.DegradedProbeInterval = 5 * time.Second
	}
	if c.Tau <= 0 {
		c.Tau = time.Second
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = time.Second
	}
	if c.EjectAfter <= 0 {
		c.EjectAfter = 5
	}
	if c.BaseEjection <= 0 {
		c.BaseEjection = time.Second
	}
	if c.MaxEjection < c.BaseEjection {
		c.MaxEjection = max(5*time.Second, c.BaseEjection)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Health is what one proxy has observed of one destination's endpoints:
// latency EWMAs per endpoint and per zone, passive health, and which zones
// are degraded. Safe for concurrent use; the chooser's reads (Ejected,
// degraded) take no lock and do not allocate.
type Health struct {
	cfg HealthConfig

	mu    sync.Mutex                  // serializes Observe's updates
	zones atomic.Pointer[[]*zoneStat] // copy-on-write when a zone appears
	eps   sync.Map                    // workload uid → *endpointStat

	nextProbe atomic.Int64 // unix ns
	lastGC    time.Time
}

type zoneStat struct {
	region, zone string
	ewma         float64 // ns; guarded by Health.mu
	last         time.Time
	lastNs       atomic.Int64 // last, for readers without mu
	samples      int
	degraded     atomic.Bool
	since        time.Time // when degraded became true
	over         time.Time // since when over the threshold (zero: not over)
	// streak counts the latest consecutive samples far over the threshold
	// (Evidence); streakMin is the least of them.
	streak    int
	streakMin float64
	// strong is that threshold (ns; 0 while no other zone is known), for
	// Begin, which takes no lock.
	strong atomic.Int64
	// Requests outstanding (Begin without Observe yet): sent and done
	// count them; sends holds the send times (unix ns) of the latest, by
	// sequence number modulo its length.
	sent, done atomic.Uint64
	sends      [64]atomic.Int64
}

type endpointStat struct {
	ewma         atomic.Uint64 // math.Float64bits of ns
	lastNs       atomic.Int64
	consecFail   atomic.Int32
	ejections    atomic.Int32
	ejectedUntil atomic.Int64 // unix ns
}

// NewHealth returns an empty Health.
func NewHealth(cfg HealthConfig) *Health {
	cfg.defaults()
	h := &Health{cfg: cfg}
	h.zones.Store(&[]*zoneStat{})
	// The first probe is one interval away: a new destination starts with
	// its policy's choice.
	h.nextProbe.Store(cfg.Now().Add(cfg.ProbeInterval).UnixNano())
	return h
}

// Config returns the effective configuration (defaults filled in).
func (h *Health) Config() HealthConfig { return h.cfg }

func (h *Health) ep(uid string) *endpointStat {
	if v, ok := h.eps.Load(uid); ok {
		return v.(*endpointStat)
	}
	v, _ := h.eps.LoadOrStore(uid, &endpointStat{})
	return v.(*endpointStat)
}

func (h *Health) zoneOf(e *Endpoint) *zoneStat {
	r, z := e.Locality.GetRegion(), e.Locality.GetZone()
	for _, s := range *h.zones.Load() {
		if s.zone == z && s.region == r {
			return s
		}
	}
	return nil
}

// Ejected reports whether passive health has ejected e for now.
func (h *Health) Ejected(e *Endpoint) bool {
	v, ok := h.eps.Load(e.Workload.GetUid())
	return ok && v.(*endpointStat).ejectedUntil.Load() > h.cfg.Now().UnixNano()
}

// Degraded reports whether e's zone is currently avoided.
func (h *Health) Degraded(e *Endpoint) bool {
	s := h.zoneOf(e)
	return s != nil && s.degraded.Load()
}

// ZoneDegraded reports whether the zone (region, zone) is avoided.
func (h *Health) ZoneDegraded(region, zone string) bool {
	for _, s := range *h.zones.Load() {
		if s.zone == zone && s.region == region {
			return s.degraded.Load()
		}
	}
	return false
}

// ZoneLatency returns the zone's latency EWMA, false before any sample.
func (h *Health) ZoneLatency(region, zone string) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range *h.zones.Load() {
		if s.zone == zone && s.region == region && s.samples > 0 {
			return time.Duration(s.ewma), true
		}
	}
	return 0, false
}

// Latency returns e's latency EWMA, 0 before any sample.
func (h *Health) Latency(e *Endpoint) time.Duration {
	v, ok := h.eps.Load(e.Workload.GetUid())
	if !ok {
		return 0
	}
	return time.Duration(math.Float64frombits(v.(*endpointStat).ewma.Load()))
}

// lastSample is when the zone of e was last observed (0: never), and
// whether it may be probed now: a degraded zone by a copy of a request
// (shadow) like any other, by a request of its own only every
// DegradedProbeInterval — that request is slow, and copies, when the
// traffic allows them, measure the zone before it is due.
func (h *Health) lastSample(e *Endpoint, now int64, shadow bool) (int64, bool) {
	z := h.zoneOf(e)
	if z == nil {
		return 0, true
	}
	last := z.lastNs.Load()
	return last, shadow || !z.degraded.Load() || now-last >= int64(h.cfg.DegradedProbeInterval)
}

// probeDue claims the next probe when one is due: true for exactly one
// caller per ProbeInterval.
func (h *Health) probeDue() bool {
	now := h.cfg.Now().UnixNano()
	next := h.nextProbe.Load()
	if now < next {
		return false
	}
	return h.nextProbe.CompareAndSwap(next, now+int64(h.cfg.ProbeInterval))
}

// Observe records the outcome of one attempt on e: ok with the latency
// (connect time at L4, time to response headers at L7), or a failure
// (connect failure, 5xx), whose latency is not recorded. n is the number of
// endpoints of the destination, for MaxEjectionPercent (0: unknown).
func (h *Health) Observe(e *Endpoint, latency time.Duration, ok bool, n int) {
	now := h.cfg.Now()
	if z := h.zoneOf(e); z != nil {
		// Answered. Never past sent: a proxy that does not report its
		// sends (Begin) leaves both at zero.
		for d := z.done.Load(); d < z.sent.Load() && !z.done.CompareAndSwap(d, d+1); d = z.done.Load() {
		}
	}
	st := h.ep(e.Workload.GetUid())
	if !ok {
		h.fail(e.Workload.GetUid(), st, now, n)
		return
	}
	st.consecFail.Store(0)
	if st.ejectedUntil.Load() <= now.UnixNano() {
		st.ejections.Store(0)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	x := float64(latency)
	prev := time.Unix(0, st.lastNs.Load())
	st.ewma.Store(math.Float64bits(blend(math.Float64frombits(st.ewma.Load()), x, st.lastNs.Load() == 0, now.Sub(prev), h.cfg.Tau)))
	st.lastNs.Store(now.UnixNano())

	z := h.addZone(e)
	// A zone reached only by probes gets a sample every few seconds: one
	// sample may move its average at most halfway, so a single lucky (or
	// unlucky) probe does not make it the best zone (or a degraded one).
	z.ewma = blend(z.ewma, x, z.samples == 0, min(now.Sub(z.last), time.Duration(float64(h.cfg.Tau)*math.Ln2)), h.cfg.Tau)
	z.last = now
	z.lastNs.Store(now.UnixNano())
	z.samples++
	h.reassess(now, z, x)
	if now.Sub(h.lastGC) > time.Minute {
		h.gc(now)
	}
}

// addZone returns e's zone, added if new. Called with mu held.
func (h *Health) addZone(e *Endpoint) *zoneStat {
	z := h.zoneOf(e)
	if z == nil {
		z = &zoneStat{region: e.Locality.GetRegion(), zone: e.Locality.GetZone()}
		zs := append(append([]*zoneStat{}, *h.zones.Load()...), z)
		h.zones.Store(&zs)
	}
	return z
}

// Begin tells that a request (connection) is being sent to e; Observe
// must follow, whatever the outcome. When Evidence requests to the zone
// have been waiting longer than twice the degradation threshold, the zone
// is degraded there and then. Cheap: no lock unless that happens (or the
// zone is new).
func (h *Health) Begin(e *Endpoint) {
	z := h.zoneOf(e)
	if z == nil {
		h.mu.Lock()
		z = h.addZone(e)
		h.mu.Unlock()
	}
	now := h.cfg.Now().UnixNano()
	seq := z.sent.Add(1) - 1
	z.sends[seq%uint64(len(z.sends))].Store(now)
	strong := z.strong.Load()
	if strong <= 0 || z.degraded.Load() {
		return
	}
	// At most done of the requests are answered, so if the one sent
	// Evidence-th after the first done was sent over strong ago, at least
	// Evidence requests have waited that long. (Out of the ring: too many
	// outstanding to tell; the answers will.)
	k := z.done.Load() + uint64(h.cfg.Evidence) - 1
	if seq < k || seq-k >= uint64(len(z.sends)) || now-z.sends[k%uint64(len(z.sends))].Load() <= strong {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !z.degraded.Load() {
		h.degrade(z, h.cfg.Now(), float64(strong), "outstanding")
	}
}

// blend is the time-weighted EWMA step.
func blend(avg, x float64, first bool, dt, tau time.Duration) float64 {
	if first {
		return x
	}
	w := 1 - math.Exp(-float64(dt)/float64(tau))
	return avg + w*(x-avg)
}

// reassess marks zones degraded or recovered against the best zone;
// sampled has just been observed taking x. Called with mu held.
func (h *Health) reassess(now time.Time, sampled *zoneStat, x float64) {
	zs := *h.zones.Load()
	// The best zone, and the second best: the best of the others for the
	// best one.
	var bestZ *zoneStat
	best, second := math.Inf(1), math.Inf(1)
	for _, z := range zs {
		switch {
		case z.samples == 0:
		case z.ewma < best:
			bestZ, best, second = z, z.ewma, best
		case z.ewma < second:
			second = z.ewma
		}
	}
	floor := float64(h.cfg.Floor)
	strong := func(z *zoneStat) float64 {
		other := best
		if z == bestZ {
			other = second
		}
		return 2 * (h.cfg.Factor*other + floor)
	}
	// Strong evidence: compared with the other zones only (a zone is not
	// slow against itself; no other zone measured: none), and only while
	// it is in use.
	switch s := strong(sampled); {
	case sampled.degraded.Load() || math.IsInf(s, 1) || x <= s:
		sampled.streak = 0
	case sampled.streak == 0 || x < sampled.streakMin:
		sampled.streak++
		sampled.streakMin = x
	default:
		sampled.streak++
	}
	for _, z := range zs {
		if s := strong(z); math.IsInf(s, 1) {
			z.strong.Store(0)
		} else {
			z.strong.Store(int64(s))
		}
		if z.samples == 0 {
			continue
		}
		if !z.degraded.Load() && z.streak >= h.cfg.Evidence {
			h.degrade(z, now, z.streakMin, "slow answers")
			continue
		}
		if !z.degraded.Load() {
			if z.ewma <= h.cfg.Factor*best+floor {
				z.over = time.Time{}
				continue
			}
			if z.over.IsZero() {
				z.over = now
			}
			if now.Sub(z.over) >= h.cfg.Sustain {
				z.since, z.over = now, time.Time{}
				z.degraded.Store(true)
				h.event("zone degraded", "region", z.region, "zone", z.zone, "ewma", time.Duration(z.ewma), "best", time.Duration(best))
			}
			continue
		}
		if z.ewma <= h.cfg.FailBackFactor*best+floor && now.Sub(z.since) >= h.cfg.HoldDown {
			z.degraded.Store(false)
			h.event("zone recovered", "region", z.region, "zone", z.zone, "ewma", time.Duration(z.ewma), "best", time.Duration(best))
		}
	}
}

// degrade marks z degraded on strong evidence that its latency is at least
// least. Called with mu held.
func (h *Health) degrade(z *zoneStat, now time.Time, least float64, evidence string) {
	// The evidence is the zone's latency now: its EWMA starts there, so
	// fail-back waits for samples that say otherwise.
	z.ewma = max(z.ewma, least)
	z.since, z.over, z.streak = now, time.Time{}, 0
	z.degraded.Store(true)
	h.event("zone degraded", "region", z.region, "zone", z.zone, "ewma", time.Duration(z.ewma), "evidence", evidence)
}

func (h *Health) fail(uid string, st *endpointStat, now time.Time, n int) {
	if int(st.consecFail.Add(1)) < h.cfg.EjectAfter {
		return
	}
	nowNs := now.UnixNano()
	if st.ejectedUntil.Load() > nowNs {
		return
	}
	if p := h.cfg.MaxEjectionPercent; p > 0 && n > 0 {
		ejected := 0
		h.eps.Range(func(_, v any) bool {
			if v.(*endpointStat).ejectedUntil.Load() > nowNs {
				ejected++
			}
			return true
		})
		if ejected >= max(1, n*p/100) {
			return
		}
	}
	k := st.ejections.Add(1)
	d := h.cfg.BaseEjection
	for i := int32(1); i < k && d < h.cfg.MaxEjection; i++ {
		d *= 2
	}
	d = min(d, h.cfg.MaxEjection)
	st.ejectedUntil.Store(nowNs + int64(d))
	st.consecFail.Store(0)
	h.event("endpoint ejected", "uid", uid, "for", d)
}

func (h *Health) event(msg string, args ...any) {
	if h.cfg.Event != nil {
		h.cfg.Event(msg, args...)
	}
}

// gc forgets endpoints not observed for ten minutes (pods that went away).
// Called with mu held.
func (h *Health) gc(now time.Time) {
	h.lastGC = now
	cut := now.Add(-10 * time.Minute).UnixNano()
	h.eps.Range(func(k, v any) bool {
		st := v.(*endpointStat)
		if st.lastNs.Load() < cut && st.ejectedUntil.Load() < now.UnixNano() {
			h.eps.Delete(k)
		}
		return true
	})
}

// Registry holds one Health per destination (a Service key), created on
// first use with a shared configuration.
type Registry struct {
	cfg HealthConfig
	m   sync.Map // key → *Health
}

// NewRegistry returns an empty Registry whose Healths use cfg.
func NewRegistry(cfg HealthConfig) *Registry {
	cfg.defaults()
	return &Registry{cfg: cfg}
}

// Get returns the Health of destination key.
func (r *Registry) Get(key string) *Health {
	if v, ok := r.m.Load(key); ok {
		return v.(*Health)
	}
	v, _ := r.m.LoadOrStore(key, NewHealth(r.cfg))
	return v.(*Health)
}
