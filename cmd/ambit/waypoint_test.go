package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWaypointCommands(t *testing.T) {
	code, out, _ := run(t, "waypoint", "generate", "-n", "shop", "--name", "wp", "--for", "all")
	for _, want := range []string{"kind: Gateway", "istio.io/waypoint-for: all", "name: wp", "namespace: shop", "gatewayClassName: istio-waypoint", "protocol: HBONE"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("generate: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	if code, _, _ := run(t, "waypoint", "generate", "--for", "sometimes"); code != 2 {
		t.Errorf("--for sometimes: exit %d, want 2", code)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(`apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop, labels: {istio.io/use-waypoint: wp}}
spec: {selector: {app: echo}, ports: [{name: http, port: 80}]}
`), 0o644)
	if code, out, errOut := run(t, "waypoint", "apply", "-f", dir, "-n", "shop", "--name", "wp"); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	code, out, errOut := run(t, "waypoint", "list", "-f", dir)
	if code != 0 || !strings.Contains(out, "shop") || !strings.Contains(out, "echo.shop.svc.cluster.local") {
		t.Fatalf("list: exit %d:\n%s%s", code, out, errOut)
	}
	if code, _, _ := run(t, "waypoint", "delete", "-f", dir, "-n", "shop", "--name", "wp"); code != 0 {
		t.Fatalf("delete: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "waypoint-shop-wp.yaml")); !os.IsNotExist(err) {
		t.Fatalf("the Gateway file is still there: %v", err)
	}
	if code, _, errOut := run(t, "waypoint", "delete", "-f", dir, "-n", "shop", "--name", "wp"); code == 0 || !strings.Contains(errOut, "no waypoint shop/wp") {
		t.Errorf("deleting twice: exit %d: %s", code, errOut)
	}
	if code, _, _ := run(t, "waypoint", "apply", "-n", "shop"); code != 2 {
		t.Errorf("apply without -f: exit %d, want 2", code)
	}
}
