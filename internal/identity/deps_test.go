package identity

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps this package fit for the node proxy: ztunnel links
// it, and must not carry Kubernetes clients, Istio/Gateway API types, a Wasm
// runtime, tracing SDKs — or the CA's signing code.
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/ambit-mesh/ambit/internal/identity").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"k8s.io/",
		"sigs.k8s.io/",
		"istio.io/",
		"github.com/tetratelabs/wazero",
		"go.opentelemetry.io/",
		"github.com/ambit-mesh/ambit/internal/ca",
		"github.com/ambit-mesh/ambit/internal/model",
		"github.com/ambit-mesh/ambit/internal/controlplane",
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) == 0 {
		t.Fatal("go list -deps printed nothing")
	}
	for _, pkg := range pkgs {
		for _, f := range forbidden {
			// "k8s.io/" matches a domain; a module path matches itself and below.
			if strings.HasPrefix(pkg, f) && (strings.HasSuffix(f, "/") || pkg == f || strings.HasPrefix(pkg, f+"/")) {
				t.Errorf("internal/identity depends on %s (forbidden prefix %s)", pkg, f)
			}
		}
	}
}
