package push_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/push"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// waitTimeout only bounds waits for conditions that must happen; no test
// depends on anything happening within a given time.
const waitTimeout = 20 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PUSH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func wl(uid, addr string) *meshv1.Workload {
	return &meshv1.Workload{Uid: uid, Name: uid, Namespace: "default", Addresses: []string{addr}, Node: "node-a"}
}

func svc(name, vip string) *meshv1.Service {
	return &meshv1.Service{Name: name, Namespace: "default", Hostname: name + ".default.svc.cluster.local", Addresses: []string{vip}}
}

// grpcServer serves srv on addr ("127.0.0.1:0" for a new port).
type grpcServer struct {
	gs   *grpc.Server
	addr string
}

func serve(t testing.TB, srv *push.Server, addr string) *grpcServer {
	t.Helper()
	var lis net.Listener
	var err error
	deadline := time.Now().Add(waitTimeout)
	for {
		lis, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old listener may take a moment to go
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	gs := grpc.NewServer(push.ServerOptions()...)
	srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return &grpcServer{gs: gs, addr: lis.Addr().String()}
}

// recorder is a Handler that mirrors what a proxy would hold.
type recorder struct {
	mu      sync.Mutex
	state   map[string]map[string]proto.Message
	updates []*xds.Update
	calls   int
	changed chan struct{}
	reject  func(*xds.Update) error // optional
	gate    chan struct{}           // optional: Apply waits for a receive from gate
	entered chan struct{}           // optional: signalled when Apply waits at gate
}

func newRecorder() *recorder {
	return &recorder{state: make(map[string]map[string]proto.Message), changed: make(chan struct{}, 1)}
}

func (r *recorder) Apply(u *xds.Update) error {
	r.mu.Lock()
	gate, entered := r.gate, r.entered
	r.mu.Unlock()
	if gate != nil {
		if entered != nil {
			entered <- struct{}{}
		}
		<-gate
	}
	r.mu.Lock()
	defer func() {
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}()
	r.calls++
	if r.reject != nil {
		if err := r.reject(u); err != nil {
			return err
		}
	}
	r.updates = append(r.updates, u)
	for _, tu := range u.Types {
		m := r.state[tu.TypeURL]
		if m == nil {
			m = make(map[string]proto.Message)
			r.state[tu.TypeURL] = m
		}
		for _, n := range tu.Removes {
			if _, ok := m[n]; !ok {
				panic(fmt.Sprintf("removal of %s %q which the handler does not hold", tu.TypeURL, n))
			}
			delete(m, n)
		}
		for _, res := range tu.Upserts {
			m[res.Name] = res.Message
		}
	}
	return nil
}

// waitFor waits until cond (called with the recorder locked) holds.
func (r *recorder) waitFor(t testing.TB, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; handler holds %v after %d calls", what, summary(r.state), r.calls)
		}
	}
}

func summary(state map[string]map[string]proto.Message) map[string][]string {
	out := make(map[string][]string)
	for t, m := range state {
		for n := range m {
			out[t] = append(out[t], n)
		}
	}
	return out
}

func (r *recorder) addr(typ, name string) string {
	w, ok := r.state[typ][name].(*meshv1.Workload)
	if !ok || len(w.Addresses) == 0 {
		return ""
	}
	return w.Addresses[0]
}

// startClient runs an xds client against addr until the test ends.
func startClient(t testing.TB, addr, id string, h xds.Handler, subs map[string][]string) *xds.Client {
	t.Helper()
	return startClientWith(t, addr, id, h, subs, func(*xds.Options) {})
}

func startClientWith(t testing.TB, addr, id string, h xds.Handler, subs map[string][]string, mod func(*xds.Options)) *xds.Client {
	t.Helper()
	opts := xds.Options{
		Target:        addr,
		DialOptions:   []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:          &meshv1.ProxyNode{Id: id, NodeName: "node-" + id},
		Subscriptions: subs,
		Handler:       h,
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    100 * time.Millisecond,
		Logger:        testLogger(t),
	}
	mod(&opts)
	c, err := xds.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("client %s: %v", id, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c
}

func wildcardAll() map[string][]string {
	return map[string][]string{
		meshv1.TypeWorkload: {"*"}, meshv1.TypeService: {"*"},
		meshv1.TypeAuthorization: {"*"}, meshv1.TypePeerAuthentication: {"*"},
	}
}

// metricValue sums the samples of a counter or gauge family, optionally
// restricted to samples having the given label values.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// waitUntil polls cond (for server-side state that has no notification).
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func timeAfter() <-chan time.Time { return time.After(waitTimeout) }
