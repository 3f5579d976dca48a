package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	extensionsv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

// seedExpectations lists every file in testdata/seeds (the YAML of the
// articles in ../shared/seeds, indentation restored) with the errors it
// must produce, as substrings; nil means it must parse cleanly.
var seedExpectations = map[string][]string{
	"seed000-wasmplugin.yaml": nil,
	"seed001-inference.yaml":  nil,
	// As the article wrote it: "apiVersion networking.istio.io/v1beta1".
	"seed001-as-written.yaml": {
		"document 1: line 3: expected `apiVersion: <group/version>`, found `apiVersion networking.istio.io/v1beta1` (missing colon?)",
		"document 2: line 20: expected `apiVersion: <group/version>`, found `apiVersion networking.istio.io/v1beta1` (missing colon?)",
		"document 3: line 37: expected `apiVersion: <group/version>`, found `apiVersion apps/v1` (missing colon?)",
		"document 4: line 68: expected `apiVersion: <group/version>`, found `apiVersion apps/v1` (missing colon?)",
		"document 5: line 95: expected `apiVersion: <group/version>`, found `apiVersion v1` (missing colon?)",
		"document 6: line 109: expected `apiVersion: <group/version>`, found `apiVersion v1` (missing colon?)",
	},
	// Installation config for istioctl, not a mesh resource.
	"seed000-istiooperator.yaml": {"unsupported kind IstioOperator (apiVersion install.istio.io/v1alpha1): IstioOperator is istioctl installation configuration, not a mesh resource"},
}

func TestSeeds(t *testing.T) {
	files, err := filepath.Glob("testdata/seeds/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no seed files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, ok := seedExpectations[filepath.Base(f)]
			if !ok {
				t.Fatalf("%s is not listed in seedExpectations", f)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Parse(f, data)
			errs := Errors(err)
			if len(errs) != len(want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), err)
			}
			for i, w := range want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %q\nwant it to contain %q", i, errs[i], w)
				}
			}
			if want == nil && len(objs) == 0 {
				t.Errorf("no objects")
			}
		})
	}
}

func TestSeedContents(t *testing.T) {
	s, err := Load("testdata/seeds/seed000-wasmplugin.yaml", "testdata/seeds/seed001-inference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 7 {
		t.Errorf("got %d objects, want 7 (WasmPlugin, VirtualService, DestinationRule, 2 Deployments, 2 Services)", s.Len())
	}
	wp := s.WasmPlugins[key("istio-system", "zonal-routing")]
	if wp == nil || wp.Spec.Url != "file:///opt/filters/zonal-router.wasm" || wp.Spec.Selector.MatchLabels["istio"] != "ztunnel" ||
		wp.Spec.Phase.String() != "AUTHZ" || wp.Spec.PluginConfig.Fields["update_interval"].GetStringValue() != "10s" {
		t.Errorf("WasmPlugin = %+v", wp)
	}
	var _ *extensionsv1alpha1.WasmPlugin = wp
	vs := s.VirtualServices[key("ai-inference", "inference-api-vs")]
	if vs == nil || vs.APIVersion != "networking.istio.io/v1beta1" || len(vs.Spec.Http[0].Route) != 2 || vs.Spec.Http[0].Route[0].Weight != 80 {
		t.Errorf("VirtualService = %+v", vs)
	}
	var _ *networkingv1.VirtualService = vs
	if d := s.Deployments[key("ai-inference", "inference-api-v2")]; d == nil || *d.Spec.Replicas != 3 || d.Spec.Template.Spec.Containers[0].Env[0].Value != "v2" {
		t.Errorf("Deployment = %+v", d)
	}
	if svc := s.Services[key("ai-inference", "inference-api-v1")]; svc == nil || svc.Spec.Ports[0].TargetPort.IntValue() != 5000 {
		t.Errorf("Service = %+v", svc)
	}
}

// TestConformanceManifests parses the Gateway API mesh conformance
// manifests one file at a time (the suite applies them separately, and some
// reuse names across files).
func TestConformanceManifests(t *testing.T) {
	dir := "../../test/conformance/gateway-api-mesh/mesh"
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Parse(f, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Error("no objects")
			}
		})
	}
}

func key(ns, name string) model.Key { return model.Key{Namespace: ns, Name: name} }
