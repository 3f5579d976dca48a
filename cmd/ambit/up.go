package main

import (
	"context"
	"errors"
	"flag"

	"github.com/ambit-mesh/ambit/internal/cli"
)

func upCommand() *cli.Command {
	var files cli.StringList
	var name string
	var detach bool
	return &cli.Command{
		Name:  "up",
		Usage: "-f DIR|FILE [--name NAME] [--detach]",
		Short: "Start a whole mesh on this Linux machine (root)",
		Long: `Start a whole mesh on this Linux machine: network namespaces for the
cluster, its nodes and pods; the control plane; a ztunnel per node; the
workloads from the manifests' Deployments and Pods.`,
		Flags: func(fs *flag.FlagSet) {
			fs.Var(&files, "f", "manifest file or directory (repeatable)")
			fs.StringVar(&name, "name", "ambit", "cluster name")
			fs.BoolVar(&detach, "detach", false, "return once the mesh is ready")
		},
		Run: func(ctx context.Context, args []string) error {
			return errors.New("the local cluster is coming in the local cluster issue (#4); for now run 'ambit controlplane -f DIR' and 'ambit analyze -f DIR'")
		},
	}
}
