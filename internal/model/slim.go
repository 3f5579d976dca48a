package model

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The slim* functions keep only what translation reads, so that a control
// plane watching 100,000 pods holds a few hundred bytes per pod rather than
// the several kilobytes a full Pod object takes (managed fields, volumes,
// container specs, conditions...).

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Generation:        m.Generation,
		Labels:            m.Labels,
		Annotations:       m.Annotations,
		OwnerReferences:   m.OwnerReferences,
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

func slimNamespace(n *corev1.Namespace) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: n.TypeMeta, ObjectMeta: slimMeta(n.ObjectMeta)}
}

func slimNode(n *corev1.Node) *corev1.Node {
	out := &corev1.Node{TypeMeta: n.TypeMeta, ObjectMeta: slimMeta(n.ObjectMeta)}
	out.Status.Addresses = n.Status.Addresses
	return out
}

func slimServiceAccount(sa *corev1.ServiceAccount) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{TypeMeta: sa.TypeMeta, ObjectMeta: slimMeta(sa.ObjectMeta)}
}

func slimService(s *corev1.Service) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   s.TypeMeta,
		ObjectMeta: slimMeta(s.ObjectMeta),
		Spec: corev1.ServiceSpec{
			Ports:               s.Spec.Ports,
			Selector:            s.Spec.Selector,
			ClusterIP:           s.Spec.ClusterIP,
			ClusterIPs:          s.Spec.ClusterIPs,
			Type:                s.Spec.Type,
			ExternalName:        s.Spec.ExternalName,
			TrafficDistribution: s.Spec.TrafficDistribution,
			IPFamilies:          s.Spec.IPFamilies,
		},
	}
}

func slimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: slimMeta(p.ObjectMeta)}
	out.Spec.NodeName = p.Spec.NodeName
	out.Spec.ServiceAccountName = p.Spec.ServiceAccountName
	out.Spec.HostNetwork = p.Spec.HostNetwork
	// Container ports are kept (name and number only) to resolve named targetPorts.
	for _, c := range p.Spec.Containers {
		if len(c.Ports) == 0 {
			continue
		}
		sc := corev1.Container{Name: c.Name}
		for _, port := range c.Ports {
			sc.Ports = append(sc.Ports, corev1.ContainerPort{Name: port.Name, ContainerPort: port.ContainerPort, Protocol: port.Protocol})
		}
		out.Spec.Containers = append(out.Spec.Containers, sc)
	}
	out.Status.Phase = p.Status.Phase
	out.Status.PodIP = p.Status.PodIP
	out.Status.PodIPs = p.Status.PodIPs
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out
}

// slimEndpointSlice keeps the ports and, per endpoint, the addresses, the
// pod it is and whether it is ready.
func slimEndpointSlice(es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := &discoveryv1.EndpointSlice{TypeMeta: es.TypeMeta, ObjectMeta: slimMeta(es.ObjectMeta), AddressType: es.AddressType, Ports: es.Ports}
	for _, ep := range es.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: ep.Addresses, TargetRef: ep.TargetRef, Conditions: ep.Conditions})
	}
	return out
}
