package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
)

// waypointCommand manages waypoint Gateways as istioctl waypoint does.
func waypointCommand() *cli.Command {
	var namespace, name, trafficFor, kubeconfig string
	var enroll bool
	var dirs cli.StringList
	common := func(fs *flag.FlagSet) {
		fs.StringVar(&namespace, "n", "default", "namespace of the waypoint")
		fs.StringVar(&name, "name", "waypoint", "name of the waypoint Gateway")
	}
	withFor := func(fs *flag.FlagSet) {
		common(fs)
		fs.StringVar(&trafficFor, "for", "service", "traffic the waypoint handles: service, workload, all or none (label istio.io/waypoint-for)")
	}
	withDir := func(register func(*flag.FlagSet)) func(*flag.FlagSet) {
		return func(fs *flag.FlagSet) {
			register(fs)
			fs.Var(&dirs, "f", "manifest directory the control plane watches ('ambit controlplane -f DIR')")
			fs.StringVar(&kubeconfig, "kubeconfig", "", "a cluster's kubeconfig: apply to or delete from its Kubernetes API instead of -f DIR")
		}
	}
	checkFor := func() error {
		switch trafficFor {
		case "service", "workload", "all", "none":
			return nil
		}
		return cli.Usagef("--for %q: want service, workload, all or none", trafficFor)
	}
	oneDir := func() (string, error) {
		if len(dirs) != 1 {
			return "", cli.Usagef("give the manifest directory the control plane watches with -f DIR, or a Kubernetes cluster with --kubeconfig FILE (applying to a cluster started with 'ambit up' needs 'ambit apply', which the local cluster does not offer yet)")
		}
		st, err := os.Stat(dirs[0])
		if err != nil || !st.IsDir() {
			return "", fmt.Errorf("-f %s: not a directory", dirs[0])
		}
		return dirs[0], nil
	}
	fileOf := func(dir string) string {
		return filepath.Join(dir, "waypoint-"+namespace+"-"+name+".yaml")
	}
	return &cli.Command{
		Name:  "waypoint",
		Short: "Generate, apply, list and delete waypoints (L7 proxies)",
		Long: `A waypoint is a Gateway with gatewayClassName istio-waypoint. Traffic of the
Services, pods or namespaces labelled istio.io/use-waypoint=NAME goes through
it; its istio.io/waypoint-for label says which (service, the default;
workload; all; none). The control plane deploys an instance of it (a pod
running bin/waypoint under service account NAME) and configures it.`,
		Subcommands: []*cli.Command{
			{
				Name:  "generate",
				Usage: "[-n NAMESPACE] [--name NAME] [--for service|workload|all|none]",
				Short: "Print the Gateway of a waypoint (as istioctl waypoint generate)",
				Flags: withFor,
				Run: func(ctx context.Context, args []string) error {
					if err := checkFor(); err != nil {
						return err
					}
					fmt.Fprint(cli.Stdout, waypointGateway(namespace, name, trafficFor))
					return nil
				},
			},
			{
				Name:  "apply",
				Usage: "-f DIR|--kubeconfig FILE [-n NAMESPACE] [--name NAME] [--for service|workload|all|none] [--enroll-namespace]",
				Short: "Add a waypoint to the manifests the control plane watches, or to a Kubernetes cluster",
				Long: `Write the waypoint's Gateway to DIR/waypoint-NAMESPACE-NAME.yaml, where
'ambit controlplane -f DIR' picks it up; with --kubeconfig, apply it to
that cluster, whose control plane deploys the waypoint. Bind traffic to it
with the label istio.io/use-waypoint=NAME on a Namespace, Service or Pod
(--enroll-namespace labels the namespace, on a cluster).`,
				Flags: withDir(func(fs *flag.FlagSet) {
					withFor(fs)
					fs.BoolVar(&enroll, "enroll-namespace", false, "label the namespace istio.io/use-waypoint=NAME (with --kubeconfig)")
				}),
				Run: func(ctx context.Context, args []string) error {
					if err := checkFor(); err != nil {
						return err
					}
					if kubeconfig != "" {
						return applyWaypointToCluster(ctx, kubeconfig, waypointGateway(namespace, name, trafficFor), namespace, name, enroll)
					}
					if enroll {
						return cli.Usagef("--enroll-namespace needs --kubeconfig (with -f, add the label to the Namespace's manifest)")
					}
					dir, err := oneDir()
					if err != nil {
						return err
					}
					doc := waypointGateway(namespace, name, trafficFor)
					// Parse it as the control plane will, so a bad name is
					// reported here rather than in its log.
					if _, err := config.ParseSnapshot(fileOf(dir), []byte(doc)); err != nil {
						return err
					}
					if err := os.WriteFile(fileOf(dir), []byte(doc), 0o644); err != nil {
						return err
					}
					fmt.Fprintf(cli.Stdout, "waypoint %s/%s applied (%s)\n", namespace, name, fileOf(dir))
					return nil
				},
			},
			{
				Name:  "delete",
				Usage: "-f DIR|--kubeconfig FILE [-n NAMESPACE] [--name NAME]",
				Short: "Remove a waypoint that 'ambit waypoint apply' added",
				Flags: withDir(common),
				Run: func(ctx context.Context, args []string) error {
					if kubeconfig != "" {
						return deleteWaypointFromCluster(ctx, kubeconfig, namespace, name)
					}
					dir, err := oneDir()
					if err != nil {
						return err
					}
					if err := os.Remove(fileOf(dir)); err != nil {
						if errors.Is(err, os.ErrNotExist) {
							return fmt.Errorf("no waypoint %s/%s was applied to %s (%s does not exist)", namespace, name, dir, fileOf(dir))
						}
						return err
					}
					fmt.Fprintf(cli.Stdout, "waypoint %s/%s deleted\n", namespace, name)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "-f FILE|DIR [-n NAMESPACE | -A]",
				Short: "List the waypoints of a set of manifests, with what uses them",
				Flags: func(fs *flag.FlagSet) {
					fs.StringVar(&namespace, "n", "", "namespace (default: all)")
					fs.BoolVar(new(bool), "A", false, "all namespaces (the default)")
					fs.Var(&dirs, "f", "manifest file or directory (repeatable)")
				},
				Run: func(ctx context.Context, args []string) error {
					dirs = append(dirs, args...)
					if len(dirs) == 0 {
						return cli.Usagef("no manifests given: use -f FILE|DIR")
					}
					snap, err := config.Load(dirs...)
					if err != nil {
						return fmt.Errorf("invalid manifests:\n%w", err)
					}
					plan, err := local.NewPlan(snap)
					if err != nil {
						return err
					}
					return listWaypoints(translate.Translate(plan.Apply(snap), model.DefaultMeshConfig()), namespace)
				},
			},
		},
	}
}

// waypointGateway is the Gateway istioctl waypoint generate prints.
func waypointGateway(namespace, name, trafficFor string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: %s
  name: %s
  namespace: %s
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`, trafficFor, name, namespace)
}

func listWaypoints(out *translate.Output, namespace string) error {
	tw := tabwriter.NewWriter(cli.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tFOR\tSERVICES\tWORKLOADS\tINSTANCES\tPOLICIES")
	for _, key := range slices.Sorted(maps.Keys(out.Waypoints)) {
		wc := out.Waypoints[key]
		if namespace != "" && wc.Namespace != namespace {
			continue
		}
		var services, workloads, instances []string
		for _, sr := range wc.Services {
			services = append(services, strings.SplitN(sr.Service, "/", 2)[1])
		}
		for _, uid := range slices.Sorted(maps.Keys(out.Workloads)) {
			w := out.Workloads[uid]
			if w.WaypointGateway == key {
				instances = append(instances, w.Name)
			}
			if wp := w.Waypoint; wp != nil && strings.HasPrefix(wp.Service, wc.Namespace+"/"+wc.Name+".") {
				workloads = append(workloads, w.Namespace+"/"+w.Name)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", wc.Namespace, wc.Name, wc.WaypointFor,
			orNone(services), orNone(workloads), orNone(instances), len(wc.Policies))
	}
	return tw.Flush()
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "<none>"
	}
	return strings.Join(l, ",")
}

// applyWaypointToCluster server-side applies the waypoint's Gateway and,
// with enroll, labels its namespace to use it.
func applyWaypointToCluster(ctx context.Context, kubeconfig, doc, namespace, name string, enroll bool) error {
	cl, err := kubeClients(kubeconfig, "ambit-waypoint")
	if err != nil {
		return err
	}
	objs, err := kube.DecodeManifests("waypoint", []byte(doc))
	if err != nil {
		return err
	}
	if enroll {
		// Only the label: server-side apply leaves the namespace's other
		// labels to their owners.
		objs = append(objs, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": namespace, "labels": map[string]any{"istio.io/use-waypoint": name}}}})
	}
	a := cl.NewApplier("ambit-waypoint")
	for _, o := range objs {
		if _, err := a.Apply(ctx, o, false); err != nil {
			return err
		}
	}
	fmt.Fprintf(cli.Stdout, "waypoint %s/%s applied\n", namespace, name)
	if enroll {
		fmt.Fprintf(cli.Stdout, "namespace %s labelled istio.io/use-waypoint=%s\n", namespace, name)
	}
	return nil
}

func deleteWaypointFromCluster(ctx context.Context, kubeconfig, namespace, name string) error {
	cl, err := kubeClients(kubeconfig, "ambit-waypoint")
	if err != nil {
		return err
	}
	err = cl.Gateway.GatewayV1().Gateways(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no waypoint %s/%s in the cluster", namespace, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cli.Stdout, "waypoint %s/%s deleted\n", namespace, name)
	return nil
}
