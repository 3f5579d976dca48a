//go:build !linux

package main

import (
	"context"
	"errors"

	"github.com/ambit-mesh/ambit/internal/cli"
)

// nodeagentCommand exists on every platform so the CLI's commands are the
// same everywhere; the node agent itself sets up Linux network namespaces.
func nodeagentCommand() *cli.Command {
	return &cli.Command{
		Name:  "nodeagent",
		Short: "Run the node agent on a Kubernetes node (Linux only)",
		Run: func(context.Context, []string) error {
			return errors.New("ambit nodeagent runs on Linux nodes only")
		},
	}
}
