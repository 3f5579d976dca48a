// Package model is the control plane's view of the mesh: the API objects
// users bring (Kubernetes core, Gateway API, Istio), slimmed to the fields the
// mesh uses, held in one Snapshot. Every config source (a directory of YAML,
// the Kubernetes API) fills a Snapshot the same way, and translation reads
// only Snapshots — which is what makes the sources interchangeable.
//
// Only control-plane code may import this package: it links the Kubernetes,
// Gateway API and Istio types, which the node proxy must never carry.
package model

import (
	"fmt"
	"sort"

	extensionsv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Kind names the object kinds the mesh understands, as written in manifests.
type Kind string

const (
	KindNamespace           Kind = "Namespace"
	KindNode                Kind = "Node"
	KindServiceAccount      Kind = "ServiceAccount"
	KindService             Kind = "Service"
	KindPod                 Kind = "Pod"
	KindEndpointSlice       Kind = "EndpointSlice"
	KindDeployment          Kind = "Deployment"
	KindGateway             Kind = "Gateway"
	KindHTTPRoute           Kind = "HTTPRoute"
	KindGRPCRoute           Kind = "GRPCRoute"
	KindAuthorizationPolicy Kind = "AuthorizationPolicy"
	KindPeerAuthentication  Kind = "PeerAuthentication"
	KindVirtualService      Kind = "VirtualService"
	KindDestinationRule     Kind = "DestinationRule"
	KindWasmPlugin          Kind = "WasmPlugin"
	KindLocalCluster        Kind = "LocalCluster"
)

// Ref identifies one object. Namespace is empty for cluster-scoped kinds.
type Ref struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (r Ref) String() string {
	if r.Namespace == "" {
		return string(r.Kind) + " " + r.Name
	}
	return string(r.Kind) + " " + r.Namespace + "/" + r.Name
}

// Origin says where an object came from, for error messages: a file and the
// 1-based index of the YAML document in it, or a Kubernetes API resource.
type Origin struct {
	File     string
	Document int
}

func (o Origin) String() string {
	if o.File == "" {
		return "Kubernetes API"
	}
	return fmt.Sprintf("%s: document %d", o.File, o.Document)
}

// Key is a namespaced name.
type Key struct {
	Namespace string
	Name      string
}

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Snapshot holds one consistent view of every object. Maps are keyed by
// namespaced name (cluster-scoped kinds by name alone, Namespace ""). A
// Snapshot is immutable once handed to translation: sources build a new one
// (or Clone and modify) for every change.
type Snapshot struct {
	Namespaces      map[string]*corev1.Namespace
	Nodes           map[string]*corev1.Node
	ServiceAccounts map[Key]*corev1.ServiceAccount
	Services        map[Key]*corev1.Service
	Pods            map[Key]*corev1.Pod
	// EndpointSlices name the endpoints of Services without a selector
	// (those with one get their members from pods' labels).
	EndpointSlices        map[Key]*discoveryv1.EndpointSlice
	Deployments           map[Key]*appsv1.Deployment
	Gateways              map[Key]*gatewayv1.Gateway
	HTTPRoutes            map[Key]*gatewayv1.HTTPRoute
	GRPCRoutes            map[Key]*gatewayv1.GRPCRoute
	AuthorizationPolicies map[Key]*securityv1.AuthorizationPolicy
	PeerAuthentications   map[Key]*securityv1.PeerAuthentication
	VirtualServices       map[Key]*networkingv1.VirtualService
	DestinationRules      map[Key]*networkingv1.DestinationRule
	WasmPlugins           map[Key]*extensionsv1alpha1.WasmPlugin
	LocalClusters         map[string]*LocalCluster

	// Origins records where each object came from.
	Origins map[Ref]Origin
}

// NewSnapshot returns an empty Snapshot.
func NewSnapshot() *Snapshot {
	return &Snapshot{
		Namespaces:            map[string]*corev1.Namespace{},
		Nodes:                 map[string]*corev1.Node{},
		ServiceAccounts:       map[Key]*corev1.ServiceAccount{},
		Services:              map[Key]*corev1.Service{},
		Pods:                  map[Key]*corev1.Pod{},
		EndpointSlices:        map[Key]*discoveryv1.EndpointSlice{},
		Deployments:           map[Key]*appsv1.Deployment{},
		Gateways:              map[Key]*gatewayv1.Gateway{},
		HTTPRoutes:            map[Key]*gatewayv1.HTTPRoute{},
		GRPCRoutes:            map[Key]*gatewayv1.GRPCRoute{},
		AuthorizationPolicies: map[Key]*securityv1.AuthorizationPolicy{},
		PeerAuthentications:   map[Key]*securityv1.PeerAuthentication{},
		VirtualServices:       map[Key]*networkingv1.VirtualService{},
		DestinationRules:      map[Key]*networkingv1.DestinationRule{},
		WasmPlugins:           map[Key]*extensionsv1alpha1.WasmPlugin{},
		LocalClusters:         map[string]*LocalCluster{},
		Origins:               map[Ref]Origin{},
	}
}

// DuplicateError reports an object defined twice.
type DuplicateError struct {
	Ref         Ref
	First, Then Origin
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("%s: %s: already defined at %s", e.Then, e.Ref, e.First)
}

// Add stores obj (one of the typed objects the Snapshot holds), slimmed.
// Adding an object whose Ref is already present is an error naming both
// origins; use Put to replace.
func (s *Snapshot) Add(obj any, origin Origin) error {
	ref, err := RefOf(obj)
	if err != nil {
		return err
	}
	if first, ok := s.Origins[ref]; ok {
		return &DuplicateError{Ref: ref, First: first, Then: origin}
	}
	return s.Put(obj, origin)
}

// Put stores obj, slimmed, replacing any object with the same Ref.
func (s *Snapshot) Put(obj any, origin Origin) error {
	ref, err := RefOf(obj)
	if err != nil {
		return err
	}
	k := Key{Namespace: ref.Namespace, Name: ref.Name}
	switch o := obj.(type) {
	case *corev1.Namespace:
		s.Namespaces[o.Name] = slimNamespace(o)
	case *corev1.Node:
		s.Nodes[o.Name] = slimNode(o)
	case *corev1.ServiceAccount:
		s.ServiceAccounts[k] = slimServiceAccount(o)
	case *corev1.Service:
		s.Services[k] = slimService(o)
	case *corev1.Pod:
		s.Pods[k] = slimPod(o)
	case *discoveryv1.EndpointSlice:
		s.EndpointSlices[k] = slimEndpointSlice(o)
	case *appsv1.Deployment:
		s.Deployments[k] = o
	case *gatewayv1.Gateway:
		s.Gateways[k] = o
	case *gatewayv1.HTTPRoute:
		s.HTTPRoutes[k] = o
	case *gatewayv1.GRPCRoute:
		s.GRPCRoutes[k] = o
	case *securityv1.AuthorizationPolicy:
		s.AuthorizationPolicies[k] = o
	case *securityv1.PeerAuthentication:
		s.PeerAuthentications[k] = o
	case *networkingv1.VirtualService:
		s.VirtualServices[k] = o
	case *networkingv1.DestinationRule:
		s.DestinationRules[k] = o
	case *extensionsv1alpha1.WasmPlugin:
		s.WasmPlugins[k] = o
	case *LocalCluster:
		s.LocalClusters[o.Name] = o
	}
	s.Origins[ref] = origin
	return nil
}

// Delete removes the object named by ref, if present.
func (s *Snapshot) Delete(ref Ref) {
	k := Key{Namespace: ref.Namespace, Name: ref.Name}
	switch ref.Kind {
	case KindNamespace:
		delete(s.Namespaces, ref.Name)
	case KindNode:
		delete(s.Nodes, ref.Name)
	case KindServiceAccount:
		delete(s.ServiceAccounts, k)
	case KindService:
		delete(s.Services, k)
	case KindPod:
		delete(s.Pods, k)
	case KindEndpointSlice:
		delete(s.EndpointSlices, k)
	case KindDeployment:
		delete(s.Deployments, k)
	case KindGateway:
		delete(s.Gateways, k)
	case KindHTTPRoute:
		delete(s.HTTPRoutes, k)
	case KindGRPCRoute:
		delete(s.GRPCRoutes, k)
	case KindAuthorizationPolicy:
		delete(s.AuthorizationPolicies, k)
	case KindPeerAuthentication:
		delete(s.PeerAuthentications, k)
	case KindVirtualService:
		delete(s.VirtualServices, k)
	case KindDestinationRule:
		delete(s.DestinationRules, k)
	case KindWasmPlugin:
		delete(s.WasmPlugins, k)
	case KindLocalCluster:
		delete(s.LocalClusters, ref.Name)
	}
	delete(s.Origins, ref)
}

// Clone returns a shallow copy: new maps holding the same (immutable) objects.
func (s *Snapshot) Clone() *Snapshot {
	c := NewSnapshot()
	copyMap(c.Namespaces, s.Namespaces)
	copyMap(c.Nodes, s.Nodes)
	copyMap(c.ServiceAccounts, s.ServiceAccounts)
	copyMap(c.Services, s.Services)
	copyMap(c.Pods, s.Pods)
	copyMap(c.EndpointSlices, s.EndpointSlices)
	copyMap(c.Deployments, s.Deployments)
	copyMap(c.Gateways, s.Gateways)
	copyMap(c.HTTPRoutes, s.HTTPRoutes)
	copyMap(c.GRPCRoutes, s.GRPCRoutes)
	copyMap(c.AuthorizationPolicies, s.AuthorizationPolicies)
	copyMap(c.PeerAuthentications, s.PeerAuthentications)
	copyMap(c.VirtualServices, s.VirtualServices)
	copyMap(c.DestinationRules, s.DestinationRules)
	copyMap(c.WasmPlugins, s.WasmPlugins)
	copyMap(c.LocalClusters, s.LocalClusters)
	copyMap(c.Origins, s.Origins)
	return c
}

func copyMap[K comparable, V any](dst, src map[K]V) {
	for k, v := range src {
		dst[k] = v
	}
}

// SortedKeys returns m's keys by namespace, then name: translation and
// planning iterate in this order so their output does not depend on map order.
func SortedKeys[V any](m map[Key]V) []Key {
	keys := make([]Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Namespace != keys[j].Namespace {
			return keys[i].Namespace < keys[j].Namespace
		}
		return keys[i].Name < keys[j].Name
	})
	return keys
}

