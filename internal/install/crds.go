package install

import (
	"embed"
	"io/fs"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambit-mesh/ambit/internal/kube"
)

//go:generate go run ./gencrds crds
//go:generate go run ./genchart ../../deploy/helm/ambit

//go:embed crds/*.yaml
var crdFS embed.FS

// CRDFile is one embedded CRD manifest.
type CRDFile struct {
	Name string
	Data []byte
}

// CRDFiles returns the embedded CRD manifests (Gateway API standard
// channel and Istio, copied from the pinned modules), by file name.
func CRDFiles() []CRDFile {
	entries, _ := fs.ReadDir(crdFS, "crds") // sorted by name
	out := make([]CRDFile, 0, len(entries))
	for _, e := range entries {
		b, _ := crdFS.ReadFile("crds/" + e.Name())
		out = append(out, CRDFile{Name: e.Name(), Data: b})
	}
	return out
}

// CRDs returns every embedded CustomResourceDefinition as an object.
func CRDs() ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, f := range CRDFiles() {
		objs, err := kube.DecodeManifests(f.Name, f.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}
