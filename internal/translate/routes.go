package translate

// L7 routing: what a waypoint does with a request addressed to a Service.
//
// Sources, in order of precedence for one Service port:
//
//  1. Gateway API HTTPRoutes and GRPCRoutes whose parentRefs name the Service
//     (GAMMA). All routes attached to the port are merged and their matches
//     ordered by the Gateway API precedence rules (see precedenceLess).
//  2. The Istio VirtualService for the Service's hostname (only when no
//     Gateway API route governs the port). Its http rules keep their order:
//     first match wins.
//  3. Otherwise the default route: everything goes to the Service itself.
//
// Istio treats a Gateway API route and a VirtualService for the same host as
// two VirtualServices for one host, which its analyzer flags as a conflict
// (IST0109) and resolves by age. Ambit resolves it by kind instead — the
// Gateway API route wins and the VirtualService is reported — because an
// outcome that depends on which object happens to be older is hard to reason
// about, and Gateway API is the API Istio recommends for ambient mode.

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// RouteIndex holds the L7 routing of every Service of one snapshot, computed
// once by BuildRoutes. It is immutable and safe for concurrent use. Returned
// messages are shared: treat them as read-only (proto.Clone before changing).
type RouteIndex struct {
	mesh     model.MeshConfig
	services map[model.Key]*corev1.Service
	// routes holds the Services that have user configuration; others get the
	// default route, built on demand.
	routes map[model.Key]*meshv1.ServiceRoutes
	// consumer holds consumer routes: Service → consumer namespace → routes
	// (only the ports that consumer routes govern).
	consumer map[model.Key]map[string]*meshv1.ServiceRoutes
	policies map[model.Key]*meshv1.DestinationPolicy
	problems routeProblems
}

// BuildRoutes computes the routes and destination policies of every Service
// in snap. It is pure: no I/O, output determined by the input alone.
func BuildRoutes(snap *model.Snapshot, mesh model.MeshConfig) *RouteIndex {
	b := newRouteBuilder(snap, mesh)
	b.build()
	return b.ix
}

// ServiceRoutes computes the routes of one Service, with the problems that
// concern it. It builds the whole index; callers needing several Services
// should call BuildRoutes once instead.
func ServiceRoutes(snap *model.Snapshot, mesh model.MeshConfig, svc model.Key) (*meshv1.ServiceRoutes, []Problem) {
	ix := BuildRoutes(snap, mesh)
	return ix.ServiceRoutes(svc), ix.ProblemsFor(svc)
}

// ServiceRoutes returns the routes a waypoint applies to requests addressed
// to svc, one PortRoutes per TCP port of the Service, in the Service's port
// order. These are the producer routes: they apply to every client unless a
// consumer route for the client's namespace replaces them (ConsumerRoutes).
// Nil when the Service does not exist.
func (ix *RouteIndex) ServiceRoutes(svc model.Key) *meshv1.ServiceRoutes {
	if ix == nil {
		return nil
	}
	if sr, ok := ix.routes[svc]; ok {
		return sr
	}
	s := ix.services[svc]
	if s == nil {
		return nil
	}
	key := ix.serviceKey(svc)
	sr := &meshv1.ServiceRoutes{Service: key}
	for _, sp := range s.Spec.Ports {
		if !isTCP(sp.Protocol) {
			continue
		}
		sr.Ports = append(sr.Ports, defaultPortRoutes(key, sp))
	}
	return sr
}

// ConsumerRoutes returns the consumer routes of svc: Gateway API routes in
// another namespace whose parentRef names svc. They apply only to clients in
// the route's namespace, and replace the producer routes of the ports they
// cover for those clients. Keyed by the consumer namespace; each value lists
// only the ports with consumer routes. Nil when there are none.
//
// mesh.proto cannot carry these yet (see PortRoutes): the lead wires them in
// once PortRoutes has a consumer_namespace field.
func (ix *RouteIndex) ConsumerRoutes(svc model.Key) map[string]*meshv1.ServiceRoutes {
	if ix == nil {
		return nil
	}
	return ix.consumer[svc]
}

