package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/ambit-mesh/ambit/internal/model"
)

// Source feeds the control plane from the Kubernetes API: it watches every
// kind the model holds with informers, slims objects before they are
// cached, and delivers a new Snapshot after each burst of changes. It
// implements controlplane.Source.
//
// Objects the API server has accepted are valid by its schema, so unlike the
// file source nothing is rejected here; what translation cannot apply it
// reports itself, object by object.
type Source struct {
	Clients *Clients
	// Resync re-delivers every cached object this often, repairing any
	// missed event (default 10 minutes; unchanged objects cost nothing: they
	// are recognised by resourceVersion and skipped).
	Resync time.Duration
	// Debounce gathers the changes of a burst (a Deployment rollout, an
	// apply of many files) into one snapshot (default 50ms).
	Debounce time.Duration
	Log      *slog.Logger
	// Rediscover is how often the API server is asked again for kinds
	// whose CRDs were not installed (default 30s).
	Rediscover time.Duration
	// OnSynced, if set, is called once every informer has listed its kind.
	OnSynced func()

	mu      sync.Mutex
	pending map[model.Ref]any // slimmed object, or nil for a deletion
	wake    chan struct{}
}

// selectorlessSlices selects the EndpointSlices the EndpointSlice
// controller does not manage: those of Services without a selector
// (written by users, or mirrored from Endpoints).
const selectorlessSlices = discoveryv1.LabelManagedBy + "!=endpointslice-controller.k8s.io"

// watched is one informer and the model kind it fills.
type watched struct {
	kind     model.Kind
	gvr      string // group/version/resource, for messages
	informer cache.SharedIndexInformer
}

// Run implements controlplane.Source.
func (s *Source) Run(ctx context.Context, update func(*model.Snapshot)) error {
	if s.Clients == nil {
		return errors.New("kube source: no API clients")
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	resync := s.Resync
	if resync <= 0 {
		resync = 10 * time.Minute
	}
	debounce := s.Debounce
	if debounce <= 0 {
		debounce = 50 * time.Millisecond
	}
	s.pending = map[model.Ref]any{}
	s.wake = make(chan struct{}, 1)

	rediscover := s.Rediscover
	if rediscover <= 0 {
		rediscover = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	// Kinds whose CRDs are not installed wait; discovery is asked again
	// every rediscover, and a CRD installed later is watched from then on.
	waiting := s.informers(resync)
	start := func() ([]cache.InformerSynced, error) {
		served, err := servedResources(s.Clients)
		if err != nil {
			return nil, err
		}
		var synced []cache.InformerSynced
		var still []watched
		for _, w := range waiting {
			if !served[w.gvr] {
				still = append(still, w)
				continue
			}
			if err := s.watch(ctx, &wg, w, log); err != nil {
				return nil, err
			}
			synced = append(synced, w.informer.HasSynced)
		}
		waiting = still
		return synced, nil
	}
	began := time.Now()
	synced, err := start()
	if err != nil {
		return err
	}
	for _, w := range waiting {
		log.Warn("Kubernetes API does not serve this kind (CRD not installed); watching for it", "resource", w.gvr)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	log.Info("Kubernetes API synced", "kinds", len(synced), "took", time.Since(began).Round(time.Millisecond))
	if s.OnSynced != nil {
		s.OnSynced()
	}

	snap := model.NewSnapshot()
	s.drain(snap)
	update(snap)
	timer := time.NewTimer(0)
	<-timer.C
	recheck := time.NewTicker(rediscover)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-recheck.C:
			if len(waiting) > 0 {
				n := len(waiting)
				if _, err := start(); err != nil {
					log.Warn("Kubernetes API discovery failed; retrying", "error", err)
				} else if len(waiting) < n {
					log.Info("watching kinds whose CRDs were installed", "kinds", n-len(waiting))
				}
			}
			continue
		case <-s.wake:
		}
		// Let the rest of a burst arrive before translating once for all of it.
		timer.Reset(debounce)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		next := snap.Clone()
		if s.drain(next) == 0 {
			continue
		}
		snap = next
		update(snap)
	}
}

// drain applies the pending changes to snap and reports how many there were.
func (s *Source) drain(snap *model.Snapshot) int {
	s.mu.Lock()
	pending := s.pending
	s.pending = make(map[model.Ref]any, len(pending))
	s.mu.Unlock()
	origin := model.Origin{} // prints as "Kubernetes API"
	for ref, obj := range pending {
		if obj == nil {
			snap.Delete(ref)
			continue
		}
		// Put fails only for a type the model does not hold, which the
		// informers never deliver.
		_ = snap.Put(obj, origin)
	}
	return len(pending)
}

func (s *Source) record(ref model.Ref, obj any) {
	s.mu.Lock()
	s.pending[ref] = obj
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Source) handler(kind model.Kind) cache.ResourceEventHandler {
	put := func(obj any) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		s.record(model.Ref{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}, obj)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: put,
		UpdateFunc: func(oldObj, newObj any) {
			// Periodic resyncs deliver the cached object again: nothing changed.
			o, err1 := meta.Accessor(oldObj)
			n, err2 := meta.Accessor(newObj)
			if err1 == nil && err2 == nil && o.GetResourceVersion() == n.GetResourceVersion() {
				return
			}
			put(newObj)
		},
		DeleteFunc: func(obj any) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				return
			}
			ns, name, err := cache.SplitMetaNamespaceKey(key)
			if err != nil {
				return
			}
			s.record(model.Ref{Kind: kind, Namespace: ns, Name: name}, nil)
		},
	}
}

