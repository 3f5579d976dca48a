package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// `ambit install --dry-run` against a real API server: every manifest is
// accepted by server-side dry run, nothing is created; with -o yaml the
// manifests are printed too.
func TestInstallDryRunCommand(t *testing.T) {
	c := kubetest.Start(t)
	var out, errb bytes.Buffer
	old := cli.Stdout
	cli.Stdout = &out
	t.Cleanup(func() { cli.Stdout = old })
	code := cli.Main(context.Background(), rootCommand(), []string{"install", "--dry-run", "--kubeconfig", c.Kubeconfig}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"CustomResourceDefinitions (Gateway API, Istio) (server dry run)", "DaemonSet ambit-system/ambit-node-agent (server dry run)", "Deployment ambit-system/ambit-controlplane (server dry run)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	// --dry-run -o yaml: the manifests on stdout, each also checked by the
	// API server (progress on stderr).
	if code := cli.Main(context.Background(), rootCommand(), []string{"install", "--dry-run", "-o", "yaml", "--skip-crds", "--kubeconfig", c.Kubeconfig}, &out, &errb); code != 0 {
		t.Fatalf("--dry-run -o yaml: exit %d: %s", code, errb.String())
	}
	docs := strings.Split(out.String(), "---\n")
	kinds := map[string]int{}
	for _, d := range docs[1:] {
		var m struct{ Kind string }
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		kinds[m.Kind]++
	}
	if kinds["DaemonSet"] != 2 || kinds["Deployment"] != 1 || kinds["CustomResourceDefinition"] != 0 {
		t.Errorf("--dry-run -o yaml --skip-crds kinds: %v", kinds)
	}
}
