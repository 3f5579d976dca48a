//go:build linux

package redirect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of the agent side.
var (
	// ErrAckTimeout: the ztunnel did not acknowledge in time. The agent
	// closes that connection (the ztunnel reconnects and gets a full
	// snapshot), so both sides agree again.
	ErrAckTimeout = errors.New("redirect: ztunnel did not acknowledge in time")
	// ErrNotConnected: no ztunnel was connected before the context ended.
	ErrNotConnected = errors.New("redirect: no ztunnel connected")
	// ErrAgentClosed: the agent stopped.
	ErrAgentClosed = errors.New("redirect: node agent stopped")
	// ErrSuperseded: a later AddPod or DelPod for the same uid replaced
	// this AddPod before the ztunnel acknowledged it.
	ErrSuperseded = errors.New("redirect: superseded by a later request for the same pod")
)

// RefusedError is a ztunnel's negative acknowledgement.
type RefusedError struct {
	Request MessageType
	UID     string
	Reason  string
}

func (e *RefusedError) Error() string {
	if e.UID != "" {
		return fmt.Sprintf("redirect: ztunnel refused %s for pod %s: %s", e.Request, e.UID, e.Reason)
	}
	return fmt.Sprintf("redirect: ztunnel refused %s: %s", e.Request, e.Reason)
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	// AckTimeout bounds the wait for each acknowledgement and for the
	// ztunnel's hello. Default 5s.
	AckTimeout time.Duration
	// Logf receives connection events; nil discards them.
	Logf func(format string, args ...any)
}

// Agent is the node agent's side of the protocol: it listens on a Unix
// socket for the node's ztunnel, keeps the set of enrolled pods (each with
// its own handle on the pod's netns), sends them all whenever a ztunnel
// connects (then snapshot_sent), and forwards AddPod/DelPod as they come,
// one request at a time, each waiting for its ack. A newer ztunnel
// connection replaces the older one.
//
// Create it with NewAgent, run Serve (or ListenAndServe) in a goroutine.
type Agent struct {
	cfg AgentConfig

	ops      chan *op
	cancels  chan *op
	newConns chan *agentConn
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	started  atomic.Bool

	mu        sync.Mutex // guards the published view below
	enrolled  map[string]Pod
	waiting   []string
	connected bool

	// Owned by the loop goroutine.
	pods    map[string]*podEntry
	pending map[*op]struct{}
	conn    *agentConn
	seq     uint64
}

type podEntry struct {
	pod      Pod
	ns       *os.File // the agent's own handle
	enrolled bool     // acked at least once
	waiter   *op      // the AddPod waiting for this entry's ack
}

type opKind int

const (
	opAdd opKind = iota
	opDel
)

type op struct {
	kind       opKind
	ctx        context.Context
	pod        Pod
	ns         *os.File
	uid        string
	res        chan error
	stopCancel func() bool
	answered   bool
}

// NewAgent returns an Agent; nothing happens until Serve.
func NewAgent(cfg AgentConfig) *Agent {
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	return &Agent{
		cfg:      cfg,
		ops:      make(chan *op),
		cancels:  make(chan *op),
		newConns: make(chan *agentConn),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		enrolled: map[string]Pod{},
		pods:     map[string]*podEntry{},
		pending:  map[*op]struct{}{},
	}
}

func (a *Agent) logf(format string, args ...any) {
	if a.cfg.Logf != nil {
		a.cfg.Logf(format, args...)
	}
}

// ListenAndServe listens on socketPath (a SOCK_SEQPACKET Unix socket, mode
// 0600; a stale socket file is replaced) and serves until ctx ends or Close.
func (a *Agent) ListenAndServe(ctx context.Context, socketPath string) error {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	if fi, err := os.Lstat(socketPath); err == nil && fi.Mode().Type() == fs.ModeSocket {
		os.Remove(socketPath)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: socketPath, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("redirect: listen: %w", err)
	}
	if err := os.Chmod(socketPath, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("redirect: %w", err)
	}
	return a.Serve(ctx, l)
}

// Serve accepts ztunnel connections on l (which must be "unixpacket") and
// runs the agent until ctx ends or Close is called; it closes l. It returns
// nil after Close, ctx.Err() when ctx ended. An Agent serves once.
func (a *Agent) Serve(ctx context.Context, l *net.UnixListener) error {
	if !a.started.CompareAndSwap(false, true) {
		l.Close()
		return errors.New("redirect: Agent.Serve called twice")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.acceptLoop(l)
	}()
	err := a.loop(ctx)
	l.Close()
	wg.Wait()
	return err
}

// Close stops the agent: Serve returns, waiting AddPod calls fail with
// ErrAgentClosed, the ztunnel connection is closed (the ztunnel keeps its
// pods until a new agent's snapshot says otherwise).
func (a *Agent) Close() error {
	a.stopOnce.Do(func() { close(a.stop) })
	return nil
}

