package state

import (
	"cmp"
	"slices"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// Dump is the view as plain JSON-able values for the admin endpoint
// (config_dump). It holds no secrets: the pushed resources carry none.
type Dump struct {
	Epoch               string         `json:"epoch,omitempty"`
	Version             uint64         `json:"version"`
	Counts              Counts         `json:"counts"`
	Workloads           []WorkloadDump `json:"workloads"`
	Services            []ServiceDump  `json:"services"`
	Policies            []PolicyDump   `json:"policies"`
	PeerAuthentications []PeerAuthDump `json:"peerAuthentications"`
}

// LocalityDump is a Workload's locality.
type LocalityDump struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
}

// WaypointDump is a WaypointRef.
type WaypointDump struct {
	Service   string `json:"service"`
	HBONEPort uint32 `json:"hbonePort"`
}

// PortDump maps a service port to a workload port.
type PortDump struct {
	ServicePort uint32 `json:"servicePort"`
	TargetPort  uint32 `json:"targetPort"`
}

// WorkloadDump is a Workload.
type WorkloadDump struct {
	UID                   string                `json:"uid"`
	Name                  string                `json:"name"`
	Namespace             string                `json:"namespace"`
	Addresses             []string              `json:"addresses"`
	Node                  string                `json:"node,omitempty"`
	ClusterID             string                `json:"clusterId,omitempty"`
	Identity              string                `json:"identity,omitempty"`
	ServiceAccount        string                `json:"serviceAccount,omitempty"`
	WorkloadName          string                `json:"workloadName,omitempty"`
	CanonicalName         string                `json:"canonicalName,omitempty"`
	CanonicalRevision     string                `json:"canonicalRevision,omitempty"`
	Locality              *LocalityDump         `json:"locality,omitempty"`
	Protocol              string                `json:"protocol"`
	Status                string                `json:"status"`
	Waypoint              *WaypointDump         `json:"waypoint,omitempty"`
	WaypointGateway       string                `json:"waypointGateway,omitempty"`
	Services              map[string][]PortDump `json:"services,omitempty"`
	AuthorizationPolicies []string              `json:"authorizationPolicies,omitempty"`
}

// ServicePortDump is a Service port.
type ServicePortDump struct {
	Port        uint32 `json:"port"`
	TargetPort  uint32 `json:"targetPort,omitempty"`
	Name        string `json:"name,omitempty"`
	AppProtocol string `json:"appProtocol"`
}

// LoadBalancingDump is a Service's locality preference.
type LoadBalancingDump struct {
	RoutingPreference []string `json:"routingPreference,omitempty"`
	Mode              string   `json:"mode"`
}

// ServiceDump is a Service with its endpoints.
type ServiceDump struct {
	Key             string             `json:"key"`
	Name            string             `json:"name"`
	Namespace       string             `json:"namespace"`
	Hostname        string             `json:"hostname"`
	Addresses       []string           `json:"addresses"`
	Ports           []ServicePortDump  `json:"ports"`
	SubjectAltNames []string           `json:"subjectAltNames,omitempty"`
	Waypoint        *WaypointDump      `json:"waypoint,omitempty"`
	LoadBalancing   *LoadBalancingDump `json:"loadBalancing,omitempty"`
	// Endpoints: uids of the healthy backing workloads.
	Endpoints []string `json:"endpoints"`
}

// SourceDump is a rule's source. Strings in policy dumps use Istio's
// AuthorizationPolicy notation: "*" any, "x*" prefix, "*x" suffix.
type SourceDump struct {
	Principals           []string `json:"principals,omitempty"`
	NotPrincipals        []string `json:"notPrincipals,omitempty"`
	Namespaces           []string `json:"namespaces,omitempty"`
	NotNamespaces        []string `json:"notNamespaces,omitempty"`
	IPBlocks             []string `json:"ipBlocks,omitempty"`
	NotIPBlocks          []string `json:"notIpBlocks,omitempty"`
	RemoteIPBlocks       []string `json:"remoteIpBlocks,omitempty"`
	NotRemoteIPBlocks    []string `json:"notRemoteIpBlocks,omitempty"`
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
}

// OperationDump is an Operation.
type OperationDump struct {
	Ports      []uint32 `json:"ports,omitempty"`
	NotPorts   []uint32 `json:"notPorts,omitempty"`
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
}

// ConditionDump is a when Condition.
type ConditionDump struct {
	Key       string   `json:"key"`
	Values    []string `json:"values,omitempty"`
	NotValues []string `json:"notValues,omitempty"`
}

