package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
)

// caFlags are the CA settings shared by the control plane and node-token.
type caFlags struct {
	dir, trustDomain string
	ttl              time.Duration
}

func (c *caFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dir, "ca-dir", "/var/lib/ambit/ca", "directory of the CA's root (created on first start) and node-token key")
	fs.StringVar(&c.trustDomain, "trust-domain", "cluster.local", "trust domain of workload identities")
	fs.DurationVar(&c.ttl, "cert-ttl", 24*time.Hour, "default lifetime of workload certificates")
}

func (c *caFlags) load(log *slog.Logger) (*ca.CA, error) {
	return ca.New(ca.Options{TrustDomain: c.trustDomain, Dir: c.dir, DefaultTTL: c.ttl, Logger: log})
}

func controlplaneCommand() *cli.Command {
	var (
		files         cli.StringList
		caf           caFlags
		grpcAddr      string
		httpAddr      string
		rootNamespace string
		clusterID     string
		defaultTD     string
		interval      time.Duration
		source        string
		kf            kubeFlags
	)
	return &cli.Command{
		Name:  "controlplane",
		Usage: "-f FILE|DIR [-f ...] [flags] | --source kube [--kubeconfig FILE] [flags]",
		Short: "Run the control plane: watch config, push to proxies, issue certificates",
		Long: `Run the control plane. It reads manifests from files and directories
(watched: a valid change is pushed to every proxy within a second; an invalid
one is logged and the last good configuration stays in force), translates them
into what each proxy needs, pushes it over gRPC (TLS, port 15012) with delta
updates, and runs the certificate authority on the same port. Metrics and
debug endpoints (/metrics, /readyz, /debug/proxies, /debug/config) are served
on port 15014.

With --source kube it watches the Kubernetes API instead (Namespaces, Nodes,
Pods, Services, ServiceAccounts, Gateway API and Istio resources), keeps the
CA root in a Secret, authenticates node proxies by their bound service
account tokens (TokenReview), and, on the elected replica only, runs the
waypoint controller.`,
		Flags: func(fs *flag.FlagSet) {
			fs.Var(&files, "f", "manifest file or directory to load and watch (repeatable)")
			fs.StringVar(&source, "source", "files", "where configuration comes from: files (-f) or kube (the Kubernetes API)")
			kf.register(fs)
			caf.register(fs)
			fs.StringVar(&grpcAddr, "grpc-addr", ":15012", "address of the push and CA gRPC listener (TLS)")
			fs.StringVar(&httpAddr, "http-addr", ":15014", "address of the metrics and debug HTTP listener")
			fs.StringVar(&rootNamespace, "root-namespace", "istio-system", "namespace whose policies apply mesh-wide")
			fs.StringVar(&clusterID, "cluster-id", "Kubernetes", "cluster name in workload ids")
			fs.StringVar(&defaultTD, "default-traffic-distribution", "", "mesh default for Services that set no trafficDistribution: PreferClose, PreferSameZone (keep traffic in the caller's zone while it has healthy, undegraded endpoints) or PreferSameNode")
			fs.BoolFunc("prefer-same-zone", "same as --default-traffic-distribution PreferSameZone", func(v string) error {
				if b, err := strconv.ParseBool(v); err != nil {
					return err
				} else if b {
					defaultTD = "PreferSameZone"
				}
				return nil
			})
			fs.DurationVar(&interval, "watch-interval", 200*time.Millisecond, "how often to check the manifests for changes")
		},
		Run: func(ctx context.Context, args []string) error {
			files = append(files, args...)
			if err := translate.CheckTrafficDistribution(defaultTD); err != nil {
				return cli.Usagef("--default-traffic-distribution: %v", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			switch {
			case source == "kube" && len(files) > 0:
				return cli.Usagef("--source kube reads the Kubernetes API: drop -f")
			case source == "kube":
				return runKubeControlPlane(ctx, log, kf, caf, func(td string) controlplane.Options {
					mesh := model.DefaultMeshConfig()
					mesh.TrustDomain = td
					mesh.RootNamespace = rootNamespace
					mesh.ClusterID = clusterID
					mesh.DefaultTrafficDistribution = defaultTD
					return controlplane.Options{Mesh: mesh, GRPCAddr: grpcAddr, HTTPAddr: httpAddr, Log: log}
				})
			case source != "files":
				return cli.Usagef("--source %q: want files or kube", source)
			case len(files) == 0:
				return cli.Usagef("no manifests given: use -f FILE|DIR")
			}
			authority, err := caf.load(log.With("component", "ca"))
			if err != nil {
				return err
			}
			mesh := model.DefaultMeshConfig()
			mesh.TrustDomain = caf.trustDomain
			mesh.RootNamespace = rootNamespace
			mesh.ClusterID = clusterID
			mesh.DefaultTrafficDistribution = defaultTD
			src := &controlplane.FileSource{Paths: files, Interval: interval, Log: log.With("component", "config")}
			srv, err := controlplane.New(controlplane.Options{
				Source: src, Mesh: mesh, CA: authority, GRPCAddr: grpcAddr, HTTPAddr: httpAddr, Log: log,
			})
			if err != nil {
				return err
			}
			src.OnResult = srv.SourceResult
			return srv.Run(ctx)
		},
		Subcommands: []*cli.Command{nodeTokenCommand()},
	}
}

func nodeTokenCommand() *cli.Command {
	var caf caFlags
	return &cli.Command{
		Name:  "node-token",
		Usage: "[--ca-dir DIR] NODE",
		Short: "Print the credential a node's proxies use to authenticate to the control plane",
		Long: `Print the bearer token with which the proxies on NODE authenticate to the
control plane (file and local mode; on Kubernetes they use their service
account token). The token is a secret: give it to that node only. It is
derived from the key in the CA directory (created if absent); replacing that
key revokes every token.`,
		Flags: caf.register,
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 || args[0] == "" {
				return cli.Usagef("want exactly one node name")
			}
			authority, err := caf.load(slog.New(slog.DiscardHandler))
			if err != nil {
				return err
			}
			fmt.Fprintln(cli.Stdout, authority.NodeToken(args[0]))
			return nil
		},
	}
}
