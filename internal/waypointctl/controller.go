// Package waypointctl is the waypoint controller: for every Gateway of
// class istio-waypoint it creates the waypoint's ServiceAccount, Deployment
// and Service, and it writes the status Gateway API users read — the
// GatewayClass's, the Gateway's (Accepted, Programmed, addresses) and the
// HTTPRoutes' and GRPCRoutes' whose parent is a waypoint or a Service
// (Accepted, ResolvedRefs with reasons such as BackendNotFound and
// NotAllowedByListeners).
//
// The control plane runs it on the elected replica only (internal/kube
// Election).
package waypointctl

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
	gatewaylistersv1beta1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"

	"github.com/ambit-mesh/ambit/internal/kube"
)

// RootCertConfigMap holds the trust bundle in each waypoint's namespace.
const RootCertConfigMap = "ambit-root-cert"

// GatewayNameLabel marks the objects of one waypoint, as Istio does.
const GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// Controller reconciles waypoints. Create it with its fields set and Run it.
type Controller struct {
	Clients *kube.Clients
	// Image runs the waypoint (default DefaultImage); Command is its entrypoint.
	Image   string
	Command []string
	// ControlPlane is the address waypoints reach the control plane at.
	ControlPlane string
	// RootCertPEM is the mesh's trust bundle, published beside each waypoint.
	RootCertPEM string
	// TrustDomain of the mesh, the waypoints' identities' (default cluster.local).
	TrustDomain string
	Log         *slog.Logger

	applier *kube.Applier
	applied map[nsName]string // uid/generation of the Gateway last applied
}

// DefaultImage is the image `make image` builds.
const DefaultImage = "ghcr.io/ambit-mesh/ambit:latest"

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Image == "" {
		c.Image = DefaultImage
	}
	if len(c.Command) == 0 {
		c.Command = []string{"/waypoint"}
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "cluster.local"
	}
	if c.ControlPlane == "" {
		c.ControlPlane = "ambit-controlplane.ambit-system.svc:15012"
	}
	c.applier = c.Clients.NewApplier("ambit-waypoint-controller")
	c.applied = map[nsName]string{}

	core := informers.NewSharedInformerFactory(c.Clients.Kube, 10*time.Minute)
	gw := gatewayinformers.NewSharedInformerFactory(c.Clients.Gateway, 10*time.Minute)
	l := listers{
		gateways:   gw.Gateway().V1().Gateways().Lister(),
		classes:    gw.Gateway().V1().GatewayClasses().Lister(),
		http:       gw.Gateway().V1().HTTPRoutes().Lister(),
		grpc:       gw.Gateway().V1().GRPCRoutes().Lister(),
		grants:     gw.Gateway().V1beta1().ReferenceGrants().Lister(),
		services:   core.Core().V1().Services().Lister(),
		namespaces: core.Core().V1().Namespaces().Lister(),
	}
	wake := make(chan struct{}, 1)
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify(wake) },
		UpdateFunc: func(any, any) { notify(wake) },
		DeleteFunc: func(any) { notify(wake) },
	}
	for _, inf := range []cache.SharedIndexInformer{
		gw.Gateway().V1().Gateways().Informer(), gw.Gateway().V1().GatewayClasses().Informer(),
		gw.Gateway().V1().HTTPRoutes().Informer(), gw.Gateway().V1().GRPCRoutes().Informer(),
		gw.Gateway().V1beta1().ReferenceGrants().Informer(),
		core.Core().V1().Services().Informer(), core.Core().V1().Namespaces().Informer(),
	} {
		if _, err := inf.AddEventHandler(poke); err != nil {
			return err
		}
	}
	core.Start(ctx.Done())
	gw.Start(ctx.Done())
	defer core.Shutdown()
	defer gw.Shutdown()
	for typ, ok := range core.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("waypoint controller: %v never synced", typ)
		}
	}
	for typ, ok := range gw.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("waypoint controller: %v never synced (Gateway API CRDs installed?)", typ)
		}
	}
	if err := c.ensureClass(ctx); err != nil {
		c.Log.Error("GatewayClass", "error", err)
	}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if err := c.reconcile(ctx, l); err != nil && ctx.Err() == nil {
			c.Log.Error("waypoint reconcile failed; retrying", "error", err)
			retry.Reset(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-retry.C:
		}
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ensureClass creates the istio-waypoint GatewayClass when absent.
func (c *Controller) ensureClass(ctx context.Context) error {
	_, err := c.Clients.Gateway.GatewayV1().GatewayClasses().Get(ctx, ClassName, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		return err
	}
	desc := "Ambit waypoints: shared L7 proxies of the ambient mesh"
	_, err = c.Clients.Gateway.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: ClassName},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: ControllerName, Description: &desc},
	}, metav1.CreateOptions{FieldManager: "ambit-waypoint-controller"})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

type listers struct {
	gateways   gatewaylisters.GatewayLister
	classes    gatewaylisters.GatewayClassLister
	http       gatewaylisters.HTTPRouteLister
	grpc       gatewaylisters.GRPCRouteLister
	grants     gatewaylistersv1beta1.ReferenceGrantLister
	services   corelisters.ServiceLister
	namespaces corelisters.NamespaceLister
}
