package state

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
)

// changes is a validated update, ready to apply.
type changes struct {
	workloads        []*workloadEntry
	removedWorkloads []string
	services         []*serviceEntry
	removedServices  []string
	policies         []*authz.Policy
	removedPolicies  []string
	peerAuths        []*peerAuthEntry
	removedPeerAuths []string
}

// kindOf names a type URL in errors.
func kindOf(typeURL string) string {
	return strings.TrimPrefix(typeURL, "type.googleapis.com/ambit.mesh.v1.")
}

// resourceError names the resource and the field at fault.
func resourceError(typeURL, name, field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return fmt.Errorf("%s %q: %s", kindOf(typeURL), name, msg)
}

// parseUpdate validates every resource of u; nothing is applied.
func parseUpdate(u *xds.Update) (*changes, error) {
	if u == nil {
		return nil, fmt.Errorf("nil update")
	}
	ch := &changes{}
	seenType := map[string]bool{}
	for _, tu := range u.Types {
		if seenType[tu.TypeURL] {
			return nil, fmt.Errorf("type %s appears twice in the update", tu.TypeURL)
		}
		seenType[tu.TypeURL] = true
		switch tu.TypeURL {
		case meshv1.TypeWorkload, meshv1.TypeService, meshv1.TypeAuthorization, meshv1.TypePeerAuthentication:
		default:
			return nil, fmt.Errorf("type %s is not handled by the ztunnel state", tu.TypeURL)
		}
		names := make(map[string]bool, len(tu.Upserts)+len(tu.Removes))
		for _, r := range tu.Upserts {
			if r.Name == "" {
				return nil, fmt.Errorf("%s with an empty resource name", kindOf(tu.TypeURL))
			}
			if names[r.Name] {
				return nil, resourceError(tu.TypeURL, r.Name, "", "appears twice in the update")
			}
			names[r.Name] = true
			if err := ch.add(tu.TypeURL, r); err != nil {
				return nil, err
			}
		}
		for _, name := range tu.Removes {
			if name == "" {
				return nil, fmt.Errorf("%s removal with an empty resource name", kindOf(tu.TypeURL))
			}
			if names[name] {
				return nil, resourceError(tu.TypeURL, name, "", "both updated and removed in the update")
			}
			names[name] = true
			switch tu.TypeURL {
			case meshv1.TypeWorkload:
				ch.removedWorkloads = append(ch.removedWorkloads, name)
			case meshv1.TypeService:
				ch.removedServices = append(ch.removedServices, name)
			case meshv1.TypeAuthorization:
				ch.removedPolicies = append(ch.removedPolicies, name)
			case meshv1.TypePeerAuthentication:
				ch.removedPeerAuths = append(ch.removedPeerAuths, name)
			}
		}
	}
	return ch, nil
}

func (ch *changes) add(typeURL string, r xds.Resource) error {
	switch typeURL {
	case meshv1.TypeWorkload:
		w, ok := r.Message.(*meshv1.Workload)
		if !ok || w == nil {
			return resourceError(typeURL, r.Name, "", "message is %T, want *meshv1.Workload", r.Message)
		}
		e, err := parseWorkload(r.Name, w)
		if err != nil {
			return err
		}
		ch.workloads = append(ch.workloads, e)
	case meshv1.TypeService:
		s, ok := r.Message.(*meshv1.Service)
		if !ok || s == nil {
			return resourceError(typeURL, r.Name, "", "message is %T, want *meshv1.Service", r.Message)
		}
		e, err := parseService(r.Name, s)
		if err != nil {
			return err
		}
		ch.services = append(ch.services, e)
	case meshv1.TypeAuthorization:
		a, ok := r.Message.(*meshv1.Authorization)
		if !ok || a == nil {
			return resourceError(typeURL, r.Name, "", "message is %T, want *meshv1.Authorization", r.Message)
		}
		p, err := authz.Compile(a)
		if err != nil {
			return resourceError(typeURL, r.Name, "", "%v", err)
		}
		if p.Key != r.Name {
			return resourceError(typeURL, r.Name, "", "resource name must be <namespace>/<name> = %q", p.Key)
		}
		ch.policies = append(ch.policies, p)
	case meshv1.TypePeerAuthentication:
		pa, ok := r.Message.(*meshv1.PeerAuthentication)
		if !ok || pa == nil {
			return resourceError(typeURL, r.Name, "", "message is %T, want *meshv1.PeerAuthentication", r.Message)
		}
		e, err := parsePeerAuth(r.Name, pa)
		if err != nil {
			return err
		}
		ch.peerAuths = append(ch.peerAuths, e)
	}
	return nil
}

