package waypointctl

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Names Istio uses, kept so users' manifests and tooling carry over.
const (
	ClassName      = "istio-waypoint"
	ControllerName = gatewayv1.GatewayController("istio.io/mesh-controller")
	// HBONEProtocol is the protocol of a waypoint's listener (port 15008).
	HBONEProtocol = gatewayv1.ProtocolType("HBONE")
	HBONEPort     = 15008
)

// World is what status is computed from: the listers' view.
type World struct {
	Gateways   map[nsName]*gatewayv1.Gateway
	Services   map[nsName]*corev1.Service
	Namespaces map[string]*corev1.Namespace
	Grants     []*gatewayv1beta1.ReferenceGrant
}

type nsName struct{ ns, name string }

func cond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	// The time is replaced by the previous one when the status did not
	// change (mergeConditions), as the API convention asks.
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: metav1.Now()}
}

// GatewayStatus is the status of a waypoint Gateway given its Service
// (nil while not created) and the routes attached to each listener.
func GatewayStatus(gw *gatewayv1.Gateway, svc *corev1.Service, attached map[gatewayv1.SectionName]int32) gatewayv1.GatewayStatus {
	gen := gw.Generation
	var st gatewayv1.GatewayStatus
	valid := 0
	for _, l := range gw.Spec.Listeners {
		ls := gatewayv1.ListenerStatus{
			Name:           l.Name,
			AttachedRoutes: attached[l.Name],
			SupportedKinds: []gatewayv1.RouteGroupKind{{Group: ptr(gatewayv1.Group(gatewayv1.GroupName)), Kind: "HTTPRoute"}, {Group: ptr(gatewayv1.Group(gatewayv1.GroupName)), Kind: "GRPCRoute"}},
		}
		switch {
		case l.Protocol != HBONEProtocol:
			ls.Conditions = append(ls.Conditions, cond("Accepted", false, string(gatewayv1.ListenerReasonUnsupportedProtocol),
				fmt.Sprintf("a waypoint listens with protocol HBONE, not %s", l.Protocol), gen))
		case l.Port != HBONEPort:
			ls.Conditions = append(ls.Conditions, cond("Accepted", false, string(gatewayv1.ListenerReasonPortUnavailable),
				fmt.Sprintf("a waypoint's HBONE listener is on port %d, not %d", HBONEPort, l.Port), gen))
		default:
			valid++
			ls.Conditions = append(ls.Conditions, cond("Accepted", true, string(gatewayv1.ListenerReasonAccepted), "Listener accepted", gen))
		}
		ls.Conditions = append(ls.Conditions,
			cond("ResolvedRefs", true, string(gatewayv1.ListenerReasonResolvedRefs), "No references to resolve", gen),
			cond("Programmed", ls.Conditions[0].Status == metav1.ConditionTrue && svc != nil, programmedReason(svc), programmedMessage(svc), gen))
		st.Listeners = append(st.Listeners, ls)
	}
	if valid == 0 {
		st.Conditions = append(st.Conditions, cond("Accepted", false, string(gatewayv1.GatewayReasonListenersNotValid),
			fmt.Sprintf("a waypoint needs a listener with protocol HBONE on port %d", HBONEPort), gen))
	} else {
		st.Conditions = append(st.Conditions, cond("Accepted", true, string(gatewayv1.GatewayReasonAccepted), "Resource accepted", gen))
	}
	if svc != nil && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		for _, ip := range svc.Spec.ClusterIPs {
			st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{Type: ptr(gatewayv1.IPAddressType), Value: ip})
		}
		st.Conditions = append(st.Conditions, cond("Programmed", valid > 0, string(gatewayv1.GatewayReasonProgrammed),
			fmt.Sprintf("Resource programmed, assigned to service %s/%s", svc.Namespace, svc.Name), gen))
	} else {
		st.Conditions = append(st.Conditions, cond("Programmed", false, string(gatewayv1.GatewayReasonAddressNotAssigned),
			"waiting for the waypoint's Service to get an address", gen))
	}
	return st
}

func programmedReason(svc *corev1.Service) string {
	if svc == nil {
		return string(gatewayv1.ListenerReasonPending)
	}
	return string(gatewayv1.ListenerReasonProgrammed)
}

func programmedMessage(svc *corev1.Service) string {
	if svc == nil {
		return "waiting for the waypoint's Service"
	}
	return "Listener programmed"
}

func ptr[T any](v T) *T { return &v }

// Route is what route status needs of an HTTPRoute or GRPCRoute.
type Route struct {
	Kind       gatewayv1.Kind // HTTPRoute or GRPCRoute
	Namespace  string
	Generation int64
	Parents    []gatewayv1.ParentReference
	Backends   []gatewayv1.BackendRef
}

