package push

import (
	"context"
	"errors"
	"io"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// sub is a stream's subscription to one type.
type sub struct {
	wildcard bool
	names    map[string]struct{}
}

// inflight is the one unacknowledged response of a stream.
type inflight struct {
	nonce   string
	version uint64
	sent    time.Time
	types   []string            // types the response carried (for NACK records)
	full    []string            // types sent as full state (re-sent after a NACK)
	names   map[string][]string // newly subscribed names it answered (idem)
	full0   bool                // every type was full state (no convergence sample)
}

// conn is the server side of one stream. Its memory does not depend on the
// number of resources: a wildcard subscription is a bool, progress is a
// version.
type conn struct {
	s           *Server
	node        *meshv1.ProxyNode
	peer        string
	connectedAt time.Time
	shareable   bool          // responses may use encodings shared with other streams
	compressor  string        // of this stream's responses, part of the sharing key
	notify      chan struct{} // cap 1: "something may be ready to send"

	mu           sync.Mutex
	subs         map[string]*sub
	acked        uint64 // system version the proxy has applied
	fullPending  map[string]bool
	namesPending map[string]map[string]struct{}
	held         bool // last response was NACKed: send again only once version > holdVersion
	holdVersion  uint64
	inflight     *inflight
	responses    uint64
	acks         uint64
	nacks        uint64
	lastNack     *Nack
}

func (c *conn) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Delta implements the push protocol for one proxy stream.
func (s *Server) Delta(stream meshv1.Discovery_DeltaServer) error {
	ctx := stream.Context()
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	node := req.GetNode()
	if node == nil || node.GetId() == "" {
		return status.Error(codes.InvalidArgument, "push: the first request must carry node with a non-empty id")
	}
	peerAddr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		peerAddr = p.Addr.String()
	}
	if s.opts.Authenticate != nil {
		if err := s.opts.Authenticate(ctx, node); err != nil {
			s.metrics.authFailures.Inc()
			s.log.Warn("push: proxy refused", "node_id", node.GetId(), "node_name", node.GetNodeName(), "peer", peerAddr, "err", err)
			if st, ok := status.FromError(err); ok {
				return st.Err()
			}
			return status.Error(codes.PermissionDenied, err.Error())
		}
	}

	compressor, shareable := shareableStream(ctx)
	c := &conn{
		s:            s,
		compressor:   compressor,
		node:         node,
		peer:         peerAddr,
		connectedAt:  time.Now(),
		shareable:    shareable,
		notify:       make(chan struct{}, 1),
		subs:         make(map[string]*sub),
		fullPending:  make(map[string]bool),
		namesPending: make(map[string]map[string]struct{}),
	}
	resumed := c.first(req)

	s.connsMu.Lock()
	s.conns[c] = struct{}{}
	s.connsMu.Unlock()
	s.metrics.connected.Inc()
	s.log.Info("push: proxy connected", "node_id", node.GetId(), "node_name", node.GetNodeName(),
		"kind", node.GetKind().String(), "peer", peerAddr, "resumed", resumed, "acked_version", c.acked)
	defer func() {
		s.connsMu.Lock()
		delete(s.conns, c)
		s.connsMu.Unlock()
		s.metrics.connected.Dec()
		s.log.Info("push: proxy disconnected", "node_id", node.GetId(), "node_name", node.GetNodeName(), "acked_version", c.ackedVersion())
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			c.handle(req)
		}
	}()

	c.wake()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-c.notify:
			if err := c.trySend(stream); err != nil {
				return err
			}
		}
	}
}

// shareableStream reports whether a PreparedMsg encoded on another stream can
// be sent on this one, and the compressor it must have been encoded with:
// streams share encodings only with streams using the default proto codec
// and the same compressor ("" for none).
func shareableStream(ctx context.Context) (string, bool) {
	ts, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ SendCompress() string })
	if !ok {
		return "", false
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ct := md.Get("content-type")
	if len(ct) != 1 || (ct[0] != "application/grpc" && ct[0] != "application/grpc+proto") {
		return "", false
	}
	return ts.SendCompress(), true
}

