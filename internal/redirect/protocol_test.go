//go:build linux

package redirect

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

// Long enough never to fire by accident on a loaded machine; tests that
// need a timeout to fire use their own short one against a peer that never
// answers, so there is no race either way.
const longAck = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startAgent serves a new Agent on a fresh socket; stopped at cleanup.
func startAgent(t *testing.T, ackTimeout time.Duration) (*Agent, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	a := NewAgent(AgentConfig{AckTimeout: ackTimeout, Logf: t.Logf})
	done := make(chan error, 1)
	go func() { done <- a.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		a.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return a, path
}

// hostNS opens the test process's own namespace file: any netns fd will do
// for the protocol (it is only passed around, never entered).
func hostNS(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

type event struct {
	kind string // add, del, snapshot
	pod  Pod
	uids []string
	ns   *os.File
}

// recorder is a PodHandler reporting every call on a channel. refuse makes
// AddPod fail for that uid.
type recorder struct {
	events chan event
	mu     sync.Mutex
	refuse map[string]string
	onAdd  func(Pod, *os.File) error
}

func newRecorder() *recorder {
	return &recorder{events: make(chan event, 64), refuse: map[string]string{}}
}

func (r *recorder) AddPod(_ context.Context, p Pod, ns *os.File) error {
	r.mu.Lock()
	reason, refuse := r.refuse[p.UID]
	r.mu.Unlock()
	if refuse {
		ns.Close()
		return errors.New(reason)
	}
	if r.onAdd != nil {
		if err := r.onAdd(p, ns); err != nil {
			return err
		}
	} else {
		ns.Close()
	}
	r.events <- event{kind: "add", pod: p}
	return nil
}

func (r *recorder) DelPod(_ context.Context, uid string) error {
	r.events <- event{kind: "del", pod: Pod{UID: uid}}
	return nil
}

func (r *recorder) SnapshotSent(_ context.Context, uids []string) error {
	r.events <- event{kind: "snapshot", uids: uids}
	return nil
}

func (r *recorder) next(t *testing.T) event {
	t.Helper()
	return wait(t, (<-chan event)(r.events))
}

// connect runs a ZtunnelConn with h; the returned channel yields Serve's
// result.
func connect(t *testing.T, path string, h PodHandler) (*ZtunnelConn, <-chan error) {
	t.Helper()
	z, err := DialAgent(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { z.Close() })
	done := make(chan error, 1)
	go func() { done <- z.Serve(context.Background(), h) }()
	return z, done
}

func uids(ps []Pod) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.UID)
	}
	return s
}

