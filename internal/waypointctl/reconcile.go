package waypointctl

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/internal/kube"
)

// reconcile brings every waypoint's objects and every status this
// controller owns up to date with the listers.
func (c *Controller) reconcile(ctx context.Context, l listers) error {
	everything := labels.Everything()
	gws, err1 := l.gateways.List(everything)
	svcs, err2 := l.services.List(everything)
	nss, err3 := l.namespaces.List(everything)
	grants, err4 := l.grants.List(everything)
	https, err5 := l.http.List(everything)
	grpcs, err6 := l.grpc.List(everything)
	classes, err7 := l.classes.List(everything)
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
		return err
	}
	w := &World{Gateways: map[nsName]*gatewayv1.Gateway{}, Services: map[nsName]*corev1.Service{}, Namespaces: map[string]*corev1.Namespace{}, Grants: grants}
	for _, g := range gws {
		w.Gateways[nsName{g.Namespace, g.Name}] = g
	}
	for _, s := range svcs {
		w.Services[nsName{s.Namespace, s.Name}] = s
	}
	for _, n := range nss {
		w.Namespaces[n.Name] = n
	}
	var errs []error
	for _, gc := range classes {
		if gc.Spec.ControllerName == ControllerName {
			errs = append(errs, c.classStatus(ctx, gc))
		}
	}

	attached := map[nsName]map[gatewayv1.SectionName]int32{}
	attach := func(gw nsName, l gatewayv1.SectionName) {
		if attached[gw] == nil {
			attached[gw] = map[gatewayv1.SectionName]int32{}
		}
		attached[gw][l]++
	}
	for _, r := range https {
		var backends []gatewayv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				backends = append(backends, b.BackendRef)
			}
		}
		parents := w.RouteParents(Route{Kind: "HTTPRoute", Namespace: r.Namespace, Generation: r.Generation, Parents: r.Spec.ParentRefs, Backends: backends}, attach)
		if changed(r.Status.Parents, parents) {
			errs = append(errs, c.httpRouteStatus(ctx, r, parents))
		}
	}
	for _, r := range grpcs {
		var backends []gatewayv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				backends = append(backends, b.BackendRef)
			}
		}
		parents := w.RouteParents(Route{Kind: "GRPCRoute", Namespace: r.Namespace, Generation: r.Generation, Parents: r.Spec.ParentRefs, Backends: backends}, attach)
		if changed(r.Status.Parents, parents) {
			errs = append(errs, c.grpcRouteStatus(ctx, r, parents))
		}
	}

	for _, g := range gws {
		if g.Spec.GatewayClassName != ClassName {
			continue
		}
		key := nsName{g.Namespace, g.Name}
		svc := w.Services[key]
		if stamp := string(g.UID) + "/" + strconv.FormatInt(g.Generation, 10); c.applied[key] != stamp || svc == nil {
			if err := c.applyWaypoint(ctx, g); err != nil {
				errs = append(errs, err)
				continue
			}
			c.applied[key] = stamp
		}
		st := GatewayStatus(g, svc, attached[key])
		if !conditionsEqual(g.Status.Conditions, st.Conditions) || !reflect.DeepEqual(g.Status.Addresses, st.Addresses) || !listenersEqual(g.Status.Listeners, st.Listeners) {
			errs = append(errs, c.gatewayStatus(ctx, g, st))
		}
	}
	return errors.Join(errs...)
}

// applyWaypoint server-side applies the waypoint's ServiceAccount,
// Deployment and Service, owned by the Gateway (deleted with it).
func (c *Controller) applyWaypoint(ctx context.Context, g *gatewayv1.Gateway) error {
	for _, obj := range c.waypointObjects(g) {
		u, err := kube.ToUnstructured(obj)
		if err != nil {
			return err
		}
		if _, err := c.applier.Apply(ctx, u, false); err != nil {
			return fmt.Errorf("waypoint %s/%s: %w", g.Namespace, g.Name, err)
		}
	}
	c.Log.Info("waypoint applied", "gateway", g.Namespace+"/"+g.Name)
	return nil
}

