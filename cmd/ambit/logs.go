package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

func logsCommand() *cli.Command {
	var name, namespace string
	var follow bool
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "ambit", "cluster name")
		fs.StringVar(&namespace, "n", "", "namespace of the pod (default: any namespace, if unambiguous)")
		fs.BoolVar(&follow, "f", false, "follow the log")
	}}
	return &cli.Command{
		Name:  "logs",
		Usage: "[--name NAME] [-n NAMESPACE] [-f] POD|deploy/NAME|node/NODE|controlplane",
		Short: "Print the output of a pod's processes in a local cluster",
		Long: `Print what a pod's container processes wrote (stdout and stderr, with a
line from ambit at each restart), from /run/ambit/NAME/logs. With -f, keep
printing as it grows until interrupted. node/NODE prints the node's ztunnel
log, controlplane the control plane's.`,
		Flags: lf.Flags,
		Run: func(ctx context.Context, args []string) error {
			args, _, err := lf.interspersed(args)
			if err != nil {
				return cli.Usagef("%v", err)
			}
			if len(args) != 1 {
				return cli.Usagef("want POD|deploy/NAME")
			}
			st, err := local.LoadState(name)
			if err != nil {
				return err
			}
			path, err := logPath(st, namespace, args[0])
			if err != nil {
				return err
			}
			f, err := os.Open(path)
			if os.IsNotExist(err) && !follow {
				return nil
			}
			if err != nil {
				return err
			}
			defer f.Close()
			for {
				if _, err := io.Copy(cli.Stdout, f); err != nil {
					return err
				}
				if !follow {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
}

// logPath is the log file of a pod, a node's ztunnel or the control plane.
func logPath(st *local.State, namespace, ref string) (string, error) {
	if ref == "controlplane" {
		return filepath.Join(local.StateDir(st.Name), "logs", "controlplane.log"), nil
	}
	if node, ok := strings.CutPrefix(ref, "node/"); ok {
		for _, n := range st.Nodes {
			if n.Name == node {
				return n.Log, nil
			}
		}
		return "", fmt.Errorf("no node %s in cluster %s", node, st.Name)
	}
	pod, err := st.FindPod(namespace, ref)
	if err != nil {
		return "", err
	}
	return pod.Log, nil
}
