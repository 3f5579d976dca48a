// Package local is the embedded local cluster behind `ambit up`: it plans a
// cluster from manifests (nodes, zones, addresses, which pod runs where) and
// runs it in network namespaces on one Linux machine. Used by cmd/ambit only.
//
// # Lifecycle
//
// [Prepare] loads and validates the manifests and makes the [Plan] without
// touching the system (bad manifests, a container without a command, a bad
// cluster name fail here). [Start] creates the cluster and returns once it is
// ready; [Cluster.Close] tears it down. The process that called Start is the
// cluster's supervisor: it runs the control plane, the node agents and the
// supervision of every process, so `ambit up --detach` runs it in a
// background process (`ambit internal serve`). [Down] removes a cluster
// from any process, including the leftovers of a crashed supervisor.
//
// # Topology (cluster NAME, no link to the host's network namespace)
//
//   - ambit-NAME-net: bridge br0 holding the control plane's address, the
//     last usable address of the pod range (10.244.255.254/16 by default).
//     The control plane runs in the supervisor process with its listeners
//     created inside this namespace: gRPC (push, CA) on :15012, HTTP
//     (/metrics, /debug/*) on :15014.
//   - ambit-NAME-node-NODE: one per node, attached to br0 at the node's
//     gateway (.1 of its /24, e.g. 10.244.1.1/16). The node's ztunnel (the
//     ztunnel binary) runs there: metrics :15020, readiness :15021, admin
//     127.0.0.1:15000. Its sockets in pods come from the pods' namespaces
//     the node agent passes it.
//   - ambit-NAME-pod-NS-POD: one per pod, attached to br0 at the pod's IP
//     with the /16 of the pod range (a flat L2 across nodes) and a default
//     route via its node's gateway. Pods in ambient mode (pod or namespace
//     label istio.io/dataplane-mode=ambient) get the redirection rules
//     (internal/redirect) and are enrolled with their node's agent.
//
// The node agent of each node is a redirect.Agent in the supervisor,
// listening on NODE's socket in the state directory.
//
// Pods outside the mesh reach Service VIPs through their node, which DNATs
// them to endpoints as kube-proxy would (svcproxy.go); pods in the mesh are
// served by their ztunnel.
//
// A Gateway of class istio-waypoint becomes what the waypoint controller
// makes on Kubernetes (see waypoint.go): a Deployment of waypoint pods, not
// enrolled, running the waypoint binary with their node's credential, and
// a Service on 15008 selecting them. Start waits for them to be ready.
//
// # Processes
//
// Every container's command and args run inside the pod's network namespace
// through `ambit internal pod-exec --hosts FILE -- CMD...` ([PodExec]), which
// unshares a mount namespace and bind-mounts the pod's generated hosts file
// over /etc/hosts: Services resolve as svc (same namespace), svc.ns,
// svc.ns.svc and svc.ns.svc.cluster.local. The environment is the
// container's env plus POD_NAME, POD_NAMESPACE, POD_IP, NODE_NAME and the
// Service variables (see [Plan]), PATH starting with the state directory's
// bin/ (links to ambit and ztunnel). A process that exits is restarted with
// exponential backoff (250 ms doubling to 10 s, reset after 10 s of run);
// stopping sends SIGTERM to its process group, SIGKILL after 2 s.
//
// # State directory: /run/ambit/NAME
//
//	state.json            [State]: nodes, pods (IPs, pids, restarts), services
//	control.sock          live changes: apply, delete, label (control.go, live.go)
//	logs/NS_POD.log       output of the pod's containers (and restart notes)
//	logs/ztunnel-NODE.log, logs/controlplane.log
//	nodes/NODE/           agent.sock, token (the node's control-plane credential)
//	pods/NS_POD.hosts     the pod's /etc/hosts
//	ca/, root-cert.pem    the cluster's CA, created per run
//	bin/                  ambit, ztunnel and waypoint, first in the pods' PATH
//
// # Live changes
//
// The supervisor keeps the manifests' objects as the desired configuration.
// A change re-plans it keeping every pod's node and address and every
// Service's VIP, then touches only what differs: see Cluster.reconfigure.
//
// [Down] stops the supervisor (SIGTERM; it tears down), kills the pids the
// state lists and every process whose network namespace is one of the
// cluster's (found under /run/netns by name), deletes those namespaces and
// the state directory. It is idempotent.
package local

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

// TrustDomain is the local cluster's SPIFFE trust domain.
const TrustDomain = "cluster.local"

