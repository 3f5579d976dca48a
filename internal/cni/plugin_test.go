package cni_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// buildPlugin builds cmd/ambit-cni into a new directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/ambit-mesh/ambit/cmd/ambit-cni").CombinedOutput(); err != nil {
		t.Fatalf("build ambit-cni: %v\n%s", err, out)
	}
	return dir
}

// The plugin binary as a runtime drives it, for what needs no pod network:
// VERSION, the chained plugin's errors, and calls for containers that are
// not Kubernetes pods, which pass the previous result on without asking the
// node agent (whose socket here does not exist). The ADD/CHECK/DEL of pods
// with real network namespaces and a node agent are in internal/nodeagent's
// and test/kube's tests.
func TestPluginProtocol(t *testing.T) {
	binDir := buildPlugin(t)
	plugin := filepath.Join(binDir, "ambit-cni")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{}}
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), exec)
	missingAgent := filepath.Join(t.TempDir(), "no-agent.sock")

	// VERSION: the spec versions a runtime may use, 1.0.0 among them.
	vi, err := cniConf.GetVersionInfo(ctx, "ambit-cni")
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	if !slices.Contains(vi.SupportedVersions(), "1.0.0") {
		t.Errorf("VERSION: supports %v, want 1.0.0 among them", vi.SupportedVersions())
	}

	prev := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "eth0", Sandbox: "/var/run/netns/x"}}}
	ipc, err := types.ParseCIDR("10.250.1.5/24")
	if err != nil {
		t.Fatal(err)
	}
	prev.IPs = []*current.IPConfig{{Interface: current.Int(0), Address: *ipc}}
	conf := func(withPrev bool) []byte {
		m := map[string]any{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ambit-cni", "agentSocket": missingAgent}
		if withPrev {
			m["prevResult"] = prev
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	args := func(cmd, cniArgs string) *invoke.Args {
		return &invoke.Args{Command: cmd, ContainerID: "c1", NetNS: "/var/run/netns/x", IfName: "eth0", PluginArgsStr: cniArgs, Path: binDir}
	}
	k8s := "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u1"

	// Not a Kubernetes pod: the previous result comes back unchanged, and
	// DEL and CHECK succeed, all without the node agent.
	r, err := invoke.ExecPluginWithResult(ctx, plugin, conf(true), args("ADD", "IgnoreUnknown=1"), exec)
	if err != nil {
		t.Fatalf("ADD of a non-Kubernetes container: %v", err)
	}
	got, err := current.NewResultFromResult(r)
	if err != nil || len(got.IPs) != 1 || got.IPs[0].Address.String() != "10.250.1.5/24" || len(got.Interfaces) != 1 {
		t.Errorf("ADD did not pass the previous result on: %+v, %v", got, err)
	}
	for _, cmd := range []string{"CHECK", "DEL"} {
		if err := invoke.ExecPluginWithoutResult(ctx, plugin, conf(true), args(cmd, "IgnoreUnknown=1"), exec); err != nil {
			t.Errorf("%s of a non-Kubernetes container: %v", cmd, err)
		}
	}
	// DEL of a pod while no node agent runs succeeds: the runtime must be
	// able to tear pods down (the agent releases them when it starts).
	if err := invoke.ExecPluginWithoutResult(ctx, plugin, conf(true), args("DEL", k8s), exec); err != nil {
		t.Errorf("DEL without a node agent: %v", err)
	}

	// STATUS (CNI 1.1) without a node agent: "plugin not available" (50),
	// so the runtime holds off creating pods on this node.
	status := []byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"ambit-cni","agentSocket":"` + missingAgent + `"}`)
	err = invoke.ExecPluginWithoutResult(ctx, plugin, status, &invoke.Args{Command: "STATUS", Path: binDir}, exec)
	if e, ok := err.(*types.Error); !ok || e.Code != 50 || !strings.Contains(e.Msg, "node agent not available") {
		t.Errorf("STATUS without a node agent: %v", err)
	}

	// Errors a runtime reports to the user, each saying what is wrong.
	for _, tc := range []struct {
		name, cmd, cniArgs string
		stdin              []byte
		want               string
	}{
		{"not chained", "ADD", k8s, conf(false), "chained plugin: it must follow the plugin that sets up the pod's network"},
		{"CHECK not chained", "CHECK", k8s, conf(false), "chained plugin"},
		{"bad configuration", "ADD", k8s, []byte(`{"cniVersion":"1.0.0","name":"n","type":"ambit-cni","timeoutSeconds":"soon"}`), "bad network configuration"},
		{"bad CNI_ARGS", "ADD", "K8S_POD_NAME", conf(true), "CNI_ARGS"},
		{"no node agent", "ADD", k8s, conf(true), "ambit-cni: ADD shop/web-0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := invoke.ExecPluginWithoutResult(ctx, plugin, tc.stdin, args(tc.cmd, tc.cniArgs), exec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if _, ok := err.(*types.Error); !ok {
				t.Errorf("error is %T, not the spec's JSON error on stdout", err)
			}
		})
	}
}
