package ztunnel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/telemetry"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// dialTimeout bounds connecting to a destination or an application.
const dialTimeout = 10 * time.Second

// outbound handles a connection a pod opened, captured to 15001.
func (p *Proxy) outbound(ctx context.Context, pd *pod, c *net.TCPConn) {
	defer c.Close()
	dst, err := redirect.OriginalDst(c)
	if err != nil {
		p.log.Warn("outbound: no original destination", "pod", pd.info.String(), "error", err)
		return
	}
	src := addrOf(c.RemoteAddr())
	v := p.store.View()
	srcW := p.workloadOf(v, pd)
	d := v.Resolve(dst, srcW)
	log := p.log.With("pod", pd.info.String(), "dst", dst.String())

	labels := sourceLabels(srcW, pd.id)
	labels.Reporter = "source"
	switch d.Kind {
	case state.KindNoEndpoint:
		log.Warn("outbound: refused", "reason", d.Reason)
		return
	case state.KindPassthrough:
		// Outside the mesh: plain TCP from the pod's own address.
		up, err := netns.DialTCP(ctx, pd.ns, dst, netns.SocketOptions{Mark: redirect.ZtunnelMark, Timeout: dialTimeout})
		if err != nil {
			log.Warn("outbound passthrough: dial failed", "error", err)
			return
		}
		labels.ConnectionSecurityPolicy = "none"
		p.relay(ctx, c, up, labels, log)
		return
	}
	destinationLabels(&labels, d.Workload, d.Service)
	if !d.HBONE {
		start := time.Now()
		up, err := netns.DialTCP(ctx, pd.ns, d.Dial, netns.SocketOptions{Mark: redirect.ZtunnelMark, Timeout: dialTimeout})
		observeConnect(d, start, err)
		if err != nil {
			log.Warn("outbound: dial failed", "target", d.Dial.String(), "error", err)
			return
		}
		labels.ConnectionSecurityPolicy = "none"
		p.relay(ctx, c, up, labels, log)
		return
	}
	expected := append([]spiffe.ID{d.Identity}, d.AltNames...)
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	start := time.Now()
	stream, resp, err := p.pool.Connect(dctx, hbone.Target{
		Source:       pd.id,
		Destination:  expected,
		Addr:         d.Dial,
		SourceAddr:   src.Addr(),
		Dial:         hbone.DialFunc(netns.Dialer(pd.ns, netns.SocketOptions{Mark: redirect.ZtunnelMark})),
		Authority:    d.Target,
		ForwardedFor: src.Addr(),
		Baggage:      baggageOf(srcW),
	})
	cancel()
	if ctx.Err() == nil {
		observeConnect(d, start, err)
	}
	if err != nil {
		log.Warn("outbound: HBONE connect failed", "target", d.Dial.String(), "authority", d.Target.String(), "error", err)
		return
	}
	_ = resp
	labels.ConnectionSecurityPolicy = "mutual_tls"
	labels.DestinationPrincipal = d.Identity.String()
	p.relay(ctx, c, stream, labels, log)
}

// observeConnect reports how connecting to the chosen endpoint went to its
// destination's health: the connect time (L4 latency) or a failure.
func observeConnect(d state.Destination, start time.Time, err error) {
	if d.Health != nil && d.Endpoint != nil {
		d.Health.Observe(d.Endpoint, time.Since(start), err == nil, 0)
	}
}