// Connected reports whether a ztunnel is connected (past its hello).
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.connected
}

// Pods returns the enrolled pods — those the ztunnel acknowledged — sorted
// by uid.
func (a *Agent) Pods() []Pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := make([]Pod, 0, len(a.enrolled))
	for _, p := range a.enrolled {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(x, y Pod) int {
		if x.UID < y.UID {
			return -1
		}
		if x.UID > y.UID {
			return 1
		}
		return 0
	})
	return ps
}

// Waiting returns the uids of pods whose AddPod is still waiting for a
// first acknowledgement (typically: no ztunnel connected), sorted.
func (a *Agent) Waiting() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.waiting)
}

// AddPod enrols a pod: it records the pod with a duplicate of netns (the
// caller keeps its own), sends it to the connected ztunnel and returns once
// the ztunnel acknowledged — nil when the ztunnel holds listeners in the
// pod. Without a connected ztunnel it waits for one until ctx ends
// (ErrNotConnected). On any failure the pod is not enrolled (the agent
// forgets it). Adding a uid again replaces the pod (an update).
func (a *Agent) AddPod(ctx context.Context, pod Pod, netns *os.File) error {
	if err := pod.validate(); err != nil {
		return fmt.Errorf("redirect: AddPod: %w", err)
	}
	if netns == nil {
		return errors.New("redirect: AddPod: nil netns")
	}
	fd, err := unix.FcntlInt(netns.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("redirect: AddPod: dup netns: %w", err)
	}
	pod.IPs = slices.Clone(pod.IPs)
	o := &op{kind: opAdd, ctx: ctx, pod: pod, ns: os.NewFile(uintptr(fd), "netns"), uid: pod.UID, res: make(chan error, 1)}
	return a.submit(o)
}

// DelPod removes a pod: the agent forgets it at once (a later snapshot
// will not contain it) and, when a ztunnel is connected, tells it and
// waits for the ack. It returns the ztunnel's refusal or ErrAckTimeout, if
// any; a missing ztunnel is not an error.
func (a *Agent) DelPod(ctx context.Context, uid string) error {
	if uid == "" {
		return errors.New("redirect: DelPod: empty uid")
	}
	return a.submit(&op{kind: opDel, ctx: ctx, uid: uid, res: make(chan error, 1)})
}

func (a *Agent) submit(o *op) error {
	select {
	case a.ops <- o:
	case <-a.done:
		if o.ns != nil {
			o.ns.Close()
		}
		return ErrAgentClosed
	case <-o.ctx.Done():
		if o.ns != nil {
			o.ns.Close()
		}
		if o.kind == opAdd {
			return fmt.Errorf("%w: %w", ErrNotConnected, o.ctx.Err())
		}
		return o.ctx.Err()
	}
	// The loop answers every op it took, promptly once o.ctx ends.
	return <-o.res
}

func (a *Agent) acceptLoop(l *net.UnixListener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		uc, err := l.AcceptUnix()
		if err != nil {
			select {
			case <-a.done:
			default:
				if !errors.Is(err, net.ErrClosed) {
					a.logf("redirect: accept: %v", err)
				}
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.handshake(uc)
		}()
	}
}

// handshake reads the ztunnel's hello, answers it and hands the connection
// to the loop.
func (a *Agent) handshake(uc *net.UnixConn) {
	uc.SetDeadline(time.Now().Add(a.cfg.AckTimeout))
	hsDone := make(chan struct{})
	defer close(hsDone)
	go func() {
		select {
		case <-a.done:
			uc.SetDeadline(time.Unix(1, 0)) // the agent stopped: abort
		case <-hsDone:
		}
	}()
	m, files, err := readMsg(uc)
	closeFiles(files)
	if err != nil {
		a.logf("redirect: ztunnel hello: %v", err)
		uc.Close()
		return
	}
	if m.Type != MsgHello {
		a.logf("redirect: ztunnel sent %q before hello; closing", m.Type)
		writeMsg(uc, Message{Type: MsgHello, Version: ProtocolVersion, Error: "expected hello"}, nil)
		uc.Close()
		return
	}
	version := min(m.Version, ProtocolVersion)
	if err := writeMsg(uc, Message{Type: MsgHello, Version: version}, nil); err != nil {
		a.logf("redirect: hello to ztunnel: %v", err)
		uc.Close()
		return
	}
	uc.SetDeadline(time.Time{})
	c := &agentConn{uc: uc, version: version, msgs: make(chan Message, 8), dead: make(chan struct{}), closed: make(chan struct{})}
	go c.readLoop()
	select {
	case a.newConns <- c:
	case <-a.done:
		c.close()
	}
}

