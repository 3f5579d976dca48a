// Package xds is the proxy side of the push protocol
// (api/mesh/v1/discovery.proto, docs/push-protocol.md): it keeps one stream
// to the control plane, decodes the resources it receives, hands them to a
// Handler as batches of changes, ACKs or NACKs them, and resumes where it left
// off after a disconnect while the proxy keeps serving its last config.
//
// The package is linked into the node proxy, so it must stay small: it
// imports only the standard library, gRPC, protobuf and api/mesh/v1
// (deps_test.go enforces it).
package xds

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // Options.Compression "gzip"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// Resource is one decoded resource.
type Resource struct {
	Name string
	// Version is the control plane's system version at which it last changed.
	Version uint64
	// Message is the decoded body, e.g. *meshv1.Workload.
	Message proto.Message
}

// TypeUpdate is the change to one resource type.
type TypeUpdate struct {
	TypeURL string
	// FullState: the control plane resent everything of this type (first
	// connection, new control plane instance, or the proxy was too far
	// behind). The client has already turned it into a diff: Upserts holds
	// only new or changed resources and Removes the names the handler holds
	// that are gone, so the handler never needs to reset.
	FullState bool
	Upserts   []Resource
	// Removes lists names the handler holds that no longer exist (or are no
	// longer subscribed).
	Removes []string
}

// Update is one batch of changes. Types are sorted by type URL; a type
// appears only if something changed.
type Update struct {
	// Epoch and Version identify the control plane state the proxy is at
	// once the update is applied.
	Epoch   string
	Version uint64
	Types   []TypeUpdate
}

// Handler is implemented by the proxy.
//
// Apply must apply the whole update or nothing: when it returns an error
// the client NACKs the response with the error's message and considers the
// proxy to still hold exactly what it held before (the control plane sends
// the changes again, merged with newer ones, once something changes). Apply
// is called from one goroutine at a time; while it runs no further update is
// acknowledged, so a slow Apply makes the control plane coalesce changes
// rather than queue them. Apply must not call Client.Unsubscribe.
type Handler interface {
	Apply(u *Update) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(u *Update) error

// Apply calls f(u).
func (f HandlerFunc) Apply(u *Update) error { return f(u) }

// Options configure a Client.
type Options struct {
	// Target is the control plane address for grpc.NewClient (e.g.
	// "ambit-controlplane:15012"). Ignored when Conn is set.
	Target string
	// DialOptions for grpc.NewClient (transport credentials etc.).
	DialOptions []grpc.DialOption
	// Conn, when set, is used instead of dialing Target (e.g. a connection
	// shared with the certificate client). The client does not close it.
	Conn grpc.ClientConnInterface
	// PerRPCCredentials, when set, is attached to the stream (bearer token).
	PerRPCCredentials credentials.PerRPCCredentials
	// Node identifies the proxy; Node.Id is required.
	Node *meshv1.ProxyNode
	// Subscriptions: type URL -> names ("*" for every resource of the type).
	Subscriptions map[string][]string
	// Handler receives the changes. Required.
	Handler Handler
	// BackoffMin and BackoffMax bound the delay between reconnection
	// attempts (exponential with jitter). Defaults 1s and 30s.
	BackoffMin, BackoffMax time.Duration
	// KeepaliveTime: when the client dials Target itself, it pings the
	// control plane after this much silence and drops the connection if no
	// answer comes within 10s, so that a vanished control plane is noticed
	// (the server must permit it: push.ServerOptions). Default 30s; negative
	// disables.
	KeepaliveTime time.Duration
	// MaxRecvMsgSize bounds a response (a full state of 100,000 workloads is
	// about 35 MB). Default 256 MiB.
	MaxRecvMsgSize int
	// Compression: "gzip" asks the control plane to compress responses
	// (full state of 100,000 workloads: ~34 MiB -> ~4 MiB; the control
	// plane compresses a shared full state once for all proxies). Default:
	// none.
	Compression string
	// Logger; nil discards.
	Logger *slog.Logger
}

// Status is a snapshot of the client for health and debug endpoints.
type Status struct {
	Target    string `json:"target,omitempty"`
	Connected bool   `json:"connected"`
	// Synced: at least one response has been applied since the client started.
	Synced  bool   `json:"synced"`
	Epoch   string `json:"epoch,omitempty"`
	Version uint64 `json:"version"`
	// Resources held per type URL.
	Resources  map[string]int `json:"resources"`
	Responses  uint64         `json:"responses"`
	Nacks      uint64         `json:"nacks"`
	Reconnects uint64         `json:"reconnects"`
	LastError  string         `json:"lastError,omitempty"`
	LastNack   string         `json:"lastNack,omitempty"`
}

type subState struct {
	wildcard bool
	// synced: a full state of the type was applied while subscribed to the
	// wildcard, so the resume point covers the type. A wildcard added while
	// disconnected is not covered: it is sent after the resuming request,
	// as a new subscription, to get the type's full state.
	synced bool
	names  map[string]struct{}
}

// Client keeps the proxy's configuration in sync with the control plane.
type Client struct {
	opts   Options
	log    *slog.Logger
	seed   maphash.Seed
	synced chan struct{}

	// applyMu serializes changes to what the handler holds (responses,
	// Unsubscribe); it guards held. Lock order: applyMu, mu, sendMu.
	applyMu sync.Mutex
	held    map[string]map[string]uint64 // type -> name -> hash of the encoded body

	mu         sync.Mutex
	subs       map[string]*subState
	stream     meshv1.Discovery_DeltaClient
	epoch      string
	version    uint64
	connected  bool
	isSynced   bool
	counts     map[string]int
	responses  uint64
	nacks      uint64
	reconnects uint64
	lastErr    string
	lastNack   string

	sendMu sync.Mutex // serializes Send on the current stream
}

// New validates opts and returns a Client; Run starts it.
func New(opts Options) (*Client, error) {
	if opts.Node == nil || opts.Node.GetId() == "" {
		return nil, errors.New("xds: Node with a non-empty Id is required")
	}
	if opts.Handler == nil {
		return nil, errors.New("xds: Handler is required")
	}
	if opts.Conn == nil && opts.Target == "" {
		return nil, errors.New("xds: Target or Conn is required")
	}
	if opts.Compression != "" && encoding.GetCompressor(opts.Compression) == nil {
		return nil, fmt.Errorf("xds: unknown compression %q", opts.Compression)
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(30*time.Second, opts.BackoffMin)
	}
	if opts.KeepaliveTime == 0 {
		opts.KeepaliveTime = 30 * time.Second
	}
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = 256 << 20
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		opts:   opts,
		log:    logger,
		seed:   maphash.MakeSeed(),
		synced: make(chan struct{}),
		held:   make(map[string]map[string]uint64),
		subs:   make(map[string]*subState),
		counts: make(map[string]int),
	}
	for t, names := range opts.Subscriptions {
		if t == "" {
			return nil, errors.New("xds: empty type URL in Subscriptions")
		}
		c.addSubsLocked(t, names)
	}
	return c, nil
}