func (c *Controller) waypointObjects(g *gatewayv1.Gateway) []any {
	controller := true
	meta := metav1.ObjectMeta{
		Name: g.Name, Namespace: g.Namespace,
		Labels: map[string]string{GatewayNameLabel: g.Name, "gateway.istio.io/managed": "ambit.dev-waypoint-controller", "app.kubernetes.io/part-of": "ambit"},
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: gatewayv1.GroupVersion.String(), Kind: "Gateway", Name: g.Name, UID: g.UID, Controller: &controller,
		}},
	}
	selector := map[string]string{GatewayNameLabel: g.Name}
	replicas := int32(1)
	expiry := int64(3600)
	sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{GatewayNameLabel: g.Name, "istio.io/dataplane-mode": "none"}},
				Spec: corev1.PodSpec{
					ServiceAccountName: g.Name,
					Containers: []corev1.Container{{
						Name: "waypoint", Image: c.Image, Command: c.Command,
						// Requests only, as for the node proxies: a throttled
						// waypoint fails every request through it.
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
						Args: []string{"--control-plane", c.ControlPlane, "--trust-domain", c.TrustDomain, "--gateway", g.Name, "--service-account", g.Name,
							"--token-file", "/var/run/secrets/tokens/ambit-token", "--root-cert", "/var/run/ambit-root/root-cert.pem"},
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
							{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
						},
						Ports:          []corev1.ContainerPort{{Name: "hbone", ContainerPort: HBONEPort}, {Name: "status", ContainerPort: 15021}, {Name: "metrics", ContainerPort: 15020}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(15021)}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "ambit-token", MountPath: "/var/run/secrets/tokens", ReadOnly: true},
							{Name: "root-cert", MountPath: "/var/run/ambit-root", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "ambit-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
						Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "ambit-controlplane", ExpirationSeconds: &expiry, Path: "ambit-token"}}},
					}}}, {Name: "root-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: RootCertConfigMap}}}}},
				},
			},
		},
	}
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports: []corev1.ServicePort{
				{Name: "mesh", Port: HBONEPort, TargetPort: intstr.FromInt32(HBONEPort), AppProtocol: ptr("all")},
				{Name: "status-port", Port: 15021, TargetPort: intstr.FromInt32(15021)},
			},
		},
	}
	// The mesh's trust bundle, in the waypoint's namespace (pods mount
	// ConfigMaps of their own namespace only); shared by its waypoints.
	root := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: g.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "ambit"}},
		Data:       map[string]string{"root-cert.pem": c.RootCertPEM},
	}
	return []any{sa, root, dep, svc}
}