// agentConn is one ztunnel connection.
type agentConn struct {
	uc        *net.UnixConn
	version   int
	msgs      chan Message
	dead      chan struct{} // closed when reading fails; err is set then
	err       error
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *agentConn) readLoop() {
	for {
		m, files, err := readMsg(c.uc)
		closeFiles(files) // a ztunnel never sends descriptors
		if err != nil {
			c.err = err
			close(c.dead)
			return
		}
		select {
		case c.msgs <- m:
		case <-c.closed:
			c.err = net.ErrClosed
			close(c.dead)
			return
		}
	}
}

func (c *agentConn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.uc.Close()
	})
}

// loop owns the pod set and the connection; it runs until ctx ends or Close.
func (a *Agent) loop(ctx context.Context) error {
	defer a.shutdown()
	for {
		var dead chan struct{}
		if a.conn != nil {
			dead = a.conn.dead
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.stop:
			return nil
		case c := <-a.newConns:
			a.attach(ctx, c)
		case <-dead:
			a.drop(fmt.Errorf("connection lost: %w", a.conn.err))
		case o := <-a.ops:
			a.handle(ctx, o)
		case o := <-a.cancels:
			a.cancelPending(o)
		}
	}
}

func (a *Agent) shutdown() {
	close(a.done)
	if a.conn != nil {
		a.conn.close()
		a.conn = nil
	}
	for o := range a.pending {
		a.answer(o, ErrAgentClosed)
	}
	for uid, e := range a.pods {
		e.ns.Close()
		delete(a.pods, uid)
	}
	a.publish()
}

// publish refreshes the view read by Pods and Connected.
func (a *Agent) publish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.connected = a.conn != nil
	clear(a.enrolled)
	a.waiting = a.waiting[:0]
	for uid, e := range a.pods {
		if e.enrolled {
			a.enrolled[uid] = e.pod
		} else {
			a.waiting = append(a.waiting, uid)
		}
	}
	slices.Sort(a.waiting)
}

func (a *Agent) answer(o *op, err error) {
	if o.answered {
		return
	}
	o.answered = true
	if o.stopCancel != nil {
		o.stopCancel()
	}
	delete(a.pending, o)
	o.res <- err
}

// pend parks an AddPod until a ztunnel connects or its context ends.
func (a *Agent) pend(o *op) {
	a.pending[o] = struct{}{}
	if o.stopCancel == nil {
		o.stopCancel = context.AfterFunc(o.ctx, func() {
			select {
			case a.cancels <- o:
			case <-a.done:
			}
		})
	}
}

func (a *Agent) cancelPending(o *op) {
	if _, ok := a.pending[o]; !ok {
		return
	}
	if e := a.pods[o.uid]; e != nil && e.waiter == o {
		a.forget(o.uid)
	}
	a.answer(o, fmt.Errorf("%w: %w", ErrNotConnected, o.ctx.Err()))
}

// forget removes a pod from the set and closes the agent's handle.
func (a *Agent) forget(uid string) {
	if e := a.pods[uid]; e != nil {
		e.ns.Close()
		delete(a.pods, uid)
		a.publish()
	}
}

