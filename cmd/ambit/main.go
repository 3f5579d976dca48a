// Command ambit is the Ambit CLI: it runs the control plane, validates
// manifests, and (on one Linux machine) starts a whole mesh.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambit-mesh/ambit/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, rootCommand(), os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func rootCommand() *cli.Command {
	return &cli.Command{
		Name:  "ambit",
		Short: "Ambit, a sidecar-less service mesh",
		Long: `Ambit is a sidecar-less ("ambient") service mesh: a per-node L4 proxy
(ztunnel) for mTLS, identity, L4 policy and TCP telemetry; shared L7 proxies
(waypoints) only where HTTP features are needed; a control plane with a
certificate authority.`,
		Subcommands: []*cli.Command{
			controlplaneCommand(),
			analyzeCommand(),
			appCommand(),
			upCommand(), downCommand(), execCommand(), getCommand(), logsCommand(), topCommand(), applyCommand(), deleteCommand(), labelCommand(), internalCommand(),
			installCommand(), uninstallCommand(), nodeagentCommand(),
			waypointCommand(),
			versionCommand(),
		},
	}
}
