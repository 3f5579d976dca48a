package translate

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

// A Service without a selector gets the pods its EndpointSlices name as
// members, each Service port mapped to the slice port of the same name;
// endpoints that are not pods are reported; a Service with a selector
// ignores slices (its members come from labels).
func TestEndpointSliceMembership(t *testing.T) {
	snap := parse(t, baseMesh+`---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}, {name: admin, port: 9000}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-abc
  namespace: shop
  labels: {kubernetes.io/service-name: legacy}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.244.1.5]
  targetRef: {kind: Pod, name: echo-v1-7d9f-abcde}
- addresses: [192.0.2.10]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-xyz
  namespace: shop
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, port: 7777}]
endpoints:
- addresses: [10.244.1.5]
  targetRef: {kind: Pod, name: echo-v1-7d9f-abcde}
`)
	out := Translate(snap, model.DefaultMeshConfig())
	w := out.Workloads["Kubernetes/Pod/shop/echo-v1-7d9f-abcde"]
	if w == nil {
		t.Fatal("no workload for the pod")
	}
	want := map[string]*meshv1.PortList{
		// From the selector, as without slices.
		"shop/echo.shop.svc.cluster.local": {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 9090, TargetPort: 9090}}},
		// From the slice: http only (admin has no slice port, dns is UDP).
		"shop/legacy.shop.svc.cluster.local": {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}}},
	}
	if diff := cmp.Diff(want, w.Services, protocmp.Transform()); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	var problems []string
	for _, p := range out.Problems {
		problems = append(problems, p.String())
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "EndpointSlice shop/legacy-abc") || !strings.Contains(problems[0], "192.0.2.10") {
		t.Errorf("problems: %q, want one for the endpoint that is not a pod", problems)
	}
}
