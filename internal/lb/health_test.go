package lb

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// clock is a manual clock for Health.
type clock struct{ t time.Time }

func (c *clock) now() time.Time           { return c.t }
func (c *clock) advance(d time.Duration)  { c.t = c.t.Add(d) }
func newClock() *clock                    { return &clock{t: time.Unix(1_000_000, 0)} }
func zoned(name, zone string) *Endpoint   { return ep(name, "r1", zone, "", "n-"+zone, "") }
func ms(f float64) time.Duration          { return time.Duration(f * float64(time.Millisecond)) }
func near(a, b time.Duration) bool        { return math.Abs(float64(a-b)) < float64(time.Microsecond) }
func sorted(eps ...*Endpoint) []*Endpoint { slices.SortFunc(eps, CompareEndpoints); return eps }

// feed records n samples of latency on e, one every step.
func feed(h *Health, c *clock, e *Endpoint, latency time.Duration, n int, step time.Duration) {
	for range n {
		c.advance(step)
		h.Observe(e, latency, true, 0)
	}
}

// slowZone feeds a second of samples, 10 ms apart: every endpoint answers
// in 1 ms, zone's in 300 ms (enough to mark it degraded).
func slowZone(h *Health, c *clock, all []*Endpoint, zone string) {
	for range 100 {
		for _, e := range all {
			l := ms(1)
			if e.Locality.GetZone() == zone {
				l = ms(300)
			}
			feed(h, c, e, l, 1, 10*time.Millisecond)
		}
	}
}

// steadyHealth is a Health after prepare (if any), with the next probe an
// hour away: draws from it see the steady choice.
func steadyHealth(prepare func(*Health, *clock)) *Health {
	c := newClock()
	h := NewHealth(HealthConfig{Now: c.now, ProbeInterval: time.Hour})
	if prepare != nil {
		prepare(h, c)
	}
	h.nextProbe.Store(c.t.Add(time.Hour).UnixNano())
	return h
}

func TestEWMA(t *testing.T) {
	c := newClock()
	h := NewHealth(HealthConfig{Tau: time.Second, Now: c.now})
	a := zoned("a", "z1")
	h.Observe(a, ms(10), true, 0)
	if got := h.Latency(a); !near(got, ms(10)) {
		t.Fatalf("first sample: ewma %v, want 10ms", got)
	}
	// One Tau later a sample of 20ms weighs 1-1/e.
	c.advance(time.Second)
	h.Observe(a, ms(20), true, 0)
	want := ms(10 + 10*(1-math.Exp(-1)))
	if got := h.Latency(a); !near(got, want) {
		t.Fatalf("after one tau: ewma %v, want %v", got, want)
	}
	// Samples close together move it little: rate does not change the
	// time constant.
	c.advance(time.Millisecond)
	h.Observe(a, ms(1000), true, 0)
	if got := h.Latency(a); got > want+ms(1000*0.0011) {
		t.Fatalf("sample 1ms later moved ewma to %v", got)
	}
	// The zone's average moves at most halfway per sample (zones reached
	// only by probes see one every few seconds): 10 → 15 for the 20ms one
	// a Tau later, then the 1000ms one 1ms later as for the endpoint.
	wantZone := 15 + (1000-15)*(1-math.Exp(-0.001))
	if z, ok := h.ZoneLatency("r1", "z1"); !ok || !near(z, ms(wantZone)) {
		t.Fatalf("zone latency %v %v, want %.3fms", z, ok, wantZone)
	}
	// Failures carry no latency.
	before := h.Latency(a)
	h.Observe(a, ms(5000), false, 0)
	if h.Latency(a) != before {
		t.Fatal("a failure's latency was recorded")
	}
}