const (
	bridgeName   = "br0"
	cpGRPCPort   = 15012
	cpHTTPPort   = 15014
	metricsPort  = 15020
	readyPort    = 15021
	startTimeout = 20 * time.Second
)

// Defaults of a cluster with no LocalCluster document.
var (
	DefaultPodCIDR     = netip.MustParsePrefix("10.244.0.0/16")
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	defaultNodes       = []model.LocalNode{
		{Name: "node-a", Region: "local", Zone: "zone-a"},
		{Name: "node-b", Region: "local", Zone: "zone-b"},
		{Name: "node-c", Region: "local", Zone: "zone-c"},
	}
)

// Node is one planned node.
type Node struct {
	Name                  string
	Region, Zone, Subzone string
	// PodCIDR is the node's /24; its .1 is the node's address on the pods' bridge.
	PodCIDR netip.Prefix
	Object  *corev1.Node
}

// Gateway is the node's address on its pods' bridge, their default route.
func (n *Node) Gateway() netip.Addr { return n.PodCIDR.Addr().Next() }

// Plan is a cluster ready to create: every object the control plane will
// see, with addresses and placement decided.
type Plan struct {
	Nodes []*Node
	// PodCIDR holds every node's /24 (the pods' flat L2 network).
	PodCIDR     netip.Prefix
	ServiceCIDR netip.Prefix
	// Services with their clusterIP assigned.
	Services []*corev1.Service
	// Pods: the manifests' Pods and those expanded from Deployments, each
	// with spec.nodeName, status.podIP and the container environment set.
	Pods []*corev1.Pod
	// specs hashes each pod's spec as its manifest wrote it: a pod whose
	// hash changes is replaced, one whose labels alone change is not.
	specs map[model.Key]string
}

// NewPlan decides the cluster for snap. It does not touch the system.
func NewPlan(snap *model.Snapshot) (*Plan, error) { return newPlan(snap, nil, nil) }

// newPlan is NewPlan with pod label overrides (see Prepared.PodLabels) and
// the plan of the running cluster, whose placements and VIPs are kept.
func newPlan(snap *model.Snapshot, podLabels map[model.Key]map[string]*string, prev *Plan) (*Plan, error) {
	spec, err := localClusterSpec(snap)
	if err != nil {
		return nil, err
	}
	p := &Plan{ServiceCIDR: DefaultServiceCIDR, PodCIDR: podCIDROf(spec)}
	if spec.ServiceCIDR != "" {
		p.ServiceCIDR = netip.MustParsePrefix(spec.ServiceCIDR)
	}
	for i, n := range nodesOf(spec) {
		p.Nodes = append(p.Nodes, planNode(n, nthSubnet24(p.PodCIDR, i)))
	}
	if prev != nil && (prev.PodCIDR != p.PodCIDR || prev.ServiceCIDR != p.ServiceCIDR || !sameNodes(prev.Nodes, p.Nodes)) {
		return nil, errors.New("the LocalCluster (nodes, zones, address ranges) of a running cluster cannot change: 'ambit down' and 'ambit up' again")
	}
	if err := p.assignServiceIPs(snap, prev); err != nil {
		return nil, err
	}
	if err := p.placePods(snap, podLabels, prev); err != nil {
		return nil, err
	}
	return p, nil
}

// Apply returns a copy of snap holding the planned nodes, the Services with
// their VIPs and the placed pods: what the control plane is given.
func (p *Plan) Apply(snap *model.Snapshot) *model.Snapshot { return p.apply(snap, nil, nil) }

// apply is Apply with the pods of pending (keys ns/name) not ready yet:
// they are placed (their identities may be issued) but get no traffic; and
// with the pods of serving as well, which still serve until the pending
// ones are ready.
func (p *Plan) apply(snap *model.Snapshot, pending map[string]bool, serving []*corev1.Pod) *model.Snapshot {
	next := snap.Clone()
	origin := model.Origin{File: "local cluster"}
	for _, n := range p.Nodes {
		next.Put(n.Object, origin)
	}
	for _, s := range p.Services {
		next.Put(s, next.Origins[model.Ref{Kind: model.KindService, Namespace: s.Namespace, Name: s.Name}])
	}
	for _, pod := range p.Pods {
		if pending[pod.Namespace+"/"+pod.Name] {
			notReady := *pod
			notReady.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
			pod = &notReady
		}
		next.Put(pod, origin)
	}
	for _, pod := range serving {
		next.Put(pod, origin)
	}
	return next
}

