package waypoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/telemetry"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// Config is everything a waypoint process needs; cmd/waypoint fills it
// from flags and the pod's environment.
type Config struct {
	// NodeName is the node the waypoint runs on; its credential must be for it.
	NodeName string
	// ControlPlane is the push and CA address (host:15012).
	ControlPlane string
	// TokenFile holds the node's bearer token; RootCertFile the mesh roots.
	TokenFile, RootCertFile string
	TrustDomain             string
	// Namespace and Gateway name the waypoint Gateway served; ServiceAccount
	// is the waypoint's own (its identity).
	Namespace, Gateway, ServiceAccount string
	// HBONEAddr is where tunnels arrive (":15008").
	HBONEAddr string
	// Listen opens the HBONE listener and Dial the upstream connections
	// (default: in the process's network namespace; tests use the
	// waypoint pod's).
	Listen func(network, addr string) (net.Listener, error)
	Dial   hbone.DialFunc
	// AdminAddr serves /config_dump (keep it on localhost); MetricsAddr
	// /metrics; ReadyAddr /healthz/ready.
	AdminAddr, MetricsAddr, ReadyAddr string
	// PlainHTTP maps loopback listen addresses to destinations
	// ("127.0.0.1:18080" → Service VIP:port): plaintext connections there
	// are served as tunnels to that destination, to measure the waypoint as
	// a bare HTTP hop (bench/). Empty in production.
	PlainHTTP map[string]netip.AddrPort
	// AccessLog receives one JSON line per request; nil disables it.
	AccessLog io.Writer
	Limits    Limits
	// NoServedZoneHeader leaves out the x-ambit-served-zone response
	// header (the zone of the endpoint that answered).
	NoServedZoneHeader bool
	// DrainTimeout is how long requests in flight may finish after SIGTERM.
	DrainTimeout time.Duration
	Log          *slog.Logger
	// Started, if set, is called once every endpoint listens.
	Started func(Running)
}

// Running describes a started waypoint (see Config.Started).
type Running struct {
	Proxy                                        *Proxy
	HBONEAddr, AdminAddr, MetricsAddr, ReadyAddr net.Addr
}