func (c *conn) ackedVersion() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// first applies the stream's first request: subscriptions and resume point.
// It reports whether the proxy resumed (gets only what it missed).
func (c *conn) first(req *meshv1.DeltaRequest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applySubs(req.GetSubscriptions())
	clear(c.fullPending)
	clear(c.namesPending)

	s := c.s
	s.stateMu.RLock()
	r := req.GetResume()
	resumed := r != nil && r.GetEpoch() == s.epoch && r.GetVersion() >= s.floor && r.GetVersion() <= s.version
	s.stateMu.RUnlock()
	if resumed {
		c.acked = r.GetVersion()
	}
	for url, sb := range c.subs {
		switch {
		case !resumed:
			// Fresh proxy, other epoch or too far behind: full state of every
			// subscribed type (for named subscriptions: of the named set).
			c.fullPending[url] = true
		case !sb.wildcard:
			// Resumed: named resources are few; send them again (the proxy
			// skips unchanged ones) so that a name subscribed just before the
			// disconnect is not lost.
			c.namesPending[url] = maps.Clone(sb.names)
		}
	}
	return resumed
}

// applySubs applies subscription changes; caller holds c.mu. It reports
// whether there is something new to send.
func (c *conn) applySubs(subs []*meshv1.Subscription) bool {
	changed := false
	for _, sb := range subs {
		url := sb.GetTypeUrl()
		if url == "" {
			continue
		}
		st := c.subs[url]
		if st == nil {
			st = &sub{names: make(map[string]struct{})}
			c.subs[url] = st
		}
		for _, n := range sb.GetSubscribe() {
			if n == meshv1.Wildcard {
				if !st.wildcard {
					st.wildcard = true
					c.fullPending[url] = true
					delete(c.namesPending, url)
					changed = true
				}
				continue
			}
			if _, ok := st.names[n]; ok {
				continue
			}
			st.names[n] = struct{}{}
			if !st.wildcard {
				if c.namesPending[url] == nil {
					c.namesPending[url] = make(map[string]struct{})
				}
				c.namesPending[url][n] = struct{}{}
				changed = true
			}
		}
		for _, n := range sb.GetUnsubscribe() {
			if n == meshv1.Wildcard {
				st.wildcard = false
				delete(c.fullPending, url)
				continue
			}
			delete(st.names, n)
			if p := c.namesPending[url]; p != nil {
				delete(p, n)
			}
		}
		if !st.wildcard && len(st.names) == 0 {
			delete(c.subs, url)
			delete(c.fullPending, url)
			delete(c.namesPending, url)
		}
	}
	return changed
}

// handle processes a request after the first: ACK/NACK and subscription changes.
func (c *conn) handle(req *meshv1.DeltaRequest) {
	s := c.s
	c.mu.Lock()
	if nonce := req.GetResponseNonce(); nonce != "" {
		f := c.inflight
		switch {
		case f == nil || f.nonce != nonce:
			s.log.Debug("push: ignoring ACK/NACK of a response not in flight", "node_id", c.node.GetId(), "nonce", nonce)
		case req.GetError() == nil:
			now := time.Now()
			prev := c.acked
			c.acked = f.version
			c.inflight = nil
			c.acks++
			if !f.full0 && f.version > prev {
				if t, ok := s.publishedAfter(prev); ok {
					s.metrics.convergence.Observe(now.Sub(t).Seconds())
				}
			}
		default:
			e := req.GetError()
			n := &Nack{Time: time.Now(), Nonce: nonce, Version: f.version, Types: f.types, Code: e.GetCode(), Message: e.GetMessage()}
			c.lastNack = n
			c.nacks++
			c.inflight = nil
			// The proxy kept its previous state: what the response carried
			// must be sent again, but not before something changes.
			for _, t := range f.full {
				if c.subs[t] != nil {
					c.fullPending[t] = true
				}
			}
			for t, names := range f.names {
				st := c.subs[t]
				if st == nil || st.wildcard {
					continue
				}
				for _, name := range names {
					if _, ok := st.names[name]; !ok {
						continue
					}
					if c.namesPending[t] == nil {
						c.namesPending[t] = make(map[string]struct{})
					}
					c.namesPending[t][name] = struct{}{}
				}
			}
			c.held = true
			c.holdVersion = f.version
			types := f.types
			if len(types) == 0 {
				types = []string{""}
			}
			for _, t := range types {
				s.metrics.nacks.WithLabelValues(t).Inc()
			}
			s.log.Warn("push: proxy rejected config (NACK)", "node_id", c.node.GetId(), "node_name", c.node.GetNodeName(),
				"nonce", nonce, "version", f.version, "types", f.types, "code", codes.Code(e.GetCode()).String(), "message", e.GetMessage())
		}
	}
	if c.applySubs(req.GetSubscriptions()) {
		c.held = false
	}
	c.mu.Unlock()
	c.wake()
}

