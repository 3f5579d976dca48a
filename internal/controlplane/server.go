// Package controlplane runs Ambit's control plane: it takes Snapshots from a
// Source, translates them, pushes the result to every connected proxy, and
// serves the certificate authority — all behind one TLS gRPC listener
// (15012), with metrics and debug endpoints on an HTTP listener (15014).
//
// Used by the ambit binary (`ambit controlplane`, and the local cluster).
package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/push"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/translate"
)

// Options configure a control plane.
type Options struct {
	Source Source
	Mesh   model.MeshConfig
	// CA is the loaded certificate authority (see ca.New).
	CA *ca.CA
	// Authenticator identifies the node of each proxy; default: the CA's node tokens.
	Authenticator ca.NodeAuthenticator
	// Placement, if set, is asked whether an identity runs on a node when
	// the translated model does not say so (on Kubernetes: the API server,
	// for a pod the CNI plugin has just enrolled and whose IP the model has
	// not seen yet).
	Placement ca.IdentityChecker
	// GRPCAddr serves push and CA over TLS (default ":15012"); HTTPAddr serves
	// /metrics, /readyz and /debug/* (default ":15014"). Use "127.0.0.1:0" in tests.
	GRPCAddr, HTTPAddr string
	// ServingHosts are the DNS names and IPs in the control plane's serving
	// certificate, besides its SPIFFE ID (default: localhost, 127.0.0.1, ::1
	// and "ambit-controlplane").
	ServingHosts []string
	Log          *slog.Logger
}

// Server is a running control plane.
type Server struct {
	opts     Options
	log      *slog.Logger
	registry *prometheus.Registry
	push     *push.Server
	caServer *ca.Server
	// translator is used only from update, which sources call from one goroutine.
	translator *translate.Translator

	grpcLis, httpLis net.Listener
	grpcServer       *grpc.Server
	httpServer       *http.Server

	// current is the last translation pushed; nodeIDs is derived from it for the CA.
	current atomic.Pointer[state]
	ready   chan struct{}
	once    sync.Once

	configLoads         *prometheus.CounterVec
	configLastSuccess   prometheus.Gauge
	translationSeconds  prometheus.Histogram
	translationProblems prometheus.Gauge
}

type state struct {
	snap     *model.Snapshot
	out      *translate.Output
	nodeIDs  map[string]map[string]bool
	problems []string
	at       time.Time
}

// New prepares a control plane and opens its listeners; Run serves.
func New(opts Options) (*Server, error) {
	if opts.Source == nil || opts.CA == nil {
		return nil, errors.New("controlplane: Source and CA are required")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Authenticator == nil {
		opts.Authenticator = opts.CA.TokenAuthenticator()
	}
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = ":15012"
	}
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = ":15014"
	}
	if len(opts.ServingHosts) == 0 {
		opts.ServingHosts = []string{"localhost", "127.0.0.1", "::1", "ambit-controlplane"}
	}
	s := &Server{opts: opts, log: opts.Log, registry: prometheus.NewRegistry(), ready: make(chan struct{}), translator: translate.NewTranslator(opts.Mesh)}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.configLoads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_config_loads_total", Help: "Configuration loads by result (ok, rejected).",
	}, []string{"result"})
	s.configLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ambit_config_last_load_success", Help: "1 if the last configuration load was valid, 0 if it was rejected (the previous one stays in force).",
	})
	s.translationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ambit_translation_seconds", Help: "Time to translate a snapshot into proxy resources.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	s.translationProblems = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ambit_translation_problems", Help: "Objects or fields the last translation could not apply (see /debug/config).",
	})
	s.registry.MustRegister(s.configLoads, s.configLastSuccess, s.translationSeconds, s.translationProblems)

	// Translation output is never modified once pushed, and unchanged
	// workloads are pointer-identical between translations, so the push
	// server can skip re-encoding them.
	s.push = push.New(push.Options{Logger: s.log.With("component", "push"), Registry: s.registry, Authenticate: s.authenticateProxy, ImmutableMessages: true})
	caServer, err := ca.NewServer(ca.ServerOptions{
		CA: opts.CA, Authenticator: opts.Authenticator, Identities: ca.IdentityCheckerFunc(s.nodeRuns),
		Logger: s.log.With("component", "ca"), Registerer: s.registry,
	})
	if err != nil {
		return nil, err
	}
	s.caServer = caServer

	tlsConf, err := opts.CA.ServingTLSConfig(opts.ServingHosts)
	if err != nil {
		return nil, fmt.Errorf("controlplane: serving certificate: %w", err)
	}
	s.grpcServer = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf)),
		// Proxies hold one stream for hours; keepalives find dead peers
		// (a node that vanished) without waiting for TCP timeouts.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	s.push.Register(s.grpcServer)
	meshv1.RegisterCertificateAuthorityServer(s.grpcServer, s.caServer)

	if s.grpcLis, err = net.Listen("tcp", opts.GRPCAddr); err != nil {
		return nil, fmt.Errorf("controlplane: listen %s: %w", opts.GRPCAddr, err)
	}
	if s.httpLis, err = net.Listen("tcp", opts.HTTPAddr); err != nil {
		s.grpcLis.Close()
		return nil, fmt.Errorf("controlplane: listen %s: %w", opts.HTTPAddr, err)
	}
	s.httpServer = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// GRPCAddr and HTTPAddr are the bound listener addresses.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Ready is closed once the first configuration has been translated and pushed.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Push exposes the push server (status, tests).