// attach makes c the current connection and sends it the snapshot.
func (a *Agent) attach(ctx context.Context, c *agentConn) {
	if a.conn != nil {
		a.logf("redirect: a new ztunnel connection replaces the current one")
		a.drop(errors.New("replaced by a newer ztunnel connection"))
	}
	a.conn = c
	a.seq = 0
	a.publish()
	a.logf("redirect: ztunnel connected (protocol v%d); sending %d pods", c.version, len(a.pods))
	uids := make([]string, 0, len(a.pods))
	for uid := range a.pods {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	for _, uid := range uids {
		e := a.pods[uid]
		err := a.request(ctx, nil, Message{Type: MsgAddPod, Pod: &e.pod}, e.ns)
		var refused *RefusedError
		switch {
		case err == nil:
			e.enrolled = true
			a.publish()
			if e.waiter != nil {
				a.answer(e.waiter, nil)
				e.waiter = nil
			}
		case errors.As(err, &refused):
			if e.enrolled {
				// Stays in the set: retried on the next connection.
				a.logf("redirect: %v (pod stays enrolled, retried on reconnect)", err)
				continue
			}
			a.forget(uid)
			if e.waiter != nil {
				a.answer(e.waiter, err)
			}
		default:
			// The connection is gone (request dropped it); the rest waits
			// for the next one.
			return
		}
	}
	if err := a.request(ctx, nil, Message{Type: MsgSnapshotSent}, nil); err != nil {
		a.logf("redirect: snapshot_sent: %v", err)
	}
}

// drop closes the current connection.
func (a *Agent) drop(reason error) {
	if a.conn == nil {
		return
	}
	a.logf("redirect: dropping ztunnel connection: %v", reason)
	a.conn.close()
	a.conn = nil
	a.publish()
}

// errConnGone marks request failures after which the connection is gone.
type connGoneError struct{ err error }

func (e *connGoneError) Error() string { return e.err.Error() }
func (e *connGoneError) Unwrap() error { return e.err }

// request sends m (numbered) with fd and waits for its ack. A refusal is a
// *RefusedError and keeps the connection; anything else — write failure,
// lost connection, protocol violation, timeout, opCtx ending, the agent
// stopping — drops the connection and is a *connGoneError.
func (a *Agent) request(ctx, opCtx context.Context, m Message, fd *os.File) error {
	c := a.conn
	if c == nil {
		return &connGoneError{ErrNotConnected}
	}
	a.seq++
	m.Seq = a.seq
	if err := writeMsg(c.uc, m, fd); err != nil {
		a.drop(fmt.Errorf("write %s: %w", m.Type, err))
		return &connGoneError{err}
	}
	timer := time.NewTimer(a.cfg.AckTimeout)
	defer timer.Stop()
	var opDone <-chan struct{}
	if opCtx != nil {
		opDone = opCtx.Done()
	}
	fail := func(err error) error {
		a.drop(err)
		return &connGoneError{err}
	}
	select {
	case ack := <-c.msgs:
		if ack.Type != MsgAck || ack.Seq != m.Seq {
			return fail(fmt.Errorf("protocol violation: got %s seq %d while waiting for the ack of %s seq %d", ack.Type, ack.Seq, m.Type, m.Seq))
		}
		if ack.Error != "" {
			uid := m.UID
			if m.Pod != nil {
				uid = m.Pod.UID
			}
			return &RefusedError{Request: m.Type, UID: uid, Reason: ack.Error}
		}
		return nil
	case <-c.dead:
		return fail(fmt.Errorf("connection lost waiting for the ack of %s: %w", m.Type, c.err))
	case <-timer.C:
		return fail(fmt.Errorf("%w (%s, %s)", ErrAckTimeout, m.Type, a.cfg.AckTimeout))
	case <-opDone:
		return fail(opCtx.Err())
	case <-ctx.Done():
		return fail(ErrAgentClosed)
	case <-a.stop:
		return fail(ErrAgentClosed)
	}
}

func (a *Agent) handle(ctx context.Context, o *op) {
	switch o.kind {
	case opAdd:
		a.handleAdd(ctx, o)
	case opDel:
		a.handleDel(ctx, o)
	}
}

func (a *Agent) handleAdd(ctx context.Context, o *op) {
	if err := o.ctx.Err(); err != nil {
		o.ns.Close()
		a.answer(o, err)
		return
	}
	if old := a.pods[o.uid]; old != nil {
		if old.waiter != nil {
			a.answer(old.waiter, ErrSuperseded)
		}
		old.ns.Close()
	}
	e := &podEntry{pod: o.pod, ns: o.ns, waiter: o}
	a.pods[o.uid] = e
	a.publish()
	if a.conn == nil {
		a.pend(o)
		return
	}
	err := a.request(ctx, o.ctx, Message{Type: MsgAddPod, Pod: &e.pod}, e.ns)
	var gone *connGoneError
	switch {
	case err == nil:
		e.enrolled = true
		e.waiter = nil
		a.publish()
		a.answer(o, nil)
	case errors.As(err, &gone) && !errors.Is(err, ErrAckTimeout) && o.ctx.Err() == nil && !errors.Is(err, ErrAgentClosed):
		// The connection broke under us: wait for the next ztunnel, whose
		// snapshot will carry this pod.
		a.pend(o)
	default:
		// Refused, timed out, or the caller gave up: not enrolled. (After a
		// timeout the connection was dropped; the ztunnel's next snapshot
		// will not contain the pod, so it drops whatever it set up.)
		a.forget(o.uid)
		if errors.As(err, &gone) {
			err = gone.err
		}
		a.answer(o, err)
	}
}

func (a *Agent) handleDel(ctx context.Context, o *op) {
	if e := a.pods[o.uid]; e != nil {
		if e.waiter != nil {
			a.answer(e.waiter, ErrSuperseded)
		}
		a.forget(o.uid)
	}
	if a.conn == nil {
		a.answer(o, nil)
		return
	}
	err := a.request(ctx, o.ctx, Message{Type: MsgDelPod, UID: o.uid}, nil)
	var gone *connGoneError
	if errors.As(err, &gone) {
		// The ztunnel is gone or was dropped; its next snapshot will not
		// contain the pod. Only report a timeout or the caller's context.
		if errors.Is(err, ErrAckTimeout) || o.ctx.Err() != nil {
			err = gone.err
		} else {
			err = nil
		}
	}
	a.answer(o, err)
}