// Synced is closed once the first response has been applied.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Status returns a snapshot of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		Target: c.opts.Target, Connected: c.connected, Synced: c.isSynced,
		Epoch: c.epoch, Version: c.version, Resources: make(map[string]int, len(c.counts)),
		Responses: c.responses, Nacks: c.nacks, Reconnects: c.reconnects,
		LastError: c.lastErr, LastNack: c.lastNack,
	}
	for t, n := range c.counts {
		st.Resources[t] = n
	}
	return st
}

// addSubsLocked adds names to the subscription of t and returns the ones
// that were new. Caller holds mu (or owns c exclusively).
func (c *Client) addSubsLocked(t string, names []string) []string {
	st := c.subs[t]
	if st == nil {
		st = &subState{names: make(map[string]struct{})}
		c.subs[t] = st
	}
	var added []string
	for _, n := range names {
		if n == meshv1.Wildcard {
			if !st.wildcard {
				st.wildcard = true
				added = append(added, n)
			}
			continue
		}
		if _, ok := st.names[n]; !ok {
			st.names[n] = struct{}{}
			added = append(added, n)
		}
	}
	return added
}

// Subscribe adds names ("*" for all) to the subscription of typeURL. The
// resources arrive through the Handler. It is safe to call from Apply.
func (c *Client) Subscribe(typeURL string, names ...string) error {
	if typeURL == "" {
		return errors.New("xds: empty type URL")
	}
	c.mu.Lock()
	added := c.addSubsLocked(typeURL, names)
	stream := c.stream
	c.mu.Unlock()
	if len(added) == 0 || stream == nil {
		return nil // the next stream's first request carries it
	}
	c.send(stream, &meshv1.DeltaRequest{Subscriptions: []*meshv1.Subscription{{TypeUrl: typeURL, Subscribe: added}}})
	return nil
}

