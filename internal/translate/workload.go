package translate

import (
	"maps"
	"slices"
	"sort"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

func (t *translator) workloads() map[string]*meshv1.Workload {
	out := make(map[string]*meshv1.Workload, len(t.snap.Pods))
	for k, pod := range t.snap.Pods {
		c, ok := t.reuse(k, pod)
		if ok {
			t.problems = append(t.problems, c.problems...)
		} else {
			before := len(t.problems)
			c = cachedWorkload{pod: pod, node: t.snap.Nodes[pod.Spec.NodeName], w: t.workload(k, pod)}
			// Copied: t.problems is sorted in place once translation ends.
			c.problems = append([]Problem(nil), t.problems[before:]...)
		}
		t.remember(k, c)
		if c.w != nil {
			out[c.w.Uid] = c.w
		}
	}
	return out
}

// WorkloadUID is the resource name of a pod's Workload.
func WorkloadUID(mesh model.MeshConfig, namespace, pod string) string {
	return mesh.ClusterID + "/Pod/" + namespace + "/" + pod
}

// workload translates one pod; pods without an address (not yet scheduled or
// started), finished or terminating pods, and host-network pods (which share
// the node's address and cannot be captured per pod) are not workloads.
func (t *translator) workload(k model.Key, pod *corev1.Pod) *meshv1.Workload {
	if pod.Spec.HostNetwork || pod.DeletionTimestamp != nil {
		return nil
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return nil
	}
	addrs := podAddresses(pod)
	if len(addrs) == 0 {
		return nil
	}
	ref := model.Ref{Kind: model.KindPod, Namespace: k.Namespace, Name: k.Name}
	w := &meshv1.Workload{
		Uid:                   WorkloadUID(t.mesh, k.Namespace, k.Name),
		Name:                  k.Name,
		Namespace:             k.Namespace,
		Addresses:             addrs,
		Node:                  pod.Spec.NodeName,
		ServiceAccount:        serviceAccount(pod),
		TrustDomain:           t.mesh.TrustDomain,
		WorkloadName:          workloadName(pod),
		ClusterId:             t.mesh.ClusterID,
		Locality:              t.nodeLocality(pod.Spec.NodeName),
		Status:                podStatus(pod),
		WaypointGateway:       waypointGatewayOf(pod),
		AuthorizationPolicies: t.selectedPolicies(pod),
	}
	w.CanonicalName, w.CanonicalRevision = canonicalNameRevision(pod.Labels, w.WorkloadName)
	for _, l := range t.priorityLabels {
		if v, ok := pod.Labels[l]; ok {
			if w.Labels == nil {
				w.Labels = map[string]string{}
			}
			w.Labels[l] = v
		}
	}
	if t.inAmbient(pod) {
		w.TunnelProtocol = meshv1.TunnelProtocol_HBONE
		w.Waypoint = t.useWaypoint(ref, pod.Labels, waypointForWorkload)
	}
	w.Services = t.sliceServicesOf(k, t.servicesOf(pod))
	return w
}

// priorityLabels lists the label names any DestinationRule's
// localityLbSetting.failoverPriority ranks by ("name" of "name=value"),
// sorted, leaving out those waypoints derive from the locality.
func priorityLabels(snap *model.Snapshot) []string {
	seen := map[string]bool{}
	add := func(tp *networkingapi.TrafficPolicy) {
		for _, p := range tp.GetLoadBalancer().GetLocalityLbSetting().GetFailoverPriority() {
			name, _, _ := strings.Cut(p, "=")
			switch name {
			case labelTopologyRegion, labelTopologyZone, labelTopologySubzone, "":
			default:
				seen[name] = true
			}
		}
	}
	for _, dr := range snap.DestinationRules {
		add(dr.Spec.GetTrafficPolicy())
		for _, s := range dr.Spec.GetSubsets() {
			add(s.GetTrafficPolicy())
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

func podAddresses(pod *corev1.Pod) []string {
	var out []string
	for _, ip := range pod.Status.PodIPs {
		if ip.IP != "" {
			out = append(out, ip.IP)
		}
	}
	if len(out) == 0 && pod.Status.PodIP != "" {
		out = append(out, pod.Status.PodIP)
	}
	return out
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

// podStatus is UNHEALTHY only when the pod says it is not ready; pods from
// manifests carry no status conditions and count as ready.
func podStatus(pod *corev1.Pod) meshv1.WorkloadStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
			return meshv1.WorkloadStatus_UNHEALTHY
		}
	}
	return meshv1.WorkloadStatus_HEALTHY
}

// waypointGatewayOf names the Gateway a waypoint pod serves, by the label
// Gateway API implementations put on the pods they deploy.
func waypointGatewayOf(pod *corev1.Pod) string {
	if gw := pod.Labels[labelGatewayName]; gw != "" {
		return pod.Namespace + "/" + gw
	}
	return ""
}

// inAmbient: the pod's own istio.io/dataplane-mode wins ("none" opts out),
// else its namespace's.
func (t *translator) inAmbient(pod *corev1.Pod) bool {
	if m, ok := pod.Labels[labelDataplaneMode]; ok {
		return m == dataplaneModeAmbient
	}
	return t.namespaceLabels(pod.Namespace)[labelDataplaneMode] == dataplaneModeAmbient
}

// workloadName is the name of the controller that owns the pod, as Istio
// derives it: a ReplicaSet owner minus its pod-template-hash suffix names the
// Deployment; other owners by their name; an unowned pod by its own name.
func workloadName(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller != nil && !*o.Controller {
			continue
		}
		switch o.Kind {
		case "ReplicaSet":
			if h := pod.Labels[labelPodTemplateHash]; h != "" {
				if name, ok := strings.CutSuffix(o.Name, "-"+h); ok {
					return name
				}
			}
			return o.Name
		case "Job":
			return o.Name
		default:
			return o.Name
		}
	}
	return pod.Name
}

// canonicalNameRevision follows Istio's precedence for the canonical service
// labels used in telemetry.
func canonicalNameRevision(labels map[string]string, workloadName string) (string, string) {
	name := firstNonEmpty(labels[labelCanonicalName], labels[labelAppName], labels["app"], workloadName)
	rev := firstNonEmpty(labels[labelCanonicalRevision], labels[labelAppVersion], labels["version"], "latest")
	return name, rev
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func (t *translator) nodeLocality(nodeName string) *meshv1.Locality {
	node := t.snap.Nodes[nodeName]
	if node == nil {
		return nil
	}
	l := &meshv1.Locality{
		Region:  node.Labels[labelTopologyRegion],
		Zone:    node.Labels[labelTopologyZone],
		Subzone: node.Labels[labelTopologySubzone],
	}
	if l.Region == "" && l.Zone == "" && l.Subzone == "" {
		return nil
	}
	return l
}

// servicesOf lists the Services selecting the pod, with their port mapping.
func (t *translator) servicesOf(pod *corev1.Pod) map[string]*meshv1.PortList {
	var out map[string]*meshv1.PortList
	seen := map[model.Key]bool{}
	for lk, lv := range pod.Labels {
		for _, sk := range t.servicesByLabel[pod.Namespace+"\x00"+lk+"="+lv] {
			if seen[sk] {
				continue
			}
			seen[sk] = true
			svc := t.snap.Services[sk]
			if !selects(svc.Spec.Selector, pod.Labels) {
				continue
			}
			pl := &meshv1.PortList{}
			for _, sp := range svc.Spec.Ports {
				if !isTCP(sp.Protocol) {
					continue
				}
				if tp := resolveTargetPort(pod, sp.TargetPort, sp.Port); tp != 0 {
					pl.Ports = append(pl.Ports, &meshv1.Port{ServicePort: uint32(sp.Port), TargetPort: tp})
				}
			}
			if out == nil {
				out = map[string]*meshv1.PortList{}
			}
			out[t.serviceKey(sk.Namespace, sk.Name)] = pl
		}
	}
	return out
}

func isTCP(p corev1.Protocol) bool { return p == "" || p == corev1.ProtocolTCP }

// resolveTargetPort maps a Service targetPort to the pod's port number: a
// number as is (0 means "same as the service port"), a name through the pod's
// container ports; 0 when a name is not found (that pod does not serve the port).
func resolveTargetPort(pod *corev1.Pod, tp intstr.IntOrString, servicePort int32) uint32 {
	if tp.Type == intstr.String {
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == tp.StrVal {
					return uint32(p.ContainerPort)
				}
			}
		}
		return 0
	}
	if tp.IntVal == 0 {
		return uint32(servicePort)
	}
	return uint32(tp.IntVal)
}

// selectedPolicies lists the selector-scoped AuthorizationPolicies selecting
// the pod: those in its namespace and those in the root namespace (which
// select across the mesh).
func (t *translator) selectedPolicies(pod *corev1.Pod) []string {
	var out []string
	for _, ns := range []string{pod.Namespace, t.mesh.RootNamespace} {
		for _, pk := range t.policiesByNS[ns] {
			p := t.snap.AuthorizationPolicies[pk]
			if selects(p.Spec.GetSelector().GetMatchLabels(), pod.Labels) {
				out = append(out, pk.String())
			}
		}
		if pod.Namespace == t.mesh.RootNamespace {
			break
		}
	}
	sort.Strings(out)
	return out
}
