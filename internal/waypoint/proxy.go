package waypoint

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/rawio"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/telemetry"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// Limits protect the waypoint from bad or hostile clients. Zero values
// take the defaults.
type Limits struct {
	// MaxHeaderBytes bounds a request's header block (default 60 KiB, as
	// Envoy); larger requests get 431.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of request header fields (default 100,
	// as Envoy); more get 431.
	MaxHeaders int
	// MaxURIBytes bounds the request target (default 16 KiB); longer get 414.
	MaxURIBytes int
	// MaxConcurrentStreams per HTTP/2 connection (default 1000).
	MaxConcurrentStreams int
	// ReadHeaderTimeout bounds receiving a request's headers (default 15s),
	// against slowloris clients.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections idle this long (default 5m).
	IdleTimeout time.Duration
	// BufferBytes bounds the request body kept to retry or mirror a request
	// (default 64 KiB); a longer body is streamed and not retried or mirrored.
	BufferBytes int
}

func (l *Limits) defaults() {
	setDefault(&l.MaxHeaderBytes, 60<<10)
	setDefault(&l.MaxHeaders, 100)
	setDefault(&l.MaxURIBytes, 16<<10)
	setDefault(&l.MaxConcurrentStreams, 1000)
	setDefault(&l.BufferBytes, 64<<10)
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = 15 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 5 * time.Minute
	}
}

func setDefault(v *int, d int) {
	if *v <= 0 {
		*v = d
	}
}

// Options configure a Proxy.
type Options struct {
	// Identity is the waypoint's own: presented to clients and upstreams.
	Identity spiffe.ID
	// Store holds the configuration (fed by the control plane).
	Store *Store
	// Certificates supplies the waypoint's certificate and the mesh roots
	// (an *identity.Manager).
	Certificates hbone.Certificates
	// Zone and Region of the waypoint's node, for logs.
	Metrics    *telemetry.HTTPMetrics
	TCPMetrics *telemetry.TCPMetrics
	// AccessLog, if set, receives one JSON line per request.
	AccessLog io.Writer
	Limits    Limits
	// DialTimeout bounds connecting to an upstream (default 10s).
	DialTimeout time.Duration
	// Dial opens upstream TCP connections (default: a net.Dialer); tests
	// dial from inside the waypoint pod's network namespace.
	Dial hbone.DialFunc
	Log  *slog.Logger
}

// Proxy is a running waypoint: give it listeners with Serve.
type Proxy struct {
	id          spiffe.ID
	store       *Store
	metrics     *telemetry.HTTPMetrics
	tcpMetrics  *telemetry.TCPMetrics
	access      *accessLog
	limits      Limits
	dialTimeout time.Duration
	log         *slog.Logger

	hbone    *hbone.Server
	pool     *hbone.Pool
	http     *http.Server
	ln       *connListener
	h1, h2   *http.Transport
	h1fast   *h1Client
	h1conns  h1Conns
	dial     hbone.DialFunc
	clusters clusters
	hosts    sync.Map // upstreamKey → string
	nhosts   atomic.Int64
	wg       sync.WaitGroup
	// stopWatch ends the calls of viewChanged.
	stopWatch func()
}

// New returns a Proxy; it serves nothing until Serve.
func New(opts Options) (*Proxy, error) {
	if opts.Store == nil || opts.Certificates == nil || opts.Identity == (spiffe.ID{}) {
		return nil, errors.New("waypoint: Identity, Store and Certificates are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.NewHTTPMetrics()
	}
	if opts.TCPMetrics == nil {
		opts.TCPMetrics = telemetry.NewTCPMetrics()
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	opts.Limits.defaults()
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	// Plaintext upstream connections go through rawio; HBONE's (opts.Dial
	// in the pool) already do inside hbone.
	p := &Proxy{id: opts.Identity, store: opts.Store, metrics: opts.Metrics, tcpMetrics: opts.TCPMetrics,
		limits: opts.Limits, dialTimeout: opts.DialTimeout, dial: rawio.Dialer(opts.Dial), log: opts.Log, ln: newConnListener()}
	if opts.AccessLog != nil {
		p.access = newAccessLog(opts.AccessLog)
	}
	var err error
	if p.pool, err = hbone.NewPool(hbone.PoolOptions{Certificates: opts.Certificates, Dial: opts.Dial, Logger: opts.Log.With("component", "hbone-pool")}); err != nil {
		return nil, err
	}
	p.hbone, err = hbone.NewServer(hbone.ServerOptions{
		Certificates: opts.Certificates,
		Identity:     func(net.Addr, string) (spiffe.ID, error) { return p.id, nil },
		Handler:      p.handleTunnel,
		Logger:       opts.Log.With("component", "hbone-server"),
	})
	if err != nil {
		return nil, err
	}
	p.http = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.limits.ReadHeaderTimeout,
		IdleTimeout:       p.limits.IdleTimeout,
		MaxHeaderBytes:    p.limits.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tunnelConn); ok {
				return context.WithValue(ctx, tunnelKey{}, tc.t)
			}
			return ctx
		},
		// Malformed requests are answered 400 by net/http; its complaints
		// about them are the clients' problem, not ours to log.
		ErrorLog: log.New(io.Discard, "", 0),
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: p.limits.MaxConcurrentStreams, MaxDecoderHeaderTableSize: 4096},
	}
	p.http.Protocols = new(http.Protocols)
	p.http.Protocols.SetHTTP1(true)
	p.http.Protocols.SetUnencryptedHTTP2(true)
	p.h1 = p.transport(false)
	p.h2 = p.transport(true)
	p.h1fast = newH1Client(p.dialUpstream, 90*time.Second)
	p.h1conns.start(p.limits.IdleTimeout, p.limits.ReadHeaderTimeout)
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.http.Serve(p.ln) }()
	p.stopWatch = p.store.state.Watch(p.viewChanged)
	return p, nil
}

// viewChanged lets go of the upstream connections to addresses whose
// workload left the mesh or was replaced (a new pod given a departed pod's
// address): they reach a pod that is gone, and a request put on one would
// wait for an answer that never comes. The pooled HBONE connections to
// those addresses take no new tunnels, and the idle HTTP connections
// (tunnels on them) are closed; requests in flight finish. The next request
// to the address dials afresh.
func (p *Proxy) viewChanged(prev, next *state.View) {
	gone := state.Departed(prev, next)
	if len(gone) == 0 {
		return
	}
	isGone := func(a netip.Addr) bool {
		_, found := slices.BinarySearchFunc(gone, a.Unmap(), netip.Addr.Compare)
		return found
	}
	p.pool.Drain(func(k hbone.PoolKey) bool { return isGone(k.Addr.Addr()) })
	p.h1fast.closeIdle(func(host string, _ *h1Conn) bool {
		dst, _, err := parseUpstreamHost(host)
		return err == nil && isGone(dst.Addr())
	})
	// http.Transport closes idle connections only all at once: do so when
	// this waypoint has sent requests to one of the addresses.
	used := false
	p.hosts.Range(func(k, _ any) bool {
		used = isGone(k.(upstreamKey).dst.Addr())
		return !used
	})
	if used {
		p.h1.CloseIdleConnections()
		p.h2.CloseIdleConnections()
	}
}

func (p *Proxy) transport(h2 bool) *http.Transport {
	t := &http.Transport{
		DialContext:            p.dialUpstream,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: int64(p.limits.MaxHeaderBytes),
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
	}
	t.Protocols = new(http.Protocols)
	if h2 {
		t.Protocols.SetUnencryptedHTTP2(true)
		t.HTTP2 = &http.HTTP2Config{}
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// Serve accepts HBONE connections on l until Shutdown or Close.
func (p *Proxy) Serve(l net.Listener) error { return p.hbone.Serve(l) }

// ServePlain serves plaintext connections on l as if each were a tunnel
// to authority from an unauthenticated client at its source address. It
// exists to measure the waypoint as a bare HTTP hop against other proxies
// (bench/) and refuses anything but a loopback listener: mesh traffic never
// arrives in plaintext.
func (p *Proxy) ServePlain(l net.Listener, authority netip.AddrPort) error {
	if a := addrOf(l.Addr()).Addr(); !a.IsLoopback() {
		return fmt.Errorf("waypoint: plaintext listener on %s: only loopback addresses are allowed", l.Addr())
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			t := newTunnel(spiffe.ID{}, addrOf(c.RemoteAddr()).Addr(), addrOf(c.LocalAddr()).Addr(), authority, "")
			cfg, view := p.store.config(), p.store.state.View()
			if cfg == nil {
				c.Close()
				return
			}
			proto, err := p.tunnelProtocol(cfg, view, authority)
			if err != nil {
				p.log.Warn("plaintext connection refused", "reason", err)
				c.Close()
				return
			}
			p.serveStream(context.Background(), t, rawio.Wrap(c).(stream), proto, p.log)
		}()
	}
}

// Metrics returns the request metrics.
func (p *Proxy) Metrics() *telemetry.HTTPMetrics { return p.metrics }

// TCPMetrics returns the metrics of traffic relayed at L4.
func (p *Proxy) TCPMetrics() *telemetry.TCPMetrics { return p.tcpMetrics }

// Shutdown stops taking tunnels, lets requests in flight finish until ctx is
// done, then closes everything. It reports whether everything finished.
func (p *Proxy) Shutdown(ctx context.Context) bool {
	errc := make(chan error, 3)
	go func() { errc <- p.http.Shutdown(ctx) }()
	go func() { errc <- p.hbone.Shutdown(ctx) }()
	go func() { errc <- p.h1conns.shutdown(ctx) }()
	ok := (<-errc == nil) && (<-errc == nil) && (<-errc == nil)
	p.Close()
	return ok
}

// Close stops everything at once.
func (p *Proxy) Close() {
	p.stopWatch()
	p.ln.Close()
	p.h1conns.close()
	p.http.Close()
	p.hbone.Close()
	p.pool.Close()
	p.h1.CloseIdleConnections()
	p.h1fast.Close()
	p.h2.CloseIdleConnections()
	p.access.close()
	p.wg.Wait()
}

// handleTunnel serves one inbound HBONE tunnel: it checks the destination
// is something this waypoint serves, then hands the stream to the HTTP
// server or relays it at L4.
func (p *Proxy) handleTunnel(ctx context.Context, r *hbone.Request) {
	t := newTunnel(r.Peer, addrOf(r.RemoteAddr).Addr(), addrOf(r.LocalAddr).Addr(), r.Authority, r.Header.Get("Baggage"))
	logger := p.log.With("peer", r.Peer.String(), "src", t.src.String(), "dst", t.authority.String())
	cfg := p.store.config()
	if cfg == nil {
		logger.Warn("tunnel refused: no configuration yet")
		r.Reject(http.StatusServiceUnavailable, nil)
		return
	}
	view := p.store.state.View()
	proto, err := p.tunnelProtocol(cfg, view, t.authority)
	if err != nil {
		logger.Warn("tunnel refused", "reason", err)
		r.Reject(http.StatusBadRequest, nil)
		return
	}
	s, err := r.Accept(nil)
	if err != nil {
		return
	}
	p.serveStream(ctx, t, s, proto, logger)
}

// serveStream serves an accepted tunnel: HTTP through the HTTP server, or
// L4 relay.
func (p *Proxy) serveStream(ctx context.Context, t *tunnel, s stream, proto meshv1.AppProtocol, logger *slog.Logger) {
	var prefix []byte
	if proto == meshv1.AppProtocol_APP_PROTOCOL_UNSPECIFIED {
		var d detected
		d, prefix = detect(s)
		proto = meshv1.AppProtocol_TCP
		if d == detectedHTTP {
			proto = meshv1.AppProtocol_HTTP
		}
	}
	if proto == meshv1.AppProtocol_TCP || proto == meshv1.AppProtocol_TLS {
		p.relayTCP(ctx, t, s, prefix, logger)
		return
	}
	if proto == meshv1.AppProtocol_HTTP {
		p.serveHTTP1(ctx, t, s, prefix)
		return
	}
	c := newTunnelConn(s, t, prefix)
	if !p.ln.push(ctx, c) {
		return
	}
	select {
	case <-c.closed:
	case <-ctx.Done():
	}
}

// tunnelProtocol checks that the tunnel's destination is a Service bound to
// this waypoint (on one of its ports) or a workload bound to it, and
// returns the port's protocol.
func (p *Proxy) tunnelProtocol(cfg *config, view *state.View, dst netip.AddrPort) (meshv1.AppProtocol, error) {
	if svc, sp := view.ServiceByVIP(dst); svc != nil {
		if sp == nil {
			return 0, fmt.Errorf("port %d is not a port of Service %s/%s", dst.Port(), svc.GetNamespace(), svc.GetName())
		}
		key := serviceKey(svc)
		if cfg.services[key] == nil {
			return 0, fmt.Errorf("Service %s is not bound to this waypoint", key)
		}
		if pr := cfg.forService(key, uint32(dst.Port()), ""); pr != nil {
			return pr.pr.GetProtocol(), nil
		}
		return sp.GetAppProtocol(), nil
	}
	w := view.WorkloadByIP(dst.Addr())
	if w == nil {
		return 0, fmt.Errorf("%s is neither a Service VIP nor a workload", dst.Addr())
	}
	if !p.isMe(cfg, view, w.GetWaypoint()) {
		return 0, fmt.Errorf("workload %s/%s is not bound to this waypoint", w.GetNamespace(), w.GetName())
	}
	return meshv1.AppProtocol_APP_PROTOCOL_UNSPECIFIED, nil
}

// isMe reports whether wp is this waypoint.
func (p *Proxy) isMe(cfg *config, view *state.View, wp *meshv1.WaypointRef) bool {
	if wp == nil {
		return false
	}
	svc := view.ServiceByKey(wp.GetService())
	return svc != nil && svc.GetName() == cfg.name && svc.GetNamespace() == cfg.namespace
}

func serviceKey(svc *meshv1.Service) string { return svc.GetNamespace() + "/" + svc.GetHostname() }

// relayTCP relays a tunnel to an endpoint of its destination at L4, after
// the L4 half of the L7 policies.
func (p *Proxy) relayTCP(ctx context.Context, t *tunnel, s stream, prefix []byte, logger *slog.Logger) {
	cfg := p.store.config()
	view := p.store.state.View()
	labels := telemetry.TCPLabels{Reporter: "waypoint", RequestProtocol: "tcp", ConnectionSecurityPolicy: "mutual_tls", ResponseFlags: "-"}
	sourceLabels(&labels, view.WorkloadByIP(t.src), t.peer)
	target, svc, err := p.l4Target(cfg, view, t)
	if svc != nil {
		labels.DestinationService, labels.DestinationServiceName, labels.DestinationServiceNamespace = svc.GetHostname(), svc.GetName(), svc.GetNamespace()
	}
	counters := func(flags string) *telemetry.TCPCounters {
		labels.ResponseFlags = flags
		return p.tcpMetrics.For(labels)
	}
	if err != nil {
		logger.Warn("L4 relay: no endpoint", "error", err)
		m := counters("UH")
		m.Opened.Add(1)
		m.Closed.Add(1)
		return
	}
	svcKey := ""
	if svc != nil {
		svcKey = serviceKey(svc)
	}
	conn := authz.Conn{Source: t.peer, SourceIP: t.src, DestinationIP: t.authority.Addr(), DestinationPort: t.authority.Port()}
	if ok, policy := cfg.authorize(svcKey, &conn, nil); !ok {
		logger.Info("L4 relay denied by policy", "policy", policy)
		m := counters("DENY")
		m.Opened.Add(1)
		m.Closed.Add(1)
		return
	}
	destinationLabels(&labels, view.WorkloadByIP(target.Addr()))
	dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	up, err := p.dialUpstream(dctx, "tcp", p.upstreamHost(target, t.src))
	cancel()
	if err != nil {
		logger.Warn("L4 relay: upstream unreachable", "target", target.String(), "error", err)
		m := counters("UF")
		m.Opened.Add(1)
		m.Closed.Add(1)
		return
	}
	if len(prefix) > 0 {
		if _, err := up.Write(prefix); err != nil {
			up.Close()
			return
		}
	}
	m := counters("-")
	m.Opened.Add(1)
	// Unwrapped: Splice knows TCP connections (splice(2), resets).
	res := hbone.Splice(ctx, rawio.Unwrap(s), rawio.Unwrap(up))
	m.Received.Add(uint64(res.AtoB) + uint64(len(prefix)))
	m.Sent.Add(uint64(res.BtoA))
	m.Closed.Add(1)
}

// l4Target picks the endpoint for a tunnel relayed at L4.
func (p *Proxy) l4Target(cfg *config, view *state.View, t *tunnel) (netip.AddrPort, *meshv1.Service, error) {
	svc, sp := view.ServiceByVIP(t.authority)
	if svc == nil {
		return t.authority, nil, nil // a workload: to itself
	}
	key := serviceKey(svc)
	c, _ := p.clusterFor(cfg, key, "")
	e := c.pick(c.endpoints(view.Endpoints(key)), &state.Request{Service: svc, Port: sp, Source: c.caller(view, t, view.WorkloadByIP(t.src))}, 0, false, nil)
	if e == nil {
		return netip.AddrPort{}, svc, fmt.Errorf("Service %s has no healthy endpoint", key)
	}
	tpPort, ok := e.TargetPort(sp)
	if !ok {
		return netip.AddrPort{}, svc, fmt.Errorf("endpoint %s does not serve port %d", e.Workload.GetName(), sp.GetPort())
	}
	return netip.AddrPortFrom(e.Address(t.authority.Addr()), tpPort), svc, nil
}

// clusterFor returns the runtime state of a destination and its policy.
func (p *Proxy) clusterFor(cfg *config, svcKey, subset string) (*cluster, *trafficPolicy) {
	tp := defaultTrafficPolicy
	var sp *subsetPolicy
	if d := cfg.dest[svcKey]; d != nil {
		tp = d.tp
		if subset != "" {
			if sp = d.subsets[subset]; sp != nil {
				tp = sp.tp
			}
		}
	}
	key := svcKey
	if subset != "" {
		key += "|" + subset
		if sp == nil {
			// A subset no DestinationRule defines selects nothing.
			sp = &subsetPolicy{name: subset, tp: tp}
		}
	}
	return p.clusters.get(key, tp, sp), tp
}

const maxHostCache = 1 << 16

// Upstream connections are pooled by the HTTP transports per "host", which
// the waypoint makes the pair (endpoint, original source): a tunnel to an
// endpoint carries Forwarded: for=<source> and the source's baggage, so
// requests of different clients never share one.
type upstreamKey struct {
	dst netip.AddrPort
	src netip.Addr
}

func (p *Proxy) upstreamHost(dst netip.AddrPort, src netip.Addr) string {
	k := upstreamKey{dst, src}
	if v, ok := p.hosts.Load(k); ok {
		return v.(string)
	}
	d, s := dst.Addr().As16(), src.As16()
	h := hex.EncodeToString(d[:]) + "." + hex.EncodeToString(s[:]) + ":" + strconv.Itoa(int(dst.Port()))
	// A cache, bounded: clients and endpoints come and go.
	if p.nhosts.Add(1) > maxHostCache {
		p.hosts.Clear()
		p.nhosts.Store(1)
	}
	p.hosts.Store(k, h)
	return h
}

func parseUpstreamHost(addr string) (netip.AddrPort, netip.Addr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, netip.Addr{}, err
	}
	d, s, ok := strings.Cut(host, ".")
	db, err1 := hex.DecodeString(d)
	sb, err2 := hex.DecodeString(s)
	pn, err3 := strconv.ParseUint(port, 10, 16)
	if !ok || err1 != nil || err2 != nil || err3 != nil || len(db) != 16 || len(sb) != 16 {
		return netip.AddrPort{}, netip.Addr{}, fmt.Errorf("waypoint: bad upstream address %q", addr)
	}
	dst := netip.AddrFrom16([16]byte(db)).Unmap()
	src := netip.AddrFrom16([16]byte(sb)).Unmap()
	return netip.AddrPortFrom(dst, uint16(pn)), src, nil
}

