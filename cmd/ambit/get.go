package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

func getCommand() *cli.Command {
	var name, namespace, output string
	var all bool
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "ambit", "cluster name")
		fs.StringVar(&namespace, "n", "", "namespace (default \"default\")")
		fs.BoolVar(&all, "A", false, "all namespaces")
		fs.StringVar(&output, "o", "", "output format: wide or json")
	}}
	return &cli.Command{
		Name:  "get",
		Usage: "nodes|pods|services [--name NAME] [-n NAMESPACE | -A] [-o wide|json]",
		Short: "List the nodes, pods or services of a local cluster",
		Long: `List the nodes, pods or services of the local cluster NAME, from its state
in /run/ambit/NAME. Pods and services are those of namespace "default"
unless -n or -A (all namespaces) is given.`,
		Flags: lf.Flags,
		Run: func(ctx context.Context, args []string) error {
			args, _, err := lf.interspersed(args)
			if err != nil {
				return cli.Usagef("%v", err)
			}
			if len(args) != 1 {
				return cli.Usagef("want one of nodes, pods, services")
			}
			kind := args[0]
			switch kind {
			case "node", "nodes", "no":
				kind = "nodes"
			case "pod", "pods", "po":
				kind = "pods"
			case "service", "services", "svc":
				kind = "services"
			default:
				return cli.Usagef("unknown resource %q: want nodes, pods or services", kind)
			}
			if output != "" && output != "wide" && output != "json" {
				return cli.Usagef("-o %s: want wide or json", output)
			}
			if namespace == "" && !all {
				namespace = "default"
			}
			if all {
				namespace = ""
			}
			st, err := local.LoadState(name)
			if err != nil {
				return err
			}
			out := cli.Stdout
			var items any
			switch kind {
			case "nodes":
				items = st.Nodes
			case "pods":
				pods := []local.PodState{}
				for _, p := range st.Pods {
					if namespace == "" || p.Namespace == namespace {
						pods = append(pods, p)
					}
				}
				items = pods
			case "services":
				svcs := []local.ServiceState{}
				for _, s := range st.Services {
					if namespace == "" || s.Namespace == namespace {
						svcs = append(svcs, s)
					}
				}
				items = svcs
			}
			if output == "json" {
				b, err := json.MarshalIndent(map[string]any{"kind": kind, "items": items}, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
				return nil
			}
			wide := output == "wide"
			tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
			defer tw.Flush()
			age := time.Since(st.StartedAt).Round(time.Second).String()
			ageOf := func(created time.Time) string {
				if created.IsZero() {
					return age
				}
				return time.Since(created).Round(time.Second).String()
			}
			switch kind {
			case "nodes":
				fmt.Fprint(tw, "NAME\tSTATUS\tZONE\tIP\tPOD-CIDR\tAGE")
				if wide {
					fmt.Fprint(tw, "\tZTUNNEL-PID\tRESTARTS\tMETRICS")
				}
				fmt.Fprintln(tw)
				for _, n := range st.Nodes {
					status := "Ready"
					if !st.Ready {
						status = "NotReady"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s", n.Name, status, n.Zone, n.IP, n.PodCIDR, age)
					if wide {
						fmt.Fprintf(tw, "\t%d\t%d\t%s", n.ZtunnelPID, n.Restarts, n.Metrics)
					}
					fmt.Fprintln(tw)
				}
			case "pods":
				if namespace == "" {
					fmt.Fprint(tw, "NAMESPACE\t")
				}
				fmt.Fprint(tw, "NAME\tREADY\tSTATUS\tRESTARTS\tAGE")
				if wide {
					fmt.Fprint(tw, "\tIP\tNODE\tMESH\tPIDS")
				}
				fmt.Fprintln(tw)
				for _, p := range items.([]local.PodState) {
					if namespace == "" {
						fmt.Fprintf(tw, "%s\t", p.Namespace)
					}
					restarts, running := 0, 0
					var pids []string
					for _, c := range p.Containers {
						restarts += c.Restarts
						if c.PID != 0 {
							running++
						}
						pids = append(pids, fmt.Sprint(c.PID))
					}
					status := "Running"
					if running < len(p.Containers) {
						status = "Pending"
					}
					fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%d\t%s", p.Name, running, len(p.Containers), status, restarts, ageOf(p.Created))
					if wide {
						mesh := "-"
						if p.Enrolled {
							mesh = "ambient"
						}
						fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", p.IP, p.Node, mesh, strings.Join(pids, ","))
					}
					fmt.Fprintln(tw)
				}
			case "services":
				if namespace == "" {
					fmt.Fprint(tw, "NAMESPACE\t")
				}
				fmt.Fprintln(tw, "NAME\tTYPE\tCLUSTER-IP\tPORTS\tAGE")
				for _, s := range items.([]local.ServiceState) {
					if namespace == "" {
						fmt.Fprintf(tw, "%s\t", s.Namespace)
					}
					fmt.Fprintf(tw, "%s\tClusterIP\t%s\t%s\t%s\n", s.Name, s.ClusterIP, strings.Join(s.Ports, ","), ageOf(s.Created))
				}
			}
			return nil
		},
	}
}