// DestinationPolicy returns the DestinationRule settings for svc (load
// balancing, connection pool, outlier detection, subsets); nil when no
// DestinationRule applies.
func (ix *RouteIndex) DestinationPolicy(svc model.Key) *meshv1.DestinationPolicy {
	if ix == nil {
		return nil
	}
	return ix.policies[svc]
}

// Problems lists every problem found, sorted by object and field.
func (ix *RouteIndex) Problems() []Problem {
	if ix == nil {
		return nil
	}
	return sortRouteProblems(append([]Problem(nil), ix.problems.list...))
}

// ProblemsFor lists the problems of the objects that configure svc (its
// routes, VirtualService and DestinationRules), sorted.
func (ix *RouteIndex) ProblemsFor(svc model.Key) []Problem {
	if ix == nil {
		return nil
	}
	var out []Problem
	for _, i := range ix.problems.about[svc] {
		out = append(out, ix.problems.list[i])
	}
	return sortRouteProblems(out)
}

func (ix *RouteIndex) serviceKey(k model.Key) string {
	return k.Namespace + "/" + ix.mesh.Hostname(k.Namespace, k.Name)
}

// isL7 reports whether HTTP routes can apply to a port of this protocol.
// Ports declared TCP or TLS carry opaque bytes; "detect" ports may carry HTTP.
func isL7(p meshv1.AppProtocol) bool {
	return p != meshv1.AppProtocol_TCP && p != meshv1.AppProtocol_TLS
}

func defaultPortRoutes(serviceKey string, sp corev1.ServicePort) *meshv1.PortRoutes {
	return &meshv1.PortRoutes{
		Port:     uint32(sp.Port),
		Protocol: appProtocol(sp),
		Rules:    []*meshv1.RouteRule{defaultRouteRule(serviceKey, uint32(sp.Port))},
	}
}

// defaultRouteRule sends everything to the Service itself, on the same port.
func defaultRouteRule(serviceKey string, port uint32) *meshv1.RouteRule {
	return &meshv1.RouteRule{
		Origin: "default",
		Backends: []*meshv1.WeightedBackend{{
			Destination: &meshv1.Destination{Service: serviceKey, Port: port},
			Weight:      1,
		}},
	}
}

// routeBuilder carries the indexes of one BuildRoutes call.
type routeBuilder struct {
	snap *model.Snapshot
	mesh model.MeshConfig
	ix   *RouteIndex

	// hosts maps a Service FQDN to the Service.
	hosts map[string]model.Key
	// serviceKeys lists every Service, sorted (for wildcard hosts).
	serviceKeys []model.Key

	// attachments lists the Gateway API routes attached to each Service.
	attachments map[model.Key][]gwAttachment
	// virtualServices lists the VirtualServices that name each Service.
	virtualServices map[model.Key][]vsCandidate
	// destinationRules lists the DestinationRules that name each Service.
	destinationRules map[model.Key][]drCandidate
	policyDone       map[model.Key]bool
}

func newRouteBuilder(snap *model.Snapshot, mesh model.MeshConfig) *routeBuilder {
	b := &routeBuilder{
		snap: snap,
		mesh: mesh,
		ix: &RouteIndex{
			mesh:     mesh,
			services: snap.Services,
			routes:   map[model.Key]*meshv1.ServiceRoutes{},
			consumer: map[model.Key]map[string]*meshv1.ServiceRoutes{},
			policies: map[model.Key]*meshv1.DestinationPolicy{},
		},
		hosts:            make(map[string]model.Key, len(snap.Services)),
		attachments:      map[model.Key][]gwAttachment{},
		virtualServices:  map[model.Key][]vsCandidate{},
		destinationRules: map[model.Key][]drCandidate{},
		policyDone:       map[model.Key]bool{},
	}
	for k := range snap.Services {
		b.hosts[mesh.Hostname(k.Namespace, k.Name)] = k
		b.serviceKeys = append(b.serviceKeys, k)
	}
	sortKeys(b.serviceKeys)
	return b
}