func sameNodes(a, b []*Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Zone != b[i].Zone || a[i].Region != b[i].Region || a[i].Subzone != b[i].Subzone {
			return false
		}
	}
	return true
}

// localClusterSpec is the spec of snap's LocalCluster document, if any.
func localClusterSpec(snap *model.Snapshot) (model.LocalClusterSpec, error) {
	switch len(snap.LocalClusters) {
	case 0:
	case 1:
		for _, lc := range snap.LocalClusters {
			return lc.Spec, nil
		}
	default:
		return model.LocalClusterSpec{}, fmt.Errorf("%d LocalCluster documents; a cluster has one", len(snap.LocalClusters))
	}
	return model.LocalClusterSpec{}, nil
}

func podCIDROf(spec model.LocalClusterSpec) netip.Prefix {
	if spec.PodCIDR != "" {
		return netip.MustParsePrefix(spec.PodCIDR).Masked() // validated by the parser
	}
	return DefaultPodCIDR
}

func nodesOf(spec model.LocalClusterSpec) []model.LocalNode {
	if len(spec.Nodes) == 0 {
		return defaultNodes
	}
	return spec.Nodes
}

// ControlPlaneAddr is the control plane's address on the pods' bridge: the
// last usable address of the pod range.
func (p *Plan) ControlPlaneAddr() netip.Addr { return controlPlaneAddr(p.PodCIDR) }

func controlPlaneAddr(podCIDR netip.Prefix) netip.Addr { return broadcast(podCIDR).Prev() }

// broadcast is the last address of p (IPv4).
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func planNode(n model.LocalNode, cidr netip.Prefix) *Node {
	labels := map[string]string{"kubernetes.io/hostname": n.Name}
	for k, v := range n.Labels {
		labels[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			labels[k] = v
		}
	}
	set("topology.kubernetes.io/region", n.Region)
	set("topology.kubernetes.io/zone", n.Zone)
	set("topology.istio.io/subzone", n.Subzone)
	obj := &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels},
		Spec:       corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}},
	}
	return &Node{Name: n.Name, Region: n.Region, Zone: n.Zone, Subzone: n.Subzone, PodCIDR: cidr, Object: obj}
}

// nthSubnet24 is the i-th /24 of p.
func nthSubnet24(p netip.Prefix, i int) netip.Prefix {
	a := p.Addr().As4()
	base := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8
	base += uint32(i) << 8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), 0}), 24)
}

