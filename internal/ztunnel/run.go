package ztunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ambit-mesh/ambit/internal/lb"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"sync/atomic"
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
	// PprofAddr, if set, serves net/http/pprof (heap and CPU profiles of
	// the live process). It must be a loopback address: profiles reveal
	// internals and cost CPU.
	PprofAddr string
	// DrainTimeout is how long open connections may finish after SIGTERM.
	DrainTimeout time.Duration
	Log          *slog.Logger
	// Started, if set, is called once every endpoint listens (embedders
	// and tests learn the addresses of ":0" listeners from it).
	Started func(Running)
}

// Running describes a started ztunnel (see Config.Started).
type Running struct {
	Proxy                                        *Proxy
	AdminAddr, MetricsAddr, ReadyAddr, PprofAddr net.Addr
}

// Run serves until ctx is done, then drains.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if cfg.PprofAddr != "" {
		if err := checkLoopback(cfg.PprofAddr); err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
	}
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

	// Connection outcomes feed endpoint choice: connect time and failures
	// per endpoint and zone (internal/lb). Three consecutive connect
	// failures eject an endpoint: unlike a 5xx, a refused connection is
	// rarely a fluke.
	store := state.NewStore(state.Options{Health: lb.NewRegistry(lb.HealthConfig{EjectAfter: 3})})
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
	var draining atomic.Bool
	type endpoint struct {
		name, addr string
		handler    http.Handler
		bound      *net.Addr
	}
	var running Running
	running.Proxy = proxy
	endpoints := []endpoint{
		{"admin", cfg.AdminAddr, adminHandler(proxy, store, certs, config), &running.AdminAddr},
		{"metrics", cfg.MetricsAddr, metricsHandler(metrics), &running.MetricsAddr},
		{"readiness", cfg.ReadyAddr, readyHandler(config, &draining), &running.ReadyAddr},
	}
	if cfg.PprofAddr != "" {
		endpoints = append(endpoints, endpoint{"pprof", cfg.PprofAddr, pprofHandler(), &running.PprofAddr})
	}
	var servers []*http.Server
	errc := make(chan error, len(endpoints))
	for _, e := range endpoints {
		if e.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", e.addr)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return fmt.Errorf("%s endpoint: listen %s: %w", e.name, e.addr, err)
		}
		*e.bound = ln.Addr()
		s := &http.Server{Handler: e.handler, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { errc <- s.Serve(ln) }()
	}
	log.Info("ztunnel started", "node", cfg.NodeName, "controlPlane", cfg.ControlPlane, "agent", cfg.AgentSocket,
		"admin", addrString(running.AdminAddr), "metrics", addrString(running.MetricsAddr), "ready", addrString(running.ReadyAddr), "pprof", addrString(running.PprofAddr))
	if cfg.Started != nil {
		cfg.Started(running)
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Readiness fails at once, so that nothing new is sent our way while
	// the connections in flight finish.
	draining.Store(true)
	log.Info("ztunnel stopping: no new connections; draining", "grace", cfg.DrainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if proxy.Shutdown(drainCtx) {
		log.Info("ztunnel drained: every connection finished")
	} else {
		log.Warn("ztunnel drain: grace period over; closed the connections still open")
	}
	for _, s := range servers {
		s.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// checkLoopback refuses an address that is not on a loopback interface.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (use 127.0.0.1:PORT)", addr)
	}
	return nil
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

// configDump is the admin endpoint's answer: what the ztunnel serves and
// with which configuration. Certificates appear with their expiry, never
// with keys.
type configDump struct {
	Pods         []podDump         `json:"pods"`
	Config       state.Dump        `json:"config"`
	Certificates []certificateDump `json:"certificates"`
	ControlPlane xds.Status        `json:"controlPlane"`
}

type podDump struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	IPs       []string `json:"ips"`
	Identity  string   `json:"identity"`
}

type certificateDump struct {
	Identity  string    `json:"identity"`
	State     string    `json:"state"` // "valid", "pending", "expired"
	NotAfter  time.Time `json:"notAfter,omitzero"`
	RenewAt   time.Time `json:"renewAt,omitzero"`
	Failures  int       `json:"failures,omitempty"`
	LastError string    `json:"lastError,omitempty"`
}

func certificatesDump(now time.Time, st []identity.CertificateStatus) []certificateDump {
	out := make([]certificateDump, 0, len(st))
	for _, c := range st {
		d := certificateDump{Identity: c.ID.String(), NotAfter: c.NotAfter, RenewAt: c.RenewAt, Failures: c.Failures, State: "valid"}
		switch {
		case c.NotAfter.IsZero():
			d.State = "pending"
		case !now.Before(c.NotAfter):
			d.State = "expired"
		}
		if c.LastError != nil {
			d.LastError = c.LastError.Error()
		}
		out = append(out, d)
	}
	return out
}

func adminHandler(proxy *Proxy, store *state.Store, certs *identity.Manager, config *xds.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, configDump{
			Pods:         proxy.podsDump(),
			Config:       store.View().Dump(),
			Certificates: certificatesDump(time.Now(), certs.Status()),
			ControlPlane: config.Status(),
		})
	})
	return mux
}

func metricsHandler(m *telemetry.TCPMetrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.WriteTo(w)
		telemetry.WriteProcess(w)
	})
}

// readyHandler answers 200 once the first configuration has been applied,
// and 503 again once the ztunnel is draining.
func readyHandler(config *xds.Client, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-config.Synced():
			fmt.Fprintln(w, "ready")
		default:
			http.Error(w, "waiting for configuration from the control plane", http.StatusServiceUnavailable)
		}
	})
	return mux
}

func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