func TestProtocolPassesNetnsToZtunnel(t *testing.T) {
	pod := netnstest.New(t)
	other := netnstest.New(t)
	a, path := startAgent(t, longAck)

	// The "ztunnel" opens its outbound listener inside the received netns.
	var mu sync.Mutex
	listeners := map[string]*net.TCPListener{}
	var received *netns.NS
	rec := newRecorder()
	rec.onAdd = func(p Pod, f *os.File) error {
		ns, err := netns.FromFile(f)
		if err != nil {
			return err
		}
		l, err := netns.ListenTCP(ns, "127.0.0.1:15001", netns.SocketOptions{})
		if err != nil {
			ns.Close()
			return err
		}
		mu.Lock()
		listeners[p.UID], received = l, ns
		mu.Unlock()
		return nil
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range listeners {
			l.Close()
		}
		if received != nil {
			received.Close()
		}
	})
	connect(t, path, rec)
	if ev := rec.next(t); ev.kind != "snapshot" || len(ev.uids) != 0 {
		t.Fatalf("first event %+v, want an empty snapshot", ev)
	}

	p := Pod{UID: "uid-1", Name: "app", Namespace: "default", ServiceAccount: "sa", IPs: []netip.Addr{podIP}}
	if err := a.AddPod(testCtx(t), p, pod.File()); err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	ev := rec.next(t)
	if ev.kind != "add" || ev.pod.UID != "uid-1" || ev.pod.Name != "app" || ev.pod.ServiceAccount != "sa" || !slices.Equal(ev.pod.IPs, p.IPs) {
		t.Fatalf("ztunnel got %+v", ev)
	}
	mu.Lock()
	same := received.Equal(pod)
	mu.Unlock()
	if !same {
		t.Fatal("the ztunnel received a different namespace")
	}
	// The listener lives in the pod: reachable from there, not elsewhere.
	acc := accepted(t, listeners["uid-1"])
	c := dial(t, pod, netip.MustParseAddrPort("127.0.0.1:15001"), netns.SocketOptions{})
	wait(t, acc)
	c.Close()
	if c, err := netns.DialTCP(testCtx(t), other, netip.MustParseAddrPort("127.0.0.1:15001"), netns.SocketOptions{}); err == nil {
		c.Close()
		t.Fatal("the listener is reachable from another namespace")
	}
	if got := uids(a.Pods()); !slices.Equal(got, []string{"uid-1"}) {
		t.Fatalf("Pods() = %v", got)
	}
	// The caller's own handle is untouched by the agent.
	if !netns.IsNetNS(pod.File()) {
		t.Fatal("caller's netns file was closed")
	}

	if err := a.DelPod(testCtx(t), "uid-1"); err != nil {
		t.Fatal(err)
	}
	if ev := rec.next(t); ev.kind != "del" || ev.pod.UID != "uid-1" {
		t.Fatalf("ztunnel got %+v, want del uid-1", ev)
	}
	if len(a.Pods()) != 0 {
		t.Fatalf("Pods() after DelPod = %v", a.Pods())
	}
}

func TestProtocolReconnectResendsPods(t *testing.T) {
	a, path := startAgent(t, longAck)
	ns := hostNS(t)
	rec1 := newRecorder()
	z1, done1 := connect(t, path, rec1)
	rec1.next(t) // empty snapshot
	for _, uid := range []string{"b", "a"} {
		if err := a.AddPod(testCtx(t), Pod{UID: uid}, ns); err != nil {
			t.Fatal(err)
		}
		rec1.next(t)
	}
	// The ztunnel restarts: its connection closes, a new one arrives.
	z1.Close()
	<-done1
	rec2 := newRecorder()
	connect(t, path, rec2)
	var got []string
	for {
		ev := rec2.next(t)
		if ev.kind == "snapshot" {
			if !slices.Equal(ev.uids, []string{"a", "b"}) {
				t.Fatalf("snapshot uids %v", ev.uids)
			}
			break
		}
		got = append(got, ev.pod.UID)
	}
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("resent %v, want [a b]", got)
	}
	// A third ztunnel connecting replaces the second, which is closed.
	rec3 := newRecorder()
	_, done3 := connect(t, path, rec3)
	for ev := rec3.next(t); ev.kind != "snapshot"; ev = rec3.next(t) {
	}
	if err := a.DelPod(testCtx(t), "a"); err != nil {
		t.Fatal(err)
	}
	if ev := rec3.next(t); ev.kind != "del" {
		t.Fatalf("newest ztunnel got %+v", ev)
	}
	select {
	case err := <-done3:
		t.Fatalf("newest connection ended: %v", err)
	default:
	}
	if got := uids(a.Pods()); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("Pods() = %v", got)
	}
}

func TestProtocolReplacedConnectionIsClosed(t *testing.T) {
	_, path := startAgent(t, longAck)
	rec1 := newRecorder()
	_, done1 := connect(t, path, rec1)
	rec1.next(t)
	rec2 := newRecorder()
	connect(t, path, rec2)
	rec2.next(t)
	if err := wait(t, done1); !errors.Is(err, io.EOF) {
		t.Fatalf("replaced connection ended with %v, want EOF", err)
	}
}

