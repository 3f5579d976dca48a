package main

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/ambit-mesh/ambit/internal/cli"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Short: "Print the version",
		Run: func(ctx context.Context, args []string) error {
			v := "(devel)"
			if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
				v = bi.Main.Version
			}
			fmt.Fprintln(cli.Stdout, "ambit", v)
			return nil
		},
	}
}
