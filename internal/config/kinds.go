package config

import (
	"reflect"
	"slices"
	"strings"

	"github.com/ambit-mesh/ambit/internal/model"
)

// kindInfo is what the parser knows about one supported kind.
type kindInfo struct {
	kind       model.Kind
	group      string
	versions   []string // served versions, preferred first
	namespaced bool
	// lenient marks kinds whose decoder silently drops unknown fields (Istio's
	// protobuf specs); they are always schema-checked, not only on failure.
	lenient  bool
	name     nameRule
	goType   reflect.Type
	newObj   func() any
	validate func(obj any, e *errs)
}

func (k *kindInfo) apiVersions() []string {
	out := make([]string, len(k.versions))
	for i, v := range k.versions {
		out[i] = groupVersion(k.group, v)
	}
	return out
}

func groupVersion(group, version string) string {
	if group == "" {
		return version
	}
	return group + "/" + version
}

var kinds = map[string]*kindInfo{}

func register[T any](k kindInfo, validate func(*T, *errs)) {
	k.goType = reflect.TypeFor[T]()
	k.newObj = func() any { return new(T) }
	k.validate = func(obj any, e *errs) { validate(obj.(*T), e) }
	kinds[string(k.kind)] = &k
}

// Istio serves each of its kinds under several versions whose spec types are
// Go aliases of one another, so every version decodes into the v1 object;
// the object keeps the apiVersion the user wrote.
func init() {
	register(kindInfo{kind: model.KindNamespace, versions: []string{"v1"}, name: dns1123Label}, validateNamespace)
	register(kindInfo{kind: model.KindNode, versions: []string{"v1"}, name: dns1123Subdomain}, validateNode)
	register(kindInfo{kind: model.KindServiceAccount, versions: []string{"v1"}, namespaced: true, name: dns1123Subdomain}, validateServiceAccount)
	register(kindInfo{kind: model.KindService, versions: []string{"v1"}, namespaced: true, name: dns1035Label}, validateService)
	register(kindInfo{kind: model.KindPod, versions: []string{"v1"}, namespaced: true, name: dns1123Subdomain}, validatePod)
	register(kindInfo{kind: model.KindEndpointSlice, group: "discovery.k8s.io", versions: []string{"v1"}, namespaced: true, name: dns1123Subdomain}, validateEndpointSlice)
	register(kindInfo{kind: model.KindDeployment, group: "apps", versions: []string{"v1"}, namespaced: true, name: dns1123Subdomain}, validateDeployment)

	const gw = "gateway.networking.k8s.io"
	register(kindInfo{kind: model.KindGateway, group: gw, versions: []string{"v1", "v1beta1"}, namespaced: true, name: dns1123Subdomain}, validateGateway)
	register(kindInfo{kind: model.KindHTTPRoute, group: gw, versions: []string{"v1", "v1beta1"}, namespaced: true, name: dns1123Subdomain}, validateHTTPRoute)
	register(kindInfo{kind: model.KindGRPCRoute, group: gw, versions: []string{"v1"}, namespaced: true, name: dns1123Subdomain}, validateGRPCRoute)

	istio := []string{"v1", "v1beta1", "v1alpha3"}
	register(kindInfo{kind: model.KindVirtualService, group: "networking.istio.io", versions: istio, namespaced: true, lenient: true, name: dns1123Subdomain}, validateVirtualService)
	register(kindInfo{kind: model.KindDestinationRule, group: "networking.istio.io", versions: istio, namespaced: true, lenient: true, name: dns1123Subdomain}, validateDestinationRule)
	security := []string{"v1", "v1beta1"}
	register(kindInfo{kind: model.KindAuthorizationPolicy, group: "security.istio.io", versions: security, namespaced: true, lenient: true, name: dns1123Subdomain}, validateAuthorizationPolicy)
	register(kindInfo{kind: model.KindPeerAuthentication, group: "security.istio.io", versions: security, namespaced: true, lenient: true, name: dns1123Subdomain}, validatePeerAuthentication)
	register(kindInfo{kind: model.KindWasmPlugin, group: "extensions.istio.io", versions: []string{"v1alpha1"}, namespaced: true, lenient: true, name: dns1123Subdomain}, validateWasmPlugin)

	register(kindInfo{kind: model.KindLocalCluster, group: model.LocalClusterGroup, versions: []string{"v1alpha1"}, name: dns1123Label}, validateLocalCluster)

}

// SupportedKinds lists the kinds Parse accepts, with their apiVersions,
// e.g. "HTTPRoute (gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1)".
func SupportedKinds() []string {
	var out []string
	for _, k := range kinds {
		out = append(out, string(k.kind)+" ("+strings.Join(k.apiVersions(), ", ")+")")
	}
	slices.Sort(out)
	return out
}

func supportedKindNames() string {
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// notMeshKinds explains kinds that turn up next to mesh config in Istio
// material but that ambit deliberately does not take.
var notMeshKinds = map[string]string{
	"install.istio.io/IstioOperator":  "IstioOperator is istioctl installation configuration, not a mesh resource; ambit needs none (ztunnel, CNI and the control plane are part of ambit), so leave it out",
	"networking.istio.io/EnvoyFilter": "EnvoyFilter patches Envoy configuration and ambit has no Envoy; use a WasmPlugin, an HTTPRoute filter or a VirtualService instead",
	"networking.istio.io/Sidecar":     "Sidecar configures sidecar proxies and ambit is sidecar-less; leave it out",
	"networking.istio.io/Gateway":     "Istio's Gateway (networking.istio.io) configures ingress proxies and is not supported; waypoints and gateways are Gateway API Gateways (gateway.networking.k8s.io/v1)",
}
