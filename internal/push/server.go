// Package push is the control-plane side of the push protocol
// (api/mesh/v1/discovery.proto, docs/push-protocol.md): it holds the desired
// state of every resource type, versions it, and streams delta updates to
// proxies with ACK/NACK and flow control.
//
// The caller (the control plane's translation) calls Update or Apply with the
// resources it computed; the Server encodes each resource once, keeps a
// bounded change log, and lets each stream's own goroutine compute what its
// proxy is missing. Update never waits for a proxy; a slow proxy only ever
// has one response in flight, and receives the coalesced latest state next.
package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	// Proxies may ask for gzip-compressed responses (xds.Options.Compression);
	// shared encodings are then compressed once for all of them.
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/keepalive"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives NACKs, refusals and stream errors. Nil: discard.
	Logger *slog.Logger
	// Registry gets the ambit_push_* metrics. Nil: metrics are kept but not
	// registered. Never the global registry unless the caller passes it.
	Registry prometheus.Registerer
	// Authenticate is called with the stream's context (peer, credentials,
	// metadata) and the node of its first request, before anything is sent.
	// A non-nil error ends the stream: a gRPC status error is returned as is,
	// any other error as PermissionDenied.
	Authenticate func(ctx context.Context, node *meshv1.ProxyNode) error
	// Filter, when set, restricts what a node receives: resources for which
	// it returns false are never sent to that node. It is called on the send
	// path once per candidate resource, so it must be cheap, and it must be a
	// pure function of its arguments (its answer for a given node, type and
	// name must not change, or deltas would miss the change).
	Filter func(node *meshv1.ProxyNode, typeURL, name string) bool
	// ImmutableMessages promises that a message passed to Update or Apply is
	// never modified afterwards. Then a message pointer-identical to the one
	// held for that name is known to be unchanged without encoding it (a
	// full Update of 110,000 resources with a few changed costs
	// milliseconds instead of a few hundred), at the price of the Server
	// keeping a reference to the messages.
	ImmutableMessages bool
	// MaxLogEntries bounds the change log. Proxies further behind get full
	// state. Default 100,000 (about 3 MB).
	MaxLogEntries int
	// MaxLogAge drops log entries older than this (checked on each update).
	// Default 1h; negative: no age bound.
	MaxLogAge time.Duration
	// Epoch overrides the random epoch (tests).
	Epoch string
}

// Server implements meshv1.DiscoveryServer. Create it with New.
type Server struct {
	meshv1.UnimplementedDiscoveryServer

	opts    Options
	log     *slog.Logger
	epoch   string
	metrics *metrics

	// updateMu serializes Update/Apply; only its holder writes the state.
	updateMu  sync.Mutex
	kvScratch []namedMsg

	// stateMu guards the fields below. Writers hold updateMu too, so an
	// updater may read them without stateMu.
	stateMu   sync.RWMutex
	version   uint64
	floor     uint64 // changes at versions <= floor may be missing from the log
	types     map[string]*typeState
	typeList  []*typeState
	changeLog []logEntry
	batches   []batch

	connsMu sync.Mutex
	conns   map[*conn]struct{}

	nonces atomic.Uint64
	shared sharedCache
}

// New returns a Server with a fresh random epoch and version 0.
func New(opts Options) *Server {
	if opts.MaxLogEntries <= 0 {
		opts.MaxLogEntries = 100_000
	}
	if opts.MaxLogAge == 0 {
		opts.MaxLogAge = time.Hour
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	epoch := opts.Epoch
	if epoch == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		epoch = hex.EncodeToString(b[:])
	}
	s := &Server{
		opts:    opts,
		log:     logger,
		epoch:   epoch,
		metrics: newMetrics(opts.Registry),
		types:   make(map[string]*typeState),
		conns:   make(map[*conn]struct{}),
	}
	s.shared.entries = make(map[sharedKey]*sharedResp)
	return s
}

// ServerOptions returns the keepalive settings the gRPC server carrying the
// push stream should use: proxies ping every 30s (internal/xds default) to
// notice a dead control plane, so the server must permit it (gRPC's default
// enforcement allows one ping per 5 minutes and would close the
// connection), and the server pings idle proxies to drop dead streams.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
}

// Register registers the Discovery service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { meshv1.RegisterDiscoveryServer(g, s) }

// Epoch returns the random identity of this Server instance.
func (s *Server) Epoch() string { return s.epoch }

// Version returns the current system version (0 before the first change).
func (s *Server) Version() uint64 {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	return s.version
}

// Resources returns the number of live resources per type URL.
func (s *Server) Resources() map[string]int {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	out := make(map[string]int, len(s.typeList))
	for _, ts := range s.typeList {
		out[ts.url] = ts.live
	}
	return out
}

func (s *Server) notifyAll() {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for c := range s.conns {
		c.wake()
	}
}

func (s *Server) nextNonce() string {
	return strconv.FormatUint(s.nonces.Add(1), 36)
}

// ProxyStatus describes one connected proxy stream (for a debug endpoint).
type ProxyStatus struct {
	ID           string    `json:"id"`
	NodeName     string    `json:"nodeName"`
	Kind         string    `json:"kind"`
	Waypoint     string    `json:"waypoint,omitempty"`
	ProxyVersion string    `json:"proxyVersion,omitempty"`
	Peer         string    `json:"peer,omitempty"`
	ConnectedAt  time.Time `json:"connectedAt"`
	// Subscriptions: type URL -> names ("*" for the whole type).
	Subscriptions map[string][]string `json:"subscriptions"`
	// AckedVersion is the system version the proxy has applied.
	AckedVersion uint64 `json:"ackedVersion"`
	// InFlightNonce/InFlightVersion describe the unacknowledged response, if any.
	InFlightNonce   string    `json:"inFlightNonce,omitempty"`
	InFlightVersion uint64    `json:"inFlightVersion,omitempty"`
	InFlightSince   time.Time `json:"inFlightSince,omitzero"`
	Responses       uint64    `json:"responses"`
	Acks            uint64    `json:"acks"`
	Nacks           uint64    `json:"nacks"`
	LastNack        *Nack     `json:"lastNack,omitempty"`
}

// Nack is a response a proxy rejected.
type Nack struct {
	Time    time.Time `json:"time"`
	Nonce   string    `json:"nonce"`
	Version uint64    `json:"version"`
	Types   []string  `json:"types"`
	Code    int32     `json:"code"`
	Message string    `json:"message"`
}

// Status returns the state of every connected stream, ordered by node name
// and proxy id.
func (s *Server) Status() []ProxyStatus {
	s.connsMu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connsMu.Unlock()
	out := make([]ProxyStatus, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.status())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NodeName != out[j].NodeName {
			return out[i].NodeName < out[j].NodeName
		}
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].ConnectedAt.Before(out[j].ConnectedAt)
	})
	return out
}