// inboundHBONE handles a tunnel another ztunnel (or a waypoint) opened to a
// pod on this node.
//
// As in Istio's ztunnel, the source is the tunnel's peer: its verified
// identity and the address it connected from (a ztunnel dials from inside
// the client pod's namespace, so that is the client pod's IP; a waypoint's
// tunnels come from the waypoint). L4 policy, telemetry and the address the
// application sees all use it. Forwarded is never trusted for them: any
// mesh workload could write it. The baggage fills in source labels only
// when the peer's address is not a known workload.
func (p *Proxy) inboundHBONE(ctx context.Context, r *hbone.Request) {
	srcIP := addrOf(r.RemoteAddr).Addr()
	log := p.log.With("peer", r.Peer.String(), "src", srcIP.String(), "dst", r.Authority.String())
	switch r.Authority.Port() {
	case redirect.OutboundPort, redirect.InboundPlaintextPort, redirect.InboundHBONEPort:
		// A tunnel into the ztunnel's own listeners would loop.
		log.Warn("inbound: refused a tunnel to a ztunnel port")
		r.Reject(http.StatusBadRequest, nil)
		return
	}
	pd := p.podByIP(r.Authority.Addr())
	if pd == nil {
		log.Warn("inbound: refused: destination is not a pod on this node")
		r.Reject(http.StatusBadRequest, nil)
		return
	}
	if local := addrOf(r.LocalAddr).Addr(); !pd.hasIP(local) {
		// The tunnel reached another pod's HBONE port: it may only name that pod.
		log.Warn("inbound: refused: authority names a pod other than the one the tunnel reached", "reached", local.String())
		r.Reject(http.StatusBadRequest, nil)
		return
	}
	log = log.With("pod", pd.info.String())
	v := p.store.View()
	w := p.workloadOf(v, pd)
	if w == nil {
		log.Warn("inbound: refused: destination workload not known yet")
		r.Reject(http.StatusServiceUnavailable, nil)
		return
	}
	labels := telemetry.TCPLabels{Reporter: "destination", ConnectionSecurityPolicy: "mutual_tls"}
	if sw := v.WorkloadByIP(srcIP); sw != nil {
		labels = sourceLabels(sw, r.Peer)
	} else {
		labels = baggageSourceLabels(r.Baggage, r.Peer)
	}
	labels.Reporter, labels.ConnectionSecurityPolicy = "destination", "mutual_tls"
	destinationLabels(&labels, w, v.InboundService(w, r.Authority.Port()))
	labels.DestinationPrincipal = pd.id.String()

	if wp := w.GetWaypoint(); wp != nil && !v.IsWaypoint(wp, r.Peer) {
		log.Warn("inbound: refused: destination is bound to a waypoint and the peer is not it", "waypoint", wp.GetService())
		p.refused(labels, "DENY")
		r.Reject(http.StatusUnauthorized, nil)
		return
	}
	dec := authz.Evaluate(authz.Conn{Source: r.Peer, SourceIP: srcIP, DestinationIP: r.Authority.Addr(), DestinationPort: r.Authority.Port(),
		DestinationNamespace: w.Namespace, DestinationName: w.Name}, v.Policies(w))
	if !dec.Allow {
		log.Info("inbound: denied by policy", "policy", dec.Policy, "reason", dec.Reason.String())
		p.refused(labels, "DENY")
		r.Reject(http.StatusUnauthorized, nil)
		return
	}
	app, err := p.dialApp(ctx, pd, r.Authority, srcIP)
	if err != nil {
		log.Warn("inbound: application unreachable", "error", err)
		p.refused(labels, "CONNECT")
		r.Reject(http.StatusServiceUnavailable, nil)
		return
	}
	stream, err := r.Accept(http.Header{"Baggage": {baggageOf(w)}})
	if err != nil {
		app.Close()
		return
	}
	p.relay(ctx, stream, app, labels, log)
}

// inboundPlaintext handles a plaintext connection to a pod (captured to 15006).
func (p *Proxy) inboundPlaintext(ctx context.Context, pd *pod, c *net.TCPConn) {
	defer c.Close()
	// TPROXY keeps the original destination as the local address.
	dst := addrOf(c.LocalAddr())
	src := addrOf(c.RemoteAddr())
	v := p.store.View()
	w := p.workloadOf(v, pd)
	log := p.log.With("pod", pd.info.String(), "src", src.String(), "dst", dst.String())
	labels := telemetry.TCPLabels{}
	if sw := v.WorkloadByIP(src.Addr()); sw != nil {
		labels = sourceLabels(sw, spiffe.ID{})
	}
	labels.Reporter, labels.ConnectionSecurityPolicy = "destination", "none"
	if w != nil {
		destinationLabels(&labels, w, v.InboundService(w, dst.Port()))
		if v.PeerAuthMode(w, dst.Port()) == meshv1.PeerAuthentication_STRICT {
			log.Info("inbound plaintext refused: PeerAuthentication STRICT")
			p.refused(labels, "DENY")
			return
		}
		if wp := w.GetWaypoint(); wp != nil {
			log.Warn("inbound plaintext refused: destination is bound to a waypoint", "waypoint", wp.GetService())
			p.refused(labels, "DENY")
			return
		}
		dec := authz.Evaluate(authz.Conn{SourceIP: src.Addr(), DestinationIP: dst.Addr(), DestinationPort: dst.Port(),
			DestinationNamespace: w.Namespace, DestinationName: w.Name}, v.Policies(w))
		if !dec.Allow {
			log.Info("inbound plaintext: denied by policy", "policy", dec.Policy, "reason", dec.Reason.String())
			p.refused(labels, "DENY")
			return
		}
	}
	app, err := p.dialApp(ctx, pd, dst, src.Addr())
	if err != nil {
		log.Warn("inbound plaintext: application unreachable", "error", err)
		p.refused(labels, "CONNECT")
		return
	}
	p.relay(ctx, c, app, labels, log)
}

// refused counts a connection refused before any byte was relayed, with
// Istio's response flag: DENY (policy) or CONNECT (upstream unreachable).
func (p *Proxy) refused(labels telemetry.TCPLabels, flag string) {
	labels.RequestProtocol, labels.ResponseFlags = "tcp", flag
	m := p.metrics.For(labels)
	m.Opened.Add(1)
	m.Closed.Add(1)
}

