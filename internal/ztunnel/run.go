package ztunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/telemetry"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// Config is everything a ztunnel needs to run; cmd/ztunnel fills it from flags.
type Config struct {
	// NodeName is the node this ztunnel serves; its credential must be for it.
	NodeName string
	// ControlPlane is the push and CA address (host:15012).
	ControlPlane string
	// TokenFile holds the node's bearer token (read on every connection, so
	// a rotated token is picked up).
	TokenFile string
	// RootCertFile holds the mesh roots (PEM) to verify the control plane.
	RootCertFile string
	TrustDomain  string
	// AgentSocket is the node agent's Unix socket.
	AgentSocket string
	// AdminAddr serves /config_dump (keep it on localhost); MetricsAddr
	// serves /metrics; ReadyAddr serves /healthz/ready.
	AdminAddr, MetricsAddr, ReadyAddr string
	// DrainTimeout is how long open connections may finish after SIGTERM.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// Run serves until ctx is done, then drains.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	bundle, err := identity.LoadBundle(cfg.RootCertFile)
	if err != nil {
		return fmt.Errorf("mesh roots: %w", err)
	}
	conn, err := grpc.NewClient(cfg.ControlPlane,
		grpc.WithTransportCredentials(credentials.NewTLS(identity.ControlPlaneTLSConfig(bundle, cfg.TrustDomain))),
		grpc.WithPerRPCCredentials(identity.NodeTokenCredentials(identity.TokenFromFile(cfg.TokenFile))))
	if err != nil {
		return fmt.Errorf("control plane %s: %w", cfg.ControlPlane, err)
	}
	defer conn.Close()

	store := state.NewStore(state.Options{})
	subs := map[string][]string{}
	for _, t := range state.TypeURLs {
		subs[t] = []string{meshv1.Wildcard}
	}
	config, err := xds.New(xds.Options{
		Conn:          conn,
		Node:          &meshv1.ProxyNode{Id: fmt.Sprintf("ztunnel-%s-%d", cfg.NodeName, os.Getpid()), NodeName: cfg.NodeName, Kind: meshv1.ProxyNode_ZTUNNEL},
		Subscriptions: subs,
		Handler:       store,
		Logger:        log.With("component", "xds"),
	})
	if err != nil {
		return err
	}
	certs, err := identity.NewManager(identity.Options{Client: meshv1.NewCertificateAuthorityClient(conn), Bundle: bundle, Logger: log.With("component", "certs")})
	if err != nil {
		return err
	}
	defer certs.Close()
	metrics := telemetry.NewTCPMetrics()
	proxy, err := New(Options{NodeName: cfg.NodeName, TrustDomain: cfg.TrustDomain, Store: store, Certs: certs, Metrics: metrics, Log: log})
	if err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go config.Run(runCtx)
	go serveAgent(runCtx, cfg.AgentSocket, proxy, log.With("component", "agent"))
	servers := []*http.Server{
		{Addr: cfg.AdminAddr, Handler: adminHandler(store, certs, config)},
		{Addr: cfg.MetricsAddr, Handler: metricsHandler(metrics)},
		{Addr: cfg.ReadyAddr, Handler: readyHandler(config)},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		s.ReadHeaderTimeout = 10 * time.Second
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
		go func() { errc <- s.Serve(ln) }()
	}
	log.Info("ztunnel started", "node", cfg.NodeName, "controlPlane", cfg.ControlPlane, "agent", cfg.AgentSocket)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("ztunnel stopping: no new connections; draining", "grace", cfg.DrainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	proxy.Shutdown(drainCtx)
	for _, s := range servers {
		s.Shutdown(drainCtx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// serveAgent keeps a connection to the node agent, reconnecting with
// backoff; while it is down, enrolled pods keep being served.
func serveAgent(ctx context.Context, socket string, h redirect.PodHandler, log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		zc, err := redirect.DialAgent(ctx, socket)
		if err == nil {
			backoff = 100 * time.Millisecond
			log.Info("connected to the node agent", "socket", socket, "version", zc.Version)
			err = zc.Serve(ctx, h)
			zc.Close()
		}
		if ctx.Err() != nil {
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("node agent unreachable; enrolled pods keep being served", "error", err, "retryIn", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func adminHandler(store *state.Store, certs *identity.Manager, config *xds.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"config":       store.View().Dump(),
			"certificates": certs.Status(),
			"controlPlane": config.Status(),
		})
	})
	return mux
}

func metricsHandler(m *telemetry.TCPMetrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.WriteTo(w)
	})
}

// readyHandler answers 200 once the first configuration has been applied.
func readyHandler(config *xds.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-config.Synced():
			fmt.Fprintln(w, "ready")
		default:
			http.Error(w, "waiting for configuration from the control plane", http.StatusServiceUnavailable)
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
