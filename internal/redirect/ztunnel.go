//go:build linux

package redirect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// PodHandler is the ztunnel's side of enrolment: it opens (or closes) the
// ztunnel's listeners inside pods. Its methods are called one at a time; the
// error each returns is what the ztunnel acknowledges with (nil: success).
type PodHandler interface {
	// AddPod starts serving pod inside its network namespace, a verified
	// netns file the handler now owns: keep it while the pod is enrolled,
	// close it when done — or on error. The same uid may come again (after
	// a reconnect, or with new IPs): treat it as an update. On error the
	// handler must hold nothing for the uid any more.
	AddPod(ctx context.Context, pod Pod, netns *os.File) error
	// DelPod stops serving the pod; an unknown uid is not an error.
	DelPod(ctx context.Context, uid string) error
	// SnapshotSent ends the initial set after (re)connecting: uids are the
	// pods added since the hello; pods the handler holds that are not in
	// it were removed while no agent was connected and must be dropped.
	SnapshotSent(ctx context.Context, uids []string) error
}

// HandlerFuncs adapts functions to PodHandler; nil functions succeed (a
// nil AddPod closes the netns file).
type HandlerFuncs struct {
	Add      func(ctx context.Context, pod Pod, netns *os.File) error
	Del      func(ctx context.Context, uid string) error
	Snapshot func(ctx context.Context, uids []string) error
}

func (h HandlerFuncs) AddPod(ctx context.Context, pod Pod, ns *os.File) error {
	if h.Add == nil {
		return ns.Close()
	}
	return h.Add(ctx, pod, ns)
}

func (h HandlerFuncs) DelPod(ctx context.Context, uid string) error {
	if h.Del == nil {
		return nil
	}
	return h.Del(ctx, uid)
}

func (h HandlerFuncs) SnapshotSent(ctx context.Context, uids []string) error {
	if h.Snapshot == nil {
		return nil
	}
	return h.Snapshot(ctx, uids)
}

// ZtunnelConn is the ztunnel's connection to the node agent.
type ZtunnelConn struct {
	uc *net.UnixConn
	// Version is the protocol version the agent chose.
	Version int
}

// DialAgent connects to the node agent at socketPath and exchanges hellos.
// ctx bounds the handshake (10s if it has no deadline).
func DialAgent(ctx context.Context, socketPath string) (*ZtunnelConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", socketPath)
	if err != nil {
		return nil, fmt.Errorf("redirect: dial node agent: %w", err)
	}
	uc := c.(*net.UnixConn)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	uc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { uc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) (*ZtunnelConn, error) {
		uc.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, fmt.Errorf("redirect: node agent handshake: %w", err)
	}
	if err := writeMsg(uc, Message{Type: MsgHello, Version: ProtocolVersion}, nil); err != nil {
		return fail(err)
	}
	m, files, err := readMsg(uc)
	closeFiles(files)
	if err != nil {
		return fail(err)
	}
	switch {
	case m.Type != MsgHello:
		return fail(fmt.Errorf("expected hello, got %q", m.Type))
	case m.Error != "":
		return fail(fmt.Errorf("agent refused: %s", m.Error))
	case m.Version < 1 || m.Version > ProtocolVersion:
		return fail(fmt.Errorf("agent chose protocol version %d; this ztunnel speaks 1..%d", m.Version, ProtocolVersion))
	}
	if !stop() {
		return fail(ctx.Err())
	}
	uc.SetDeadline(time.Time{})
	return &ZtunnelConn{uc: uc, Version: m.Version}, nil
}

// Close closes the connection.
func (z *ZtunnelConn) Close() error { return z.uc.Close() }

// maxAckError bounds the error text sent back in an ack.
const maxAckError = 4096

// Serve handles the agent's requests with h until the connection ends or
// ctx does, acknowledging each with h's result. It returns ctx.Err(),
// io.EOF when the agent closed the connection, or the protocol error that
// made it give up (an ErrMalformed message, an unexpected message type);
// it does not close the connection.
func (z *ZtunnelConn) Serve(ctx context.Context, h PodHandler) error {
	stop := context.AfterFunc(ctx, func() { z.uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var snapshot []string
	inSnapshot := true
	for {
		m, files, err := readMsg(z.uc)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("redirect: from node agent: %w", err)
		}
		if m.Seq == 0 || m.Type == MsgHello || m.Type == MsgAck {
			closeFiles(files)
			return fmt.Errorf("redirect: unexpected %q message (seq %d) from node agent", m.Type, m.Seq)
		}
		var herr error
		if err := m.Validate(); err != nil {
			closeFiles(files)
			herr = err
		} else {
			switch m.Type {
			case MsgAddPod:
				herr = z.addPod(ctx, h, m.Pod, files)
				if herr == nil && inSnapshot {
					snapshot = append(snapshot, m.Pod.UID)
				}
			case MsgDelPod:
				closeFiles(files)
				herr = h.DelPod(ctx, m.UID)
			case MsgSnapshotSent:
				closeFiles(files)
				herr = h.SnapshotSent(ctx, snapshot)
				inSnapshot, snapshot = false, nil
			}
		}
		ack := Message{Type: MsgAck, Seq: m.Seq}
		if herr != nil {
			ack.Error = herr.Error()
			if ack.Error == "" {
				ack.Error = "error"
			}
			if len(ack.Error) > maxAckError {
				ack.Error = ack.Error[:maxAckError]
			}
		}
		if err := writeMsg(z.uc, ack, nil); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("redirect: ack to node agent: %w", err)
		}
	}
}

func (z *ZtunnelConn) addPod(ctx context.Context, h PodHandler, pod *Pod, files []*os.File) error {
	if len(files) != 1 {
		closeFiles(files)
		return fmt.Errorf("add_pod carries %d file descriptors, want 1 (the pod's network namespace)", len(files))
	}
	if !netns.IsNetNS(files[0]) {
		files[0].Close()
		return errors.New("add_pod's file descriptor is not a network namespace")
	}
	return h.AddPod(ctx, *pod, files[0])
}

// ZtunnelClient keeps a ztunnel connected to its node agent: it dials,
// serves, and after any failure dials again.
type ZtunnelClient struct {
	SocketPath string
	Handler    PodHandler
	// RetryInterval between connection attempts; default 1s.
	RetryInterval time.Duration
	// Logf receives connection events; nil discards them.
	Logf func(format string, args ...any)
}

// Run connects and serves until ctx ends; it returns ctx.Err().
func (zc *ZtunnelClient) Run(ctx context.Context) error {
	retry := zc.RetryInterval
	if retry <= 0 {
		retry = time.Second
	}
	logf := zc.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for {
		z, err := DialAgent(ctx, zc.SocketPath)
		if err == nil {
			logf("redirect: connected to node agent (protocol v%d)", z.Version)
			err = z.Serve(ctx, zc.Handler)
			z.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logf("redirect: node agent connection: %v; retrying in %s", err, retry)
		t := time.NewTimer(retry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