// Len is the number of objects held.
func (s *Snapshot) Len() int { return len(s.Origins) }

// Refs lists every object, sorted by kind, namespace and name.
func (s *Snapshot) Refs() []Ref {
	refs := make([]Ref, 0, len(s.Origins))
	for r := range s.Origins {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool {
		a, b := refs[i], refs[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return refs
}

// RefOf names a typed object the Snapshot can hold.
func RefOf(obj any) (Ref, error) {
	var kind Kind
	switch obj.(type) {
	case *corev1.Namespace:
		kind = KindNamespace
	case *corev1.Node:
		kind = KindNode
	case *corev1.ServiceAccount:
		kind = KindServiceAccount
	case *corev1.Service:
		kind = KindService
	case *corev1.Pod:
		kind = KindPod
	case *discoveryv1.EndpointSlice:
		kind = KindEndpointSlice
	case *appsv1.Deployment:
		kind = KindDeployment
	case *gatewayv1.Gateway:
		kind = KindGateway
	case *gatewayv1.HTTPRoute:
		kind = KindHTTPRoute
	case *gatewayv1.GRPCRoute:
		kind = KindGRPCRoute
	case *securityv1.AuthorizationPolicy:
		kind = KindAuthorizationPolicy
	case *securityv1.PeerAuthentication:
		kind = KindPeerAuthentication
	case *networkingv1.VirtualService:
		kind = KindVirtualService
	case *networkingv1.DestinationRule:
		kind = KindDestinationRule
	case *extensionsv1alpha1.WasmPlugin:
		kind = KindWasmPlugin
	case *LocalCluster:
		kind = KindLocalCluster
	default:
		return Ref{}, fmt.Errorf("model: unsupported object type %T", obj)
	}
	m, ok := obj.(interface {
		GetNamespace() string
		GetName() string
	})
	if !ok {
		return Ref{}, fmt.Errorf("model: %T has no object metadata", obj)
	}
	return Ref{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}, nil
}
