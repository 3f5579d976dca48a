// Package crdsource says which CRD files of the pinned Gateway API and Istio
// modules Ambit installs, and reads them from the module cache. Used by the
// generator (internal/install/gencrds) and the test that keeps the embedded
// copies current; nothing at run time.
package crdsource

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// File is one CRD file as it will be embedded.
type File struct {
	Name string
	Data []byte
}

// sources are module, file inside it, and name of the embedded copy.
var sources = []struct{ module, path, name string }{
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml", "gateway-api-gatewayclasses.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_gateways.yaml", "gateway-api-gateways.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml", "gateway-api-httproutes.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_grpcroutes.yaml", "gateway-api-grpcroutes.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml", "gateway-api-referencegrants.yaml"},
	{"istio.io/api", "kubernetes/customresourcedefinitions.gen.yaml", "istio.yaml"},
}

// Read returns every CRD file from the module versions the main module requires.
func Read() ([]File, error) {
	dirs := map[string]string{}
	var out []File
	for _, s := range sources {
		dir, ok := dirs[s.module]
		if !ok {
			cmd := exec.Command("go", "mod", "download", "-json", s.module)
			if _, err := cmd.Output(); err != nil {
				return nil, fmt.Errorf("go mod download %s: %w", s.module, err)
			}
			b, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", s.module).Output()
			if err != nil {
				return nil, fmt.Errorf("go list -m %s: %w", s.module, err)
			}
			dir = strings.TrimSpace(string(b))
			dirs[s.module] = dir
		}
		data, err := os.ReadFile(filepath.Join(dir, s.path))
		if err != nil {
			return nil, err
		}
		out = append(out, File{Name: s.name, Data: data})
	}
	return out, nil
}
