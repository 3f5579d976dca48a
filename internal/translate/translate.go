// Package translate turns a model.Snapshot (what users declared) into the
// resources proxies consume (api/mesh/v1): workloads with identity and
// locality, services with VIPs, L4 policies, and each waypoint's routes and L7
// policies. It is a pure function of its input — no I/O, no clocks — so the
// file and Kubernetes sources produce identical output for identical
// manifests, and tests can compare outputs directly.
//
// Control-plane code only.
package translate

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Output is everything the control plane pushes, keyed by resource name.
type Output struct {
	Workloads           map[string]*meshv1.Workload
	Services            map[string]*meshv1.Service
	Authorizations      map[string]*meshv1.Authorization
	PeerAuthentications map[string]*meshv1.PeerAuthentication
	Waypoints           map[string]*meshv1.WaypointConfig
	// Problems are objects (or parts of them) that could not be applied, with why.
	Problems []Problem
}

// Resources returns the output grouped by type URL, the form the push server takes.
func (o *Output) Resources() map[string]map[string]proto.Message {
	return map[string]map[string]proto.Message{
		meshv1.TypeWorkload:           asMessages(o.Workloads),
		meshv1.TypeService:            asMessages(o.Services),
		meshv1.TypeAuthorization:      asMessages(o.Authorizations),
		meshv1.TypePeerAuthentication: asMessages(o.PeerAuthentications),
		meshv1.TypeWaypointConfig:     asMessages(o.Waypoints),
	}
}

func asMessages[M proto.Message](in map[string]M) map[string]proto.Message {
	out := make(map[string]proto.Message, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// NodeIdentities maps node name → SPIFFE IDs (as strings) of the workloads on
// it; the CA uses it to decide which certificates a node may obtain.
func (o *Output) NodeIdentities() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, w := range o.Workloads {
		if w.Node == "" {
			continue
		}
		ids := out[w.Node]
		if ids == nil {
			ids = map[string]bool{}
			out[w.Node] = ids
		}
		ids["spiffe://"+w.TrustDomain+"/ns/"+w.Namespace+"/sa/"+w.ServiceAccount] = true
	}
	return out
}

// Translate computes the full output for snap. To translate successive
// snapshots of one mesh, a Translator is cheaper.
func Translate(snap *model.Snapshot, mesh model.MeshConfig) *Output {
	return newTranslator(snap, mesh).translate()
}

func (t *translator) translate() *Output {
	out := &Output{
		Services:            t.services(),
		Authorizations:      t.authorizations(),
		PeerAuthentications: t.peerAuthentications(),
	}
	out.Workloads = t.workloads()
	out.Waypoints = t.waypoints(out.Services, out.Workloads)
	out.Problems = t.problems
	sort.SliceStable(out.Problems, func(i, j int) bool { return out.Problems[i].Ref.String() < out.Problems[j].Ref.String() })
	return out
}

// translator carries the indexes built once per translation, so that the
// per-object work stays proportional to the object, not to the mesh.
type translator struct {
	snap *model.Snapshot
	mesh model.MeshConfig

	// servicesByLabel indexes Services by namespace and one "key=value" of
	// their selector: a pod only needs to check Services sharing a label with it.
	servicesByLabel map[string][]model.Key
	// sliceServices lists, by pod, the selectorless Services whose
	// EndpointSlices name the pod, with those slices.
	sliceServices map[model.Key][]sliceMember
	// policiesByNS lists selector-scoped AuthorizationPolicies by namespace.
	policiesByNS map[string][]model.Key
	// priorityLabels are the label names DestinationRules'
	// localityLbSetting.failoverPriority rank by, sorted: Workloads carry
	// these of their pod's labels, no others.
	priorityLabels []string

	problems []Problem

	// reuse returns the cached translation of an unchanged pod; remember
	// records a pod's translation. A Translator sets them; a one-off
	// translation reuses nothing.
	reuse    func(model.Key, *corev1.Pod) (cachedWorkload, bool)
	remember func(model.Key, cachedWorkload)
}

func newTranslator(snap *model.Snapshot, mesh model.MeshConfig) *translator {
	t := &translator{
		snap:            snap,
		mesh:            mesh,
		servicesByLabel: map[string][]model.Key{},
		sliceServices:   map[model.Key][]sliceMember{},
		policiesByNS:    map[string][]model.Key{},
		reuse:           func(model.Key, *corev1.Pod) (cachedWorkload, bool) { return cachedWorkload{}, false },
		remember:        func(model.Key, cachedWorkload) {},
	}
	for k, svc := range snap.Services {
		sel := svc.Spec.Selector
		if len(sel) == 0 {
			continue
		}
		// Index by the lexically first selector pair: deterministic, and
		// every selected pod necessarily carries it.
		first := ""
		for lk := range sel {
			if first == "" || lk < first {
				first = lk
			}
		}
		ix := k.Namespace + "\x00" + first + "=" + sel[first]
		t.servicesByLabel[ix] = append(t.servicesByLabel[ix], k)
	}
	for _, keys := range t.servicesByLabel {
		sortKeys(keys)
	}
	t.indexEndpointSlices()
	t.priorityLabels = priorityLabels(snap)
	for k, p := range snap.AuthorizationPolicies {
		if len(p.Spec.GetSelector().GetMatchLabels()) > 0 && !hasTargetRefs(p) {
			t.policiesByNS[k.Namespace] = append(t.policiesByNS[k.Namespace], k)
		}
	}
	for _, keys := range t.policiesByNS {
		sortKeys(keys)
	}
	return t
}

func (t *translator) problem(ref model.Ref, field, format string, args ...any) {
	t.problems = append(t.problems, Problem{Ref: ref, Field: field, Message: fmt.Sprintf(format, args...)})
}

func sortKeys(keys []model.Key) {
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Namespace != keys[j].Namespace {
			return keys[i].Namespace < keys[j].Namespace
		}
		return keys[i].Name < keys[j].Name
	})
}

// serviceKey is the resource name of a Service: "<namespace>/<hostname>".
func (t *translator) serviceKey(namespace, name string) string {
	return namespace + "/" + t.mesh.Hostname(namespace, name)
}

func (t *translator) namespaceLabels(ns string) map[string]string {
	if n := t.snap.Namespaces[ns]; n != nil {
		return n.Labels
	}
	return nil
}

func (t *translator) namespaceAnnotations(ns string) map[string]string {
	if n := t.snap.Namespaces[ns]; n != nil {
		return n.Annotations
	}
	return nil
}