// RuleDump is an authorization Rule.
type RuleDump struct {
	From []SourceDump    `json:"from,omitempty"`
	To   []OperationDump `json:"to,omitempty"`
	When []ConditionDump `json:"when,omitempty"`
}

// PolicyDump is an Authorization.
type PolicyDump struct {
	Key       string     `json:"key"`
	Name      string     `json:"name"`
	Namespace string     `json:"namespace"`
	Scope     string     `json:"scope"`
	Action    string     `json:"action"`
	DryRun    bool       `json:"dryRun,omitempty"`
	Rules     []RuleDump `json:"rules"`
	// Unsupported: L7 attributes the ztunnel does not evaluate (see
	// internal/ztunnel/authz).
	Unsupported []string `json:"unsupported,omitempty"`
}

// PeerAuthDump is a PeerAuthentication.
type PeerAuthDump struct {
	Key       string            `json:"key"`
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Scope     string            `json:"scope"`
	Mode      string            `json:"mode"`
	PortModes map[uint32]string `json:"portModes,omitempty"`
	Workloads []string          `json:"workloads,omitempty"`
}

// Dump renders the view, each list sorted by key. It allocates; it is meant
// for the admin endpoint, not the data path.
func (v *View) Dump() Dump {
	d := Dump{
		Epoch:               v.epoch,
		Version:             v.version,
		Counts:              v.Counts(),
		Workloads:           make([]WorkloadDump, 0, v.workloads.len()),
		Services:            make([]ServiceDump, 0, v.services.len()),
		Policies:            make([]PolicyDump, 0, len(v.policies)),
		PeerAuthentications: make([]PeerAuthDump, 0, len(v.peerAuths)),
	}
	for _, e := range v.workloads.all() {
		d.Workloads = append(d.Workloads, dumpWorkload(e.w))
	}
	slices.SortFunc(d.Workloads, func(a, b WorkloadDump) int { return cmp.Compare(a.UID, b.UID) })
	for key, e := range v.services.all() {
		sd := dumpService(key, e.svc)
		for _, ep := range v.Endpoints(key) {
			sd.Endpoints = append(sd.Endpoints, ep.Workload.GetUid())
		}
		d.Services = append(d.Services, sd)
	}
	slices.SortFunc(d.Services, func(a, b ServiceDump) int { return cmp.Compare(a.Key, b.Key) })
	for _, p := range v.policies {
		a := p.Source
		pd := PolicyDump{
			Key: p.Key, Name: p.Name, Namespace: p.Namespace,
			Scope: p.Scope.String(), Action: p.Action.String(), DryRun: p.DryRun,
			Rules: []RuleDump{}, Unsupported: p.Unsupported,
		}
		for _, r := range a.GetRules() {
			pd.Rules = append(pd.Rules, dumpRule(r))
		}
		d.Policies = append(d.Policies, pd)
	}
	slices.SortFunc(d.Policies, func(a, b PolicyDump) int { return cmp.Compare(a.Key, b.Key) })
	for _, e := range v.peerAuths {
		pa := e.pa
		pd := PeerAuthDump{
			Key: e.key, Name: pa.GetName(), Namespace: pa.GetNamespace(),
			Scope: pa.GetScope().String(), Mode: pa.GetMode().String(), Workloads: pa.GetWorkloads(),
		}
		for port, m := range pa.GetPortModes() {
			if pd.PortModes == nil {
				pd.PortModes = map[uint32]string{}
			}
			pd.PortModes[port] = m.String()
		}
		d.PeerAuthentications = append(d.PeerAuthentications, pd)
	}
	slices.SortFunc(d.PeerAuthentications, func(a, b PeerAuthDump) int { return cmp.Compare(a.Key, b.Key) })
	return d
}

func dumpWaypoint(wp *meshv1.WaypointRef) *WaypointDump {
	if wp == nil {
		return nil
	}
	return &WaypointDump{Service: wp.GetService(), HBONEPort: wp.GetHbonePort()}
}

