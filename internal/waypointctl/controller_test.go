package waypointctl_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/internal/waypointctl"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

func ptr[T any](v T) *T { return &v }

func TestController(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallCRDs(t)
	cl := c.Clients(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&waypointctl.Controller{Clients: cl, RootCertPEM: "test-bundle", TrustDomain: "example.org", Image: "registry.example/ambit:v9"}).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	svc := func(ns, name string) *corev1.Service {
		return &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	nsObj := func(name string) *corev1.Namespace {
		return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	gw := func(name string, proto gatewayv1.ProtocolType, port gatewayv1.PortNumber) *gatewayv1.Gateway {
		return &gatewayv1.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: waypointctl.ClassName, Listeners: []gatewayv1.Listener{{Name: "mesh", Port: port, Protocol: proto}}}}
	}
	route := func(ns, name string, parent gatewayv1.ParentReference, backend string) *gatewayv1.HTTPRoute {
		return &gatewayv1.HTTPRoute{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parent}},
				Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(backend), Port: ptr(gatewayv1.PortNumber(80))}}}}}},
			}}
	}
	serviceParent := gatewayv1.ParentReference{Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "echo"}
	waypointParent := gatewayv1.ParentReference{Name: "waypoint", Namespace: ptr(gatewayv1.Namespace("shop"))}
	grpc := &gatewayv1.GRPCRoute{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "GRPCRoute"},
		ObjectMeta: metav1.ObjectMeta{Name: "grpc", Namespace: "shop"},
		Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{waypointParent}},
			Rules: []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo", Port: ptr(gatewayv1.PortNumber(80))}}}}}}}}

	kubetest.Apply(t, cl, nsObj("shop"), nsObj("other"), svc("shop", "echo"),
		gw("waypoint", waypointctl.HBONEProtocol, 15008), gw("broken", "HTTP", 80),
		route("shop", "to-missing", serviceParent, "missing"),
		route("other", "foreign", waypointParent, "echo"),
		grpc)

	g := cl.Gateway.GatewayV1()
	condition := func(conds []metav1.Condition, typ string) *metav1.Condition {
		return meta.FindStatusCondition(conds, typ)
	}
	is := func(c *metav1.Condition, status metav1.ConditionStatus, reason string) bool {
		return c != nil && c.Status == status && c.Reason == reason
	}
	bg := context.Background()

	kubetest.Eventually(t, time.Minute, "GatewayClass istio-waypoint created and accepted", func() bool {
		gc, err := g.GatewayClasses().Get(bg, waypointctl.ClassName, metav1.GetOptions{})
		return err == nil && gc.Spec.ControllerName == waypointctl.ControllerName && is(condition(gc.Status.Conditions, "Accepted"), "True", "Accepted")
	})
	kubetest.Eventually(t, time.Minute, "waypoint ServiceAccount, Deployment, Service; Gateway programmed with an address", func() bool {
		if _, err := cl.Kube.CoreV1().ServiceAccounts("shop").Get(bg, "waypoint", metav1.GetOptions{}); err != nil {
			return false
		}
		if cm, err := cl.Kube.CoreV1().ConfigMaps("shop").Get(bg, waypointctl.RootCertConfigMap, metav1.GetOptions{}); err != nil || cm.Data["root-cert.pem"] != "test-bundle" {
			return false
		}
		d, err := cl.Kube.AppsV1().Deployments("shop").Get(bg, "waypoint", metav1.GetOptions{})
		if err != nil || d.Spec.Template.Spec.ServiceAccountName != "waypoint" || len(d.OwnerReferences) != 1 {
			return false
		}
		if ctr := d.Spec.Template.Spec.Containers[0]; ctr.Image != "registry.example/ambit:v9" || !slices.Contains(ctr.Args, "example.org") {
			t.Fatalf("waypoint container: image %s, args %q; want the controller's image and trust domain", ctr.Image, ctr.Args)
		}
		s, err := cl.Kube.CoreV1().Services("shop").Get(bg, "waypoint", metav1.GetOptions{})
		if err != nil || s.Spec.ClusterIP == "" {
			return false
		}
		gwo, err := g.Gateways("shop").Get(bg, "waypoint", metav1.GetOptions{})
		return err == nil && is(condition(gwo.Status.Conditions, "Accepted"), "True", "Accepted") &&
			is(condition(gwo.Status.Conditions, "Programmed"), "True", "Programmed") &&
			len(gwo.Status.Addresses) == 1 && gwo.Status.Addresses[0].Value == s.Spec.ClusterIP &&
			len(gwo.Status.Listeners) == 1 && gwo.Status.Listeners[0].AttachedRoutes == 1 // the GRPCRoute

	})
	kubetest.Eventually(t, time.Minute, "a Gateway without an HBONE listener not accepted", func() bool {
		gwo, err := g.Gateways("shop").Get(bg, "broken", metav1.GetOptions{})
		return err == nil && is(condition(gwo.Status.Conditions, "Accepted"), "False", "ListenersNotValid") &&
			len(gwo.Status.Listeners) == 1 && is(condition(gwo.Status.Listeners[0].Conditions, "Accepted"), "False", "UnsupportedProtocol")
	})
	routeConds := func(ns, name string) (accepted, resolved *metav1.Condition) {
		r, err := g.HTTPRoutes(ns).Get(bg, name, metav1.GetOptions{})
		if err != nil || len(r.Status.Parents) != 1 || r.Status.Parents[0].ControllerName != waypointctl.ControllerName {
			return nil, nil
		}
		return condition(r.Status.Parents[0].Conditions, "Accepted"), condition(r.Status.Parents[0].Conditions, "ResolvedRefs")
	}
	kubetest.Eventually(t, time.Minute, "a route to a missing Service: accepted, BackendNotFound", func() bool {
		a, r := routeConds("shop", "to-missing")
		return is(a, "True", "Accepted") && is(r, "False", "BackendNotFound")
	})
	kubetest.Eventually(t, time.Minute, "a route from another namespace: NotAllowedByListeners", func() bool {
		a, r := routeConds("other", "foreign")
		// Its backend is in its own namespace "other", where there is no echo.
		return is(a, "False", "NotAllowedByListeners") && is(r, "False", "BackendNotFound")
	})
	kubetest.Eventually(t, time.Minute, "the GRPCRoute accepted by the waypoint", func() bool {
		r, err := g.GRPCRoutes("shop").Get(bg, "grpc", metav1.GetOptions{})
		return err == nil && len(r.Status.Parents) == 1 && is(condition(r.Status.Parents[0].Conditions, "Accepted"), "True", "Accepted") &&
			is(condition(r.Status.Parents[0].Conditions, "ResolvedRefs"), "True", "ResolvedRefs")
	})

	// The missing backend appears: the route's refs resolve.
	kubetest.Apply(t, cl, svc("shop", "missing"))
	kubetest.Eventually(t, time.Minute, "ResolvedRefs once the backend exists", func() bool {
		_, r := routeConds("shop", "to-missing")
		return is(r, "True", "ResolvedRefs")
	})
}