// Per-type modes of a response.
const (
	modeNone       uint8 = iota
	modeFull             // wildcard: every resource, full_state_types
	modeDelta            // wildcard: changes since acked
	modeNamedAll         // named: every named resource, full_state_types
	modeNamedDelta       // named: changes since acked + newly subscribed names
)

// plan is what one response will carry.
type plan struct {
	types []string // subscribed types with a mode, sorted
	modes []uint8  // parallel to types
	cur   uint64
	from  uint64
}

// trySend sends the next response if none is in flight and there is
// something to send. It never holds a lock while sending.
func (c *conn) trySend(stream meshv1.Discovery_DeltaServer) error {
	s := c.s
	c.mu.Lock()
	if c.inflight != nil {
		c.mu.Unlock()
		return nil
	}
	s.stateMu.RLock()
	cur := s.version
	if c.held && cur <= c.holdVersion {
		s.stateMu.RUnlock()
		c.mu.Unlock()
		return nil
	}
	c.held = false
	valid := c.acked >= s.floor && c.acked <= cur

	p := plan{cur: cur, from: c.acked}
	anyFull, anyDelta, anyNamed := false, false, false
	for _, url := range sortedKeys(c.subs) {
		sb := c.subs[url]
		full := c.fullPending[url] || !valid
		var m uint8
		switch {
		case sb.wildcard && full:
			m, anyFull = modeFull, true
		case sb.wildcard:
			m, anyDelta = modeDelta, true
		case full:
			m, anyFull, anyNamed = modeNamedAll, true, true
		default:
			m, anyDelta, anyNamed = modeNamedDelta, true, true
		}
		p.types = append(p.types, url)
		p.modes = append(p.modes, m)
	}
	pendingNames := false
	for _, names := range c.namesPending {
		if len(names) > 0 {
			pendingNames = true
		}
	}
	if !anyFull && !pendingNames && cur <= c.acked {
		s.stateMu.RUnlock()
		c.mu.Unlock()
		return nil
	}

	f := &inflight{version: cur, full0: !anyDelta}
	for i, url := range p.types {
		if p.modes[i] == modeFull || p.modes[i] == modeNamedAll {
			f.full = append(f.full, url)
		}
	}
	for t, names := range c.namesPending {
		for n := range names {
			if f.names == nil {
				f.names = make(map[string][]string)
			}
			f.names[t] = append(f.names[t], n)
		}
	}

	var (
		resp   *meshv1.DeltaResponse
		counts map[string]int
		shared *sharedResp
		build  bool
	)
	if c.shareable && s.opts.Filter == nil && !anyNamed {
		if !anyDelta {
			p.from = 0 // full state does not depend on where the proxy is
		}
		shared, build = s.shared.acquire(p.key(c.compressor), s.nextNonce)
		f.nonce = shared.nonce
		if build {
			resp, counts = c.buildLocked(p, shared.nonce)
			shared.counts = counts
		}
	} else {
		f.nonce = s.nextNonce()
		resp, counts = c.buildLocked(p, f.nonce)
	}
	s.stateMu.RUnlock()

	f.sent = time.Now()
	c.inflight = f
	c.responses++
	clear(c.fullPending)
	clear(c.namesPending)
	c.mu.Unlock()

	if shared != nil {
		if build {
			// Encode outside every lock; other streams wait on ready.
			pm := &grpc.PreparedMsg{}
			shared.err = pm.Encode(stream, resp)
			shared.msg = pm
			resp = nil
			s.metrics.sharedEncodes.Inc()
			close(shared.ready)
		}
		select {
		case <-shared.ready:
		case <-stream.Context().Done():
			s.shared.release(shared)
			return status.FromContextError(stream.Context().Err()).Err()
		}
		if shared.err != nil {
			s.shared.release(shared)
			return shared.err
		}
		counts = shared.counts
	}
	types := sortedKeys(counts)
	c.mu.Lock()
	f.types = types
	c.mu.Unlock()

	for i, url := range p.types {
		if _, ok := counts[url]; !ok {
			continue
		}
		kind := "delta"
		if p.modes[i] == modeFull || p.modes[i] == modeNamedAll {
			kind = "full"
		}
		s.metrics.responses.WithLabelValues(url, kind).Inc()
		s.metrics.resourcesSent.WithLabelValues(url).Add(float64(counts[url]))
	}
	if len(counts) == 0 {
		s.metrics.responses.WithLabelValues("", "version").Inc()
	}

	if shared != nil {
		err := stream.SendMsg(shared.msg)
		s.metrics.sharedSends.Inc()
		s.shared.release(shared)
		return err
	}
	return stream.Send(resp)
}