func TestProtocolAddPodWaitsForZtunnel(t *testing.T) {
	a, path := startAgent(t, longAck)
	ns := hostNS(t)
	res := make(chan error, 1)
	go func() { res <- a.AddPod(testCtx(t), Pod{UID: "early"}, ns) }()
	waitFor(t, func() bool { return slices.Equal(a.Waiting(), []string{"early"}) })
	// Enrolment completes once a ztunnel connects and acks the snapshot.
	rec := newRecorder()
	connect(t, path, rec)
	if ev := rec.next(t); ev.kind != "add" || ev.pod.UID != "early" {
		t.Fatalf("got %+v", ev)
	}
	if err := wait(t, (<-chan error)(res)); err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	if ev := rec.next(t); ev.kind != "snapshot" || !slices.Equal(ev.uids, []string{"early"}) {
		t.Fatalf("got %+v", ev)
	}

	// Without a ztunnel and with a short deadline: ErrNotConnected.
	a2, _ := startAgent(t, longAck)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := a2.AddPod(ctx, Pod{UID: "x"}, ns)
	if !errors.Is(err, ErrNotConnected) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AddPod without ztunnel: %v", err)
	}
	if len(a2.Pods()) != 0 || len(a2.Waiting()) != 0 {
		t.Fatal("a pod that was never acked is still known")
	}
}

func TestProtocolRefusal(t *testing.T) {
	a, path := startAgent(t, longAck)
	rec := newRecorder()
	rec.refuse["bad"] = "no room in this pod"
	connect(t, path, rec)
	rec.next(t)
	err := a.AddPod(testCtx(t), Pod{UID: "bad"}, hostNS(t))
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Reason != "no room in this pod" || refused.UID != "bad" {
		t.Fatalf("AddPod: %v, want a refusal", err)
	}
	if len(a.Pods()) != 0 {
		t.Fatal("refused pod is enrolled")
	}
	// The connection is still good.
	if err := a.AddPod(testCtx(t), Pod{UID: "good"}, hostNS(t)); err != nil {
		t.Fatal(err)
	}
}

// rawDial connects to the agent without the client code, to misbehave.
func rawDial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c
}

func rawSend(t *testing.T, c *net.UnixConn, s string, files ...*os.File) {
	t.Helper()
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix([]byte(s), oob, nil); err != nil {
		t.Fatal(err)
	}
}

func rawRecv(t *testing.T, c *net.UnixConn) (Message, error) {
	t.Helper()
	m, files, err := readMsg(c)
	closeFiles(files)
	return m, err
}

func TestProtocolAckTimeout(t *testing.T) {
	a, path := startAgent(t, 100*time.Millisecond)
	c := rawDial(t, path)
	rawSend(t, c, `{"type":"hello","version":1}`)
	if m, err := rawRecv(t, c); err != nil || m.Type != MsgHello || m.Version != 1 {
		t.Fatalf("agent hello: %+v %v", m, err)
	}
	if m, err := rawRecv(t, c); err != nil || m.Type != MsgSnapshotSent {
		t.Fatalf("want snapshot_sent, got %+v %v", m, err)
	} else {
		rawSend(t, c, `{"type":"ack","seq":1}`)
	}
	res := make(chan error, 1)
	go func() { res <- a.AddPod(testCtx(t), Pod{UID: "slow"}, hostNS(t)) }()
	m, err := rawRecv(t, c)
	if err != nil || m.Type != MsgAddPod || m.Seq != 2 {
		t.Fatalf("want add_pod seq 2, got %+v %v", m, err)
	}
	// Never ack it.
	if err := wait(t, (<-chan error)(res)); !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("AddPod: %v, want ErrAckTimeout", err)
	}
	if len(a.Pods()) != 0 {
		t.Fatal("unacknowledged pod is enrolled")
	}
	// The agent dropped the connection.
	if _, err := rawRecv(t, c); !errors.Is(err, io.EOF) {
		t.Fatalf("after the timeout the connection gives %v, want EOF", err)
	}
}

