package local

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
)

const quickstart = `
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: demo
spec:
  selector:
    app: echo
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-v1
  namespace: demo
spec:
  replicas: 3
  selector:
    matchLabels: {app: echo, version: v1}
  template:
    metadata:
      labels: {app: echo, version: v1}
    spec:
      containers:
      - name: echo
        command: ["ambit", "app", "echo"]
        env:
        - name: SERVICE_VERSION
          value: v1
        - name: MY_NODE
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: ECHO_SERVICE_HOST
          value: overridden
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: demo
spec:
  nodeName: node-b
  containers:
  - name: client
    command: ["sleep", "infinity"]
`

func plan(t *testing.T, yaml string) (*Plan, *model.Snapshot) {
	t.Helper()
	snap, err := config.ParseSnapshot("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(snap)
	if err != nil {
		t.Fatal(err)
	}
	return p, snap
}

func TestPlanDefaults(t *testing.T) {
	p, _ := plan(t, quickstart)
	if len(p.Nodes) != 3 || p.Nodes[1].Zone != "zone-b" || p.Nodes[2].PodCIDR.String() != "10.244.2.0/24" ||
		p.Nodes[0].Object.Labels["topology.kubernetes.io/region"] != "local" {
		t.Fatalf("nodes: %+v", p.Nodes)
	}
	if vip := p.Services[0].Spec.ClusterIP; vip != "10.96.0.2" {
		t.Errorf("service VIP %s, want the first free address 10.96.0.2", vip)
	}
	zones := map[string]int{}
	ips := map[string]bool{}
	var client *corev1.Pod
	for _, pod := range p.Pods {
		if ips[pod.Status.PodIP] {
			t.Errorf("IP %s used twice", pod.Status.PodIP)
		}
		ips[pod.Status.PodIP] = true
		if pod.Name == "client" {
			client = pod
			continue
		}
		for _, n := range p.Nodes {
			if n.Name == pod.Spec.NodeName {
				zones[n.Zone]++
				if !n.PodCIDR.Contains(mustAddr(t, pod.Status.PodIP)) {
					t.Errorf("pod %s IP %s outside its node's range %s", pod.Name, pod.Status.PodIP, n.PodCIDR)
				}
			}
		}
		if !strings.HasPrefix(pod.Name, "echo-v1-") || pod.Labels["pod-template-hash"] == "" || pod.OwnerReferences[0].Kind != "ReplicaSet" {
			t.Errorf("replica naming/ownership: %s %v %v", pod.Name, pod.Labels, pod.OwnerReferences)
		}
		env := map[string]string{}
		for _, e := range pod.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
		want := map[string]string{"POD_NAME": pod.Name, "POD_NAMESPACE": "demo", "POD_IP": pod.Status.PodIP, "NODE_NAME": pod.Spec.NodeName,
			"MY_NODE": pod.Spec.NodeName, "SERVICE_VERSION": "v1", "ECHO_SERVICE_HOST": "overridden", "ECHO_SERVICE_PORT": "80", "ECHO_SERVICE_PORT_HTTP": "80"}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("pod %s env %s = %q, want %q", pod.Name, k, env[k], v)
			}
		}
	}
	if len(zones) != 3 {
		t.Errorf("3 replicas landed in zones %v, want one per zone", zones)
	}
	if client == nil || client.Spec.NodeName != "node-b" || !strings.HasPrefix(client.Status.PodIP, "10.244.1.") {
		t.Errorf("pinned pod: %+v", client)
	}
}

// The plan feeds the control plane: its pods must translate into mesh
// workloads with the Deployment as workload name and the node's zone.
func TestPlanTranslates(t *testing.T) {
	p, snap := plan(t, quickstart)
	out := translate.Translate(p.Apply(snap), model.DefaultMeshConfig())
	n := 0
	for _, w := range out.Workloads {
		if w.WorkloadName == "echo-v1" {
			n++
			if w.Locality.GetZone() == "" || len(w.Services) != 1 {
				t.Errorf("workload %s: zone %q, services %v", w.Name, w.Locality.GetZone(), w.Services)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d echo-v1 workloads, want 3", n)
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: node-z\n  containers: [{name: c}]\n", `spec.nodeName "node-z" is not a node`},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 192.168.1.1\n  ports: [{port: 80}]\n", "outside the service range 10.96.0.0/16"},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 10.96.0.9\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  clusterIP: 10.96.0.9\n  ports: [{port: 80}]\n", "already used by Service default/a"},
		{"apiVersion: ambit.dev/v1alpha1\nkind: LocalCluster\nmetadata: {name: x}\nspec:\n  podCIDR: 10.244.0.0/24\n  nodes: [{name: a}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 300\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {containers: [{name: c}]}\n", "node a has no pod address left"},
	}
	for _, tt := range tests {
		snap, err := config.ParseSnapshot("t.yaml", []byte(tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewPlan(snap); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err %v, want %q", err, tt.want)
		}
	}
}

func TestLocalClusterDocument(t *testing.T) {
	p, _ := plan(t, "apiVersion: ambit.dev/v1alpha1\nkind: LocalCluster\nmetadata: {name: x}\nspec:\n  podCIDR: 10.10.0.0/16\n  serviceCIDR: 10.20.0.0/24\n  nodes:\n  - {name: east-1, region: east, zone: e1, subzone: rack1}\n  - {name: west-1, region: west, zone: w1}\n")
	if len(p.Nodes) != 2 || p.Nodes[1].PodCIDR.String() != "10.10.1.0/24" || p.Nodes[0].Object.Labels["topology.istio.io/subzone"] != "rack1" || p.ServiceCIDR.String() != "10.20.0.0/24" {
		t.Errorf("plan: %+v", p.Nodes)
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
