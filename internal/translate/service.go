package translate

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

func (t *translator) services() map[string]*meshv1.Service {
	out := make(map[string]*meshv1.Service, len(t.snap.Services))
	for k, svc := range t.snap.Services {
		if s := t.service(k, svc); s != nil {
			out[t.serviceKey(k.Namespace, k.Name)] = s
		}
	}
	return out
}

func (t *translator) service(k model.Key, svc *corev1.Service) *meshv1.Service {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ref := model.Ref{Kind: model.KindService, Namespace: k.Namespace, Name: k.Name}
	s := &meshv1.Service{
		Name:          k.Name,
		Namespace:     k.Namespace,
		Hostname:      t.mesh.Hostname(k.Namespace, k.Name),
		Addresses:     serviceVIPs(svc),
		Waypoint:      t.useWaypoint(ref, svc.Labels, waypointForService),
		LoadBalancing: t.loadBalancing(svc),
	}
	for _, p := range svc.Spec.Ports {
		if !isTCP(p.Protocol) {
			continue
		}
		sp := &meshv1.ServicePort{Port: uint32(p.Port), Name: p.Name, AppProtocol: appProtocol(p)}
		if p.TargetPort.Type == intstr.Int {
			sp.TargetPort = uint32(p.TargetPort.IntVal)
			if sp.TargetPort == 0 {
				sp.TargetPort = uint32(p.Port)
			}
		}
		s.Ports = append(s.Ports, sp)
	}
	return s
}

func serviceVIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if _, err := netip.ParseAddr(ip); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// appProtocol follows Istio's protocol selection: the port's appProtocol,
// else the port name's prefix before "-" ("http-web", "grpc"), else detect.
func appProtocol(p corev1.ServicePort) meshv1.AppProtocol {
	if p.AppProtocol != nil {
		if ap, ok := protocolByName(*p.AppProtocol); ok {
			return ap
		}
	}
	name, _, _ := strings.Cut(p.Name, "-")
	if ap, ok := protocolByName(name); ok {
		return ap
	}
	return meshv1.AppProtocol_APP_PROTOCOL_UNSPECIFIED
}

func protocolByName(s string) (meshv1.AppProtocol, bool) {
	switch strings.ToLower(s) {
	case "http", "http1", "http/1.1":
		return meshv1.AppProtocol_HTTP, true
	case "http2", "h2c", "kubernetes.io/h2c":
		return meshv1.AppProtocol_HTTP2, true
	case "grpc", "grpc-web":
		return meshv1.AppProtocol_GRPC, true
	case "tcp", "mongo", "mysql", "redis", "kubernetes.io/ws", "kubernetes.io/wss":
		return meshv1.AppProtocol_TCP, true
	case "tls", "https":
		return meshv1.AppProtocol_TLS, true
	}
	return 0, false
}

// loadBalancing resolves the Service's locality preference with Istio's
// precedence: spec.trafficDistribution, then the Service's
// networking.istio.io/traffic-distribution annotation, then the Namespace's,
// then the mesh default.
func (t *translator) loadBalancing(svc *corev1.Service) *meshv1.LoadBalancing {
	td := ""
	if svc.Spec.TrafficDistribution != nil {
		td = *svc.Spec.TrafficDistribution
	}
	td = firstNonEmpty(td, svc.Annotations[annotTrafficDistribution], t.namespaceAnnotations(svc.Namespace)[annotTrafficDistribution])
	if lb := trafficDistribution(td); lb != nil {
		return lb
	}
	if td != "" {
		t.problem(model.Ref{Kind: model.KindService, Namespace: svc.Namespace, Name: svc.Name}, "spec.trafficDistribution",
			"unknown traffic distribution %q (want PreferClose, PreferSameZone or PreferSameNode); no locality preference applied", td)
	}
	return trafficDistribution(t.mesh.DefaultTrafficDistribution)
}

// TrafficDistributions are the values a Service's trafficDistribution and
// the mesh default accept.
var TrafficDistributions = []string{"PreferClose", "PreferSameZone", "PreferSameNode"}

// CheckTrafficDistribution reports whether v is a traffic distribution
// translation understands ("" is none).
func CheckTrafficDistribution(v string) error {
	if v != "" && trafficDistribution(v) == nil {
		return fmt.Errorf("unknown traffic distribution %q (want one of %s)", v, strings.Join(TrafficDistributions, ", "))
	}
	return nil
}

func trafficDistribution(v string) *meshv1.LoadBalancing {
	type S = meshv1.LoadBalancing_Scope
	switch v {
	case "PreferClose", "PreferSameZone":
		return &meshv1.LoadBalancing{
			RoutingPreference: []S{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_SUBZONE},
			Mode:              meshv1.LoadBalancing_FAILOVER,
		}
	case "PreferSameNode":
		return &meshv1.LoadBalancing{
			RoutingPreference: []S{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_SUBZONE, meshv1.LoadBalancing_NODE},
			Mode:              meshv1.LoadBalancing_FAILOVER,
		}
	}
	return nil
}