// assignServiceIPs gives every Service without a clusterIP the next free
// address of the service range, in namespace/name order so VIPs are stable
// from one run to the next. Addresses given in manifests are kept, and so
// are those prev (the running cluster's plan) assigned.
func (p *Plan) assignServiceIPs(snap *model.Snapshot, prev *Plan) error {
	keys := make([]model.Key, 0, len(snap.Services))
	for k := range snap.Services {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	used := map[netip.Addr]model.Key{}
	for _, k := range keys {
		ip := snap.Services[k].Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone {
			continue
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("Service %s: spec.clusterIP %q is not an IP address", k, ip)
		}
		if !p.ServiceCIDR.Contains(a) {
			return fmt.Errorf("Service %s: spec.clusterIP %s is outside the service range %s", k, a, p.ServiceCIDR)
		}
		if other, dup := used[a]; dup {
			return fmt.Errorf("Service %s: spec.clusterIP %s is already used by Service %s", k, a, other)
		}
		used[a] = k
	}
	kept := map[model.Key]string{}
	if prev != nil {
		for _, s := range prev.Services {
			k := model.Key{Namespace: s.Namespace, Name: s.Name}
			cur := snap.Services[k]
			a, err := netip.ParseAddr(s.Spec.ClusterIP)
			if cur == nil || cur.Spec.ClusterIP != "" || err != nil || used[a] != (model.Key{}) {
				continue
			}
			used[a] = k
			kept[k] = a.String()
		}
	}
	// .0 is the network and .1 is kept for a future "kubernetes" Service, as in Kubernetes.
	next := p.ServiceCIDR.Addr().Next().Next()
	for _, k := range keys {
		svc := snap.Services[k].DeepCopy()
		if ip, ok := kept[k]; ok && svc.Spec.Type != corev1.ServiceTypeExternalName {
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = ip, []string{ip}
		}
		if svc.Spec.ClusterIP == "" && svc.Spec.Type != corev1.ServiceTypeExternalName {
			for used[next] != (model.Key{}) {
				next = next.Next()
			}
			if !p.ServiceCIDR.Contains(next) {
				return fmt.Errorf("service range %s is full", p.ServiceCIDR)
			}
			used[next] = k
			svc.Spec.ClusterIP = next.String()
			svc.Spec.ClusterIPs = []string{next.String()}
		}
		p.Services = append(p.Services, svc)
	}
	return nil
}

// placePods expands Deployments into Pods and places every pod: replicas of
// one Deployment spread over zones (the zone with fewest of its replicas
// first), then over the nodes of the zone (fewest pods first), as
// Kubernetes' default topology spreading would. A pod prev placed keeps
// its node and address.
func (p *Plan) placePods(snap *model.Snapshot, podLabels map[model.Key]map[string]*string, prev *Plan) error {
	var pods []*corev1.Pod
	for _, k := range model.SortedKeys(snap.Deployments) {
		pods = append(pods, expandDeployment(snap.Deployments[k])...)
	}
	for _, k := range model.SortedKeys(snap.Pods) {
		pods = append(pods, snap.Pods[k].DeepCopy())
	}
	for _, pod := range pods {
		for l, v := range podLabels[model.Key{Namespace: pod.Namespace, Name: pod.Name}] {
			if pod.Labels == nil {
				pod.Labels = map[string]string{}
			}
			if v == nil {
				delete(pod.Labels, l)
			} else {
				pod.Labels[l] = *v
			}
		}
	}
	nodes := map[string]*Node{}
	for _, n := range p.Nodes {
		nodes[n.Name] = n
	}
	perNode := map[string]int{}
	used := map[netip.Addr]bool{}
	group := map[string]map[string]int{} // owner → zone → replicas
	owner := func(pod *corev1.Pod) map[string]int {
		o := pod.Namespace + "/" + pod.Labels[labelOwner]
		if group[o] == nil {
			group[o] = map[string]int{}
		}
		return group[o]
	}
	place := func(pod *corev1.Pod, node *Node, ip netip.Addr) {
		used[ip] = true
		perNode[node.Name]++
		owner(pod)[node.Zone]++
		pod.Spec.NodeName = node.Name
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP = ip.String()
		pod.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
		pod.Status.HostIP = node.Gateway().String()
	}
	placed := make([]bool, len(pods))
	if prev != nil {
		before := map[model.Key]*corev1.Pod{}
		for _, pod := range prev.Pods {
			before[model.Key{Namespace: pod.Namespace, Name: pod.Name}] = pod
			// Pods leaving may still serve while new ones start: their
			// addresses are not given to new pods in this plan.
			used[netip.MustParseAddr(pod.Status.PodIP)] = true
		}
		for i, pod := range pods {
			old := before[model.Key{Namespace: pod.Namespace, Name: pod.Name}]
			if old == nil || (pod.Spec.NodeName != "" && pod.Spec.NodeName != old.Spec.NodeName) {
				continue
			}
			place(pod, nodes[old.Spec.NodeName], netip.MustParseAddr(old.Status.PodIP))
			placed[i] = true
		}
	}
	for i, pod := range pods {
		if placed[i] {
			continue
		}
		var node *Node
		if want := pod.Spec.NodeName; want != "" {
			if node = nodes[want]; node == nil {
				return fmt.Errorf("Pod %s/%s: spec.nodeName %q is not a node of this cluster", pod.Namespace, pod.Name, want)
			}
		} else {
			node = p.leastLoaded(owner(pod), perNode)
		}
		ip := node.Gateway().Next()
		for used[ip] {
			ip = ip.Next()
		}
		if !node.PodCIDR.Contains(ip) || ip == lastAddr(node.PodCIDR) {
			return fmt.Errorf("node %s has no pod address left for Pod %s/%s", node.Name, pod.Namespace, pod.Name)
		}
		place(pod, node, ip)
	}
	p.Pods = pods
	p.specs = map[model.Key]string{}
	for _, pod := range p.Pods {
		b, _ := json.Marshal(pod.Spec)
		sum := sha256.Sum256(b)
		p.specs[model.Key{Namespace: pod.Namespace, Name: pod.Name}] = hex.EncodeToString(sum[:])
		setEnvironment(pod, p.Services)
	}
	return nil
}

func (p *Plan) leastLoaded(zoneReplicas map[string]int, perNode map[string]int) *Node {
	var best *Node
	for _, n := range p.Nodes {
		if best == nil || zoneReplicas[n.Zone] < zoneReplicas[best.Zone] ||
			(zoneReplicas[n.Zone] == zoneReplicas[best.Zone] && perNode[n.Name] < perNode[best.Name]) {
			best = n
		}
	}
	return best
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	a[3] = 255
	return netip.AddrFrom4(a)
}

// labelOwner groups the replicas of one Deployment for spreading.
const labelOwner = "ambit.dev/deployment"

// expandDeployment makes the Deployment's replicas: named and labelled as a
// ReplicaSet would (name-<template hash>-<suffix>, pod-template-hash), owned
// by that ReplicaSet so telemetry names the Deployment as the workload.
func expandDeployment(d *appsv1.Deployment) []*corev1.Pod {
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	tmpl, _ := json.Marshal(d.Spec.Template)
	sum := sha256.Sum256(tmpl)
	hash := hex.EncodeToString(sum[:])[:10]
	rs := d.Name + "-" + hash
	controller := true
	var out []*corev1.Pod
	for i := range replicas {
		suffix := sha256.Sum256([]byte(rs + "/" + strconv.Itoa(int(i))))
		pod := &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{
				Name:        rs + "-" + hex.EncodeToString(suffix[:])[:5],
				Namespace:   d.Namespace,
				Labels:      map[string]string{"pod-template-hash": hash, labelOwner: d.Name},
				Annotations: d.Spec.Template.Annotations,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, Controller: &controller,
				}},
			},
			Spec: *d.Spec.Template.Spec.DeepCopy(),
		}
		for k, v := range d.Spec.Template.Labels {
			pod.Labels[k] = v
		}
		out = append(out, pod)
	}
	return out
}