func (c *Controller) classStatus(ctx context.Context, gc *gatewayv1.GatewayClass) error {
	want := []metav1.Condition{cond("Accepted", true, string(gatewayv1.GatewayClassReasonAccepted), "Handled by Ambit's waypoint controller", gc.Generation)}
	if conditionsEqual(gc.Status.Conditions, want) {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.Clients.Gateway.GatewayV1().GatewayClasses().Get(ctx, gc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.Conditions = mergeConditions(cur.Status.Conditions, want)
		_, err = c.Clients.Gateway.GatewayV1().GatewayClasses().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

func (c *Controller) gatewayStatus(ctx context.Context, g *gatewayv1.Gateway, st gatewayv1.GatewayStatus) error {
	api := c.Clients.Gateway.GatewayV1().Gateways(g.Namespace)
	return ignoreGone(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := api.Get(ctx, g.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.Conditions = mergeConditions(cur.Status.Conditions, st.Conditions)
		cur.Status.Addresses = st.Addresses
		for i := range st.Listeners {
			for _, old := range cur.Status.Listeners {
				if old.Name == st.Listeners[i].Name {
					st.Listeners[i].Conditions = mergeConditions(old.Conditions, st.Listeners[i].Conditions)
				}
			}
		}
		cur.Status.Listeners = st.Listeners
		_, err = api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	}))
}

func (c *Controller) httpRouteStatus(ctx context.Context, r *gatewayv1.HTTPRoute, parents []gatewayv1.RouteParentStatus) error {
	api := c.Clients.Gateway.GatewayV1().HTTPRoutes(r.Namespace)
	return writeRouteStatus(ctx, parents,
		func() (*gatewayv1.HTTPRoute, error) { return api.Get(ctx, r.Name, metav1.GetOptions{}) },
		func(cur *gatewayv1.HTTPRoute) *gatewayv1.RouteStatus { return &cur.Status.RouteStatus },
		func(cur *gatewayv1.HTTPRoute) error {
			_, err := api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
}

func (c *Controller) grpcRouteStatus(ctx context.Context, r *gatewayv1.GRPCRoute, parents []gatewayv1.RouteParentStatus) error {
	api := c.Clients.Gateway.GatewayV1().GRPCRoutes(r.Namespace)
	return writeRouteStatus(ctx, parents,
		func() (*gatewayv1.GRPCRoute, error) { return api.Get(ctx, r.Name, metav1.GetOptions{}) },
		func(cur *gatewayv1.GRPCRoute) *gatewayv1.RouteStatus { return &cur.Status.RouteStatus },
		func(cur *gatewayv1.GRPCRoute) error {
			_, err := api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
}

// writeRouteStatus merges our parents into a route's current status and
// writes it, retrying on conflicts; a route deleted meanwhile is no error.
func writeRouteStatus[R any](ctx context.Context, parents []gatewayv1.RouteParentStatus, get func() (R, error), status func(R) *gatewayv1.RouteStatus, update func(R) error) error {
	return ignoreGone(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := get()
		if err != nil {
			return err
		}
		st := status(cur)
		st.Parents = mergeParents(st.Parents, parents)
		return update(cur)
	}))
}

func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// mergeParents replaces this controller's entries and keeps other controllers'.
func mergeParents(cur, ours []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, p := range cur {
		if p.ControllerName != ControllerName {
			out = append(out, p)
		}
	}
	for _, p := range ours {
		for _, old := range cur {
			if old.ControllerName == ControllerName && reflect.DeepEqual(old.ParentRef, p.ParentRef) {
				p.Conditions = mergeConditions(old.Conditions, p.Conditions)
			}
		}
		out = append(out, p)
	}
	return out
}

// changed reports whether our entries in cur differ from ours.
func changed(cur, ours []gatewayv1.RouteParentStatus) bool {
	var mine []gatewayv1.RouteParentStatus
	for _, p := range cur {
		if p.ControllerName == ControllerName {
			mine = append(mine, p)
		}
	}
	if len(mine) != len(ours) {
		return true
	}
	for i := range ours {
		if !reflect.DeepEqual(mine[i].ParentRef, ours[i].ParentRef) || !conditionsEqual(mine[i].Conditions, ours[i].Conditions) {
			return true
		}
	}
	return false
}

// mergeConditions sets want in cur, keeping lastTransitionTime of
// conditions whose status did not change (as meta.SetStatusCondition does).
func mergeConditions(cur, want []metav1.Condition) []metav1.Condition {
	out := append([]metav1.Condition(nil), cur...)
	for _, w := range want {
		meta.SetStatusCondition(&out, w)
	}
	return out
}

// conditionsEqual compares conditions ignoring transition times.
func conditionsEqual(cur, want []metav1.Condition) bool {
	if len(cur) != len(want) {
		return false
	}
	for _, w := range want {
		c := meta.FindStatusCondition(cur, w.Type)
		if c == nil || c.Status != w.Status || c.Reason != w.Reason || c.Message != w.Message || c.ObservedGeneration != w.ObservedGeneration {
			return false
		}
	}
	return true
}

func listenersEqual(cur, want []gatewayv1.ListenerStatus) bool {
	if len(cur) != len(want) {
		return false
	}
	for i := range want {
		if cur[i].Name != want[i].Name || cur[i].AttachedRoutes != want[i].AttachedRoutes || !conditionsEqual(cur[i].Conditions, want[i].Conditions) {
			return false
		}
	}
	return true
}
