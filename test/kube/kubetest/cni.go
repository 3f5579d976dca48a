//go:build linux

package kubetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// NetnsExec runs CNI plugins for libcni inside a namespace the test made
// (the "node"), as a runtime on that node would: the bridge the main
// plugin creates lives there, never in the host's namespace.
type NetnsExec struct {
	invoke.RawExec
	version.PluginDecoder
	NS *netns.NS
}

// ExecPlugin implements invoke.Exec.
func (e *NetnsExec) ExecPlugin(ctx context.Context, plugin string, stdin []byte, env []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, plugin)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, bytes.NewReader(stdin), &stdout, &stderr
	if err := netns.RunCmd(e.NS, cmd); err != nil {
		// A plugin's error is JSON on stdout (CNI spec).
		var perr types.Error
		if json.Unmarshal(stdout.Bytes(), &perr) == nil && perr.Msg != "" {
			return nil, &perr
		}
		return nil, fmt.Errorf("%s: %v: %s%s", filepath.Base(plugin), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}