func TestZoneDegradation(t *testing.T) {
	a, b := zoned("a", "z1"), zoned("b", "z2")
	step := 10 * time.Millisecond
	tests := []struct {
		name string
		// a's latency for 3 s, after both zones ran at 1ms.
		aLatency     time.Duration
		wantDegraded bool
		floor        time.Duration
	}{
		{"equal", ms(1), false, 5 * time.Millisecond},
		{"under the floor: 2x but within 5ms", ms(6.9), false, 5 * time.Millisecond},
		{"over factor plus floor", ms(7.5), true, 5 * time.Millisecond},
		{"300ms slower", ms(301), true, 5 * time.Millisecond},
		{"default floor 20ms: 15ms is jitter", ms(15), false, 0},
		{"default floor 20ms: 25ms is degraded", ms(25), true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			h := NewHealth(HealthConfig{Now: c.now, Floor: tt.floor})
			for range 100 {
				feed(h, c, a, ms(1), 1, step)
				feed(h, c, b, ms(1), 1, step)
			}
			for range 300 {
				feed(h, c, a, tt.aLatency, 1, step)
				feed(h, c, b, ms(1), 1, step)
			}
			if got := h.ZoneDegraded("r1", "z1"); got != tt.wantDegraded {
				za, _ := h.ZoneLatency("r1", "z1")
				t.Errorf("z1 degraded = %v, want %v (ewma %v)", got, tt.wantDegraded, za)
			}
			if h.ZoneDegraded("r1", "z2") {
				t.Error("the best zone is degraded")
			}
		})
	}
}

func TestZoneDegradationSteeredWithin(t *testing.T) {
	// How soon a 300ms degradation is acted on at 100 samples/s: on strong
	// evidence, Evidence (5) consecutive slow answers, ~50 ms after the
	// first; without it (Evidence out of reach), once the EWMA has stayed
	// over the threshold for Sustain (250 ms). Shorter stalls are never
	// acted on.
	setup := func(evidence int) (*clock, *Health, *Endpoint, *Endpoint) {
		c := newClock()
		h := NewHealth(HealthConfig{Now: c.now, Evidence: evidence})
		a, b := zoned("a", "z1"), zoned("b", "z2")
		for range 100 {
			feed(h, c, a, ms(1), 1, 10*time.Millisecond)
			feed(h, c, b, ms(1), 1, 0)
		}
		return c, h, a, b
	}
	for _, tt := range []struct {
		evidence int
		min, max time.Duration
	}{
		{0, 40 * time.Millisecond, 60 * time.Millisecond},
		{1000, 250 * time.Millisecond, 450 * time.Millisecond},
	} {
		c, h, a, b := setup(tt.evidence)
		start := c.t
		for !h.ZoneDegraded("r1", "z1") {
			feed(h, c, a, ms(301), 1, 10*time.Millisecond)
			feed(h, c, b, ms(1), 1, 0)
			if c.t.Sub(start) > 10*time.Second {
				t.Fatal("not degraded after 10s of 300ms responses")
			}
		}
		if d := c.t.Sub(start); d < tt.min || d > tt.max {
			t.Errorf("evidence %d: degraded after %v, want %v to %v", tt.evidence, d, tt.min, tt.max)
		}
	}

	for _, tt := range []struct {
		name     string
		evidence int
		slow     int
	}{
		{"4 slow answers in a row, fewer than Evidence", 0, 4},
		{"an 80 ms stall, the EWMA over for ~0.1 s", 1000, 8},
	} {
		c, h, a, b := setup(tt.evidence)
		for range tt.slow {
			feed(h, c, a, ms(301), 1, 10*time.Millisecond)
			feed(h, c, b, ms(1), 1, 0)
		}
		for range 500 {
			feed(h, c, a, ms(1), 1, 10*time.Millisecond)
			feed(h, c, b, ms(1), 1, 0)
			if h.ZoneDegraded("r1", "z1") {
				t.Fatalf("%s: degraded the zone", tt.name)
			}
		}
	}
}