func (b *routeBuilder) problem(svc *model.Key, ref model.Ref, field, format string, args ...any) {
	b.ix.problems.add(svc, ref, field, format, args...)
}

func (b *routeBuilder) serviceKey(k model.Key) string { return b.ix.serviceKey(k) }

func (b *routeBuilder) build() {
	// DestinationRules first: VirtualService subsets resolve against them.
	b.collectDestinationRules()
	b.collectGatewayRoutes()
	b.collectVirtualServices()

	configured := map[model.Key]bool{}
	for k := range b.attachments {
		configured[k] = true
	}
	for k := range b.virtualServices {
		configured[k] = true
	}
	for k := range b.destinationRules {
		configured[k] = true
	}
	keys := make([]model.Key, 0, len(configured))
	for k := range configured {
		keys = append(keys, k)
	}
	sortKeys(keys)
	for _, k := range keys {
		b.policy(k) // stores into b.ix.policies
	}
	for _, k := range keys {
		b.buildService(k)
	}
}

// buildService computes the producer and consumer routes of one Service.
func (b *routeBuilder) buildService(k model.Key) {
	svc := b.snap.Services[k]
	if svc == nil {
		return
	}
	key := b.serviceKey(k)
	sr := &meshv1.ServiceRoutes{Service: key}
	vs := b.chooseVirtualService(k)
	atts := b.attachments[k]
	applied := make([]bool, len(atts))
	consumers := map[string]*meshv1.ServiceRoutes{}

	for _, sp := range svc.Spec.Ports {
		if !isTCP(sp.Protocol) {
			continue
		}
		port := uint32(sp.Port)
		proto := appProtocol(sp)
		pr := &meshv1.PortRoutes{Port: port, Protocol: proto}

		producer, byNS := b.entriesFor(k, atts, port, isL7(proto), applied)
		switch {
		case len(producer) > 0:
			pr.Rules = sortedRules(producer)
			pr.UserRoutes = true
			if vs != nil {
				b.problem(&k, vs.ref, "spec.hosts",
					"not applied to port %d of Service %s: Gateway API routes attached to that port take precedence over a VirtualService", port, k)
			}
		case vs != nil && isL7(proto):
			if rules := b.virtualServiceRules(vs, k, port); len(rules) > 0 {
				pr.Rules = rules
				pr.UserRoutes = true
			}
		}
		if !pr.UserRoutes {
			pr.Rules = []*meshv1.RouteRule{defaultRouteRule(key, port)}
		}
		sr.Ports = append(sr.Ports, pr)

		for ns, entries := range byNS {
			c := consumers[ns]
			if c == nil {
				c = &meshv1.ServiceRoutes{Service: key}
				consumers[ns] = c
			}
			c.Ports = append(c.Ports, &meshv1.PortRoutes{Port: port, Protocol: proto, Rules: sortedRules(entries), UserRoutes: true})
		}
	}
	for i, a := range atts {
		if applied[i] {
			continue
		}
		if a.port != 0 {
			b.problem(&k, a.route.ref, a.field, "port %d of Service %s carries %s, not HTTP: the route does not apply to it", a.port, k, portProtocolName(svc, a.port))
		} else {
			b.problem(&k, a.route.ref, a.field, "Service %s has no HTTP port: the route applies to none", k)
		}
	}
	b.ix.routes[k] = sr
	if len(consumers) > 0 {
		b.ix.consumer[k] = consumers
	}
}

func portProtocolName(svc *corev1.Service, port uint32) string {
	for _, sp := range svc.Spec.Ports {
		if uint32(sp.Port) == port {
			return strings.ToLower(appProtocol(sp).String())
		}
	}
	return "no protocol"
}