func TestProtocolMalformedFromZtunnel(t *testing.T) {
	a, path := startAgent(t, longAck)
	for _, bad := range []string{`not json`, `{"type":"ack","seq":1}`, `{"type":"hello"}`, `{"type":"hello","version":1} trailing`, `[]`} {
		c := rawDial(t, path)
		rawSend(t, c, bad)
		m, err := rawRecv(t, c)
		if err == nil && m.Error == "" {
			t.Fatalf("agent accepted hello %q: %+v", bad, m)
		}
		if err == nil {
			// An explicit refusal, then the close.
			if _, err = rawRecv(t, c); !errors.Is(err, io.EOF) {
				t.Fatalf("after refusing %q: %v", bad, err)
			}
		} else if !errors.Is(err, io.EOF) {
			t.Fatalf("hello %q: %v, want the connection closed", bad, err)
		}
	}
	// A garbage ack drops the connection; the agent keeps serving.
	c := rawDial(t, path)
	rawSend(t, c, `{"type":"hello","version":7}`)
	if m, err := rawRecv(t, c); err != nil || m.Version != 1 {
		t.Fatalf("agent should answer a newer ztunnel with version 1: %+v %v", m, err)
	}
	rawRecv(t, c) // snapshot_sent
	rawSend(t, c, "\x00\x01garbage")
	if _, err := rawRecv(t, c); !errors.Is(err, io.EOF) {
		t.Fatalf("after a garbage ack: %v, want EOF", err)
	}
	rec := newRecorder()
	connect(t, path, rec)
	rec.next(t)
	if err := a.AddPod(testCtx(t), Pod{UID: "ok"}, hostNS(t)); err != nil {
		t.Fatal(err)
	}
}

// fakeAgent accepts one connection from a ZtunnelConn for tests that play
// the agent's side.
func fakeAgent(t *testing.T, hello string) (path string, conn <-chan *net.UnixConn) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan *net.UnixConn, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			close(ch)
			return
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, _, err := readMsg(c); err != nil {
			close(ch)
			return
		}
		c.WriteMsgUnix([]byte(hello), nil, nil)
		ch <- c
	}()
	return path, ch
}

func TestProtocolMalformedFromAgent(t *testing.T) {
	path, conns := fakeAgent(t, `{"type":"hello","version":1}`)
	rec := newRecorder()
	_, done := connect(t, path, rec)
	c := wait(t, conns)
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	ns := hostNS(t)
	// Requests that are well-formed but wrong get an error ack; the
	// connection stays up.
	cases := []struct {
		msg   string
		files []*os.File
		want  string
	}{
		{`{"type":"add_pod","seq":1,"pod":{"uid":"p"}}`, nil, "carries 0 file descriptors"},
		{`{"type":"add_pod","seq":2,"pod":{"uid":"p"}}`, []*os.File{pipeR}, "not a network namespace"},
		{`{"type":"add_pod","seq":3,"pod":{"uid":"p"}}`, []*os.File{ns, ns}, "carries 2 file descriptors"},
		{`{"type":"add_pod","seq":4,"pod":{"name":"no-uid"}}`, []*os.File{ns}, "no uid"},
		{`{"type":"add_pod","seq":5}`, []*os.File{ns}, "without pod"},
		{`{"type":"del_pod","seq":6}`, nil, "without uid"},
		{`{"type":"future_thing","seq":7}`, nil, "unknown message type"},
		{`{"type":"add_pod","seq":8,"pod":{"uid":"p","ips":["10.244.1.1"]},"extra":"ignored"}`, []*os.File{ns}, ""},
	}
	for _, tc := range cases {
		rawSend(t, c, tc.msg, tc.files...)
		m, err := rawRecv(t, c)
		if err != nil || m.Type != MsgAck {
			t.Fatalf("%s: %+v %v", tc.msg, m, err)
		}
		if tc.want == "" && m.Error != "" || !strings.Contains(m.Error, tc.want) {
			t.Fatalf("%s: ack error %q, want %q", tc.msg, m.Error, tc.want)
		}
	}
	if ev := rec.next(t); ev.kind != "add" || ev.pod.UID != "p" {
		t.Fatalf("handler got %+v", ev)
	}
	// Garbage ends the connection with ErrMalformed.
	rawSend(t, c, `{"type":`)
	if err := wait(t, done); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Serve: %v, want ErrMalformed", err)
	}
}