// Unsubscribe removes names ("*" for the wildcard) from the subscription of
// typeURL. The resources no longer covered are removed from the handler
// first (one Apply with Removes); if that fails, the subscription is kept
// and the error returned. It must not be called from Apply.
func (c *Client) Unsubscribe(typeURL string, names ...string) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()

	c.mu.Lock()
	st := c.subs[typeURL]
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	// The subscription as it will be.
	wildcard := st.wildcard
	remaining := make(map[string]struct{}, len(st.names))
	for n := range st.names {
		remaining[n] = struct{}{}
	}
	var removed []string
	for _, n := range names {
		if n == meshv1.Wildcard {
			if wildcard {
				wildcard = false
				removed = append(removed, n)
			}
		} else if _, ok := remaining[n]; ok {
			delete(remaining, n)
			removed = append(removed, n)
		}
	}
	epoch, version := c.epoch, c.version
	c.mu.Unlock()
	if len(removed) == 0 {
		return nil
	}

	var drop []string
	if !wildcard {
		for n := range c.held[typeURL] {
			if _, ok := remaining[n]; !ok {
				drop = append(drop, n)
			}
		}
	}
	if len(drop) > 0 {
		sort.Strings(drop)
		u := &Update{Epoch: epoch, Version: version, Types: []TypeUpdate{{TypeURL: typeURL, Removes: drop}}}
		if err := c.opts.Handler.Apply(u); err != nil {
			return fmt.Errorf("xds: unsubscribing %s: handler refused the removals: %w", typeURL, err)
		}
		for _, n := range drop {
			delete(c.held[typeURL], n)
		}
	}

	c.mu.Lock()
	// In place: a concurrent Subscribe of other names must not be lost.
	// (st is still c.subs[typeURL]: only Unsubscribe deletes entries, under
	// applyMu.)
	for _, n := range removed {
		if n == meshv1.Wildcard {
			st.wildcard, st.synced = false, false
		} else {
			delete(st.names, n)
		}
	}
	if !st.wildcard && len(st.names) == 0 {
		delete(c.subs, typeURL)
	}
	c.counts[typeURL] = len(c.held[typeURL])
	stream := c.stream
	c.mu.Unlock()
	if stream != nil {
		c.send(stream, &meshv1.DeltaRequest{Subscriptions: []*meshv1.Subscription{{TypeUrl: typeURL, Unsubscribe: removed}}})
	}
	return nil
}

// send sends on stream; errors surface through Recv on the stream goroutine.
func (c *Client) send(stream meshv1.Discovery_DeltaClient, req *meshv1.DeltaRequest) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := stream.Send(req); err != nil {
		c.log.Debug("xds: send failed", "err", err)
	}
}