// entriesFor returns the route entries attached to one port of a Service:
// producer routes, and consumer routes by namespace. A route attached twice
// (with and without port, say) counts once. applied marks the attachments used.
func (b *routeBuilder) entriesFor(k model.Key, atts []gwAttachment, port uint32, l7 bool, applied []bool) ([]*gwEntry, map[string][]*gwEntry) {
	var producer []*gwEntry
	byNS := map[string][]*gwEntry{}
	seen := map[*gwRoute]map[string]bool{}
	for i, a := range atts {
		if a.port != 0 && a.port != port {
			continue
		}
		if !l7 {
			continue
		}
		applied[i] = true
		if seen[a.route] == nil {
			seen[a.route] = map[string]bool{}
		}
		if seen[a.route][a.consumerNS] {
			continue
		}
		seen[a.route][a.consumerNS] = true
		if a.consumerNS == "" {
			producer = append(producer, a.route.entries...)
		} else {
			byNS[a.consumerNS] = append(byNS[a.consumerNS], a.route.entries...)
		}
	}
	return producer, byNS
}

// precedenceKey orders route matches: the larger wins. For HTTPRoute it is
// the Gateway API order — Exact path, then the longest PathPrefix, then
// RegularExpression (implementation-specific; Istio puts it after prefixes),
// then a method match, then the most header matches, then the most query
// parameter matches. GRPCRoute matches map onto the same key so both kinds can
// share a port (see grpcPrecedence).
type precedenceKey struct {
	rank    int // pathRankExact > pathRankPrefix > pathRankRegex > pathRankNone
	len1    int // path length (HTTP), service length (gRPC)
	len2    int // method length (gRPC)
	method  bool
	headers int
	query   int
}

const (
	pathRankNone = iota + 1
	pathRankRegex
	pathRankPrefix
	pathRankExact
)

// gwEntry is one (rule, match) of a Gateway API route, ready to be ordered.
type gwEntry struct {
	rule     *meshv1.RouteRule
	key      precedenceKey
	ruleIdx  int
	matchIdx int
	route    *gwRoute
}

// gwRoute is a Gateway API route converted once, whatever the number of
// Services and ports it attaches to.
type gwRoute struct {
	ref     model.Ref
	created metav1.Time
	grpc    bool
	entries []*gwEntry
}

// gwAttachment is one parentRef of a route naming a Service.
type gwAttachment struct {
	route *gwRoute
	// port is the Service port the parentRef names; 0 for every port.
	port uint32
	// consumerNS is the route's namespace for a consumer route (route and
	// Service in different namespaces); empty for a producer route.
	consumerNS string
	field      string
}

// precedenceLess orders entries: Gateway API match precedence, then the
// oldest route, then "namespace/name" alphabetically (then kind), then rule
// order within the route, then match order within the rule.
func precedenceLess(a, b *gwEntry) bool {
	ka, kb := a.key, b.key
	switch {
	case ka.rank != kb.rank:
		return ka.rank > kb.rank
	case ka.len1 != kb.len1:
		return ka.len1 > kb.len1
	case ka.len2 != kb.len2:
		return ka.len2 > kb.len2
	case ka.method != kb.method:
		return ka.method
	case ka.headers != kb.headers:
		return ka.headers > kb.headers
	case ka.query != kb.query:
		return ka.query > kb.query
	}
	ra, rb := a.route, b.route
	if ra != rb {
		if !ra.created.Equal(&rb.created) {
			return ra.created.Before(&rb.created)
		}
		if ra.ref.Namespace != rb.ref.Namespace {
			return ra.ref.Namespace < rb.ref.Namespace
		}
		if ra.ref.Name != rb.ref.Name {
			return ra.ref.Name < rb.ref.Name
		}
		return ra.ref.Kind < rb.ref.Kind
	}
	if a.ruleIdx != b.ruleIdx {
		return a.ruleIdx < b.ruleIdx
	}
	return a.matchIdx < b.matchIdx
}

