package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

func getCommand() *cli.Command {
	var name, namespace, output string
	var all bool
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "ambit", "cluster name")
		fs.StringVar(&namespace, "n", "", "namespace (default \"default\")")
		fs.BoolVar(&all, "A", false, "all namespaces")
		fs.StringVar(&output, "o", "", "output format: wide, json or yaml")
	}}
	return &cli.Command{
		Name:  "get",
		Usage: "nodes|pods|services|workloads [--name NAME] [-n NAMESPACE | -A] [-o wide|json|yaml]",
		Short: "List the nodes, pods, services or workloads of a local cluster",
		Long: `List the nodes, pods, services or workloads of the local cluster NAME, from
its state in /run/ambit/NAME. Workloads are the pods as the mesh sees them:
identity, node and zone, and whether their traffic goes through their
ztunnel (HBONE) or not (TCP). Pods, services and workloads are those of
namespace "default" unless -n or -A (all namespaces) is given.`,
		Flags: lf.Flags,
		Run: func(ctx context.Context, args []string) error {
			args, _, err := lf.interspersed(args)
			if err != nil {
				return cli.Usagef("%v", err)
			}
			if len(args) != 1 {
				return cli.Usagef("want one of nodes, pods, services, workloads")
			}
			kind := args[0]
			switch kind {
			case "node", "nodes", "no":
				kind = "nodes"
			case "pod", "pods", "po":
				kind = "pods"
			case "service", "services", "svc":
				kind = "services"
			case "workload", "workloads", "wl":
				kind = "workloads"
			default:
				return cli.Usagef("unknown resource %q: want nodes, pods, services or workloads", kind)
			}
			if output != "" && output != "wide" && output != "json" && output != "yaml" {
				return cli.Usagef("-o %s: want wide, json or yaml", output)
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
			case "pods", "workloads":
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
			switch output {
			case "json":
				b, err := json.MarshalIndent(map[string]any{"kind": kind, "items": items}, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
				return nil
			case "yaml":
				b, err := yaml.Marshal(map[string]any{"kind": kind, "items": items})
				if err != nil {
					return err
				}
				fmt.Fprint(out, string(b))
				return nil
			}
			if empty(items) {
				// As kubectl: an empty table is a sentence on stderr, not a bare header.
				if namespace == "" {
					fmt.Fprintln(os.Stderr, "No resources found")
				} else {
					fmt.Fprintf(os.Stderr, "No resources found in %s namespace.\n", namespace)
				}
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
					switch {
					case p.Terminating:
						status = "Terminating"
					case running < len(p.Containers):
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
			case "workloads":
				zone := map[string]string{}
				for _, n := range st.Nodes {
					zone[n.Name] = n.Zone
				}
				if namespace == "" {
					fmt.Fprint(tw, "NAMESPACE\t")
				}
				fmt.Fprintln(tw, "NAME\tWORKLOAD\tNODE\tZONE\tIP\tPROTOCOL\tIDENTITY")
				for _, p := range items.([]local.PodState) {
					if namespace == "" {
						fmt.Fprintf(tw, "%s\t", p.Namespace)
					}
					proto, workload := "TCP", p.Name
					if p.Enrolled || p.Waypoint != "" { // a waypoint terminates HBONE itself
						proto = "HBONE"
					}
					if p.Deployment != "" {
						workload = p.Deployment
					}
					if p.Waypoint != "" {
						workload = "waypoint " + p.Waypoint
					}
					id := spiffe.ID{TrustDomain: local.TrustDomain, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, workload, p.Node, zone[p.Node], p.IP, proto, id)
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

// empty reports whether a listing has no rows.
func empty(items any) bool {
	switch v := items.(type) {
	case []local.PodState:
		return len(v) == 0
	case []local.ServiceState:
		return len(v) == 0
	case []local.NodeState:
		return len(v) == 0
	}
	return false
}