func dumpWorkload(w *meshv1.Workload) WorkloadDump {
	wd := WorkloadDump{
		UID: w.GetUid(), Name: w.GetName(), Namespace: w.GetNamespace(),
		Addresses: append([]string{}, w.GetAddresses()...), Node: w.GetNode(), ClusterID: w.GetClusterId(),
		ServiceAccount: w.GetServiceAccount(), WorkloadName: w.GetWorkloadName(),
		CanonicalName: w.GetCanonicalName(), CanonicalRevision: w.GetCanonicalRevision(),
		Protocol: w.GetTunnelProtocol().String(), Status: w.GetStatus().String(),
		Waypoint: dumpWaypoint(w.GetWaypoint()), WaypointGateway: w.GetWaypointGateway(),
		AuthorizationPolicies: w.GetAuthorizationPolicies(),
	}
	if w.GetTrustDomain() != "" && w.GetServiceAccount() != "" {
		wd.Identity = identityOf(w).String()
	}
	if l := w.GetLocality(); l != nil {
		wd.Locality = &LocalityDump{Region: l.GetRegion(), Zone: l.GetZone(), Subzone: l.GetSubzone()}
	}
	for key, pl := range w.GetServices() {
		if wd.Services == nil {
			wd.Services = map[string][]PortDump{}
		}
		ports := []PortDump{}
		for _, p := range pl.GetPorts() {
			ports = append(ports, PortDump{ServicePort: p.GetServicePort(), TargetPort: p.GetTargetPort()})
		}
		wd.Services[key] = ports
	}
	return wd
}

func dumpService(key string, s *meshv1.Service) ServiceDump {
	sd := ServiceDump{
		Key: key, Name: s.GetName(), Namespace: s.GetNamespace(), Hostname: s.GetHostname(),
		Addresses: append([]string{}, s.GetAddresses()...), Ports: []ServicePortDump{},
		SubjectAltNames: s.GetSubjectAltNames(), Waypoint: dumpWaypoint(s.GetWaypoint()),
		Endpoints: []string{},
	}
	for _, p := range s.GetPorts() {
		sd.Ports = append(sd.Ports, ServicePortDump{Port: p.GetPort(), TargetPort: p.GetTargetPort(), Name: p.GetName(), AppProtocol: p.GetAppProtocol().String()})
	}
	if lb := s.GetLoadBalancing(); lb != nil {
		ld := &LoadBalancingDump{Mode: lb.GetMode().String()}
		for _, sc := range lb.GetRoutingPreference() {
			ld.RoutingPreference = append(ld.RoutingPreference, sc.String())
		}
		sd.LoadBalancing = ld
	}
	return sd
}

// istioString renders a StringMatch in Istio's notation.
func istioString(m *meshv1.StringMatch) string {
	switch k := m.GetKind().(type) {
	case *meshv1.StringMatch_Exact:
		return k.Exact
	case *meshv1.StringMatch_Prefix:
		return k.Prefix + "*"
	case *meshv1.StringMatch_Suffix:
		return "*" + k.Suffix
	case *meshv1.StringMatch_Any:
		return "*"
	}
	return ""
}

func istioStrings(in []*meshv1.StringMatch) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, 0, len(in))
	for _, m := range in {
		out = append(out, istioString(m))
	}
	return out
}

func dumpRule(r *meshv1.Rule) RuleDump {
	var rd RuleDump
	for _, s := range r.GetFrom() {
		rd.From = append(rd.From, SourceDump{
			Principals: istioStrings(s.GetPrincipals()), NotPrincipals: istioStrings(s.GetNotPrincipals()),
			Namespaces: istioStrings(s.GetNamespaces()), NotNamespaces: istioStrings(s.GetNotNamespaces()),
			IPBlocks: s.GetIpBlocks(), NotIPBlocks: s.GetNotIpBlocks(),
			RemoteIPBlocks: s.GetRemoteIpBlocks(), NotRemoteIPBlocks: s.GetNotRemoteIpBlocks(),
			RequestPrincipals: istioStrings(s.GetRequestPrincipals()), NotRequestPrincipals: istioStrings(s.GetNotRequestPrincipals()),
		})
	}
	for _, o := range r.GetTo() {
		rd.To = append(rd.To, OperationDump{
			Ports: o.GetPorts(), NotPorts: o.GetNotPorts(),
			Hosts: istioStrings(o.GetHosts()), NotHosts: istioStrings(o.GetNotHosts()),
			Methods: istioStrings(o.GetMethods()), NotMethods: istioStrings(o.GetNotMethods()),
			Paths: istioStrings(o.GetPaths()), NotPaths: istioStrings(o.GetNotPaths()),
		})
	}
	for _, c := range r.GetWhen() {
		rd.When = append(rd.When, ConditionDump{Key: c.GetKey(), Values: istioStrings(c.GetValues()), NotValues: istioStrings(c.GetNotValues())})
	}
	return rd
}