// dialApp connects to the application inside the pod from the original
// client's address (IP_TRANSPARENT), so the application sees who called.
//
// The source port is the kernel's choice (bind to port 0), never the
// client's own: two peers using the same ip:port, or a client reusing a
// port whose earlier connection is in TIME_WAIT, cannot collide. What can
// run out is the ephemeral range for one client address (every connection
// from it, open or in TIME_WAIT, holds a port); then, as Istio's ztunnel
// does, the connection is made from the pod's own address instead of being
// refused, and that is logged.
func (p *Proxy) dialApp(ctx context.Context, pd *pod, dst netip.AddrPort, client netip.Addr) (*net.TCPConn, error) {
	opts := netns.SocketOptions{Mark: redirect.ZtunnelMark, Timeout: dialTimeout}
	if !client.IsValid() || client.Is4() != dst.Addr().Is4() {
		return netns.DialTCP(ctx, pd.ns, dst, opts)
	}
	transparent := opts
	transparent.Transparent = true
	transparent.Source = netip.AddrPortFrom(client, 0)
	c, err := netns.DialTCP(ctx, pd.ns, dst, transparent)
	if err != nil && (errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)) {
		p.log.Warn("inbound: no free port to connect from the client's address; connecting from the pod's own address",
			"pod", pd.info.String(), "client", client.String(), "dst", dst.String(), "error", err)
		// Bound explicitly: bind(2) picks a port free for this address,
		// where connect(2)'s own choice would skip every port the client's
		// address holds.
		opts.Source = netip.AddrPortFrom(dst.Addr(), 0)
		return netns.DialTCP(ctx, pd.ns, dst, opts)
	}
	return c, err
}

// relay copies both ways with half-close and counts the bytes: "received"
// is client → server, "sent" server → client, as Istio counts them.
func (p *Proxy) relay(ctx context.Context, client, server interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}, labels telemetry.TCPLabels, log interface{ Debug(string, ...any) }) {
	if labels.RequestProtocol == "" {
		labels.RequestProtocol = "tcp"
	}
	if labels.ResponseFlags == "" {
		labels.ResponseFlags = "-"
	}
	m := p.metrics.For(labels)
	m.Opened.Add(1)
	res := hbone.Splice(ctx, client, server)
	m.Received.Add(uint64(res.AtoB))
	m.Sent.Add(uint64(res.BtoA))
	m.Closed.Add(1)
	if res.Err != nil {
		log.Debug("connection ended with an error", "error", res.Err, "received", res.AtoB, "sent", res.BtoA)
	}
}

func addrOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func sourceLabels(w *meshv1.Workload, id spiffe.ID) telemetry.TCPLabels {
	l := telemetry.TCPLabels{}
	if id != (spiffe.ID{}) {
		l.SourcePrincipal = id.String()
	}
	if w == nil {
		return l
	}
	l.SourceWorkload = w.WorkloadName
	l.SourceCanonicalService = w.CanonicalName
	l.SourceCanonicalRevision = w.CanonicalRevision
	l.SourceWorkloadNamespace = w.Namespace
	l.SourceApp = w.CanonicalName
	l.SourceVersion = w.CanonicalRevision
	l.SourceCluster = w.ClusterId
	l.SourceZone = w.GetLocality().GetZone()
	return l
}

func destinationLabels(l *telemetry.TCPLabels, w *meshv1.Workload, svc *meshv1.Service) {
	if svc != nil {
		l.DestinationService = svc.Hostname
		l.DestinationServiceName = svc.Name
		l.DestinationServiceNamespace = svc.Namespace
	}
	if w == nil {
		return
	}
	l.DestinationWorkload = w.WorkloadName
	l.DestinationCanonicalService = w.CanonicalName
	l.DestinationCanonicalRevision = w.CanonicalRevision
	l.DestinationWorkloadNamespace = w.Namespace
	l.DestinationApp = w.CanonicalName
	l.DestinationVersion = w.CanonicalRevision
	l.DestinationCluster = w.ClusterId
	l.DestinationZone = w.GetLocality().GetZone()
}

// baggageSourceLabels describes a source that is no workload this ztunnel
// knows (another cluster, say) from what it put in baggage; the principal
// is always the verified identity.
func baggageSourceLabels(b hbone.Baggage, id spiffe.ID) telemetry.TCPLabels {
	m := b.PeerMetadata()
	return telemetry.TCPLabels{
		SourcePrincipal:         id.String(),
		SourceWorkload:          m.Workload,
		SourceCanonicalService:  m.Service,
		SourceCanonicalRevision: m.Version,
		SourceWorkloadNamespace: m.Namespace,
		SourceApp:               m.Service,
		SourceVersion:           m.Version,
		SourceCluster:           m.Cluster,
		SourceZone:              m.Zone,
	}
}

// baggageOf describes a workload for the peer's telemetry (W3C baggage).
func baggageOf(w *meshv1.Workload) string {
	if w == nil {
		return ""
	}
	return hbone.PeerMetadata{
		Namespace: w.Namespace, Workload: w.WorkloadName, Service: w.CanonicalName, Version: w.CanonicalRevision,
		Cluster: w.ClusterId, Region: w.GetLocality().GetRegion(), Zone: w.GetLocality().GetZone(),
	}.Baggage()
}