// Run serves until ctx is done, then drains.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Namespace == "" || cfg.Gateway == "" {
		return errors.New("the waypoint's namespace and Gateway name are required")
	}
	if cfg.ServiceAccount == "" {
		cfg.ServiceAccount = cfg.Gateway
	}
	id := spiffe.ID{TrustDomain: cfg.TrustDomain, Namespace: cfg.Namespace, ServiceAccount: cfg.ServiceAccount}
	conn, bundle, err := identity.DialControlPlane(cfg.ControlPlane, cfg.RootCertFile, cfg.TrustDomain, cfg.TokenFile)
	if err != nil {
		return err
	}
	defer conn.Close()
	gateway := cfg.Namespace + "/" + cfg.Gateway
	store := NewStore(gateway)
	config, err := xds.New(xds.Options{
		Conn: conn,
		Node: &meshv1.ProxyNode{Id: fmt.Sprintf("waypoint-%s-%s-%d", cfg.NodeName, cfg.Gateway, os.Getpid()), NodeName: cfg.NodeName,
			Kind: meshv1.ProxyNode_WAYPOINT, Waypoint: gateway},
		Subscriptions: Subscriptions(gateway),
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
	certs.Prefetch(id)
	proxy, err := New(Options{Identity: id, Store: store, Certificates: certs, AccessLog: cfg.AccessLog, Limits: cfg.Limits, Dial: cfg.Dial, Log: log})
	if err != nil {
		return err
	}
	proxy.clusters.noServedZone = cfg.NoServedZoneHeader
	proxy.clusters.log = log.With("component", "lb")
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go config.Run(runCtx)

	var running Running
	running.Proxy = proxy
	listen := cfg.Listen
	if listen == nil {
		listen = net.Listen
	}
	hl, err := listen("tcp", cfg.HBONEAddr)
	if err != nil {
		proxy.Close()
		return fmt.Errorf("HBONE listener: %w", err)
	}
	running.HBONEAddr = hl.Addr()
	errc := make(chan error, 4+len(cfg.PlainHTTP))
	go func() { errc <- proxy.Serve(hl) }()
	for addr, dst := range cfg.PlainHTTP {
		pl, err := listen("tcp", addr)
		if err != nil {
			proxy.Close()
			return fmt.Errorf("plaintext listener: %w", err)
		}
		go func() { errc <- proxy.ServePlain(pl, dst) }()
		defer pl.Close()
	}

	var draining atomic.Bool
	var servers []*http.Server
	for _, e := range []struct {
		name, addr string
		handler    http.Handler
		bound      *net.Addr
	}{
		{"admin", cfg.AdminAddr, adminHandler(store, certs, config), &running.AdminAddr},
		{"metrics", cfg.MetricsAddr, metricsHandler(proxy), &running.MetricsAddr},
		{"readiness", cfg.ReadyAddr, readyHandler(store, certs, id, config, &draining), &running.ReadyAddr},
	} {
		if e.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", e.addr)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			proxy.Close()
			return fmt.Errorf("%s endpoint: listen %s: %w", e.name, e.addr, err)
		}
		*e.bound = ln.Addr()
		s := &http.Server{Handler: e.handler, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { errc <- s.Serve(ln) }()
	}
	log.Info("waypoint started", "gateway", gateway, "identity", id.String(), "node", cfg.NodeName, "controlPlane", cfg.ControlPlane,
		"hbone", running.HBONEAddr.String())
	if cfg.Started != nil {
		cfg.Started(running)
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	draining.Store(true)
	log.Info("waypoint stopping: draining", "grace", cfg.DrainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if !proxy.Shutdown(drainCtx) {
		log.Warn("waypoint drain: grace period over; closed what was still open")
	}
	for _, s := range servers {
		s.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Subscriptions is what a waypoint of Gateway "<namespace>/<name>" asks the
// control plane for.
func Subscriptions(gateway string) map[string][]string {
	return map[string][]string{
		meshv1.TypeWorkload:       {meshv1.Wildcard},
		meshv1.TypeService:        {meshv1.Wildcard},
		meshv1.TypeWaypointConfig: {gateway},
	}
}

func metricsHandler(p *Proxy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		p.Metrics().WriteTo(w)
		p.TCPMetrics().WriteTo(w)
		telemetry.WriteProcess(w)
	})
}

// readyHandler answers 200 once the waypoint has its configuration and its
// certificate, and 503 again while it drains.
func readyHandler(store *Store, certs *identity.Manager, id spiffe.ID, config *xds.Client, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-config.Synced():
		default:
			http.Error(w, "waiting for configuration from the control plane", http.StatusServiceUnavailable)
			return
		}
		if !store.HasConfig() {
			http.Error(w, "no WaypointConfig for "+store.Gateway()+" (is the Gateway there, with gatewayClassName istio-waypoint?)", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
		defer cancel()
		if _, err := certs.Certificate(ctx, id); err != nil {
			http.Error(w, "no certificate for "+id.String()+" yet: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// configDump is the admin endpoint's answer. Certificates appear with their
// expiry, never with keys.
type configDump struct {
	Gateway      string                 `json:"gateway"`
	Waypoint     *meshv1.WaypointConfig `json:"waypointConfig"`
	Certificates []certificateDump      `json:"certificates"`
	ControlPlane xds.Status             `json:"controlPlane"`
}

type certificateDump struct {
	Identity  string    `json:"identity"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	LastError string    `json:"lastError,omitempty"`
}

func adminHandler(store *Store, certs *identity.Manager, config *xds.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		d := configDump{Gateway: store.Gateway(), ControlPlane: config.Status()}
		if c := store.config(); c != nil {
			d.Waypoint = c.source
		}
		for _, s := range certs.Status() {
			cd := certificateDump{Identity: s.ID.String(), NotAfter: s.NotAfter}
			if s.LastError != nil {
				cd.LastError = s.LastError.Error()
			}
			d.Certificates = append(d.Certificates, cd)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d)
	})
	return mux
}