// RouteParents computes the status entries this controller owns for a
// route: one per parentRef that is a waypoint Gateway or a Service (GAMMA).
// Parents of other controllers get no entry from us. attach is told each
// waypoint listener the route attached to.
func (w *World) RouteParents(r Route, attach func(gw nsName, listener gatewayv1.SectionName)) []gatewayv1.RouteParentStatus {
	resolved := w.resolvedRefs(r)
	var out []gatewayv1.RouteParentStatus
	for _, p := range r.Parents {
		ns := r.Namespace
		if p.Namespace != nil {
			ns = string(*p.Namespace)
		}
		group, kind := gatewayv1.GroupName, "Gateway"
		if p.Group != nil {
			group = string(*p.Group)
		}
		if p.Kind != nil {
			kind = string(*p.Kind)
		}
		var accepted metav1.Condition
		switch {
		case (group == "" || group == "core") && kind == "Service":
			if w.Services[nsName{ns, string(p.Name)}] == nil {
				accepted = cond("Accepted", false, string(gatewayv1.RouteReasonNoMatchingParent), fmt.Sprintf("parent Service %s/%s not found", ns, p.Name), r.Generation)
			} else {
				accepted = cond("Accepted", true, string(gatewayv1.RouteReasonAccepted), "Route was valid", r.Generation)
			}
		case group == gatewayv1.GroupName && kind == "Gateway":
			gw := w.Gateways[nsName{ns, string(p.Name)}]
			if gw == nil || gw.Spec.GatewayClassName != ClassName {
				continue // not ours (or not there: its controller, if any, answers)
			}
			accepted = w.acceptByGateway(r, gw, p, attach)
		default:
			continue
		}
		out = append(out, gatewayv1.RouteParentStatus{
			ParentRef:      p,
			ControllerName: ControllerName,
			Conditions:     []metav1.Condition{accepted, resolved},
		})
	}
	return out
}

func (w *World) acceptByGateway(r Route, gw *gatewayv1.Gateway, p gatewayv1.ParentReference, attach func(nsName, gatewayv1.SectionName)) metav1.Condition {
	matched, allowed := 0, 0
	var allowedListeners []gatewayv1.SectionName
	for _, l := range gw.Spec.Listeners {
		if p.SectionName != nil && *p.SectionName != l.Name {
			continue
		}
		if p.Port != nil && *p.Port != l.Port {
			continue
		}
		matched++
		if w.listenerAllows(gw, l, r) {
			allowed++
			allowedListeners = append(allowedListeners, l.Name)
		}
	}
	switch {
	case matched == 0:
		return cond("Accepted", false, string(gatewayv1.RouteReasonNoMatchingParent),
			fmt.Sprintf("no listener of Gateway %s/%s matches the parentRef's sectionName/port", gw.Namespace, gw.Name), r.Generation)
	case allowed == 0:
		return cond("Accepted", false, string(gatewayv1.RouteReasonNotAllowedByListeners),
			fmt.Sprintf("no listener of Gateway %s/%s allows %s from namespace %s", gw.Namespace, gw.Name, r.Kind, r.Namespace), r.Generation)
	}
	for _, l := range allowedListeners {
		attach(nsName{gw.Namespace, gw.Name}, l)
	}
	return cond("Accepted", true, string(gatewayv1.RouteReasonAccepted), "Route was valid", r.Generation)
}

// listenerAllows applies a listener's allowedRoutes to the route.
func (w *World) listenerAllows(gw *gatewayv1.Gateway, l gatewayv1.Listener, r Route) bool {
	ar := l.AllowedRoutes
	if ar != nil && len(ar.Kinds) > 0 && !slices.ContainsFunc(ar.Kinds, func(k gatewayv1.RouteGroupKind) bool {
		return k.Kind == r.Kind && (k.Group == nil || *k.Group == gatewayv1.GroupName)
	}) {
		return false
	}
	from := gatewayv1.NamespacesFromSame
	if ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
		from = *ar.Namespaces.From
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		if ar.Namespaces.Selector == nil {
			return false
		}
		sel, err := metav1.LabelSelectorAsSelector(ar.Namespaces.Selector)
		ns := w.Namespaces[r.Namespace]
		return err == nil && ns != nil && sel.Matches(labels.Set(ns.Labels))
	default:
		return r.Namespace == gw.Namespace
	}
}

// resolvedRefs checks every backendRef: a Service that exists, in the
// route's namespace or one whose ReferenceGrant allows the route.
func (w *World) resolvedRefs(r Route) metav1.Condition {
	var reason string
	var problems []string
	fail := func(rs gatewayv1.RouteConditionReason, msg string) {
		if reason == "" {
			reason = string(rs)
		}
		problems = append(problems, msg)
	}
	for _, b := range r.Backends {
		group, kind := "", "Service"
		if b.Group != nil {
			group = string(*b.Group)
		}
		if b.Kind != nil {
			kind = string(*b.Kind)
		}
		ns := r.Namespace
		if b.Namespace != nil {
			ns = string(*b.Namespace)
		}
		switch {
		case (group != "" && group != "core") || kind != "Service":
			fail(gatewayv1.RouteReasonInvalidKind, fmt.Sprintf("backendRef %s: kind %s/%s is not supported, only Services", b.Name, group, kind))
		case ns != r.Namespace && !w.granted(r, ns, string(b.Name)):
			fail(gatewayv1.RouteReasonRefNotPermitted, fmt.Sprintf("backendRef %s/%s: no ReferenceGrant in %s allows %s from %s", ns, b.Name, ns, r.Kind, r.Namespace))
		case w.Services[nsName{ns, string(b.Name)}] == nil:
			fail(gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("backendRef %s/%s: Service not found", ns, b.Name))
		}
	}
	if reason == "" {
		return cond("ResolvedRefs", true, string(gatewayv1.RouteReasonResolvedRefs), "All references resolved", r.Generation)
	}
	return cond("ResolvedRefs", false, reason, strings.Join(problems, "; "), r.Generation)
}

func (w *World) granted(r Route, ns, name string) bool {
	for _, g := range w.Grants {
		if g.Namespace != ns {
			continue
		}
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1beta1.ReferenceGrantFrom) bool {
			return f.Group == gatewayv1.GroupName && f.Kind == r.Kind && string(f.Namespace) == r.Namespace
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gatewayv1beta1.ReferenceGrantTo) bool {
			return (t.Group == "" || t.Group == "core") && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == name)
		})
		if from && to {
			return true
		}
	}
	return false
}