func sortedRules(entries []*gwEntry) []*meshv1.RouteRule {
	sorted := append([]*gwEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return precedenceLess(sorted[i], sorted[j]) })
	out := make([]*meshv1.RouteRule, len(sorted))
	for i, e := range sorted {
		out[i] = e.rule
	}
	return out
}

// objectOrder sorts objects the way Gateway API and Istio break ties: oldest
// first, then by namespace and name.
func objectOrder(ca, cb metav1.Time, a, b model.Key) bool {
	if !ca.Equal(&cb) {
		return ca.Before(&cb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// exportedTo reports whether an Istio object in objNS with this exportTo is
// visible to the Service's namespace. Waypoints apply configuration to every
// client, so an object restricted to its own namespace applies only to
// Services of that namespace.
func exportedTo(objNS string, exportTo []string, svcNS string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if objNS == svcNS {
				return true
			}
		case "~":
		default:
			if e == svcNS {
				return true
			}
		}
	}
	return false
}

// fqdn resolves a host as written in an Istio object of namespace ns: a short
// name is a Service of ns, "name.ns" and "name.ns.svc" are completed with the
// mesh domain, anything else (FQDN, wildcard) is kept.
func (b *routeBuilder) fqdn(host, ns string) string {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || strings.HasPrefix(host, "*") {
		return host
	}
	suffix := ".svc." + b.mesh.DomainSuffix
	if strings.HasSuffix(host, suffix) {
		return host
	}
	switch parts := strings.Split(host, "."); {
	case len(parts) == 1:
		return b.mesh.Hostname(ns, host)
	case len(parts) == 2:
		return b.mesh.Hostname(parts[1], parts[0])
	case len(parts) == 3 && parts[2] == "svc":
		return b.mesh.Hostname(parts[1], parts[0])
	}
	return host
}

// servicesForHost resolves a host (FQDN or wildcard) to Services. exact is
// false for wildcards; specificity orders wildcard matches (longer is more
// specific).
func (b *routeBuilder) servicesForHost(fq string) (keys []model.Key, exact bool) {
	if !strings.HasPrefix(fq, "*") {
		if k, ok := b.hosts[fq]; ok {
			return []model.Key{k}, true
		}
		return nil, true
	}
	suffix := fq[1:] // "" for "*", ".ns.svc.cluster.local" for "*.ns.svc.cluster.local"
	for _, k := range b.serviceKeys {
		if h := b.mesh.Hostname(k.Namespace, k.Name); strings.HasSuffix(h, suffix) {
			keys = append(keys, k)
		}
	}
	return keys, false
}

// servicePort finds a port of a Service.
func servicePort(svc *corev1.Service, port uint32) (corev1.ServicePort, bool) {
	for _, sp := range svc.Spec.Ports {
		if uint32(sp.Port) == port && isTCP(sp.Protocol) {
			return sp, true
		}
	}
	return corev1.ServicePort{}, false
}

// serviceDestination resolves a backend Service and port. It returns the
// destination (always set, for logs) and why it is unusable, if it is.
func (b *routeBuilder) serviceDestination(k model.Key, port uint32) (*meshv1.Destination, string) {
	d := &meshv1.Destination{Service: b.serviceKey(k), Port: port}
	svc := b.snap.Services[k]
	if svc == nil {
		return d, fmt.Sprintf("service %s not found", k)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return d, fmt.Sprintf("service %s is of type ExternalName, which the mesh does not route to", k)
	}
	if port == 0 {
		return d, fmt.Sprintf("no port given for service %s", k)
	}
	if _, ok := servicePort(svc, port); !ok {
		return d, fmt.Sprintf("service %s has no TCP port %d", k, port)
	}
	return d, ""
}