// key identifies the content of a response for sharing.
func (p *plan) key(compressor string) sharedKey {
	var b strings.Builder
	b.WriteString(compressor)
	b.WriteByte('|')
	for i, t := range p.types {
		b.WriteByte('0' + p.modes[i])
		b.WriteString(t)
		b.WriteByte(' ')
	}
	return sharedKey{from: p.from, to: p.cur, types: b.String()}
}

// buildLocked computes the response for plan p. Caller holds c.mu and
// s.stateMu (read). counts has an entry (possibly 0) for every type the
// response carries: resources and removals per type, full-state types
// included.
func (c *conn) buildLocked(p plan, nonce string) (*meshv1.DeltaResponse, map[string]int) {
	s := c.s
	resp := &meshv1.DeltaResponse{Epoch: s.epoch, Version: p.cur, Nonce: nonce}
	counts := make(map[string]int)
	allow := func(url, name string) bool {
		return s.opts.Filter == nil || s.opts.Filter(c.node, url, name)
	}
	modes := make([]uint8, len(s.typeList)) // by typeState.idx, for the log scan
	var emitted map[string]map[string]struct{}
	needLog := false
	for i, url := range p.types {
		m := p.modes[i]
		ts := s.types[url]
		if ts != nil {
			modes[ts.idx] = m
		}
		switch m {
		case modeFull:
			resp.FullStateTypes = append(resp.FullStateTypes, url)
			counts[url] += 0 // carried even when empty
			if ts == nil {
				continue
			}
			if resp.Resources == nil {
				resp.Resources = make([]*meshv1.Resource, 0, ts.live)
			}
			for name, r := range ts.res {
				if r.Body != nil && allow(url, name) {
					resp.Resources = append(resp.Resources, r)
					counts[url]++
				}
			}
		case modeNamedAll:
			resp.FullStateTypes = append(resp.FullStateTypes, url)
			counts[url] += 0 // carried even when empty
			if ts == nil {
				continue
			}
			for name := range c.subs[url].names {
				if r := ts.res[name]; r != nil && r.Body != nil && allow(url, name) {
					resp.Resources = append(resp.Resources, r)
					counts[url]++
				}
			}
		case modeDelta:
			needLog = true
		case modeNamedDelta:
			needLog = true
			pend := c.namesPending[url]
			if len(pend) == 0 {
				continue
			}
			if emitted == nil {
				emitted = make(map[string]map[string]struct{})
			}
			em := make(map[string]struct{}, len(pend))
			emitted[url] = em
			for name := range pend {
				em[name] = struct{}{}
				var r *meshv1.Resource
				if ts != nil {
					r = ts.res[name]
				}
				if r != nil && r.Body != nil && allow(url, name) {
					resp.Resources = append(resp.Resources, r)
				} else {
					// Tell the proxy the name does not exist (on-demand lookups).
					resp.Removed = append(resp.Removed, &meshv1.RemovedResource{TypeUrl: url, Name: name})
				}
				counts[url]++
			}
		}
	}
	if needLog && p.from < p.cur {
		log := s.changeLog
		start := sort.Search(len(log), func(i int) bool { return log[i].version > p.from })
		for _, e := range log[start:] {
			m := modes[e.ts.idx]
			if m != modeDelta && m != modeNamedDelta {
				continue
			}
			r := e.ts.res[e.name]
			if r == nil || r.Version != e.version {
				continue // superseded by a later entry
			}
			if m == modeNamedDelta {
				if _, ok := c.subs[e.ts.url].names[e.name]; !ok {
					continue
				}
				if _, ok := emitted[e.ts.url][e.name]; ok {
					continue
				}
			}
			if !allow(e.ts.url, e.name) {
				continue
			}
			if r.Body == nil {
				resp.Removed = append(resp.Removed, &meshv1.RemovedResource{TypeUrl: e.ts.url, Name: e.name})
			} else {
				resp.Resources = append(resp.Resources, r)
			}
			counts[e.ts.url]++
		}
	}
	return resp, counts
}

