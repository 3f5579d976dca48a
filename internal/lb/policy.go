package lb

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// LocalityPolicy is what a DestinationRule's localityLbSetting says beyond
// enabled: distribute (weights per locality), failover (which region comes
// after the caller's) and failoverPriority (tiers by labels shared with the
// caller), with Istio's semantics. It replaces the Service's own locality
// preference, as a DestinationRule does in Istio. Compile it once
// (CompileLocality) and set it on every Request; it is read-only.
type LocalityPolicy struct {
	distribute []distributeRule
	failover   []failoverRule
	labels     []priorityLabel
}

// maxDistributeTo bounds the localities of one distribute rule: the chooser
// tracks them in a 64-bit set so that it allocates nothing.
const maxDistributeTo = 64

// localityPattern is "region/zone/subzone" split; an empty or "*" field
// matches any value (Istio's "region/*" and "region" both mean the whole
// region).
type localityPattern [3]string

func parseLocalityPattern(s string) (localityPattern, error) {
	var p localityPattern
	parts := strings.Split(s, "/")
	if s == "" || len(parts) > 3 {
		return p, fmt.Errorf("%q is not region[/zone[/subzone]] (\"*\" for any)", s)
	}
	for i, f := range parts {
		if f == "" {
			return p, fmt.Errorf("%q has an empty field", s)
		}
		if f != "*" {
			p[i] = f
		}
	}
	return p, nil
}

func (p *localityPattern) match(l *meshv1.Locality) bool {
	return (p[0] == "" || p[0] == l.GetRegion()) &&
		(p[1] == "" || p[1] == l.GetZone()) &&
		(p[2] == "" || p[2] == l.GetSubzone())
}

// specificity counts the fields a pattern names.
func (p *localityPattern) specificity() int {
	n := 0
	for _, f := range p {
		if f != "" {
			n++
		}
	}
	return n
}

type distributeRule struct {
	from localityPattern
	// to is ordered most specific pattern first: an endpoint belongs to the
	// first pattern it matches, so "r/z1/*": 80 with "r/*": 20 gives zone z1
	// 80 % and the rest of the region 20 %, whatever order the YAML map had.
	to []weightedLocality
}

type weightedLocality struct {
	pattern localityPattern
	text    string
	weight  int
}

// entryOf is the index of the first to pattern e matches, -1 for none.
func (d *distributeRule) entryOf(e *Endpoint) int {
	for k := range d.to {
		if d.to[k].pattern.match(e.Locality) {
			return k
		}
	}
	return -1
}

type failoverRule struct{ from, to string }

type priorityLabel struct {
	key, value string
	// fixed: "key=value" form — endpoints with that value rank first,
	// whatever the caller's own value.
	fixed bool
}

// CompileLocality compiles a DestinationRule's localityLbSetting. It
// returns nil when there is nothing beyond enabled (or it is disabled):
// the Service's preference then stands.
func CompileLocality(l *meshv1.LoadBalancerPolicy_LocalityLb) (*LocalityPolicy, error) {
	if !l.GetEnabled() || (len(l.GetDistribute()) == 0 && len(l.GetFailover()) == 0 && len(l.GetFailoverPriority()) == 0) {
		return nil, nil
	}
	// Validation refuses distribute with failover; should both arrive,
	// distribute wins, as in Istio.
	p := &LocalityPolicy{}
	for i, d := range l.GetDistribute() {
		from, err := parseLocalityPattern(d.GetFrom())
		if err != nil {
			return nil, fmt.Errorf("distribute[%d].from: %w", i, err)
		}
		if len(d.GetTo()) > maxDistributeTo {
			return nil, fmt.Errorf("distribute[%d].to: %d localities, at most %d", i, len(d.GetTo()), maxDistributeTo)
		}
		rule := distributeRule{from: from}
		sum := 0
		for text, w := range d.GetTo() {
			to, err := parseLocalityPattern(text)
			if err != nil {
				return nil, fmt.Errorf("distribute[%d].to: %w", i, err)
			}
			rule.to = append(rule.to, weightedLocality{pattern: to, text: text, weight: int(w)})
			sum += int(w)
		}
		if sum != 100 {
			return nil, fmt.Errorf("distribute[%d].to: weights add up to %d, not 100", i, sum)
		}
		slices.SortFunc(rule.to, func(a, b weightedLocality) int {
			return cmp.Or(cmp.Compare(b.pattern.specificity(), a.pattern.specificity()), strings.Compare(a.text, b.text))
		})
		p.distribute = append(p.distribute, rule)
	}
	for i, f := range l.GetFailover() {
		if len(p.distribute) > 0 {
			break
		}
		if f.GetFrom() == "" || f.GetTo() == "" || strings.Contains(f.GetFrom(), "/") || strings.Contains(f.GetTo(), "/") {
			return nil, fmt.Errorf("failover[%d]: from and to must be region names (got %q, %q)", i, f.GetFrom(), f.GetTo())
		}
		p.failover = append(p.failover, failoverRule{from: f.GetFrom(), to: f.GetTo()})
	}
	for i, s := range l.GetFailoverPriority() {
		key, value, fixed := strings.Cut(s, "=")
		if key == "" {
			return nil, fmt.Errorf("failoverPriority[%d]: %q has no label name", i, s)
		}
		p.labels = append(p.labels, priorityLabel{key: key, value: value, fixed: fixed})
	}
	return p, nil
}

