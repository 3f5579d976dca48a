package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

func downCommand() *cli.Command {
	var name string
	return &cli.Command{
		Name:  "down",
		Usage: "[--name NAME]",
		Short: "Remove a local cluster started by 'ambit up' (root)",
		Long: `Remove the local cluster NAME: stop its supervisor (which tears the cluster
down), then remove whatever is left, including leftovers of a crashed run —
processes in the cluster's network namespaces, the namespaces (/run/netns/
ambit-NAME-*) and the state directory (/run/ambit/NAME). Running it again,
or on a cluster that does not exist, succeeds.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "ambit", "cluster name")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.Usagef("unexpected arguments %q", args)
			}
			if err := local.CheckName(name); err != nil {
				return err
			}
			if err := needRoot(); err != nil {
				return err
			}
			t := time.Now()
			found, err := local.Down(name, func(format string, args ...any) { fmt.Fprintf(cli.Stdout, format+"\n", args...) })
			if err != nil {
				return err
			}
			if !found {
				fmt.Fprintf(cli.Stdout, "cluster %q is not running: nothing to remove\n", name)
				return nil
			}
			fmt.Fprintf(cli.Stdout, "cluster %q removed in %.1f s\n", name, time.Since(t).Seconds())
			return nil
		},
	}
}
