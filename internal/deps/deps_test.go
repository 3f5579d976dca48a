// Package deps holds one test: the packages the node proxy (ztunnel) links
// must not pull in Kubernetes, Gateway API or Istio types, Prometheus'
// client, Wasm runtimes or OpenTelemetry — the ztunnel runs on every node
// and must stay small. Add every package cmd/ztunnel imports to light.
package deps

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ambit-mesh/ambit/"

// light lists the packages that must stay light: everything cmd/ztunnel
// links. A package the ztunnel starts to import belongs here.
var light = []string{
	"api/mesh/v1",
	"cmd/ambit-cni",
	"cmd/ztunnel",
	"internal/cni",
	"internal/hbone",
	"internal/identity",
	"internal/netns",
	"internal/pemutil",
	"internal/redirect",
	"internal/routematch",
	"internal/spiffe",
	"internal/telemetry",
	"internal/waypoint",
	"internal/xds",
	"internal/ztunnel",
	"internal/ztunnel/authz",
	"internal/ztunnel/state",
}

var (
	forbiddenPrefixes = []string{"k8s.io/", "sigs.k8s.io/", "istio.io/", "go.opentelemetry.io/", "github.com/tetratelabs/wazero", "github.com/prometheus/"}
	// Heavy parts of Ambit itself: the control plane's model and translation.
	forbiddenOwn = []string{"internal/model", "internal/config", "internal/translate", "internal/controlplane", "internal/push", "internal/ca"}
)

func TestLightPackagesStayLight(t *testing.T) {
	for _, pkg := range light {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", module+pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps: %v\n%s", err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 5 {
				t.Fatalf("go list -deps output looks wrong:\n%s", out)
			}
			for _, d := range deps {
				for _, f := range forbiddenPrefixes {
					if strings.HasPrefix(d, f) {
						t.Errorf("%s depends on %s", pkg, d)
					}
				}
				for _, f := range forbiddenOwn {
					if d == module+f {
						t.Errorf("%s depends on %s", pkg, d)
					}
				}
			}
		})
	}
}
