package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

func labelCommand() *cli.Command {
	var name, namespace string
	var overwrite bool
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "ambit", "cluster name")
		fs.StringVar(&namespace, "n", "", "namespace of the pod (default: any namespace, if unambiguous)")
		fs.BoolVar(&overwrite, "overwrite", false, "replace a label's existing value")
	}}
	return &cli.Command{
		Name:  "label",
		Usage: "[--name NAME] [-n NS] [--overwrite] namespace|pod NAME KEY=VALUE... KEY-...",
		Short: "Set or remove labels of a namespace or pod of a local cluster (root)",
		Long: `Set (KEY=VALUE) or remove (KEY-) labels of a namespace or a pod of the
running local cluster NAME, as kubectl label does. Labels take effect live:

  ambit label namespace demo istio.io/dataplane-mode=ambient
  ambit label namespace demo istio.io/dataplane-mode-

enrol or un-enrol the namespace's running pods with their node's ztunnel
without restarting any of their processes; istio.io/use-waypoint binds
Services and pods to a waypoint.`,
		Flags: lf.Flags,
		Run: func(ctx context.Context, args []string) error {
			pos, _, err := lf.interspersed(args)
			if err != nil {
				return cli.Usagef("%v", err)
			}
			if len(pos) < 3 {
				return cli.Usagef("want namespace|pod NAME and at least one KEY=VALUE or KEY-")
			}
			ch := local.LabelChange{Kind: pos[0], Name: pos[1], Namespace: namespace, Overwrite: overwrite, Set: map[string]string{}}
			for _, l := range pos[2:] {
				if k, v, ok := strings.Cut(l, "="); ok {
					ch.Set[k] = v
				} else if k, ok := strings.CutSuffix(l, "-"); ok && k != "" {
					ch.Remove = append(ch.Remove, k)
				} else {
					return cli.Usagef("label %q: want KEY=VALUE or KEY-", l)
				}
			}
			if err := needRoot(); err != nil {
				return err
			}
			lines, err := local.Control(ctx, name, local.OpLabel, local.ControlRequest{Label: &ch})
			for _, l := range lines {
				fmt.Fprintln(cli.Stdout, l)
			}
			return err
		},
	}
}