// parseAddr accepts an IPv4 or IPv6 address without zone; IPv4-mapped IPv6
// addresses are stored as IPv4.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("IP address %q has a zone", s)
	}
	return a.Unmap(), nil
}

func parseAddrs(typeURL, name string, in []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(in))
	for i, s := range in {
		a, err := parseAddr(s)
		if err != nil {
			return nil, resourceError(typeURL, name, "addresses["+strconv.Itoa(i)+"]", "%v", err)
		}
		for _, b := range out {
			if a == b {
				return nil, resourceError(typeURL, name, "addresses["+strconv.Itoa(i)+"]", "duplicate address %s", a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func knownEnum(names map[int32]string, v int32) bool {
	_, ok := names[v]
	return ok
}

func validPort(p uint32) bool { return p > 0 && p <= 65535 }

func validServiceKey(k string) bool {
	ns, host, ok := strings.Cut(k, "/")
	return ok && ns != "" && host != "" && !strings.Contains(host, "/")
}

func checkWaypoint(typeURL, name, field string, wp *meshv1.WaypointRef) error {
	if wp == nil {
		return nil
	}
	if !validServiceKey(wp.GetService()) {
		return resourceError(typeURL, name, field+".service", "want a service key <namespace>/<hostname>, got %q", wp.GetService())
	}
	if !validPort(wp.GetHbonePort()) {
		return resourceError(typeURL, name, field+".hbone_port", "invalid port %d: want 1-65535", wp.GetHbonePort())
	}
	return nil
}

func parseWorkload(name string, w *meshv1.Workload) (*workloadEntry, error) {
	const t = meshv1.TypeWorkload
	if w.GetUid() == "" {
		return nil, resourceError(t, name, "uid", "required")
	}
	if w.GetUid() != name {
		return nil, resourceError(t, name, "uid", "%q differs from the resource name", w.GetUid())
	}
	if w.GetName() == "" {
		return nil, resourceError(t, name, "name", "required")
	}
	if w.GetNamespace() == "" {
		return nil, resourceError(t, name, "namespace", "required")
	}
	addrs, err := parseAddrs(t, name, w.GetAddresses())
	if err != nil {
		return nil, err
	}
	if !knownEnum(meshv1.TunnelProtocol_name, int32(w.GetTunnelProtocol())) {
		return nil, resourceError(t, name, "tunnel_protocol", "unknown value %d", w.GetTunnelProtocol())
	}
	if !knownEnum(meshv1.WorkloadStatus_name, int32(w.GetStatus())) {
		return nil, resourceError(t, name, "status", "unknown value %d", w.GetStatus())
	}
	if w.GetTunnelProtocol() == meshv1.TunnelProtocol_HBONE {
		// It presents a certificate: its identity must be a valid SPIFFE ID.
		if w.GetTrustDomain() == "" || w.GetServiceAccount() == "" {
			return nil, resourceError(t, name, "trust_domain", "an HBONE workload needs trust_domain and service_account")
		}
		id := identityOf(w)
		if _, err := spiffe.Parse(id.String()); err != nil {
			return nil, resourceError(t, name, "service_account", "identity: %v", err)
		}
	}
	if err := checkWaypoint(t, name, "waypoint", w.GetWaypoint()); err != nil {
		return nil, err
	}
	for key, pl := range w.GetServices() {
		field := "services[" + strconv.Quote(key) + "]"
		if !validServiceKey(key) {
			return nil, resourceError(t, name, field, "want a service key <namespace>/<hostname>")
		}
		seen := map[uint32]bool{}
		for i, p := range pl.GetPorts() {
			pf := field + ".ports[" + strconv.Itoa(i) + "]"
			if p == nil {
				return nil, resourceError(t, name, pf, "null port")
			}
			if !validPort(p.GetServicePort()) {
				return nil, resourceError(t, name, pf+".service_port", "invalid port %d: want 1-65535", p.GetServicePort())
			}
			if p.GetTargetPort() > 65535 {
				return nil, resourceError(t, name, pf+".target_port", "invalid port %d: want 0-65535", p.GetTargetPort())
			}
			if seen[p.GetServicePort()] {
				return nil, resourceError(t, name, pf+".service_port", "duplicate port %d", p.GetServicePort())
			}
			seen[p.GetServicePort()] = true
		}
	}
	for i, k := range w.GetAuthorizationPolicies() {
		if ns, n, ok := strings.Cut(k, "/"); !ok || ns == "" || n == "" {
			return nil, resourceError(t, name, "authorization_policies["+strconv.Itoa(i)+"]", "want <namespace>/<name>, got %q", k)
		}
	}
	return &workloadEntry{w: w, addrs: addrs}, nil
}

func parseService(name string, s *meshv1.Service) (*serviceEntry, error) {
	const t = meshv1.TypeService
	for _, f := range []struct{ field, v string }{{"name", s.GetName()}, {"namespace", s.GetNamespace()}, {"hostname", s.GetHostname()}} {
		if f.v == "" {
			return nil, resourceError(t, name, f.field, "required")
		}
	}
	if key := s.GetNamespace() + "/" + s.GetHostname(); key != name {
		return nil, resourceError(t, name, "", "resource name must be <namespace>/<hostname> = %q", key)
	}
	vips, err := parseAddrs(t, name, s.GetAddresses())
	if err != nil {
		return nil, err
	}
	seen := map[uint32]bool{}
	for i, p := range s.GetPorts() {
		pf := "ports[" + strconv.Itoa(i) + "]"
		if p == nil {
			return nil, resourceError(t, name, pf, "null port")
		}
		if !validPort(p.GetPort()) {
			return nil, resourceError(t, name, pf+".port", "invalid port %d: want 1-65535", p.GetPort())
		}
		if seen[p.GetPort()] {
			return nil, resourceError(t, name, pf+".port", "duplicate port %d", p.GetPort())
		}
		seen[p.GetPort()] = true
		if p.GetTargetPort() > 65535 {
			return nil, resourceError(t, name, pf+".target_port", "invalid port %d: want 0-65535", p.GetTargetPort())
		}
		if !knownEnum(meshv1.AppProtocol_name, int32(p.GetAppProtocol())) {
			return nil, resourceError(t, name, pf+".app_protocol", "unknown value %d", p.GetAppProtocol())
		}
	}
	var sans []spiffe.ID
	for i, san := range s.GetSubjectAltNames() {
		id, err := spiffe.Parse(san)
		if err != nil {
			return nil, resourceError(t, name, "subject_alt_names["+strconv.Itoa(i)+"]", "%v", err)
		}
		sans = append(sans, id)
	}
	if err := checkWaypoint(t, name, "waypoint", s.GetWaypoint()); err != nil {
		return nil, err
	}
	if lb := s.GetLoadBalancing(); lb != nil {
		seenScope := map[meshv1.LoadBalancing_Scope]bool{}
		for i, sc := range lb.GetRoutingPreference() {
			f := "load_balancing.routing_preference[" + strconv.Itoa(i) + "]"
			if sc == meshv1.LoadBalancing_SCOPE_UNSPECIFIED || !knownEnum(meshv1.LoadBalancing_Scope_name, int32(sc)) {
				return nil, resourceError(t, name, f, "unknown scope %d", sc)
			}
			if seenScope[sc] {
				return nil, resourceError(t, name, f, "duplicate scope %s", sc)
			}
			seenScope[sc] = true
		}
		if !knownEnum(meshv1.LoadBalancing_Mode_name, int32(lb.GetMode())) {
			return nil, resourceError(t, name, "load_balancing.mode", "unknown value %d", lb.GetMode())
		}
	}
	return &serviceEntry{key: name, svc: s, vips: vips, sans: sans}, nil
}

func parsePeerAuth(name string, pa *meshv1.PeerAuthentication) (*peerAuthEntry, error) {
	const t = meshv1.TypePeerAuthentication
	if pa.GetName() == "" {
		return nil, resourceError(t, name, "name", "required")
	}
	if pa.GetNamespace() == "" {
		return nil, resourceError(t, name, "namespace", "required")
	}
	if key := pa.GetNamespace() + "/" + pa.GetName(); key != name {
		return nil, resourceError(t, name, "", "resource name must be <namespace>/<name> = %q", key)
	}
	if !knownEnum(meshv1.Authorization_Scope_name, int32(pa.GetScope())) {
		return nil, resourceError(t, name, "scope", "unknown value %d", pa.GetScope())
	}
	if !knownEnum(meshv1.PeerAuthentication_Mode_name, int32(pa.GetMode())) {
		return nil, resourceError(t, name, "mode", "unknown value %d", pa.GetMode())
	}
	for port, m := range pa.GetPortModes() {
		f := "port_modes[" + strconv.FormatUint(uint64(port), 10) + "]"
		if !validPort(port) {
			return nil, resourceError(t, name, f, "invalid port %d: want 1-65535", port)
		}
		if !knownEnum(meshv1.PeerAuthentication_Mode_name, int32(m)) {
			return nil, resourceError(t, name, f, "unknown mode %d", m)
		}
	}
	for i, uid := range pa.GetWorkloads() {
		if uid == "" {
			return nil, resourceError(t, name, "workloads["+strconv.Itoa(i)+"]", "empty uid")
		}
	}
	return &peerAuthEntry{key: name, pa: pa}, nil
}
