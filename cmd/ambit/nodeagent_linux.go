package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/cni"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/nodeagent"
)

func nodeagentCommand() *cli.Command {
	var (
		a               nodeagent.Agent
		kubeconfig      string
		binDir, confDir string
		pluginSrc       string
		unchainOnExit   bool
	)
	return &cli.Command{
		Name:  "nodeagent",
		Usage: "[--node NAME] [flags]",
		Short: "Run the node agent on a Kubernetes node: CNI plugin install, pod enrolment for the ztunnel",
		Long: `Run the node agent of one Kubernetes node (the ambit-node DaemonSet runs it
as root, with the host's PID namespace). It installs the ambit-cni plugin
into the node's CNI configuration chain, serves the plugin (which asks it to
enrol each new pod of an ambient namespace before the pod starts) and the
node's ztunnel (which receives each enrolled pod's network namespace), and
watches the node's pods and their namespaces so that labelling a namespace
or pod istio.io/dataplane-mode=ambient enrols running pods, and removing the
label releases them, without restarts. On exit it takes the plugin out of
the chain again, so pods keep starting while it is away; they are enrolled
when it comes back.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&a.NodeName, "node", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
			fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, else in-cluster)")
			fs.StringVar(&a.ZtunnelSocket, "ztunnel-socket", nodeagent.DefaultZtunnelSocket, "Unix socket the node's ztunnel connects to")
			fs.StringVar(&a.CNISocket, "cni-socket", cni.DefaultSocket, "Unix socket the CNI plugin connects to")
			fs.StringVar(&binDir, "cni-bin-dir", "", "the node's CNI binary directory, where ambit-cni is installed (empty: do not install)")
			fs.StringVar(&confDir, "cni-conf-dir", "", "the node's CNI configuration directory, whose primary configuration gets ambit-cni chained (empty: do not chain)")
			fs.StringVar(&pluginSrc, "cni-plugin", "", "the ambit-cni binary to install (default: ambit-cni beside this binary)")
			fs.BoolVar(&unchainOnExit, "unchain-on-exit", true, "take ambit-cni out of the CNI chain on exit")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.Usagef("unexpected arguments %q", args)
			}
			if a.NodeName == "" {
				return cli.Usagef("--node is required (or set NODE_NAME)")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			a.Log = log
			cfg, err := kube.RESTConfig(kubeconfig)
			if err != nil {
				return err
			}
			if a.Clients, err = kube.NewClients(cfg, "ambit-nodeagent/"+a.NodeName); err != nil {
				return err
			}
			if binDir != "" {
				if pluginSrc == "" {
					self, err := os.Executable()
					if err != nil {
						return err
					}
					pluginSrc = filepath.Join(filepath.Dir(self), cni.PluginName)
				}
				if err := cni.InstallBinary(pluginSrc, binDir); err != nil {
					return err
				}
				log.Info("CNI plugin installed", "dir", binDir)
			}
			if confDir != "" {
				go func() {
					// Chained once the agent serves, so the plugin never
					// finds nobody to ask.
					select {
					case <-a.Ready():
					case <-ctx.Done():
						return
					}
					file, err := cni.Chain(confDir, map[string]any{"agentSocket": a.CNISocket})
					if err != nil {
						log.Error("CNI chain", "error", err)
						return
					}
					log.Info("CNI plugin chained", "config", file)
				}()
				if unchainOnExit {
					defer func() {
						if err := cni.Unchain(confDir); err != nil {
							log.Error("CNI unchain", "error", err)
						}
					}()
				}
			}
			return a.Run(ctx)
		},
	}
}
