// Command ztunnel is Ambit's per-node L4 proxy. The node agent hands it the
// pods it must serve; it takes configuration and certificates from the
// control plane. It is deliberately small: no Kubernetes client, no Wasm,
// no OpenTelemetry (internal/deps guards that).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/ztunnel"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `ztunnel: Ambit's per-node L4 proxy.

For every pod the node agent enrols it listens inside the pod's network
namespace (15001 outbound, 15006 inbound plaintext, 15008 inbound HBONE),
tunnels mesh traffic over mutual TLS with the pod's own identity, and
enforces PeerAuthentication and L4 AuthorizationPolicy.

Usage:
  ztunnel --node NAME --control-plane HOST:15012 --token-file FILE --root-cert FILE [flags]

Flags:
`)
		fs.PrintDefaults()
	}
	var cfg ztunnel.Config
	fs.StringVar(&cfg.NodeName, "node", os.Getenv("NODE_NAME"), "node this ztunnel serves (default $NODE_NAME)")
	fs.StringVar(&cfg.ControlPlane, "control-plane", "ambit-controlplane.istio-system:15012", "control plane address")
	fs.StringVar(&cfg.TokenFile, "token-file", "/var/run/ambit/node-token", "file holding the node's control-plane credential")
	fs.StringVar(&cfg.RootCertFile, "root-cert", "/var/run/ambit/root-cert.pem", "PEM file with the mesh's root certificates")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh")
	fs.StringVar(&cfg.AgentSocket, "agent-socket", "/var/run/ambit/ztunnel.sock", "node agent's Unix socket")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin endpoint (/config_dump)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", ":15020", "metrics endpoint (/metrics)")
	fs.StringVar(&cfg.ReadyAddr, "ready-addr", ":15021", "readiness endpoint (/healthz/ready)")
	fs.StringVar(&cfg.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this loopback address (off by default)")
	memLimit := fs.String("memory-limit", "", "soft memory limit of the Go runtime, e.g. 64MiB, or \"off\" (default: $GOMEMLIMIT if set, else 90% of the container's cgroup memory limit, if any)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "how long open connections may finish after SIGTERM")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	if cfg.NodeName == "" {
		return fmt.Errorf("--node is required (or set NODE_NAME)")
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	limit, source, err := memoryLimit(*memLimit, os.Getenv("GOMEMLIMIT"), "/sys/fs/cgroup/memory.max")
	if err != nil {
		return err
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
		cfg.Log.Info("Go memory limit", "bytes", limit, "from", source)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ztunnel.Run(ctx, cfg)
}

// memoryLimit decides the Go runtime's soft memory limit: the flag, else
// GOMEMLIMIT (which the runtime applied already: 0 is returned), else 90%
// of the cgroup's memory.max, so that the garbage collector works harder
// before the container is killed rather than after. 0 means leave it.
func memoryLimit(flagValue, env, cgroupFile string) (int64, string, error) {
	switch {
	case flagValue == "off":
		return math.MaxInt64, "--memory-limit", nil
	case flagValue != "":
		n, err := parseBytes(flagValue)
		if err != nil {
			return 0, "", fmt.Errorf("--memory-limit %q: %w", flagValue, err)
		}
		return n, "--memory-limit", nil
	case env != "":
		return 0, "", nil
	}
	b, err := os.ReadFile(cgroupFile)
	if err != nil {
		return 0, "", nil
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, "", nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, "", nil
	}
	return n / 10 * 9, cgroupFile, nil
}

// parseBytes parses a size as GOMEMLIMIT writes it: digits and a unit
// B, KiB, MiB, GiB or TiB (none means bytes).
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, errors.New("want a positive size such as 512MiB")
	}
	return n * mult, nil
}