func TestProtocolHelloChecks(t *testing.T) {
	for hello, want := range map[string]string{
		`{"type":"hello","version":2}`:                   "version 2",
		`{"type":"hello","version":1,"error":"go away"}`: "go away",
		`{"type":"ack","seq":1}`:                         "expected hello",
		`garbage`:                                        "malformed",
	} {
		path, conns := fakeAgent(t, hello)
		_, err := DialAgent(testCtx(t), path)
		<-conns
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("hello %s: DialAgent error %v, want %q", hello, err, want)
		}
	}
}

func TestZtunnelClientReconnects(t *testing.T) {
	a, path := startAgent(t, longAck)
	if err := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		return a.AddPod(ctx, Pod{UID: "never"}, hostNS(t))
	}(); err == nil {
		t.Fatal("AddPod without ztunnel succeeded")
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	zc := &ZtunnelClient{SocketPath: path, Handler: rec, RetryInterval: 10 * time.Millisecond, Logf: t.Logf}
	go func() { done <- zc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	rec.next(t) // snapshot
	if err := a.AddPod(testCtx(t), Pod{UID: "p1"}, hostNS(t)); err != nil {
		t.Fatal(err)
	}
	rec.next(t)
	// Break the connection from the agent's side: a raw client replaces it,
	// then leaves; the ZtunnelClient reconnects and gets p1 again.
	raw := rawDial(t, path)
	rawSend(t, raw, `{"type":"hello","version":1}`)
	rawRecv(t, raw)
	if m, _ := rawRecv(t, raw); m.Type != MsgAddPod {
		t.Fatalf("raw client got %+v", m)
	}
	raw.Close()
	for {
		ev := rec.next(t)
		if ev.kind == "snapshot" && slices.Equal(ev.uids, []string{"p1"}) {
			break
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","version":1}`,
		`{"type":"add_pod","seq":1,"pod":{"uid":"u","name":"n","namespace":"ns","ips":["10.244.0.1","fd00::1"]}}`,
		`{"type":"del_pod","seq":2,"uid":"u"}`,
		`{"type":"snapshot_sent","seq":3}`,
		`{"type":"ack","seq":3,"error":"x"}`,
		`{"type":"add_pod","seq":1,"pod":{"uid":"u","ips":["nope"]}}`,
		`{"type":1}`, `null`, `{}`, `{"type":"hello","version":-1}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode error not ErrMalformed: %v", err)
			}
			return
		}
		_ = m.Validate()
		if m.Type == "" {
			t.Fatal("decoded a message without type")
		}
		out, err := EncodeMessage(m)
		if err != nil {
			return // e.g. re-encoding grew past the limit
		}
		m2, err := DecodeMessage(out)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		out2, _ := EncodeMessage(m2)
		if string(out) != string(out2) {
			t.Fatalf("round trip changed %s into %s", out, out2)
		}
	})
}

// waitFor polls cond (state, not time, decides; the bound only stops a
// hung test).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestListenAndServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "ztunnel.sock")
	os.MkdirAll(filepath.Dir(path), 0o755)
	// A stale socket file left by a previous agent.
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	a := NewAgent(AgentConfig{AckTimeout: longAck})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.ListenAndServe(ctx, path) }()
	rec := newRecorder()
	zctx, zcancel := context.WithCancel(context.Background())
	zdone := make(chan error, 1)
	// The client retries until the agent listens.
	go func() {
		zdone <- (&ZtunnelClient{SocketPath: path, Handler: rec, RetryInterval: 5 * time.Millisecond}).Run(zctx)
	}()
	if ev := rec.next(t); ev.kind != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	if !a.Connected() {
		t.Fatal("Connected() = false with a ztunnel connected")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	cancel()
	if err := wait(t, (<-chan error)(served)); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListenAndServe: %v", err)
	}
	if err := a.AddPod(testCtx(t), Pod{UID: "late"}, hostNS(t)); !errors.Is(err, ErrAgentClosed) {
		t.Fatalf("AddPod after stop: %v", err)
	}
	zcancel()
	<-zdone
}
