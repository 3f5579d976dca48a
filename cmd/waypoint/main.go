// Command waypoint is Ambit's L7 proxy for one waypoint Gateway: it takes
// HBONE tunnels from ztunnels on 15008, applies the routes, L7 policies and
// DestinationRules of the Services bound to the Gateway, and forwards over
// HBONE with its own identity. `ambit up` runs one per waypoint Gateway, in
// the waypoint pod's network namespace; on Kubernetes it is the waypoint
// Deployment's entrypoint.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/waypoint"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("waypoint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `waypoint: Ambit's L7 proxy for one waypoint Gateway.

It receives HBONE tunnels (mutual TLS, port 15008) for the Services and
workloads bound to the Gateway with istio.io/use-waypoint, routes HTTP/1.1,
h2c and gRPC by the destination Service (HTTPRoute, GRPCRoute,
VirtualService), enforces L7 AuthorizationPolicy, balances by
DestinationRule, and forwards over HBONE with its own identity.

Usage:
  waypoint --node NAME --control-plane HOST:15012 --token-file FILE --root-cert FILE [flags]

The Gateway is $POD_NAMESPACE/$GATEWAY_NAME (default: the service account's
name, as waypoints run under a service account named like their Gateway).

Flags:
`)
		fs.PrintDefaults()
	}
	var cfg waypoint.Config
	var accessLog string
	sa := os.Getenv("SERVICE_ACCOUNT")
	fs.StringVar(&cfg.NodeName, "node", os.Getenv("NODE_NAME"), "node the waypoint runs on (default $NODE_NAME)")
	fs.StringVar(&cfg.ControlPlane, "control-plane", "ambit-controlplane.istio-system:15012", "control plane address")
	fs.StringVar(&cfg.TokenFile, "token-file", "/var/run/ambit/node-token", "file holding the node's control-plane credential")
	fs.StringVar(&cfg.RootCertFile, "root-cert", "/var/run/ambit/root-cert.pem", "PEM file with the mesh's root certificates")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh")
	fs.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the waypoint Gateway (default $POD_NAMESPACE)")
	fs.StringVar(&cfg.Gateway, "gateway", firstNonEmpty(os.Getenv("GATEWAY_NAME"), sa), "name of the waypoint Gateway (default $GATEWAY_NAME, else $SERVICE_ACCOUNT)")
	fs.StringVar(&cfg.ServiceAccount, "service-account", sa, "the waypoint's service account, its identity (default $SERVICE_ACCOUNT, else the Gateway's name)")
	fs.StringVar(&cfg.HBONEAddr, "hbone-addr", ":15008", "HBONE listener")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin endpoint (/config_dump)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", ":15020", "metrics endpoint (/metrics)")
	fs.StringVar(&cfg.ReadyAddr, "ready-addr", ":15021", "readiness endpoint (/healthz/ready)")
	fs.StringVar(&accessLog, "access-log", "/dev/stdout", `access log: one JSON line per request ("" disables)`)
	servedZone := fs.Bool("served-zone-header", true, "add x-ambit-served-zone (the zone of the endpoint that answered) to responses")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "how long requests in flight may finish after SIGTERM")
	fs.IntVar(&cfg.Limits.MaxHeaderBytes, "max-header-bytes", 60<<10, "largest request header block")
	fs.IntVar(&cfg.Limits.MaxHeaders, "max-headers", 100, "most request header fields")
	fs.IntVar(&cfg.Limits.MaxConcurrentStreams, "max-concurrent-streams", 1000, "HTTP/2 streams per client connection")
	fs.DurationVar(&cfg.Limits.IdleTimeout, "idle-timeout", 5*time.Minute, "close client connections idle this long")
	fs.Func("plain-http", "serve plaintext connections on `LOOPBACK:PORT=VIP:PORT` as tunnels to the Service VIP, to measure the waypoint as a bare HTTP hop (repeatable)", func(v string) error {
		addr, dst, ok := strings.Cut(v, "=")
		ap, err := netip.ParseAddrPort(dst)
		if !ok || err != nil {
			return fmt.Errorf("want LOOPBACK:PORT=DESTINATION:PORT, got %q", v)
		}
		if cfg.PlainHTTP == nil {
			cfg.PlainHTTP = map[string]netip.AddrPort{}
		}
		cfg.PlainHTTP[addr] = ap
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	cfg.NoServedZoneHeader = !*servedZone
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	switch {
	case cfg.NodeName == "":
		return fmt.Errorf("--node is required (or set NODE_NAME)")
	case cfg.Namespace == "":
		return fmt.Errorf("--namespace is required (or set POD_NAMESPACE)")
	case cfg.Gateway == "":
		return fmt.Errorf("--gateway is required (or set GATEWAY_NAME or SERVICE_ACCOUNT)")
	}
	switch accessLog {
	case "":
	case "/dev/stdout", "-":
		cfg.AccessLog = stdout
	default:
		f, err := os.OpenFile(accessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("--access-log: %w", err)
		}
		defer f.Close()
		cfg.AccessLog = f
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return waypoint.Run(ctx, cfg)
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
