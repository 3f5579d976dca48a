package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/internal/kube"
)

// installFlags are shared by install and uninstall.
type installFlags struct {
	o          install.Options
	kubeconfig string
	skipCRDs   bool
}

func (f *installFlags) register(fs *flag.FlagSet) {
	f.o = install.DefaultOptions()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG)")
	fs.StringVar(&f.o.Namespace, "namespace", f.o.Namespace, "namespace of the control plane and node agents")
	fs.StringVar(&f.o.Image, "image", f.o.Image, "image with the ambit, ztunnel and ambit-cni binaries (see make image)")
	fs.StringVar(&f.o.TrustDomain, "trust-domain", f.o.TrustDomain, "trust domain of workload identities")
	fs.StringVar(&f.o.CNIBinDir, "cni-bin-dir", f.o.CNIBinDir, "the nodes' CNI binary directory")
	fs.StringVar(&f.o.CNIConfDir, "cni-conf-dir", f.o.CNIConfDir, "the nodes' CNI configuration directory")
	fs.BoolVar(&f.skipCRDs, "skip-crds", false, "do not install the Gateway API and Istio CRDs (already installed)")
}

func (f *installFlags) clients() (*kube.Clients, error) {
	return kubeClients(f.kubeconfig, "ambit-install")
}

// kubeClients connects to the API server of kubeconfig (default
// $KUBECONFIG, else in-cluster) as userAgent.
func kubeClients(kubeconfig, userAgent string) (*kube.Clients, error) {
	cfg, err := kube.RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return kube.NewClients(cfg, userAgent)
}

func installCommand() *cli.Command {
	var (
		f        installFlags
		dryRun   bool
		output   string
		replicas int
		timeout  time.Duration
	)
	return &cli.Command{
		Name:  "install",
		Usage: "[--dry-run] [-o yaml] [flags]",
		Short: "Install Ambit on a Kubernetes cluster",
		Long: `Install Ambit on the Kubernetes cluster of the current kubeconfig: the
Gateway API and Istio CRDs (from the versions this binary was built with),
the ambit-system namespace, RBAC, the control plane Deployment and the
ztunnel and node agent DaemonSets (the node agent installs the ambit-cni
plugin into each node's CNI chain). It shows each step and waits until the
control plane and every node are ready. Then label a namespace to put its
pods in the mesh:

    kubectl label namespace NAME istio.io/dataplane-mode=ambient

-o yaml prints the manifests instead of applying them (the Helm chart in
deploy/helm/ambit renders the same). --dry-run has the API server validate
and admit every object without storing anything.`,
		Flags: func(fs *flag.FlagSet) {
			f.register(fs)
			fs.BoolVar(&dryRun, "dry-run", false, "have the API server check every object (server-side dry run), change nothing")
			fs.StringVar(&output, "o", "", "print the manifests in this format (yaml) instead of installing")
			fs.IntVar(&replicas, "replicas", 1, "control plane replicas (more than one elect a leader for the waypoint controller)")
			fs.DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for everything to be ready")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.Usagef("unexpected arguments %q", args)
			}
			if output != "" && output != "yaml" {
				return cli.Usagef("-o %q: only yaml is supported", output)
			}
			f.o.ControlPlaneReplicas = int32(replicas)
			f.o.CRDs = !f.skipCRDs
			objs, err := install.Render(f.o)
			if err != nil {
				return err
			}
			if output == "yaml" {
				for _, o := range objs {
					b, err := yaml.Marshal(o.Object)
					if err != nil {
						return err
					}
					fmt.Fprintf(cli.Stdout, "---\n%s", b)
				}
				if !dryRun {
					return nil
				}
			}
			cl, err := f.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// With -o yaml, stdout is the manifests: progress goes to stderr.
			var progress io.Writer = cli.Stdout
			if output != "" {
				progress = os.Stderr
			}
			if err := install.Install(ctx, cl, objs, dryRun, progress); err != nil {
				return err
			}
			if dryRun {
				return nil
			}
			return install.WaitReady(ctx, cl, f.o, progress)
		},
	}
}

func uninstallCommand() *cli.Command {
	var (
		f       installFlags
		purge   bool
		timeout time.Duration
	)
	return &cli.Command{
		Name:  "uninstall",
		Usage: "[--purge] [flags]",
		Short: "Remove Ambit from a Kubernetes cluster",
		Long: `Remove what 'ambit install' created. The CRDs (and with them every
Gateway, route and policy) and the namespace holding the CA Secret stay, so
a reinstall keeps the mesh's identities; --purge removes them too. Pods stay
running: the node agents take the CNI plugin out of each node's chain as
they stop, and traffic flows without the mesh.`,
		Flags: func(fs *flag.FlagSet) {
			f.register(fs)
			fs.BoolVar(&purge, "purge", false, "also delete the CRDs and the namespace with the CA Secret")
			fs.DurationVar(&timeout, "timeout", 2*time.Minute, "bound for the whole removal")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.Usagef("unexpected arguments %q", args)
			}
			f.o.CRDs = true
			objs, err := install.Render(f.o)
			if err != nil {
				return err
			}
			cl, err := f.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return install.Uninstall(ctx, cl, objs, purge, cli.Stdout)
		},
	}
}