// TestOutstandingEvidence: with sends reported (Begin), a zone that stops
// answering is degraded once Evidence requests have waited over twice the
// threshold — some 100 ms into a 300 ms stall at 100 requests/s, before
// any slow answer — while answers that keep coming, or too few requests
// waiting, do not.
func TestOutstandingEvidence(t *testing.T) {
	setup := func() (*clock, *Health, *Endpoint, *Endpoint) {
		c := newClock()
		h := NewHealth(HealthConfig{Now: c.now})
		a, b := zoned("a", "z1"), zoned("b", "z2")
		for range 100 { // 1 ms answers; the threshold is 2 × (2 × 1 + 20) = 44 ms
			h.Begin(a)
			c.advance(time.Millisecond)
			h.Observe(a, ms(1), true, 0)
			c.advance(9 * time.Millisecond)
			feed(h, c, b, ms(1), 1, 0)
		}
		return c, h, a, b
	}

	// A stall: requests every 10 ms, none answered.
	c, h, a, _ := setup()
	start := c.t
	for !h.ZoneDegraded("r1", "z1") {
		h.Begin(a)
		c.advance(10 * time.Millisecond)
		if c.t.Sub(start) > time.Second {
			t.Fatal("not degraded after a second without answers")
		}
	}
	if d := c.t.Sub(start); d < 80*time.Millisecond || d > 110*time.Millisecond {
		t.Errorf("degraded %v into the stall, want ~90 ms (the 5th request waiting 44 ms)", d)
	}

	// Answers 40 ms late, five requests waiting at a time, none as long as
	// 44 ms: never (the EWMA's own rule held off by an endless Sustain).
	c, h, a, _ = setup()
	h.cfg.Sustain = time.Hour
	for i := range 500 {
		h.Begin(a)
		if i >= 4 {
			h.Observe(a, ms(40), true, 0)
		}
		c.advance(10 * time.Millisecond)
		if h.ZoneDegraded("r1", "z1") {
			t.Fatal("answers under the strong threshold degraded the zone")
		}
	}

	// Four requests stuck, the rest answered: never (too few waiting).
	c, h, a, _ = setup()
	for range 4 {
		h.Begin(a)
	}
	for range 500 {
		h.Begin(a)
		c.advance(5 * time.Millisecond)
		h.Observe(a, ms(5), true, 0)
		c.advance(5 * time.Millisecond)
		if h.ZoneDegraded("r1", "z1") {
			t.Fatal("four requests outstanding degraded the zone")
		}
	}

	// A proxy that does not report sends: answers alone never count as
	// outstanding.
	c = newClock()
	h = NewHealth(HealthConfig{Now: c.now})
	a, b := zoned("a", "z1"), zoned("b", "z2")
	for range 500 {
		feed(h, c, a, ms(1), 1, 10*time.Millisecond)
		feed(h, c, b, ms(1), 1, 0)
	}
	h.Begin(a) // one request: done must not have run ahead of sent
	c.advance(time.Second)
	if h.ZoneDegraded("r1", "z1") {
		t.Fatal("degraded without requests waiting")
	}
	if n := testing.AllocsPerRun(100, func() { h.Begin(a); h.Observe(a, ms(1), true, 0) }); n != 0 {
		t.Errorf("Begin and Observe: %v allocations", n)
	}
}

// TestNoFlapUnderJitter: a healthy local zone whose answers wander (1–8
// ms), with single slow outliers and short bursts of slow answers (fewer
// than Evidence in a row), is never marked degraded in a minute of
// traffic at 100 requests/s — with strong evidence on, as without it.
func TestNoFlapUnderJitter(t *testing.T) {
	for _, evidence := range []int{0, 1000} {
		c := newClock()
		var events []string
		h := NewHealth(HealthConfig{Now: c.now, Evidence: evidence, Event: func(msg string, args ...any) { events = append(events, fmt.Sprint(msg, args)) }})
		a, b := zoned("a", "z1"), zoned("b", "z2")
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 6000 {
			l := ms(1 + 7*rng.Float64())
			switch {
			case i%97 == 50: // a single outlier now and then
				l = ms(500)
			case i%500 >= 250 && i%500 < 254: // every 5 s, four slow answers in a row
				l = ms(300)
			case i%200 == 7 || i%200 == 9: // two slow ones with a fast one between
				l = ms(400)
			}
			feed(h, c, a, l, 1, 10*time.Millisecond)
			if i%100 == 0 { // the other zone, probed once a second
				feed(h, c, b, ms(2+2*rng.Float64()), 1, 0)
			}
		}
		if len(events) > 0 {
			t.Errorf("evidence %d: a healthy zone flapped: %v", evidence, events)
		}
	}
}

