package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strings"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/waypointctl"
)

// kubeFlags configure the control plane's Kubernetes source (--source kube).
type kubeFlags struct {
	kubeconfig      string
	namespace       string
	caSecret        string
	ztunnelAccounts string
	audience        string
	identity        string
	waypointImage   string
	waypointCP      string
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (--source kube; default $KUBECONFIG, else in-cluster)")
	fs.StringVar(&k.namespace, "namespace", envOr("POD_NAMESPACE", "ambit-system"), "namespace of the control plane: its CA Secret and leader Lease (--source kube)")
	fs.StringVar(&k.caSecret, "ca-secret", "ambit-ca", "Secret holding the CA root and trust domain, created if absent (--source kube)")
	fs.StringVar(&k.ztunnelAccounts, "node-service-accounts", "ambit-system/ztunnel", "comma-separated namespace/name of service accounts whose bound tokens authenticate node proxies (--source kube)")
	fs.StringVar(&k.audience, "token-audience", ca.DefaultTokenAudience, "audience node proxies' service account tokens must carry (--source kube)")
	fs.StringVar(&k.waypointImage, "waypoint-image", waypointctl.DefaultImage, "image of the waypoint Deployments the waypoint controller creates (--source kube)")
	fs.StringVar(&k.waypointCP, "waypoint-control-plane", "", "address waypoints reach the control plane at (--source kube; default ambit-controlplane.NAMESPACE.svc:15012, the Service ambit install creates)")
	fs.StringVar(&k.identity, "replica", envOr("POD_NAME", hostname()), "this replica's name in leader election (--source kube)")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// runKubeControlPlane runs the control plane against the Kubernetes API:
// config from informers, the CA root in a Secret, node proxies
// authenticated by TokenReview, and the waypoint controller on the elected
// leader only (every replica serves proxies).
func runKubeControlPlane(ctx context.Context, log *slog.Logger, k kubeFlags, caf caFlags, mesh func(td string) controlplane.Options) error {
	cfg, err := kube.RESTConfig(k.kubeconfig)
	if err != nil {
		return err
	}
	clients, err := kube.NewClients(cfg, "ambit-controlplane")
	if err != nil {
		return err
	}
	authority, err := kube.LoadCA(ctx, clients, k.namespace, k.caSecret, ca.Options{
		TrustDomain: caf.trustDomain, Dir: caf.dir, DefaultTTL: caf.ttl, Logger: log.With("component", "ca"),
	})
	if err != nil {
		return err
	}
	if err := kube.PublishRootCert(ctx, clients, k.namespace, authority); err != nil {
		return err
	}
	opts := mesh(authority.TrustDomain())
	opts.CA = authority
	svc := "ambit-controlplane"
	opts.ServingHosts = []string{svc, svc + "." + k.namespace, svc + "." + k.namespace + ".svc", svc + "." + k.namespace + ".svc.cluster.local", "localhost", "127.0.0.1", "::1"}
	opts.Source = &kube.Source{Clients: clients, Log: log.With("component", "kube")}
	opts.Authenticator = &ca.TokenReviewAuthenticator{
		Reviews:         clients.Kube.AuthenticationV1().TokenReviews(),
		Audiences:       []string{k.audience},
		ServiceAccounts: strings.Split(k.ztunnelAccounts, ","),
		// Waypoints present their own pod's token: each may obtain its own
		// identity only, on its own node.
		Workloads: true,
	}
	opts.Placement = &kube.PodPlacement{Clients: clients, Log: log.With("component", "ca")}
	srv, err := controlplane.New(opts)
	if err != nil {
		return err
	}
	waypointCP := k.waypointCP
	if waypointCP == "" {
		waypointCP = "ambit-controlplane." + k.namespace + ".svc:15012"
	}
	election := &kube.Election{Clients: clients, Namespace: k.namespace, Name: "ambit-controlplane", Identity: k.identity, Log: log.With("component", "election")}
	go election.Run(ctx, func(ctx context.Context) {
		wc := &waypointctl.Controller{Clients: clients, Log: log.With("component", "waypoints"), Image: k.waypointImage, TrustDomain: authority.TrustDomain(),
			ControlPlane: waypointCP, RootCertPEM: strings.Join(authority.TrustBundlePEM(), "")}
		if err := wc.Run(ctx); err != nil {
			log.Error("waypoint controller stopped", "error", err)
		}
	})
	return srv.Run(ctx)
}
