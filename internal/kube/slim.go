package kube

import (
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"

	"github.com/ambit-mesh/ambit/internal/model"
)

// lastApplied is kubectl's copy of the whole object in an annotation:
// often the largest part of a small object, and never read by the mesh.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// transform slims objects before the informer caches them, so a control
// plane watching 100,000 pods holds what the model keeps of each, not the
// full objects. Kinds the model slims itself (Namespaces, Nodes, Pods,
// Services, ServiceAccounts, EndpointSlices) are slimmed the model's way, by storing them in
// a scratch Snapshot and taking the slimmed copy back out — one definition
// of what the mesh keeps; every object loses its managed fields and
// kubectl's last-applied copy.
func transform(kind model.Kind) cache.TransformFunc {
	var (
		mu      sync.Mutex
		scratch = model.NewSnapshot()
	)
	return func(obj any) (any, error) {
		if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			return obj, nil
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return obj, nil
		}
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			var kept map[string]string
			for k, v := range a {
				if k != lastApplied {
					if kept == nil {
						kept = make(map[string]string, len(a)-1)
					}
					kept[k] = v
				}
			}
			m.SetAnnotations(kept)
		}
		switch kind {
		case model.KindNamespace, model.KindNode, model.KindPod, model.KindService, model.KindServiceAccount, model.KindEndpointSlice:
		default:
			return obj, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if err := scratch.Put(obj, model.Origin{}); err != nil {
			return obj, nil
		}
		ref := model.Ref{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}
		k := model.Key{Namespace: ref.Namespace, Name: ref.Name}
		var slim any
		switch kind {
		case model.KindNamespace:
			slim = scratch.Namespaces[ref.Name]
		case model.KindNode:
			slim = scratch.Nodes[ref.Name]
		case model.KindPod:
			slim = scratch.Pods[k]
		case model.KindService:
			slim = scratch.Services[k]
		case model.KindServiceAccount:
			slim = scratch.ServiceAccounts[k]
		case model.KindEndpointSlice:
			slim = scratch.EndpointSlices[k]
		}
		scratch.Delete(ref)
		return slim, nil
	}
}