func TestFailBackHysteresis(t *testing.T) {
	a, b := zoned("a", "z1"), zoned("b", "z2")
	step := 10 * time.Millisecond
	setup := func() (*clock, *Health) {
		c := newClock()
		h := NewHealth(HealthConfig{Now: c.now, Floor: 5 * time.Millisecond}) // factor 2, fail back 1.5x+5ms, hold 5s
		for range 100 {
			feed(h, c, a, ms(1), 1, step)
			feed(h, c, b, ms(1), 1, step)
		}
		for range 100 { // 2s of 300ms: degraded
			feed(h, c, a, ms(300), 1, step)
			feed(h, c, b, ms(1), 1, step)
		}
		if !h.ZoneDegraded("r1", "z1") {
			t.Fatal("setup: z1 not degraded")
		}
		return c, h
	}
	tests := []struct {
		name         string
		aLatency     time.Duration
		for_         time.Duration
		wantDegraded bool
	}{
		{"recovered but inside the hold-down", ms(1), 2 * time.Second, true},
		{"recovered after the hold-down", ms(1), 10 * time.Second, false},
		{"between fail-back and degrade thresholds stays degraded", ms(6.8), 20 * time.Second, true},
		{"below the fail-back threshold returns", ms(6.2), 20 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, h := setup()
			for end := c.t.Add(tt.for_); c.t.Before(end); {
				feed(h, c, a, tt.aLatency, 1, step)
				feed(h, c, b, ms(1), 1, step)
			}
			if got := h.ZoneDegraded("r1", "z1"); got != tt.wantDegraded {
				t.Errorf("degraded = %v, want %v", got, tt.wantDegraded)
			}
		})
	}
	// The same 6.8ms never degrades a healthy zone: the gap between the
	// thresholds is what stops flapping.
	c := newClock()
	h := NewHealth(HealthConfig{Now: c.now, Floor: 5 * time.Millisecond})
	for range 2000 {
		feed(h, c, a, ms(6.8), 1, step)
		feed(h, c, b, ms(1), 1, step)
	}
	if h.ZoneDegraded("r1", "z1") {
		t.Error("6.8ms against 1ms degraded a healthy zone")
	}
}

