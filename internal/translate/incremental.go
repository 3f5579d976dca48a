package translate

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Translator translates successive Snapshots of one mesh. It reuses the
// Workload of every pod whose inputs are the same objects as last time, so a
// change to one pod in a mesh of 100,000 costs about one pod's translation,
// and the reused messages are pointer-identical, which lets the push server
// skip re-encoding them.
//
// "The same objects" means pointer identity: Snapshots are immutable and a
// source that changes one object Clones the Snapshot and Puts the new
// object, so every other pointer carries over. A source that rebuilds every
// object (a directory reload) simply gets no reuse.
//
// A pod's Workload depends on the pod, its node (locality), its namespace
// (labels), the Services, EndpointSlices and selector AuthorizationPolicies
// of its namespace, and mesh-wide the root namespace's policies, every
// Gateway (waypoint binding) and the label names DestinationRules'
// failoverPriority lists. Those are compared per translation; anything else a Workload
// reads must be added here.
//
// Translator is not safe for concurrent use; the messages it returns must
// not be modified.
type Translator struct {
	mesh   model.MeshConfig
	cache  map[model.Key]cachedWorkload
	nsDeps map[string][]any
	global []any
}

type cachedWorkload struct {
	pod      *corev1.Pod
	node     *corev1.Node
	w        *meshv1.Workload
	problems []Problem
}

// NewTranslator returns a Translator for mesh.
func NewTranslator(mesh model.MeshConfig) *Translator {
	return &Translator{mesh: mesh, cache: map[model.Key]cachedWorkload{}, nsDeps: map[string][]any{}}
}

// Translate is Translate(snap, mesh) with reuse of unchanged workloads.
func (tr *Translator) Translate(snap *model.Snapshot) *Output {
	t := newTranslator(snap, tr.mesh)
	nsDeps := t.namespaceDependencies()
	global := t.globalDependencies()
	globalSame := samePointers(global, tr.global)
	nsSame := make(map[string]bool, len(nsDeps))
	for ns, deps := range nsDeps {
		nsSame[ns] = globalSame && samePointers(deps, tr.nsDeps[ns])
	}
	cache := make(map[model.Key]cachedWorkload, len(snap.Pods))
	t.reuse = func(k model.Key, pod *corev1.Pod) (cachedWorkload, bool) {
		c, ok := tr.cache[k]
		if !ok || c.pod != pod || c.node != snap.Nodes[pod.Spec.NodeName] {
			return cachedWorkload{}, false
		}
		// A namespace with no dependencies at all (no Namespace object,
		// Services or policies) is absent from nsDeps: unchanged if it was
		// absent last time too.
		same, known := nsSame[k.Namespace]
		if !known {
			_, before := tr.nsDeps[k.Namespace]
			same = globalSame && !before
		}
		return c, same
	}
	t.remember = func(k model.Key, c cachedWorkload) { cache[k] = c }
	out := t.translate()
	tr.cache, tr.nsDeps, tr.global = cache, nsDeps, global
	return out
}

// namespaceDependencies lists, per namespace, the objects its pods' Workloads read.
func (t *translator) namespaceDependencies() map[string][]any {
	deps := map[string][]any{}
	for name, ns := range t.snap.Namespaces {
		deps[name] = append(deps[name], ns)
	}
	for _, k := range model.SortedKeys(t.snap.Services) {
		deps[k.Namespace] = append(deps[k.Namespace], k, t.snap.Services[k])
	}
	for ns, keys := range t.policiesByNS {
		for _, k := range keys {
			deps[ns] = append(deps[ns], k, t.snap.AuthorizationPolicies[k])
		}
	}
	for _, k := range model.SortedKeys(t.snap.EndpointSlices) {
		deps[k.Namespace] = append(deps[k.Namespace], k, t.snap.EndpointSlices[k])
	}
	return deps
}

func (t *translator) globalDependencies() []any {
	var deps []any
	for _, k := range model.SortedKeys(t.snap.Gateways) {
		deps = append(deps, k, t.snap.Gateways[k])
	}
	for _, k := range t.policiesByNS[t.mesh.RootNamespace] {
		deps = append(deps, k, t.snap.AuthorizationPolicies[k])
	}
	// The pod labels Workloads carry (DestinationRules' failoverPriority).
	deps = append(deps, strings.Join(t.priorityLabels, "\x00"))
	return deps
}

// samePointers compares two dependency lists element by element; pointers
// compare by identity, keys by value.
func samePointers(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
