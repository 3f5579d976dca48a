package install

import (
	"bytes"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambit-mesh/ambit/internal/install/crdsource"
)

// The embedded CRDs must be those of the module versions in go.mod: a
// dependency bump without `go generate ./internal/install` fails here.
func TestEmbeddedCRDsMatchModules(t *testing.T) {
	want, err := crdsource.Read()
	if err != nil {
		t.Fatal(err)
	}
	got := CRDFiles()
	if len(got) != len(want) {
		t.Fatalf("%d embedded CRD files, want %d: run go generate ./internal/install", len(got), len(want))
	}
	byName := map[string][]byte{}
	for _, f := range got {
		byName[f.Name] = f.Data
	}
	for _, w := range want {
		if !bytes.Equal(byName[w.Name], w.Data) {
			t.Errorf("crds/%s differs from the module's copy: run go generate ./internal/install", w.Name)
		}
	}
	objs, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s: kind %s", o.GetName(), o.GetKind())
		}
		k, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		kinds[k] = true
	}
	for _, k := range []string{"Gateway", "GatewayClass", "HTTPRoute", "GRPCRoute", "AuthorizationPolicy", "PeerAuthentication", "VirtualService", "DestinationRule", "WasmPlugin"} {
		if !kinds[k] {
			t.Errorf("no CRD for %s", k)
		}
	}
}
