package translate

import (
	"strconv"

	discoveryv1 "k8s.io/api/discovery/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// sliceMember is one EndpointSlice naming a pod as an endpoint of a
// Service without a selector.
type sliceMember struct {
	service model.Key
	slice   *discoveryv1.EndpointSlice
}

// indexEndpointSlices finds, for Services without a selector, the pods
// their EndpointSlices name (targetRef kind Pod): those pods are the
// Services' members, as kube-proxy would send to them. Services with a
// selector take their members from pods' labels, so their slices (which
// the EndpointSlice controller writes) are not read. Endpoints that are not
// pods have no ztunnel to serve them and are reported.
func (t *translator) indexEndpointSlices() {
	for _, k := range model.SortedKeys(t.snap.EndpointSlices) {
		es := t.snap.EndpointSlices[k]
		name := es.Labels[discoveryv1.LabelServiceName]
		svc := t.snap.Services[model.Key{Namespace: k.Namespace, Name: name}]
		if name == "" || svc == nil || len(svc.Spec.Selector) > 0 {
			continue
		}
		sk := model.Key{Namespace: k.Namespace, Name: name}
		ref := model.Ref{Kind: model.KindEndpointSlice, Namespace: k.Namespace, Name: k.Name}
		for i, ep := range es.Endpoints {
			tr := ep.TargetRef
			if tr == nil || tr.Kind != "Pod" || (tr.Namespace != "" && tr.Namespace != k.Namespace) {
				t.problem(ref, "endpoints["+strconv.Itoa(i)+"]", "endpoint %v is not a pod of namespace %s: the mesh routes only to pods", ep.Addresses, k.Namespace)
				continue
			}
			pk := model.Key{Namespace: k.Namespace, Name: tr.Name}
			t.sliceServices[pk] = append(t.sliceServices[pk], sliceMember{service: sk, slice: es})
		}
	}
}

// sliceServicesOf adds to out the selectorless Services whose
// EndpointSlices name the pod: each Service port maps to the slice port of
// the same name (the target port).
func (t *translator) sliceServicesOf(pk model.Key, out map[string]*meshv1.PortList) map[string]*meshv1.PortList {
	for _, m := range t.sliceServices[pk] {
		svc := t.snap.Services[m.service]
		key := t.serviceKey(m.service.Namespace, m.service.Name)
		pl := out[key]
		if pl == nil {
			pl = &meshv1.PortList{}
		}
		for _, sp := range svc.Spec.Ports {
			if !isTCP(sp.Protocol) {
				continue
			}
			for _, p := range m.slice.Ports {
				if p.Port == nil || (p.Name == nil && sp.Name != "") || (p.Name != nil && *p.Name != sp.Name) ||
					(p.Protocol != nil && !isTCP(*p.Protocol)) || hasServicePort(pl, sp.Port) {
					continue
				}
				pl.Ports = append(pl.Ports, &meshv1.Port{ServicePort: uint32(sp.Port), TargetPort: uint32(*p.Port)})
			}
		}
		if out == nil {
			out = map[string]*meshv1.PortList{}
		}
		out[key] = pl
	}
	return out
}

func hasServicePort(pl *meshv1.PortList, port int32) bool {
	for _, p := range pl.Ports {
		if p.ServicePort == uint32(port) {
			return true
		}
	}
	return false
}
