package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/model"
)

// applyCommand and deleteCommand change a running local cluster: the
// manifests are checked here first (errors name file and line), then sent
// to the cluster's supervisor, which checks them against the whole
// configuration and changes only what differs.
func applyCommand() *cli.Command {
	return changeCommand("apply", "Create or update objects of a local cluster from manifests (root)",
		`Create or update the objects of FILE|DIR in the running local cluster NAME,
live: new or changed Deployments and Pods start (changed pods are
replaced), new Services get a VIP and a name in every pod's /etc/hosts, and
routes, policies and waypoints take effect as soon as the proxies receive
them (well under a second). Pods the change does not touch keep running.
Invalid manifests change nothing.`,
		func(objs []config.Object, files []string) (local.ControlRequest, error) {
			var req local.ControlRequest
			seen := map[string]bool{}
			for _, o := range objs {
				if seen[o.Origin.File] {
					continue
				}
				seen[o.Origin.File] = true
				b, err := os.ReadFile(o.Origin.File)
				if err != nil {
					return req, err
				}
				req.Files = append(req.Files, local.ManifestFile{Name: o.Origin.File, Data: string(b)})
			}
			return req, nil
		})
}

func deleteCommand() *cli.Command {
	return changeCommand("delete", "Delete objects of a local cluster named by manifests (root)",
		`Delete the objects FILE|DIR defines from the running local cluster NAME,
live: their pods stop and leave the mesh, their Services' names disappear
from the pods' /etc/hosts, their routes and policies stop applying.
Deleting a Namespace deletes the objects in it.`,
		func(objs []config.Object, files []string) (local.ControlRequest, error) {
			var req local.ControlRequest
			seen := map[model.Ref]bool{}
			for _, o := range objs {
				if !seen[o.Ref] {
					seen[o.Ref] = true
					req.Refs = append(req.Refs, o.Ref)
				}
			}
			return req, nil
		})
}

func changeCommand(op, short, long string, request func([]config.Object, []string) (local.ControlRequest, error)) *cli.Command {
	var files cli.StringList
	var name string
	return &cli.Command{
		Name:  op,
		Usage: "-f FILE|DIR [--name NAME]",
		Short: short,
		Long:  long,
		Flags: func(fs *flag.FlagSet) {
			fs.Var(&files, "f", "manifest file or directory (repeatable)")
			fs.StringVar(&name, "name", "ambit", "cluster name")
		},
		Run: func(ctx context.Context, args []string) error {
			files := append(append([]string{}, files...), args...)
			if len(files) == 0 {
				return cli.Usagef("no manifests given: use -f FILE|DIR")
			}
			if err := local.CheckName(name); err != nil {
				return err
			}
			objs, err := config.LoadObjects(files...)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				return fmt.Errorf("no objects in %v", files)
			}
			req, err := request(objs, files)
			if err != nil {
				return err
			}
			if err := needRoot(); err != nil {
				return err
			}
			lines, err := local.Control(ctx, name, op, req)
			for _, l := range lines {
				fmt.Fprintln(cli.Stdout, l)
			}
			return err
		},
	}
}
