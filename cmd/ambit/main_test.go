package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/internal/cli"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	old := cli.Stdout
	cli.Stdout = &out
	defer func() { cli.Stdout = old }()
	code = cli.Main(context.Background(), rootCommand(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// Every command, however deep, answers --help with its usage and exit 0.
func TestEveryCommandHasHelp(t *testing.T) {
	var walk func(path []string, c *cli.Command)
	walk = func(path []string, c *cli.Command) {
		t.Run(strings.Join(path, " "), func(t *testing.T) {
			code, out, _ := run(t, append(path[1:], "--help")...)
			if code != 0 || !strings.Contains(out, "Usage:\n  "+strings.Join(path, " ")) {
				t.Errorf("exit %d, output:\n%s", code, out)
			}
		})
		for _, s := range c.Subcommands {
			walk(append(append([]string{}, path...), s.Name), s)
		}
	}
	walk([]string{"ambit"}, rootCommand())
}

// Helpers ambit runs itself are left out of the command list.
func TestInternalIsHidden(t *testing.T) {
	_, out, _ := run(t, "--help")
	if strings.Contains(out, "internal") || !strings.Contains(out, "apply") {
		t.Errorf("ambit --help:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"analyze"}, "no manifests given"},
		{[]string{"controlplane"}, "no manifests given"},
		{[]string{"controlplane", "node-token"}, "want exactly one node name"},
		{[]string{"analyze", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"apply"}, "no manifests given"},
		{[]string{"delete", "--name", "x"}, "no manifests given"},
		{[]string{"label", "namespace", "demo"}, "at least one KEY=VALUE or KEY-"},
		{[]string{"label", "namespace", "demo", "novalue"}, `label "novalue": want KEY=VALUE or KEY-`},
	}
	for _, tt := range tests {
		code, _, errOut := run(t, tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
}

func TestAnalyze(t *testing.T) {
	seeds := "../../internal/config/testdata/seeds/seed001-inference.yaml"
	code, out, errOut := run(t, "analyze", "-f", seeds)
	if code != 0 || !strings.Contains(out, "services") {
		t.Fatalf("analyze %s: exit %d\n%s%s", seeds, code, out, errOut)
	}

	broken := filepath.Join(t.TempDir(), "routes.yaml")
	os.WriteFile(broken, []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews}
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: -1}
`), 0o644)
	code, _, errOut = run(t, "analyze", "-f", broken)
	if code != 1 || !strings.Contains(errOut, "routes.yaml: document 1") || !strings.Contains(errOut, "HTTPRoute default/reviews: spec.rules[0].backendRefs[0].weight") {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

// The examples are what users start from: they must analyze without a warning.
func TestExamplesAnalyzeCleanly(t *testing.T) {
	for _, ex := range []string{"quickstart", "inference-canary"} {
		code, out, errOut := run(t, "analyze", "-f", "../../examples/"+ex)
		if code != 0 || strings.Contains(out, "warning:") || !strings.Contains(out, "; 0 warnings") {
			t.Errorf("%s: exit %d\n%s%s", ex, code, out, errOut)
		}
	}
}

func TestNodeTokenIsStable(t *testing.T) {
	dir := t.TempDir()
	_, a, _ := run(t, "controlplane", "node-token", "--ca-dir", dir, "node-a")
	_, again, _ := run(t, "controlplane", "node-token", "--ca-dir", dir, "node-a")
	_, b, _ := run(t, "controlplane", "node-token", "--ca-dir", dir, "node-b")
	if a == "" || a != again || a == b {
		t.Errorf("tokens: a=%q again=%q b=%q", a, again, b)
	}
}
