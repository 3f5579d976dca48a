package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
)

func analyzeCommand() *cli.Command {
	var files cli.StringList
	mesh := model.DefaultMeshConfig()
	return &cli.Command{
		Name:  "analyze",
		Usage: "-f FILE|DIR [-f ...]",
		Short: "Validate manifests and report what the mesh would not apply",
		Long: `Validate manifests the way the control plane does: parse errors (file,
document, object and field), then problems found while translating them
(routes to missing Services, waypoints that do not exist, policies that
cannot be applied). Deployments are expanded into pods and placed on nodes
as 'ambit up' would. Exits 1 if there are errors.`,
		Flags: func(fs *flag.FlagSet) {
			fs.Var(&files, "f", "manifest file or directory (repeatable)")
		},
		Run: func(ctx context.Context, args []string) error {
			files = append(files, args...)
			if len(files) == 0 {
				return cli.Usagef("no manifests given: use -f FILE|DIR")
			}
			snap, err := config.Load(files...)
			if err != nil {
				return fmt.Errorf("invalid manifests:\n%w", err)
			}
			// Deployments become pods only when a cluster runs them: plan
			// them as `ambit up` would, so what would run is checked too.
			plan, err := local.NewPlan(snap)
			if err != nil {
				return fmt.Errorf("cannot plan a local cluster for these manifests: %w", err)
			}
			out := translate.Translate(plan.Apply(snap), mesh)
			for _, p := range out.Problems {
				fmt.Fprintf(cli.Stdout, "warning: %s\n", p)
			}
			fmt.Fprintf(cli.Stdout, "%d objects: %d workloads, %d services, %d L4 policies, %d waypoints; %d warnings\n",
				snap.Len(), len(out.Workloads), len(out.Services), len(out.Authorizations), len(out.Waypoints), len(out.Problems))
			return nil
		},
	}
}
