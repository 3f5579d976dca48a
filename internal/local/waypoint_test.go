package local

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
)

const waypointManifests = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop, annotations: {ambit.dev/replicas: zones}}
spec:
  gatewayClassName: istio-waypoint
  infrastructure: {labels: {team: shop}}
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80}]
`

// A waypoint Gateway becomes a Deployment (one replica per zone here) and a
// Service on 15008, which translation resolves the namespace's
// istio.io/use-waypoint to.
func TestWaypointSynthesized(t *testing.T) {
	prep := mustPrepare(t, "wp1", waypointManifests)
	var zones []string
	for _, pod := range prep.Plan.Pods {
		if !isWaypointPod(pod) {
			t.Fatalf("unexpected pod %s", pod.Name)
		}
		if pod.Spec.ServiceAccountName != "wp" || pod.Labels["istio.io/dataplane-mode"] != "none" || pod.Labels["team"] != "shop" {
			t.Errorf("waypoint pod %s: service account %q, labels %v", pod.Name, pod.Spec.ServiceAccountName, pod.Labels)
		}
		for _, n := range prep.Plan.Nodes {
			if n.Name == pod.Spec.NodeName {
				zones = append(zones, n.Zone)
			}
		}
		cmd := strings.Join(pod.Spec.Containers[0].Command, " ")
		wantToken := filepath.Join(StateDir("wp1"), "nodes", pod.Spec.NodeName, "token")
		if !strings.HasPrefix(cmd, "waypoint --node "+pod.Spec.NodeName+" --control-plane 10.244.255.254:15012 --token-file "+wantToken) {
			t.Errorf("command: %s", cmd)
		}
	}
	slices.Sort(zones)
	if !slices.Equal(zones, []string{"zone-a", "zone-b", "zone-c"}) {
		t.Errorf("replicas in zones %v, want one per zone", zones)
	}
	out := translate.Translate(prep.Plan.Apply(prep.Snapshot), model.DefaultMeshConfig())
	svc := out.Services["shop/echo.shop.svc.cluster.local"]
	if svc.GetWaypoint().GetService() != "shop/wp.shop.svc.cluster.local" {
		t.Fatalf("echo's waypoint: %v (problems %v)", svc.GetWaypoint(), out.Problems)
	}
	wps := out.Services["shop/wp.shop.svc.cluster.local"]
	if len(wps.GetAddresses()) == 0 || len(wps.GetPorts()) != 1 || wps.GetPorts()[0].GetPort() != 15008 {
		t.Errorf("waypoint Service: %v", wps)
	}
	n := 0
	for _, w := range out.Workloads {
		if w.GetWaypointGateway() == "shop/wp" {
			n++
			if w.GetTunnelProtocol().String() == "HBONE" || w.GetServices()["shop/wp.shop.svc.cluster.local"] == nil {
				t.Errorf("waypoint workload %s: tunnel %v, services %v", w.GetName(), w.GetTunnelProtocol(), w.GetServices())
			}
		}
	}
	if n != 3 {
		t.Errorf("%d waypoint workloads, want 3", n)
	}
}

func TestWaypointErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{strings.Replace(waypointManifests, "ambit.dev/replicas: zones", "ambit.dev/replicas: lots", 1), `Gateway shop/wp: annotation ambit.dev/replicas: "lots"`},
		{waypointManifests + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: wp, namespace: shop}\nspec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: c, command: [x]}]}\n",
			"would replace the Deployment of the same name"},
	} {
		if _, err := Prepare("wp1", []string{writeYAML(t, tt.yaml)}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err %v, want %q", err, tt.want)
		}
	}
}

func writeYAML(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustPrepare(t *testing.T, name, yaml string) *Prepared {
	t.Helper()
	prep, err := Prepare(name, []string{writeYAML(t, yaml)})
	if err != nil {
		t.Fatal(err)
	}
	return prep
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "x", "B": ""}
	for in, want := range map[string]string{"$(A)/$(B)": "x/", "$$(A)": "$(A)", "$(C)": "$(C)", "$(A": "$(A", "a$": "a$", "$A": "$A"} {
		if got := expandVars(in, vars); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}