// setEnvironment gives every container the variables a kubelet would: the
// Service variables of the pod's namespace, then the container's own env
// with fieldRef values resolved, plus POD_NAME, POD_NAMESPACE, POD_IP and
// NODE_NAME unless the manifest sets them itself.
func setEnvironment(pod *corev1.Pod, services []*corev1.Service) {
	var svcEnv []corev1.EnvVar
	for _, s := range services {
		if s.Namespace != pod.Namespace || s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
			continue
		}
		name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		svcEnv = append(svcEnv,
			corev1.EnvVar{Name: name + "_SERVICE_HOST", Value: s.Spec.ClusterIP},
			corev1.EnvVar{Name: name + "_SERVICE_PORT", Value: strconv.Itoa(int(s.Spec.Ports[0].Port))})
		for _, port := range s.Spec.Ports {
			if port.Name != "" {
				svcEnv = append(svcEnv, corev1.EnvVar{Name: name + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(port.Name, "-", "_")), Value: strconv.Itoa(int(port.Port))})
			}
		}
	}
	field := func(path string) string {
		switch path {
		case "metadata.name":
			return pod.Name
		case "metadata.namespace":
			return pod.Namespace
		case "status.podIP":
			return pod.Status.PodIP
		case "status.hostIP":
			return pod.Status.HostIP
		case "spec.nodeName":
			return pod.Spec.NodeName
		case "spec.serviceAccountName":
			if pod.Spec.ServiceAccountName == "" {
				return "default"
			}
			return pod.Spec.ServiceAccountName
		}
		if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
			return pod.Labels[strings.TrimSuffix(k, "']")]
		}
		if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
			return pod.Annotations[strings.TrimSuffix(k, "']")]
		}
		return ""
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		own := map[string]bool{}
		for _, e := range c.Env {
			own[e.Name] = true
		}
		// The container's own variables win over generated ones of the same name.
		var env []corev1.EnvVar
		for _, e := range svcEnv {
			if !own[e.Name] {
				env = append(env, e)
			}
		}
		for _, e := range []corev1.EnvVar{{Name: "POD_NAME", Value: pod.Name}, {Name: "POD_NAMESPACE", Value: pod.Namespace},
			{Name: "POD_IP", Value: pod.Status.PodIP}, {Name: "NODE_NAME", Value: pod.Spec.NodeName}} {
			if !own[e.Name] {
				env = append(env, e)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				e = corev1.EnvVar{Name: e.Name, Value: field(e.ValueFrom.FieldRef.FieldPath)}
			}
			env = append(env, e)
		}
		c.Env = env
		vars := map[string]string{}
		for _, e := range env {
			vars[e.Name] = e.Value
		}
		for j := range c.Command {
			c.Command[j] = expandVars(c.Command[j], vars)
		}
		for j := range c.Args {
			c.Args[j] = expandVars(c.Args[j], vars)
		}
	}
}

// expandVars replaces $(NAME) in s by the variable's value, as a kubelet
// does in a container's command and args: $$ is a literal $, and a
// reference to an undefined variable is left as written.
func expandVars(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
					i += 2 + end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// podKey is ns/name.
func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }
