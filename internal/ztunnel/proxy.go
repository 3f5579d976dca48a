// Package ztunnel is the per-node L4 proxy: for every pod the node agent
// enrols, it listens inside the pod's network namespace (15001 outbound,
// 15006 inbound plaintext, 15008 inbound HBONE), carries mesh traffic over
// HBONE with the pod's own identity, enforces PeerAuthentication and L4
// AuthorizationPolicy, and counts Istio's TCP metrics. cmd/ztunnel wires it
// to the control plane and the node agent.
package ztunnel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/telemetry"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// Proxy serves the enrolled pods of one node. It implements
// redirect.PodHandler, so the node agent's connection drives it.
type Proxy struct {
	node        string
	trustDomain string
	store       *state.Store
	certs       *identity.Manager
	pool        *hbone.Pool
	hbone       *hbone.Server
	metrics     *telemetry.TCPMetrics
	log         *slog.Logger
	stopWatch   func()

	mu   sync.Mutex
	pods map[string]*pod // by agent pod uid
	// byIP finds the enrolled pod owning an address (for the HBONE
	// server's identity choice and inbound checks).
	byIP map[netip.Addr]*pod
	wg   sync.WaitGroup
	// conns counts connections in flight, for draining.
	conns sync.WaitGroup
}

// Options configure a Proxy.
type Options struct {
	NodeName string
	// TrustDomain of the mesh's identities (default "cluster.local").
	TrustDomain string
	Store       *state.Store
	Certs       *identity.Manager
	Metrics     *telemetry.TCPMetrics
	Log         *slog.Logger
}

// New returns a Proxy serving no pods yet.
func New(opts Options) (*Proxy, error) {
	if opts.Store == nil || opts.Certs == nil || opts.NodeName == "" {
		return nil, errors.New("ztunnel: NodeName, Store and Certs are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.NewTCPMetrics()
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	p := &Proxy{node: opts.NodeName, trustDomain: opts.TrustDomain, store: opts.Store, certs: opts.Certs, metrics: opts.Metrics, log: opts.Log,
		pods: map[string]*pod{}, byIP: map[netip.Addr]*pod{}}
	var err error
	p.pool, err = hbone.NewPool(hbone.PoolOptions{Certificates: opts.Certs, Logger: opts.Log.With("component", "hbone-pool")})
	if err != nil {
		return nil, err
	}
	p.hbone, err = hbone.NewServer(hbone.ServerOptions{
		Certificates: opts.Certs,
		Identity:     p.serverIdentity,
		Handler:      p.inboundHBONE,
		Logger:       opts.Log.With("component", "hbone-server"),
	})
	if err != nil {
		return nil, err
	}
	p.stopWatch = opts.Store.Watch(p.viewChanged)
	return p, nil
}

// viewChanged drains the pooled HBONE connections to addresses whose
// workload left the mesh or was replaced (a new pod given a departed pod's
// address): they reach a pod that is gone, and a tunnel put on one would
// wait for an answer that never comes. Open tunnels finish; the next
// connection to the address dials afresh.
func (p *Proxy) viewChanged(prev, next *state.View) {
	gone := state.Departed(prev, next)
	if len(gone) == 0 {
		return
	}
	p.pool.Drain(func(k hbone.PoolKey) bool {
		_, found := slices.BinarySearchFunc(gone, k.Addr.Addr().Unmap(), netip.Addr.Compare)
		return found
	})
}

// pod is one enrolled pod and its listeners.
type pod struct {
	info      redirect.Pod
	ns        *netns.NS
	id        spiffe.ID
	listeners []net.Listener
	cancel    context.CancelFunc
}

// Metrics returns the TCP metrics (for the metrics endpoint).
func (p *Proxy) Metrics() *telemetry.TCPMetrics { return p.metrics }

// AddPod implements redirect.PodHandler: open the pod's listeners inside its
// network namespace. A pod added again (reconnect, new IPs) is replaced.
func (p *Proxy) AddPod(ctx context.Context, info redirect.Pod, nsFile *os.File) error {
	ns, err := netns.FromFile(nsFile)
	if err != nil {
		nsFile.Close()
		return fmt.Errorf("pod %s: %w", info, err)
	}
	pd := &pod{info: info, ns: ns, id: spiffe.ID{TrustDomain: p.trustDomain, Namespace: info.Namespace, ServiceAccount: serviceAccount(info)}}
	p.removePod(info.UID, pd)
	mark := netns.SocketOptions{Mark: redirect.ZtunnelMark}
	transparent := netns.SocketOptions{Mark: redirect.ZtunnelMark, Transparent: true}
	for _, l := range []struct {
		addr string
		opts netns.SocketOptions
	}{
		{fmt.Sprintf("127.0.0.1:%d", redirect.OutboundPort), mark},
		{fmt.Sprintf("0.0.0.0:%d", redirect.InboundPlaintextPort), transparent},
		{fmt.Sprintf("0.0.0.0:%d", redirect.InboundHBONEPort), mark},
	} {
		ln, err := netns.ListenTCP(ns, l.addr, l.opts)
		if err != nil {
			for _, o := range pd.listeners {
				o.Close()
			}
			ns.Close()
			return fmt.Errorf("pod %s: listen %s in its network namespace: %w", info, l.addr, err)
		}
		pd.listeners = append(pd.listeners, ln)
	}
	podCtx, cancel := context.WithCancel(context.Background())
	pd.cancel = cancel
	p.mu.Lock()
	p.pods[info.UID] = pd
	for _, ip := range info.IPs {
		p.byIP[ip] = pd
	}
	p.mu.Unlock()
	// Fetch the pod's certificate now, so its first connection does not wait.
	go p.certs.Prefetch(pd.id)
	p.serve(func() { p.acceptLoop(podCtx, pd, pd.listeners[0], p.outbound) })
	p.serve(func() { p.acceptLoop(podCtx, pd, pd.listeners[1], p.inboundPlaintext) })
	p.serve(func() { p.hbone.Serve(pd.listeners[2]) })
	p.log.Info("pod enrolled", "pod", info.String(), "identity", pd.id.String())
	return nil
}

// DelPod implements redirect.PodHandler: close the pod's listeners, drain
// the tunnels it opened and the HBONE connections made to it, and forget its
// certificate unless another enrolled pod shares the identity. Connections
// in flight finish on their own.
func (p *Proxy) DelPod(ctx context.Context, uid string) error {
	p.removePod(uid, nil)
	return nil
}

// removePod stops serving a pod. When next is the same pod coming again
// (an update, or the agent reconnecting) with the same identity and
// addresses, its tunnels and certificate stay.
func (p *Proxy) removePod(uid string, next *pod) {
	p.mu.Lock()
	pd := p.pods[uid]
	delete(p.pods, uid)
	shared := false
	if pd != nil {
		for _, ip := range pd.info.IPs {
			if p.byIP[ip] == pd {
				delete(p.byIP, ip)
			}
		}
		for _, o := range p.pods {
			shared = shared || o.id == pd.id
		}
	}
	p.mu.Unlock()
	if pd == nil {
		return
	}
	pd.cancel()
	for _, l := range pd.listeners {
		l.Close()
	}
	pd.ns.Close()
	if next != nil && next.id == pd.id && slices.Equal(next.info.IPs, pd.info.IPs) {
		p.log.Info("pod re-enrolled", "pod", pd.info.String())
		return
	}
	p.pool.Drain(func(k hbone.PoolKey) bool { return pd.hasIP(k.SourceAddr) })
	p.hbone.Drain(func(local net.Addr) bool { return pd.hasIP(addrOf(local).Addr()) })
	if !shared && (next == nil || next.id != pd.id) {
		p.certs.Forget(pd.id)
	}
	p.log.Info("pod removed", "pod", pd.info.String())
}

func (pd *pod) hasIP(ip netip.Addr) bool {
	return ip.IsValid() && slices.Contains(pd.info.IPs, ip.Unmap())
}

// podsDump lists the enrolled pods for the admin endpoint.
func (p *Proxy) podsDump() []podDump {
	p.mu.Lock()
	out := make([]podDump, 0, len(p.pods))
	for _, pd := range p.pods {
		d := podDump{UID: pd.info.UID, Name: pd.info.Name, Namespace: pd.info.Namespace, Identity: pd.id.String()}
		for _, ip := range pd.info.IPs {
			d.IPs = append(d.IPs, ip.String())
		}
		out = append(out, d)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b podDump) int { return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	return out
}

// SnapshotSent implements redirect.PodHandler: drop pods the agent no longer has.
func (p *Proxy) SnapshotSent(ctx context.Context, uids []string) error {
	keep := map[string]bool{}
	for _, u := range uids {
		keep[u] = true
	}
	p.mu.Lock()
	var stale []string
	for uid := range p.pods {
		if !keep[uid] {
			stale = append(stale, uid)
		}
	}
	p.mu.Unlock()
	for _, uid := range stale {
		p.DelPod(ctx, uid)
	}
	return nil
}

// Shutdown stops accepting connections (the pods' listeners close, HBONE
// connections get GOAWAY) and waits until the connections in flight have
// finished or ctx is done; then it closes everything, cutting what is left.
// It reports whether everything finished in time.
func (p *Proxy) Shutdown(ctx context.Context) bool {
	p.mu.Lock()
	for _, pd := range p.pods {
		for _, l := range pd.listeners {
			l.Close()
		}
	}
	p.mu.Unlock()
	// Tunnels this node opened take no new streams and close once idle.
	p.pool.Drain(func(hbone.PoolKey) bool { return true })
	done := make(chan struct{})
	go func() { p.conns.Wait(); close(done) }()
	serverErr := p.hbone.Shutdown(ctx)
	drained := false
	select {
	case <-done:
		drained = serverErr == nil
	case <-ctx.Done():
	}
	p.Close()
	return drained
}

// Close stops serving every pod.
func (p *Proxy) Close() {
	p.mu.Lock()
	var uids []string
	for uid := range p.pods {
		uids = append(uids, uid)
	}
	p.mu.Unlock()
	for _, uid := range uids {
		p.DelPod(context.Background(), uid)
	}
	p.stopWatch()
	p.hbone.Close()
	p.pool.Close()
	p.wg.Wait()
}

func (p *Proxy) serve(f func()) {
	p.wg.Add(1)
	go func() { defer p.wg.Done(); f() }()
}

func (p *Proxy) acceptLoop(ctx context.Context, pd *pod, l net.Listener, handle func(context.Context, *pod, *net.TCPConn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		go func() { defer p.conns.Done(); handle(ctx, pd, c.(*net.TCPConn)) }()
	}
}

func (p *Proxy) podByIP(ip netip.Addr) *pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byIP[ip.Unmap()]
}

// serverIdentity picks the certificate the HBONE server presents: that of
// the pod whose address the client reached.
func (p *Proxy) serverIdentity(local net.Addr, _ string) (spiffe.ID, error) {
	ap, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return spiffe.ID{}, err
	}
	pd := p.podByIP(ap.Addr())
	if pd == nil {
		return spiffe.ID{}, fmt.Errorf("no enrolled pod has address %s", ap.Addr())
	}
	return pd.id, nil
}

func serviceAccount(info redirect.Pod) string {
	if info.ServiceAccount != "" {
		return info.ServiceAccount
	}
	return "default"
}

// workloadOf is the mesh's view of an enrolled pod, found by its address.
func (p *Proxy) workloadOf(v *state.View, pd *pod) *meshv1.Workload {
	for _, ip := range pd.info.IPs {
		if w := v.WorkloadByIP(ip); w != nil {
			return w
		}
	}
	return nil
}