// Run keeps a stream to the control plane until ctx is done, reconnecting
// with exponential backoff. The handler keeps its last state while
// disconnected. Run returns nil when ctx is cancelled, or an error if the
// connection cannot be created at all.
func (c *Client) Run(ctx context.Context) error {
	cc := c.opts.Conn
	if cc == nil {
		// gRPC's own reconnection backoff (1s..120s by default) would stack
		// on ours: align it with BackoffMin/BackoffMax. DialOptions may
		// override it.
		dialOpts := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: c.opts.BackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.opts.BackoffMax},
			MinConnectTimeout: 20 * time.Second,
		})}
		if c.opts.KeepaliveTime > 0 {
			dialOpts = append(dialOpts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
				Time: c.opts.KeepaliveTime, Timeout: 10 * time.Second, PermitWithoutStream: true,
			}))
		}
		dialOpts = append(dialOpts, c.opts.DialOptions...)
		conn, err := grpc.NewClient(c.opts.Target, dialOpts...)
		if err != nil {
			return fmt.Errorf("xds: %w", err)
		}
		defer conn.Close()
		cc = conn
	}
	client := meshv1.NewDiscoveryClient(cc)
	failures := 0
	for {
		healthy, err := c.runStream(ctx, client)
		c.mu.Lock()
		c.connected = false
		c.stream = nil
		if ctx.Err() == nil {
			c.lastErr = err.Error()
			c.reconnects++
		}
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if healthy {
			failures = 0
		}
		delay := c.backoff(failures)
		failures++
		if healthy {
			c.log.Warn(fmt.Sprintf("xds: lost the control plane stream, keeping last config; reconnecting in %s", delay.Round(time.Millisecond)),
				"target", c.opts.Target, "err", err)
		} else {
			c.log.Warn(fmt.Sprintf("xds: control plane unreachable, keeping last config; retrying in %s", delay.Round(time.Millisecond)),
				"target", c.opts.Target, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the delay after n consecutive failures: BackoffMin·2^n,
// capped at BackoffMax, with "equal jitter" (uniform in [d/2, d]).
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.BackoffMin
	for i := 0; i < n && d < c.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// runStream runs one stream. healthy reports whether a response was received.
func (c *Client) runStream(ctx context.Context, client meshv1.DiscoveryClient) (healthy bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	callOpts := []grpc.CallOption{grpc.MaxCallRecvMsgSize(c.opts.MaxRecvMsgSize)}
	if c.opts.Compression != "" {
		callOpts = append(callOpts, grpc.UseCompressor(c.opts.Compression))
	}
	if c.opts.PerRPCCredentials != nil {
		callOpts = append(callOpts, grpc.PerRPCCredentials(c.opts.PerRPCCredentials))
	}
	stream, err := client.Delta(sctx, callOpts...)
	if err != nil {
		return false, err
	}

	c.mu.Lock()
	first := &meshv1.DeltaRequest{Node: c.opts.Node}
	if c.epoch != "" {
		first.Resume = &meshv1.ResumePoint{Epoch: c.epoch, Version: c.version}
	}
	var later *meshv1.DeltaRequest
	for _, t := range slices.Sorted(maps.Keys(c.subs)) {
		st := c.subs[t]
		s := &meshv1.Subscription{TypeUrl: t}
		if st.wildcard {
			if first.Resume == nil || st.synced {
				s.Subscribe = append(s.Subscribe, meshv1.Wildcard)
			} else {
				if later == nil {
					later = &meshv1.DeltaRequest{}
				}
				later.Subscriptions = append(later.Subscriptions, &meshv1.Subscription{TypeUrl: t, Subscribe: []string{meshv1.Wildcard}})
			}
		}
		s.Subscribe = append(s.Subscribe, slices.Sorted(maps.Keys(st.names))...)
		if len(s.Subscribe) > 0 {
			first.Subscriptions = append(first.Subscriptions, s)
		}
	}
	c.stream = stream
	c.sendMu.Lock() // before releasing mu: Subscribe's sends go after these requests
	c.mu.Unlock()
	err = stream.Send(first)
	if err == nil && later != nil {
		err = stream.Send(later)
	}
	c.sendMu.Unlock()
	if err != nil {
		if _, rerr := stream.Recv(); rerr != nil { // the real error
			err = rerr
		}
		return false, err
	}

	for {
		resp, err := stream.Recv()
		if err != nil {
			return healthy, err
		}
		if !healthy {
			healthy = true
			c.mu.Lock()
			c.connected = true
			c.mu.Unlock()
			c.log.Info("xds: connected to control plane", "target", c.opts.Target, "epoch", resp.GetEpoch(),
				"resumed", first.Resume != nil && first.Resume.Epoch == resp.GetEpoch())
		}
		c.handleResponse(stream, resp)
	}
}

// handleResponse applies one response and ACKs or NACKs it.
func (c *Client) handleResponse(stream meshv1.Discovery_DeltaClient, resp *meshv1.DeltaResponse) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	err := c.apply(resp)
	ack := &meshv1.DeltaRequest{ResponseNonce: resp.GetNonce()}
	c.mu.Lock()
	c.responses++
	if err != nil {
		c.nacks++
		c.lastNack = err.Error()
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("xds: rejecting config (NACK), keeping previous state", "version", resp.GetVersion(), "nonce", resp.GetNonce(), "err", err)
		ack.Error = &meshv1.ErrorDetail{Code: int32(codes.InvalidArgument), Message: err.Error()}
	}
	c.send(stream, ack)
}

type pendingUpsert struct {
	hash uint64
	name string
}

// apply decodes resp, diffs it against what the handler holds, calls the
// handler and, on success, records the new state. Caller holds applyMu.
func (c *Client) apply(resp *meshv1.DeltaResponse) error {
	// Snapshot the subscriptions: resources no longer subscribed (an
	// Unsubscribe raced with this response) are ignored.
	c.mu.Lock()
	subs := make(map[string]subState, len(c.subs))
	for t, st := range c.subs {
		cp := subState{wildcard: st.wildcard}
		if !st.wildcard {
			cp.names = make(map[string]struct{}, len(st.names))
			for n := range st.names {
				cp.names[n] = struct{}{}
			}
		}
		subs[t] = cp
	}
	c.mu.Unlock()
	subscribed := func(t, name string) bool {
		st, ok := subs[t]
		if !ok {
			return false
		}
		if st.wildcard {
			return true
		}
		_, ok = st.names[name]
		return ok
	}

	full := make(map[string]map[string]struct{}, len(resp.GetFullStateTypes()))
	for _, t := range resp.GetFullStateTypes() {
		full[t] = make(map[string]struct{})
	}
	byType := make(map[string]*TypeUpdate)
	tu := func(t string) *TypeUpdate {
		u := byType[t]
		if u == nil {
			u = &TypeUpdate{TypeURL: t}
			byType[t] = u
		}
		return u
	}
	hashes := make(map[string][]pendingUpsert)

	for _, r := range resp.GetResources() {
		body := r.GetBody()
		if body == nil {
			return fmt.Errorf("resource %q has no body", r.GetName())
		}
		t := body.GetTypeUrl()
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(t)
		if err != nil {
			return fmt.Errorf("resource %q: unknown type URL %q", r.GetName(), t)
		}
		if !subscribed(t, r.GetName()) {
			continue // unsubscribed meanwhile
		}
		if seen, ok := full[t]; ok {
			seen[r.GetName()] = struct{}{}
		}
		h := maphash.Bytes(c.seed, body.GetValue())
		if old, ok := c.held[t][r.GetName()]; ok && old == h {
			continue // unchanged (e.g. full state after a reconnect)
		}
		m := mt.New().Interface()
		if err := proto.Unmarshal(body.GetValue(), m); err != nil {
			return fmt.Errorf("resource %q of type %s cannot be decoded: %v", r.GetName(), t, err)
		}
		u := tu(t)
		u.Upserts = append(u.Upserts, Resource{Name: r.GetName(), Version: r.GetVersion(), Message: m})
		hashes[t] = append(hashes[t], pendingUpsert{hash: h, name: r.GetName()})
	}
	for _, rm := range resp.GetRemoved() {
		if _, ok := c.held[rm.GetTypeUrl()][rm.GetName()]; ok {
			u := tu(rm.GetTypeUrl())
			u.Removes = append(u.Removes, rm.GetName())
		}
	}
	for t, seen := range full {
		var gone []string
		for name := range c.held[t] {
			if _, ok := seen[name]; !ok {
				gone = append(gone, name)
			}
		}
		sort.Strings(gone)
		u := tu(t)
		u.FullState = true
		u.Removes = append(u.Removes, gone...)
	}

	upd := &Update{Epoch: resp.GetEpoch(), Version: resp.GetVersion()}
	changed := false
	for _, t := range slices.Sorted(maps.Keys(byType)) {
		u := byType[t]
		if len(u.Upserts) == 0 && len(u.Removes) == 0 {
			continue
		}
		changed = true
		upd.Types = append(upd.Types, *u)
	}
	if changed {
		if err := c.opts.Handler.Apply(upd); err != nil {
			return err
		}
	}

	// Applied: record it.
	for _, u := range upd.Types {
		h := c.held[u.TypeURL]
		if h == nil {
			h = make(map[string]uint64)
			c.held[u.TypeURL] = h
		}
		for _, n := range u.Removes {
			delete(h, n)
		}
		for _, p := range hashes[u.TypeURL] {
			h[p.name] = p.hash
		}
	}
	c.mu.Lock()
	c.epoch, c.version = resp.GetEpoch(), resp.GetVersion()
	for _, t := range resp.GetFullStateTypes() {
		if st := c.subs[t]; st != nil && st.wildcard {
			st.synced = true
		}
	}
	for _, u := range upd.Types {
		c.counts[u.TypeURL] = len(c.held[u.TypeURL])
	}
	first := !c.isSynced
	c.isSynced = true
	c.mu.Unlock()
	if first {
		close(c.synced)
	}
	return nil
}
