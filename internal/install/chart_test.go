package install_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

const chartDir = "../../deploy/helm/ambit"

// The chart's generated files match what go generate writes now.
func TestChartGenerated(t *testing.T) {
	tmpl, err := install.ChartTemplate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(chartDir, "templates", "ambit.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, tmpl) {
		t.Error("deploy/helm/ambit/templates/ambit.yaml is stale: run go generate ./internal/install")
	}
	for _, f := range install.CRDFiles() {
		got, err := os.ReadFile(filepath.Join(chartDir, "crds", f.Name))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("deploy/helm/ambit/crds/%s is stale (%v): run go generate ./internal/install", f.Name, err)
		}
	}
}

func key(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// `helm template` of the chart renders the objects `ambit install -o yaml`
// prints, for the default values and for others.
func TestHelmTemplateEqualsInstall(t *testing.T) {
	helm, err := kubetest.HelmBinary()
	if err != nil {
		t.Fatal(err)
	}
	custom := install.DefaultOptions()
	custom.Namespace, custom.Image, custom.TrustDomain, custom.ControlPlaneReplicas = "mesh", "registry.example/ambit:v9", "example.org", 3
	custom.CNIBinDir, custom.CNIConfDir = "/var/lib/cni/bin", "/etc/kubernetes/cni/net.d"
	for name, tc := range map[string]struct {
		o    install.Options
		args []string
	}{
		"defaults": {install.DefaultOptions(), nil},
		"custom": {custom, []string{"--set", "image=registry.example/ambit:v9,trustDomain=example.org,controlPlane.replicas=3," +
			"cni.binDir=/var/lib/cni/bin,cni.confDir=/etc/kubernetes/cni/net.d"}},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"template", "ambit", chartDir, "--namespace", tc.o.Namespace, "--include-crds"}, tc.args...)
			out, err := exec.Command(helm, args...).Output()
			if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			fromHelm, err := kube.DecodeManifests("helm template", out)
			if err != nil {
				t.Fatal(err)
			}
			want, err := install.Render(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			byKey := map[string]*unstructured.Unstructured{}
			for _, o := range fromHelm {
				byKey[key(o)] = o
			}
			for _, w := range want {
				if w.GetKind() == "Namespace" {
					continue // helm install --create-namespace
				}
				h := byKey[key(w)]
				if h == nil {
					t.Errorf("helm does not render %s", key(w))
					continue
				}
				delete(byKey, key(w))
				// Through YAML both ways, so numbers and empty fields compare alike.
				wy, _ := kube.DecodeManifests("want", mustYAML(t, w))
				if !reflect.DeepEqual(wy[0].Object, h.Object) {
					t.Errorf("%s differs:\n helm: %v\n want: %v", key(w), h.Object, wy[0].Object)
				}
			}
			for k := range byKey {
				t.Errorf("helm renders %s, which install does not", k)
			}
		})
	}
}

func mustYAML(t *testing.T, o *unstructured.Unstructured) []byte {
	t.Helper()
	b, err := yaml.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