// Well-known labels Istio derives from the workload's locality and
// placement rather than from the pod's own labels.
const (
	labelRegion   = "topology.kubernetes.io/region"
	labelZone     = "topology.kubernetes.io/zone"
	labelSubzone  = "topology.istio.io/subzone"
	labelCluster  = "topology.istio.io/cluster"
	labelHostname = "kubernetes.io/hostname"
)

// labelValue is a workload's value of a failoverPriority label: the
// topology labels from its locality, node and cluster, anything else
// (topology.istio.io/network included) from the pod's labels the control
// plane delivered.
func labelValue(w *meshv1.Workload, l *meshv1.Locality, key string) string {
	switch key {
	case labelRegion:
		return l.GetRegion()
	case labelZone:
		return l.GetZone()
	case labelSubzone:
		return l.GetSubzone()
	case labelCluster:
		return w.GetClusterId()
	case labelHostname:
		return w.GetNode()
	}
	return w.GetLabels()[key]
}

// priority is e's failover priority for caller src, lower first, as Istio
// assigns Envoy priorities: with failoverPriority, the number of leading
// labels of the list e does not share with src (a label absent on both
// counts as shared); with failover, Istio's locality priorities — 0 same
// subzone, 1 same zone, 2 same region, 3 another region, 4 another region
// than the one failover names for src's region; with both, the label tier
// first, then the locality priority within it.
func (p *LocalityPolicy) priority(src *meshv1.Workload, e *Endpoint) int {
	pr := 0
	if len(p.labels) > 0 {
		n := 0
		for _, l := range p.labels {
			want := l.value
			if !l.fixed {
				want = labelValue(src, src.GetLocality(), l.key)
			}
			if labelValue(e.Workload, e.Locality, l.key) != want {
				break
			}
			n++
		}
		pr = len(p.labels) - n
		if len(p.failover) == 0 {
			return pr
		}
		pr *= 5
	}
	return pr + p.localityPriority(src.GetLocality(), e.Locality)
}

func (p *LocalityPolicy) localityPriority(src, dst *meshv1.Locality) int {
	switch {
	case src.GetRegion() != dst.GetRegion():
		for _, f := range p.failover {
			if f.from == src.GetRegion() {
				if f.to != dst.GetRegion() {
					return 4
				}
				break
			}
		}
		return 3
	case src.GetZone() != dst.GetZone():
		return 2
	case src.GetSubzone() != dst.GetSubzone():
		return 1
	}
	return 0
}

// resolveLocality applies r.Locality to r.Source: the distribute rule
// whose from matches the caller (none: no locality at all, as in Istio,
// where distribute set and unmatched leaves every endpoint alike), or
// failover tiers.
func (r *Request) resolveLocality() {
	p := r.Locality
	if p == nil || r.Zone != "" || r.Source == nil {
		return
	}
	if len(p.distribute) > 0 {
		l := r.Source.GetLocality()
		for i := range p.distribute {
			if p.distribute[i].from.match(l) {
				r.dist = &p.distribute[i]
				return
			}
		}
		return
	}
	r.tiered = true
}

// distributed reports whether e may receive r's traffic under the
// distribute rule in force: it is in a to locality of non-zero weight (and
// in the chosen one, once chosen).
func (r *Request) distributed(e *Endpoint) bool {
	d := r.dist
	if d == nil {
		return true
	}
	k := d.entryOf(e)
	return k >= 0 && d.to[k].weight > 0 && (r.entry == 0 || k == r.entry-1)
}

// chooseDistributed picks a to locality by weight among those with an
// eligible endpoint (so an empty, ejected or degraded locality's share goes
// to the others in proportion), then an endpoint within it.
func (c *LocalityChooser) chooseDistributed(r Request, lvl int) int {
	d := r.dist
	var present uint64
	for _, e := range r.Endpoints {
		if c.eligible(&r, e, lvl) {
			present |= 1 << d.entryOf(e)
		}
	}
	total := 0
	for k := range d.to {
		if present&(1<<k) != 0 {
			total += d.to[k].weight
		}
	}
	if total == 0 {
		return -1
	}
	x := c.intN(total)
	for k := range d.to {
		if present&(1<<k) == 0 {
			continue
		}
		if x < d.to[k].weight {
			r.entry = k + 1
			break
		}
		x -= d.to[k].weight
	}
	return c.pickIn(r, 0, len(r.Endpoints), lvl)
}
