package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

func execCommand() *cli.Command {
	var name, namespace string
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "ambit", "cluster name")
		fs.StringVar(&namespace, "n", "", "namespace of the pod (default: any namespace, if unambiguous)")
	}}
	return &cli.Command{
		Name:  "exec",
		Usage: "[--name NAME] [-n NAMESPACE] POD|deploy/NAME -- CMD [ARG...]",
		Short: "Run a command inside a pod of a local cluster (root)",
		Long: `Run CMD inside a pod of the local cluster: in its network namespace (so its
traffic goes through the pod's ztunnel when the pod is in the mesh), with
the pod's /etc/hosts (Service names resolve), its environment, and stdio
attached. The exit code is CMD's. The cluster's bin directory (ambit,
ztunnel) is first in $PATH.`,
		Flags: lf.Flags,
		Run: func(ctx context.Context, args []string) error {
			pos, rest, err := lf.interspersed(args)
			if err != nil {
				return cli.Usagef("%v (put the command after --)", err)
			}
			if rest == nil && len(pos) > 1 {
				rest, pos = pos[1:], pos[:1]
			}
			if len(pos) != 1 {
				return cli.Usagef("want POD|deploy/NAME -- CMD [ARG...]")
			}
			ref := pos[0]
			if len(rest) == 0 {
				return cli.Usagef("no command given: ambit exec POD -- CMD [ARG...]")
			}
			if err := needRoot(); err != nil {
				return err
			}
			st, err := local.LoadState(name)
			if err != nil {
				return err
			}
			if !st.Ready {
				return fmt.Errorf("cluster %q is still starting (or failed to start): try again in a moment", name)
			}
			pod, err := st.FindPod(namespace, ref)
			if err != nil {
				return err
			}
			code, err := runInPod(pod, rest)
			if err != nil {
				return err
			}
			if code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}
