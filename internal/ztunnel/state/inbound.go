package state

import (
	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// InboundService is the destination service reported for a connection
// arriving at w's port: the destination side only sees a pod address, so,
// as Istio's ztunnel does, it takes the first service (by key, for stable
// labels) that w backs with a port targeting that port. Nil when none does:
// the service is then unknown, never made up.
func (v *View) InboundService(w *meshv1.Workload, port uint16) *meshv1.Service {
	var best *meshv1.Service
	bestKey := ""
	for key, pl := range w.GetServices() {
		if best != nil && key >= bestKey {
			continue
		}
		e, ok := v.services.lookup(key)
		if !ok {
			continue
		}
		if targets(e.svc, pl, port) {
			best, bestKey = e.svc, key
		}
	}
	return best
}

// targets reports whether one of svc's ports sends to port, by the
// service's own target port or by the workload's resolution of a named one.
func targets(svc *meshv1.Service, pl *meshv1.PortList, port uint16) bool {
	for _, p := range pl.GetPorts() {
		if p.GetTargetPort() == uint32(port) {
			return true
		}
	}
	for _, sp := range svc.GetPorts() {
		// 0 is a named target port: the workload's list resolves it.
		if tp := sp.GetTargetPort(); tp != 0 && tp == uint32(port) {
			return true
		}
	}
	return false
}

// IsWaypoint reports whether a peer presenting id speaks for the waypoint
// wp: it is the identity of a healthy instance of the waypoint (a workload
// backing its Service) or one of the Service's subject alt names.
func (v *View) IsWaypoint(wp *meshv1.WaypointRef, id spiffe.ID) bool {
	if id == (spiffe.ID{}) {
		return false
	}
	e, ok := v.services.lookup(wp.GetService())
	if !ok {
		return false
	}
	for _, s := range e.sans {
		if s == id {
			return true
		}
	}
	for _, ep := range v.Endpoints(e.key) {
		if identityOf(ep.Workload) == id {
			return true
		}
	}
	return false
}
