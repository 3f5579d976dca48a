package translate

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambit-mesh/ambit/internal/model"
)

// Each step changes one kind of object a Workload depends on; after every
// step the incremental Translator must produce exactly what a fresh
// translation does, and reuse the Workloads the change cannot affect.
func TestTranslatorMatchesFreshTranslation(t *testing.T) {
	base := parse(t, baseMesh+`---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Namespace
metadata:
  name: other
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: bystander
  namespace: other
  labels:
    app: bystander
spec:
  nodeName: node-b
  containers: [{name: app, image: app}]
status:
  podIP: 10.244.2.2
`)
	more := parse(t, `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-1
  namespace: shop
  labels: {kubernetes.io/service-name: legacy}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.244.1.5]
  targetRef: {kind: Pod, name: echo-v1-7d9f-abcde}
---
apiVersion: v1
kind: Service
metadata:
  name: echo-v1
  namespace: shop
spec:
  selector:
    version: v1
  ports:
  - port: 80
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: only-echo
  namespace: shop
spec:
  selector:
    matchLabels:
      app: echo
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: root-v1
  namespace: istio-system
spec:
  selector:
    matchLabels:
      version: v1
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
  labels:
    istio.io/waypoint-for: all
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/zone: zone-z
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: by-app, namespace: other}
spec:
  host: bystander.other.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failoverPriority: [topology.kubernetes.io/zone, app]
`)
	const echo, bystander = "Kubernetes/Pod/shop/echo-v1-7d9f-abcde", "Kubernetes/Pod/other/bystander"
	put := func(s *model.Snapshot, obj any) *model.Snapshot {
		next := s.Clone()
		if err := next.Put(obj, model.Origin{File: "step"}); err != nil {
			t.Fatal(err)
		}
		return next
	}
	k := func(ns, name string) model.Key { return model.Key{Namespace: ns, Name: name} }
	steps := []struct {
		name          string
		change        func(*model.Snapshot) *model.Snapshot
		echoReused    bool
		bystanderKept bool
	}{
		{"nothing", func(s *model.Snapshot) *model.Snapshot { return s.Clone() }, true, true},
		{"pod changed", func(s *model.Snapshot) *model.Snapshot {
			p := s.Pods[k("shop", "echo-v1-7d9f-abcde")].DeepCopy()
			p.Status.PodIP = "10.244.1.77"
			return put(s, p)
		}, false, true},
		{"service added in namespace", func(s *model.Snapshot) *model.Snapshot { return put(s, more.Services[k("shop", "echo-v1")]) }, false, true},
		{"endpoint slice in namespace", func(s *model.Snapshot) *model.Snapshot {
			return put(s, more.EndpointSlices[k("shop", "legacy-1")])
		}, false, true},
		{"selector policy in namespace", func(s *model.Snapshot) *model.Snapshot {
			return put(s, more.AuthorizationPolicies[k("shop", "only-echo")])
		}, false, true},
		{"root namespace policy", func(s *model.Snapshot) *model.Snapshot {
			return put(s, more.AuthorizationPolicies[k("istio-system", "root-v1")])
		}, false, false},
		{"namespace labels", func(s *model.Snapshot) *model.Snapshot {
			ns := s.Namespaces["shop"].DeepCopy()
			ns.Labels = map[string]string{"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}
			return put(s, ns)
		}, false, true},
		{"gateway appears", func(s *model.Snapshot) *model.Snapshot { return put(s, more.Gateways[k("shop", "waypoint")]) }, false, false},
		{"node moved zone", func(s *model.Snapshot) *model.Snapshot { return put(s, more.Nodes["node-a"]) }, false, true},
		// Workloads now carry their "app" label, and only that.
		{"failoverPriority names a label", func(s *model.Snapshot) *model.Snapshot {
			return put(s, more.DestinationRules[k("other", "by-app")])
		}, false, false},
		{"pod deleted", func(s *model.Snapshot) *model.Snapshot {
			next := s.Clone()
			next.Delete(model.Ref{Kind: model.KindPod, Namespace: "shop", Name: "echo-v1-7d9f-abcde"})
			return next
		}, false, true},
	}
	tr := NewTranslator(model.DefaultMeshConfig())
	snap := base
	prev := tr.Translate(snap)
	for _, st := range steps {
		snap = st.change(snap)
		got := tr.Translate(snap)
		want := Translate(snap, model.DefaultMeshConfig())
		for typ, res := range want.Resources() {
			gotRes := got.Resources()[typ]
			if len(gotRes) != len(res) {
				t.Fatalf("%s: %s: %d resources, fresh translation has %d", st.name, typ, len(gotRes), len(res))
			}
			for name, m := range res {
				if !proto.Equal(m, gotRes[name]) {
					t.Errorf("%s: %s %s differs from a fresh translation:\n got %v\nwant %v", st.name, typ, name, gotRes[name], m)
				}
			}
		}
		if len(got.Problems) != len(want.Problems) {
			t.Errorf("%s: problems %v, fresh %v", st.name, got.Problems, want.Problems)
		}
		if w := got.Workloads[echo]; w != nil && (w == prev.Workloads[echo]) != st.echoReused {
			t.Errorf("%s: echo workload reused = %v, want %v", st.name, !st.echoReused, st.echoReused)
		}
		if l := got.Workloads[bystander].GetLabels(); len(snap.DestinationRules) > 0 != (len(l) == 1 && l["app"] == "bystander") {
			t.Errorf("%s: bystander's labels %v", st.name, l)
		}
		if (got.Workloads[bystander] == prev.Workloads[bystander]) != st.bystanderKept {
			t.Errorf("%s: bystander reused = %v, want %v", st.name, !st.bystanderKept, st.bystanderKept)
		}
		prev = got
	}
}