func watchErrorLogger(log *slog.Logger, gvr string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return
		}
		if apierrors.IsNotFound(err) {
			log.Error("Kubernetes API does not serve a watched kind (CRD missing?); retrying", "resource", gvr, "error", err)
			return
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
}

// informers creates one informer per kind the model holds.
func (s *Source) informers(resync time.Duration) []watched {
	c := s.Clients
	core := informers.NewSharedInformerFactory(c.Kube, resync)
	// Only the EndpointSlices of Services without a selector matter (see
	// translate): the EndpointSlice controller's, one set per Service with
	// a selector and most of them, are never fetched.
	slices := informers.NewSharedInformerFactoryWithOptions(c.Kube, resync, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = selectorlessSlices
	}))
	gw := gatewayinformers.NewSharedInformerFactory(c.Gateway, resync)
	is := istioinformers.NewSharedInformerFactory(c.Istio, resync)
	return []watched{
		{model.KindNamespace, "v1/namespaces", core.Core().V1().Namespaces().Informer()},
		{model.KindNode, "v1/nodes", core.Core().V1().Nodes().Informer()},
		{model.KindPod, "v1/pods", core.Core().V1().Pods().Informer()},
		{model.KindService, "v1/services", core.Core().V1().Services().Informer()},
		{model.KindEndpointSlice, "discovery.k8s.io/v1/endpointslices", slices.Discovery().V1().EndpointSlices().Informer()},
		{model.KindServiceAccount, "v1/serviceaccounts", core.Core().V1().ServiceAccounts().Informer()},
		{model.KindGateway, "gateway.networking.k8s.io/v1/gateways", gw.Gateway().V1().Gateways().Informer()},
		{model.KindHTTPRoute, "gateway.networking.k8s.io/v1/httproutes", gw.Gateway().V1().HTTPRoutes().Informer()},
		{model.KindGRPCRoute, "gateway.networking.k8s.io/v1/grpcroutes", gw.Gateway().V1().GRPCRoutes().Informer()},
		// Istio's v1beta1 and v1 objects are the same stored objects served
		// in two versions: watching v1 sees both.
		{model.KindAuthorizationPolicy, "security.istio.io/v1/authorizationpolicies", is.Security().V1().AuthorizationPolicies().Informer()},
		{model.KindPeerAuthentication, "security.istio.io/v1/peerauthentications", is.Security().V1().PeerAuthentications().Informer()},
		{model.KindVirtualService, "networking.istio.io/v1/virtualservices", is.Networking().V1().VirtualServices().Informer()},
		{model.KindDestinationRule, "networking.istio.io/v1/destinationrules", is.Networking().V1().DestinationRules().Informer()},
		{model.KindWasmPlugin, "extensions.istio.io/v1alpha1/wasmplugins", is.Extensions().V1alpha1().WasmPlugins().Informer()},
	}
}

// watch starts one informer, slimming what it caches and recording its events.
func (s *Source) watch(ctx context.Context, wg *sync.WaitGroup, w watched, log *slog.Logger) error {
	if err := w.informer.SetTransform(transform(w.kind)); err != nil {
		return fmt.Errorf("kube source: %s: %w", w.gvr, err)
	}
	if _, err := w.informer.AddEventHandler(s.handler(w.kind)); err != nil {
		return fmt.Errorf("kube source: %s: %w", w.gvr, err)
	}
	if err := w.informer.SetWatchErrorHandlerWithContext(watchErrorLogger(log, w.gvr)); err != nil {
		return fmt.Errorf("kube source: %s: %w", w.gvr, err)
	}
	wg.Go(func() { w.informer.RunWithContext(ctx) })
	return nil
}

// servedResources asks the API server's discovery which of the group
// versions Ambit watches it serves, as "group/version/resource" (core: "v1/resource").
func servedResources(c *Clients) (map[string]bool, error) {
	served := map[string]bool{}
	for _, gv := range []string{"v1", "discovery.k8s.io/v1", "gateway.networking.k8s.io/v1", "security.istio.io/v1", "networking.istio.io/v1", "extensions.istio.io/v1alpha1"} {
		list, err := c.Kube.Discovery().ServerResourcesForGroupVersion(gv)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kube source: discovery of %s: %w", gv, err)
		}
		for _, r := range list.APIResources {
			served[gv+"/"+r.Name] = true
		}
	}
	return served, nil
}