func (c *conn) status() ProxyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ProxyStatus{
		ID:            c.node.GetId(),
		NodeName:      c.node.GetNodeName(),
		Kind:          c.node.GetKind().String(),
		Waypoint:      c.node.GetWaypoint(),
		ProxyVersion:  c.node.GetVersion(),
		Peer:          c.peer,
		ConnectedAt:   c.connectedAt,
		Subscriptions: make(map[string][]string, len(c.subs)),
		AckedVersion:  c.acked,
		Responses:     c.responses,
		Acks:          c.acks,
		Nacks:         c.nacks,
	}
	for url, sb := range c.subs {
		var names []string
		if sb.wildcard {
			names = append(names, meshv1.Wildcard)
		}
		for n := range sb.names {
			names = append(names, n)
		}
		sort.Strings(names)
		st.Subscriptions[url] = names
	}
	if f := c.inflight; f != nil {
		st.InFlightNonce, st.InFlightVersion, st.InFlightSince = f.nonce, f.version, f.sent
	}
	if c.lastNack != nil {
		n := *c.lastNack
		n.Types = append([]string(nil), n.Types...)
		st.LastNack = &n
	}
	return st
}

// sharedKey identifies response content that streams can share: same
// starting version (0 for full state), same target version, same types and
// modes. Only streams without named subscriptions or a Filter share.
type sharedKey struct {
	from, to uint64
	types    string
}

// sharedResp is a response encoded once (grpc.PreparedMsg) and sent on
// several streams: 100 proxies syncing 100,000 workloads cost one encoding,
// not 100.
type sharedResp struct {
	key    sharedKey
	nonce  string
	ready  chan struct{} // closed once msg/err are set
	msg    *grpc.PreparedMsg
	err    error
	counts map[string]int
	refs   int
}

// shareLinger keeps an unused shared encoding around for proxies that
// connect right after (reconnect storms after a control-plane restart).
const shareLinger = 2 * time.Second

type sharedCache struct {
	mu      sync.Mutex
	entries map[sharedKey]*sharedResp
}

// acquire returns the entry for k, and whether the caller must build it.
func (sc *sharedCache) acquire(k sharedKey, nonce func() string) (*sharedResp, bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if e := sc.entries[k]; e != nil {
		e.refs++
		return e, false
	}
	e := &sharedResp{key: k, nonce: "s" + nonce(), ready: make(chan struct{}), refs: 1}
	sc.entries[k] = e
	return e, true
}

func (sc *sharedCache) release(e *sharedResp) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	e.refs--
	if e.refs > 0 {
		return
	}
	time.AfterFunc(shareLinger, func() {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if e.refs == 0 && sc.entries[e.key] == e {
			delete(sc.entries, e.key)
		}
	})
}