func TestEjection(t *testing.T) {
	a := zoned("a", "z1")
	type step struct {
		fail    int           // consecutive failures to record
		ok      bool          // then one success
		advance time.Duration // then wait
		want    bool          // ejected?
	}
	tests := []struct {
		name  string
		cfg   HealthConfig
		steps []step
	}{
		{"under the threshold", HealthConfig{}, []step{{fail: 4, want: false}}},
		{"threshold ejects", HealthConfig{}, []step{{fail: 5, want: true}}},
		{"success resets the count", HealthConfig{}, []step{{fail: 4, ok: true, want: false}, {fail: 4, want: false}}},
		{"ejection expires after the base", HealthConfig{}, []step{{fail: 5, advance: 999 * time.Millisecond, want: true}, {advance: time.Millisecond, want: false}}},
		{"consecutive ejections double", HealthConfig{}, []step{
			{fail: 5, advance: time.Second, want: false},
			{fail: 5, advance: 1999 * time.Millisecond, want: true},
			{advance: time.Millisecond, want: false},
		}},
		{"backoff capped", HealthConfig{MaxEjection: 3 * time.Second}, []step{
			{fail: 5, advance: time.Second},
			{fail: 5, advance: 2 * time.Second},
			{fail: 5, advance: 3 * time.Second, want: false},
		}},
		{"success after expiry restarts at the base", HealthConfig{}, []step{
			{fail: 5, advance: time.Second},
			{ok: true},
			{fail: 5, advance: time.Second, want: false},
		}},
		{"custom threshold", HealthConfig{EjectAfter: 2}, []step{{fail: 2, want: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			tt.cfg.Now = c.now
			h := NewHealth(tt.cfg)
			for i, s := range tt.steps {
				for range s.fail {
					h.Observe(a, 0, false, 1)
				}
				if s.ok {
					h.Observe(a, ms(1), true, 1)
				}
				c.advance(s.advance)
				if got := h.Ejected(a); got != s.want {
					t.Fatalf("step %d: ejected = %v, want %v", i, got, s.want)
				}
			}
		})
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	c := newClock()
	h := NewHealth(HealthConfig{MaxEjectionPercent: 50, Now: c.now})
	eps := []*Endpoint{zoned("a", "z1"), zoned("b", "z1"), zoned("c", "z1"), zoned("d", "z1")}
	for _, e := range eps {
		for range 5 {
			h.Observe(e, 0, false, len(eps))
		}
	}
	n := 0
	for _, e := range eps {
		if h.Ejected(e) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d of 4 ejected, want 2 (50%%)", n)
	}
}

// TestChooserWithHealth: what the shared chooser picks given what Health
// observed, for the policies that matter.
func TestChooserWithHealth(t *testing.T) {
	src := wl("ns", "src", "10.9.9.9")
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1"}
	src.Node = "n-z1"
	a1, a2, b1, c1 := zoned("a1", "z1"), zoned("a2", "z1"), zoned("b1", "z2"), zoned("c1", "z3")
	all := sorted(a1, a2, b1, c1)
	closeLB := &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{REGION, ZONE, SUBZONE}, Mode: FAILOVER}}
	strictLB := &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{REGION, ZONE}, Mode: STRICT}}
	none := &meshv1.Service{}

	degrade := func(h *Health, c *clock, zone *Endpoint) { slowZone(h, c, all, zone.Locality.GetZone()) }
	eject := func(h *Health, _ *clock, eps ...*Endpoint) {
		for _, e := range eps {
			for range 5 {
				h.Observe(e, 0, false, 0)
			}
		}
	}
	tests := []struct {
		name    string
		svc     *meshv1.Service
		zone    string
		prepare func(*Health, *clock)
		want    []string
	}{
		{"healthy: local zone", closeLB, "", nil, []string{"a1", "a2"}},
		{"one local ejected: the other", closeLB, "", func(h *Health, c *clock) { eject(h, c, a1) }, []string{"a2"}},
		{"local zone all ejected: fail over", closeLB, "", func(h *Health, c *clock) { eject(h, c, a1, a2) }, []string{"b1", "c1"}},
		{"local zone degraded: fail over to healthy zones", closeLB, "", func(h *Health, c *clock) { degrade(h, c, a1) }, []string{"b1", "c1"}},
		{"remote zone degraded: local kept", closeLB, "", func(h *Health, c *clock) { degrade(h, c, b1) }, []string{"a1", "a2"}},
		{"local degraded, one remote ejected", closeLB, "", func(h *Health, c *clock) { degrade(h, c, a1); eject(h, c, c1) }, []string{"b1"}},
		{"strict: degraded local zone still served", strictLB, "", func(h *Health, c *clock) { degrade(h, c, a1) }, []string{"a1", "a2"}},
		{"strict: all ejected, panic keeps local", strictLB, "", func(h *Health, c *clock) { eject(h, c, a1, a2) }, []string{"a1", "a2"}},
		{"no locality: degraded zones not avoided", none, "", func(h *Health, c *clock) { degrade(h, c, a1) }, []string{"a1", "a2", "b1", "c1"}},
		{"no locality: ejected avoided", none, "", func(h *Health, c *clock) { eject(h, c, a1, b1) }, []string{"a2", "c1"}},
		{"pinned zone", closeLB, "z3", nil, []string{"c1"}},
		{"pinned zone even when degraded", closeLB, "z1", func(h *Health, c *clock) { degrade(h, c, a1) }, []string{"a1", "a2"}},
		{"pinned to an empty zone: none", closeLB, "z9", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := steadyHealth(tt.prepare)
			r := Request{Service: tt.svc, Endpoints: all, Source: src, Zone: tt.zone, Health: h}
			if got := candidates(t, LocalityChooser{}, r); !slices.Equal(got, tt.want) {
				t.Errorf("candidates = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProbes(t *testing.T) {
	src := wl("ns", "src", "10.9.9.9")
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1"}
	all := sorted(zoned("a1", "z1"), zoned("a2", "z1"), zoned("b", "z2"), zoned("c", "z3"))
	svc := &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{REGION, ZONE}, Mode: FAILOVER}}
	c := newClock()
	h := NewHealth(HealthConfig{Now: c.now, ProbeInterval: time.Second})
	ch := LocalityChooser{}
	r := Request{Service: svc, Endpoints: all, Source: src, Health: h}
	choose := func() *Endpoint {
		e := all[ch.Choose(r)]
		h.Observe(e, ms(1), true, 0)
		return e
	}
	// No probe in the first interval: the policy's choice.
	for range 10 {
		if z := choose().Locality.GetZone(); z != "z1" {
			t.Fatalf("before the first probe: %s, want the local z1", z)
		}
	}
	// Each interval, one request to the zone observed least recently: z2
	// and z3 were never observed, then z2 is the older.
	for i, want := range []string{"z2", "z3", "z2", "z3"} {
		c.advance(time.Second)
		if z := choose().Locality.GetZone(); z != want {
			t.Fatalf("probe %d went to %s, want %s", i, z, want)
		}
		for range 10 {
			if z := choose().Locality.GetZone(); z != "z1" {
				t.Fatalf("after probe %d: %s, want the local z1", i, z)
			}
		}
	}
	// No probes without locality: the policy's own choice is already spread.
	c.advance(time.Second)
	r.Service = &meshv1.Service{}
	draws := LocalityChooser{IntN: func(n int) int { return n - 1 }}
	if got := draws.Choose(r); got != len(all)-1 {
		t.Fatalf("no-locality choice = %d, want the drawn %d", got, len(all)-1)
	}
}

// TestProbesSpareDegradedZones: a degraded zone is probed by requests
// themselves (Choose) only every DegradedProbeInterval — each is slow — by
// copies of requests (ChooseShadow) like any zone, and a copy leaves the
// request to the policy's choice.
func TestProbesSpareDegradedZones(t *testing.T) {
	src := wl("ns", "src", "10.9.9.9")
	src.Locality = &meshv1.Locality{Region: "r1", Zone: "z1"}
	a, b, c3 := zoned("a", "z1"), zoned("b", "z2"), zoned("c", "z3")
	all := sorted(a, b, c3)
	svc := &meshv1.Service{LoadBalancing: &meshv1.LoadBalancing{RoutingPreference: []meshv1.LoadBalancing_Scope{REGION, ZONE}, Mode: FAILOVER}}
	for _, tt := range []struct {
		shadow   bool
		min, max int
	}{{true, 8, 12}, {false, 3, 5}} {
		c := newClock()
		h := NewHealth(HealthConfig{Now: c.now, ProbeInterval: time.Second, DegradedProbeInterval: 5 * time.Second})
		for range 100 { // z3 is 300 ms slower: degraded
			feed(h, c, a, ms(1), 1, 10*time.Millisecond)
			feed(h, c, b, ms(1), 1, 0)
			feed(h, c, c3, ms(300), 1, 0)
		}
		if !h.ZoneDegraded("r1", "z3") {
			t.Fatal("setup: z3 not degraded")
		}
		r := Request{Service: svc, Endpoints: all, Source: src, Health: h}
		var toC, probes int
		for range 20 { // 20 s, one probe a second
			c.advance(time.Second)
			h.Observe(a, ms(1), true, 0) // the local zone's traffic
			var ch LocalityChooser
			var i, p int
			if tt.shadow {
				i, p = ch.ChooseShadow(r)
				if all[i].Locality.GetZone() != "z1" {
					t.Fatalf("shadow probing: the request went to %s, not the local z1", all[i].Locality.GetZone())
				}
			} else {
				i = ch.Choose(r)
				p = i
			}
			if p < 0 || all[p].Locality.GetZone() == "z1" {
				continue
			}
			probes++
			switch all[p].Locality.GetZone() {
			case "z3":
				toC++
				h.Observe(all[p], ms(300), true, 0)
			case "z2":
				h.Observe(all[p], ms(1), true, 0)
			}
		}
		if toC < tt.min || toC > tt.max {
			t.Errorf("shadow %v: degraded z3 probed %d times in 20 s, want %d to %d", tt.shadow, toC, tt.min, tt.max)
		}
		if probes < 15 {
			t.Errorf("shadow %v: %d probes in 20 s, want one a second", tt.shadow, probes)
		}
	}
}
