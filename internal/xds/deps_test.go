package xds

import (
	"os/exec"
	"strings"
	"testing"
)

// The node proxy links this package: it must not pull in Kubernetes, Istio,
// Prometheus, Wasm runtimes or OpenTelemetry.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbiddenPrefixes := []string{"k8s.io/", "sigs.k8s.io/", "istio.io/", "go.opentelemetry.io/"}
	forbiddenParts := []string{"prometheus", "wazero", "opentelemetry"}
	pkgs := strings.Fields(string(out))
	sawGRPC := false
	for _, pkg := range pkgs {
		if pkg == "google.golang.org/grpc" {
			sawGRPC = true
		}
		for _, f := range forbiddenPrefixes {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("internal/xds depends on %s (forbidden: %s...)", pkg, f)
			}
		}
		for _, f := range forbiddenParts {
			if strings.Contains(pkg, f) {
				t.Errorf("internal/xds depends on %s (forbidden: *%s*)", pkg, f)
			}
		}
	}
	if !sawGRPC {
		t.Fatalf("go list -deps output looks wrong (no google.golang.org/grpc):\n%s", out)
	}
}