func (s *Server) Push() *push.Server { return s.push }

// Run serves until ctx is done or the source fails.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 3)
	go func() { errc <- s.grpcServer.Serve(s.grpcLis) }()
	go func() { errc <- s.httpServer.Serve(s.httpLis) }()
	go func() { errc <- s.opts.Source.Run(ctx, s.update) }()
	s.log.Info("control plane serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "trustDomain", s.opts.Mesh.TrustDomain)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.httpServer.Shutdown(shutdownCtx)
	// Push streams never end on their own and proxies reconnect (to another
	// replica, or to this one restarted) without disturbing traffic, so only
	// certificate requests in flight get a moment to finish.
	stopped := make(chan struct{})
	go func() { s.grpcServer.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Second):
		s.grpcServer.Stop()
	}
	return err
}

// update translates a new snapshot and pushes it.
func (s *Server) update(snap *model.Snapshot) {
	start := time.Now()
	out := s.translator.Translate(snap)
	s.translationSeconds.Observe(time.Since(start).Seconds())
	st := &state{snap: snap, out: out, nodeIDs: out.NodeIdentities(), at: time.Now()}
	for _, p := range out.Problems {
		st.problems = append(st.problems, p.String())
	}
	prev := s.current.Swap(st)
	s.logProblems(prev, st)
	s.translationProblems.Set(float64(len(st.problems)))
	s.push.Update(out.Resources())
	s.log.Info("configuration pushed", "version", s.push.Version(), "workloads", len(out.Workloads), "services", len(out.Services),
		"waypoints", len(out.Waypoints), "took", time.Since(start).Round(time.Microsecond))
	s.once.Do(func() { close(s.ready) })
}

// logProblems logs translation problems that are new since the previous
// translation, so a steady broken object is reported once, not on every push.
func (s *Server) logProblems(prev, cur *state) {
	seen := map[string]bool{}
	if prev != nil {
		for _, p := range prev.problems {
			seen[p] = true
		}
	}
	for _, p := range cur.problems {
		if !seen[p] {
			s.log.Warn("configuration not applied", "problem", p)
		}
	}
}

// SourceResult records the outcome of a configuration load (for sources that report it).
func (s *Server) SourceResult(err error) {
	if err != nil {
		s.configLoads.WithLabelValues("rejected").Inc()
		s.configLastSuccess.Set(0)
		return
	}
	s.configLoads.WithLabelValues("ok").Inc()
	s.configLastSuccess.Set(1)
}

// nodeRuns tells the CA whether a workload with identity id runs on node.
func (s *Server) nodeRuns(node string, id spiffe.ID) bool {
	if st := s.current.Load(); st != nil && st.nodeIDs[node][id.String()] {
		return true
	}
	return s.opts.Placement != nil && s.opts.Placement.NodeRuns(node, id)
}

// authenticateProxy admits a push stream only from the node its credential names.
func (s *Server) authenticateProxy(ctx context.Context, node *meshv1.ProxyNode) error {
	name, err := s.opts.Authenticator.Authenticate(ctx)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if node.GetNodeName() != name {
		return status.Errorf(codes.PermissionDenied, "proxy %q says it runs on node %q but its credential is for node %q", node.GetId(), node.GetNodeName(), name)
	}
	return nil
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
			fmt.Fprintln(w, "ready")
		default:
			http.Error(w, "no configuration pushed yet", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.push.Status())
	})
	mux.HandleFunc("GET /debug/config", func(w http.ResponseWriter, r *http.Request) {
		st := s.current.Load()
		if st == nil {
			http.Error(w, "no configuration yet", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, map[string]any{
			"version":   s.push.Version(),
			"epoch":     s.push.Epoch(),
			"at":        st.at,
			"objects":   st.snap.Len(),
			"resources": s.push.Resources(),
			"problems":  st.problems,
		})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
