package state

import (
	"github.com/ambit-mesh/ambit/internal/lb"
	"net/netip"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Kind is what an outbound destination turned out to be.
type Kind uint8

const (
	// KindPassthrough: not a mesh address; connect to it directly.
	KindPassthrough Kind = iota
	// KindService: a Service VIP; an endpoint was chosen.
	KindService
	// KindWorkload: the address of a mesh (or known non-mesh) workload.
	KindWorkload
	// KindWaypoint: the service or workload uses a waypoint; traffic goes
	// there over HBONE.
	KindWaypoint
	// KindNoEndpoint: a Service VIP that cannot be served now (see
	// Destination.Reason); the connection should be refused. The waypoint
	// of a service is never bypassed.
	KindNoEndpoint
)

var kindNames = [...]string{"passthrough", "service", "workload", "waypoint", "no_endpoint"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Reasons for KindNoEndpoint.
const (
	ReasonUnknownPort        = "port is not a port of the service"
	ReasonNoHealthyEndpoint  = "no healthy endpoint serves the port"
	ReasonWaypointMissing    = "waypoint service is unknown"
	ReasonWaypointNoEndpoint = "waypoint has no healthy endpoint"
)

// Destination is where an outbound connection goes.
type Destination struct {
	Kind Kind
	// Original is the address the client connected to.
	Original netip.AddrPort
	// Dial is where to open the TCP connection: the peer's IP and HBONE
	// port when HBONE (15008, or the waypoint's hbone_port), else Target.
	Dial netip.AddrPort
	// Target is the HBONE CONNECT :authority — the endpoint's IP and target
	// port, a workload's IP and the original port, or for waypoints the
	// Original address (the waypoint routes on it). For plain TCP it equals
	// Dial.
	Target netip.AddrPort
	// HBONE: tunnel over mTLS to Dial; otherwise plain TCP.
	HBONE bool
	// Service and ServicePort: the Service addressed (VIP), if any.
	Service     *meshv1.Service
	ServicePort *meshv1.ServicePort
	// Workload is the workload connected to: the chosen endpoint, the pod,
	// or the waypoint instance.
	Workload *meshv1.Workload
	// Waypoint is the waypoint's Service for KindWaypoint.
	Waypoint *meshv1.Service
	// Identity is the SPIFFE ID the server must present (Workload's), and
	// AltNames further identities it may present instead (the subject alt
	// names of the Service dialled: the addressed service, or the waypoint's).
	// Shared: read-only.
	Identity spiffe.ID
	AltNames []spiffe.ID
	// Reason explains KindNoEndpoint.
	Reason string
	// Endpoint and Health, for a chosen Service endpoint or waypoint
	// instance when the Store keeps health: report the connection's
	// outcome with Health.Observe(Endpoint, ...).
	Endpoint *Endpoint
	Health   *lb.Health
}

// healthOf returns the Health of the destination key, nil when not kept.
func (v *View) healthOf(key string) *lb.Health {
	if v.health == nil {
		return nil
	}
	return v.health.Get(key)
}

// waypointLB is the locality preference of waypoint Services that state
// none: prefer an instance in the caller's zone, as Istio's waypoint
// Services do (trafficDistribution: PreferClose), so the extra hop stays
// in the zone.
var waypointLB = &meshv1.LoadBalancing{
	RoutingPreference: []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_SUBZONE},
	Mode:              meshv1.LoadBalancing_FAILOVER,
}

// Accepts reports whether a server presenting id is an acceptable peer.
func (d *Destination) Accepts(id spiffe.ID) bool {
	if id == (spiffe.ID{}) {
		return false
	}
	if id == d.Identity {
		return true
	}
	for _, a := range d.AltNames {
		if id == a {
			return true
		}
	}
	return false
}

// Resolve decides where a connection from src (nil if unknown) to dst goes:
//
//   - a Service VIP: through the service's waypoint if it has one (unless
//     src is an instance of that waypoint), else to an endpoint picked by the
//     Chooser, over HBONE if that workload is in the mesh;
//   - a workload's own address: through the workload's waypoint if it has one
//     (same exception), else to it, over HBONE if it is in the mesh;
//   - anything else: passthrough.
//
// It does not allocate with the default Chooser.
func (v *View) Resolve(dst netip.AddrPort, src *meshv1.Workload) Destination {
	addr := dst.Addr().Unmap().WithZone("")
	d := Destination{Original: dst, Dial: dst, Target: dst}
	if se, ok := v.vips.lookup(addr); ok {
		d.Service = se.svc
		d.ServicePort = se.port(dst.Port())
		if d.ServicePort == nil {
			d.Kind, d.Reason = KindNoEndpoint, ReasonUnknownPort
			return d
		}
		if wp := se.svc.GetWaypoint(); wp != nil && !isInstanceOf(src, wp) {
			v.viaWaypoint(&d, wp, src, addr)
			return d
		}
		eps := v.Endpoints(se.key)
		h := v.healthOf(se.key)
		i := v.chooser.Choose(Request{Service: se.svc, Port: d.ServicePort, Endpoints: eps, Source: src, Health: h})
		if i < 0 || i >= len(eps) {
			d.Kind, d.Reason = KindNoEndpoint, ReasonNoHealthyEndpoint
			return d
		}
		e := eps[i]
		tp, _ := e.TargetPort(d.ServicePort)
		d.Kind = KindService
		d.Endpoint, d.Health = e, h
		d.Workload = e.Workload
		d.Target = netip.AddrPortFrom(e.Address(addr), tp)
		d.Dial = d.Target
		if e.Workload.GetTunnelProtocol() == meshv1.TunnelProtocol_HBONE {
			d.HBONE = true
			d.Dial = netip.AddrPortFrom(d.Target.Addr(), HBONEPort)
			d.Identity = identityOf(e.Workload)
			d.AltNames = se.sans
		}
		return d
	}
	if we, ok := v.addrs.lookup(addr); ok {
		w := we.w
		if wp := w.GetWaypoint(); wp != nil && !isInstanceOf(src, wp) {
			v.viaWaypoint(&d, wp, src, addr)
			return d
		}
		d.Kind = KindWorkload
		d.Workload = w
		d.Target = netip.AddrPortFrom(addr, dst.Port())
		d.Dial = d.Target
		if w.GetTunnelProtocol() == meshv1.TunnelProtocol_HBONE {
			d.HBONE = true
			d.Dial = netip.AddrPortFrom(addr, HBONEPort)
			d.Identity = identityOf(w)
		}
		return d
	}
	return d
}

// isInstanceOf: src is one of the waypoint's own pods (it backs the
// waypoint's Service), whose traffic must not loop back into the waypoint.
func isInstanceOf(src *meshv1.Workload, wp *meshv1.WaypointRef) bool {
	if src == nil {
		return false
	}
	_, ok := src.GetServices()[wp.GetService()]
	return ok
}

// viaWaypoint points d at an instance of the waypoint, on its HBONE port,
// with the original destination as the CONNECT authority.
func (v *View) viaWaypoint(d *Destination, wp *meshv1.WaypointRef, src *meshv1.Workload, like netip.Addr) {
	d.Kind = KindNoEndpoint
	wse, ok := v.services.lookup(wp.GetService())
	if !ok {
		d.Reason = ReasonWaypointMissing
		return
	}
	d.Waypoint = wse.svc
	eps := v.Endpoints(wse.key)
	h := v.healthOf(wse.key)
	r := Request{Service: wse.svc, Endpoints: eps, Source: src, Health: h}
	if wse.svc.GetLoadBalancing() == nil {
		r.LoadBalancing = waypointLB
	}
	i := v.chooser.Choose(r)
	if i < 0 || i >= len(eps) {
		d.Reason = ReasonWaypointNoEndpoint
		return
	}
	e := eps[i]
	d.Kind = KindWaypoint
	d.Endpoint, d.Health = e, h
	d.Workload = e.Workload
	d.HBONE = true
	d.Dial = netip.AddrPortFrom(e.Address(like), uint16(wp.GetHbonePort()))
	d.Target = d.Original
	d.Identity = identityOf(e.Workload)
	d.AltNames = wse.sans
}