// errGoneEndpoint: the endpoint is no workload of the mesh any more.
var errGoneEndpoint = errors.New("waypoint: endpoint is no longer a workload of the mesh")

// dialUpstream connects to an endpoint: over HBONE to its ztunnel when it is
// in the mesh (with the waypoint's identity, the original source in
// Forwarded and the source's baggage), directly only when its workload is
// pushed as outside the mesh. The connection attempt is bounded by the dial
// timeout: an address nothing answers for (a pod whose network is gone)
// makes the attempt fail, and the retry policy or a 503 follow, instead of
// the request waiting as long as the kernel retries SYNs.
func (p *Proxy) dialUpstream(ctx context.Context, _, addr string) (net.Conn, error) {
	dst, src, err := parseUpstreamHost(addr)
	if err != nil {
		return nil, err
	}
	view := p.store.state.View()
	w := view.WorkloadByIP(dst.Addr())
	if w == nil {
		// Every endpoint is a workload, so the endpoint left the mesh after
		// the request chose it from an older view (a pod removed in a
		// rollout). Its protocol is unknown: plaintext could reach a pod
		// being torn down, which refuses it or never answers. Failing now
		// lets the retry policy pick another endpoint.
		return nil, fmt.Errorf("%w: %s", errGoneEndpoint, dst)
	}
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	if w.GetTunnelProtocol() != meshv1.TunnelProtocol_HBONE {
		return p.dial(ctx, "tcp", dst.String())
	}
	t := hbone.Target{
		Source:      p.id,
		Destination: []spiffe.ID{{TrustDomain: w.GetTrustDomain(), Namespace: w.GetNamespace(), ServiceAccount: w.GetServiceAccount()}},
		Addr:        netip.AddrPortFrom(dst.Addr(), state.HBONEPort),
		Authority:   dst,
	}
	if src.IsValid() && !src.IsUnspecified() {
		t.ForwardedFor = src
		t.Baggage = baggageOf(view.WorkloadByIP(src))
	}
	s, _, err := p.pool.Connect(ctx, t)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func addrOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// baggageOf describes a workload for the peer's telemetry.
func baggageOf(w *meshv1.Workload) string {
	if w == nil {
		return ""
	}
	return hbone.PeerMetadata{
		Namespace: w.GetNamespace(), Workload: w.GetWorkloadName(), Service: w.GetCanonicalName(), Version: w.GetCanonicalRevision(),
		Cluster: w.GetClusterId(), Region: w.GetLocality().GetRegion(), Zone: w.GetLocality().GetZone(),
	}.Baggage()
}

func sourceLabels(l *telemetry.TCPLabels, w *meshv1.Workload, id spiffe.ID) {
	if id != (spiffe.ID{}) {
		l.SourcePrincipal = id.String()
	}
	if w == nil {
		return
	}
	l.SourceWorkload, l.SourceWorkloadNamespace = w.GetWorkloadName(), w.GetNamespace()
	l.SourceCanonicalService, l.SourceCanonicalRevision = w.GetCanonicalName(), w.GetCanonicalRevision()
	l.SourceApp, l.SourceVersion = w.GetCanonicalName(), w.GetCanonicalRevision()
	l.SourceCluster, l.SourceZone = w.GetClusterId(), w.GetLocality().GetZone()
}

func destinationLabels(l *telemetry.TCPLabels, w *meshv1.Workload) {
	if w == nil {
		return
	}
	l.DestinationWorkload, l.DestinationWorkloadNamespace = w.GetWorkloadName(), w.GetNamespace()
	l.DestinationCanonicalService, l.DestinationCanonicalRevision = w.GetCanonicalName(), w.GetCanonicalRevision()
	l.DestinationApp, l.DestinationVersion = w.GetCanonicalName(), w.GetCanonicalRevision()
	l.DestinationCluster, l.DestinationZone = w.GetClusterId(), w.GetLocality().GetZone()
	l.DestinationPrincipal = spiffe.ID{TrustDomain: w.GetTrustDomain(), Namespace: w.GetNamespace(), ServiceAccount: w.GetServiceAccount()}.String()
}
