package push_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/push"
	"github.com/ambit-mesh/ambit/internal/xds"
)

type state = map[string]map[string]proto.Message

func workloads(ws ...*meshv1.Workload) map[string]proto.Message {
	m := make(map[string]proto.Message, len(ws))
	for _, w := range ws {
		m[w.Uid] = w
	}
	return m
}

func upsertNames(tu xds.TypeUpdate) []string {
	var out []string
	for _, r := range tu.Upserts {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

func typeUpdate(u *xds.Update, typ string) (xds.TypeUpdate, bool) {
	for _, tu := range u.Types {
		if tu.TypeURL == typ {
			return tu, true
		}
	}
	return xds.TypeUpdate{}, false
}

func TestDeltaDelivery(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := push.New(push.Options{Registry: reg, Logger: testLogger(t)})
	srv.Update(state{
		meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), wl("w2", "10.0.0.2"), wl("w3", "10.0.0.3")),
		meshv1.TypeService:  {"default/echo": svc("echo", "10.96.0.1")},
	})
	g := serve(t, srv, "127.0.0.1:0")
	rec := newRecorder()
	c := startClient(t, g.addr, "a", rec, wildcardAll())
	rec.waitFor(t, "initial sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 3 })
	select {
	case <-c.Synced():
	case <-timeAfter():
		t.Fatal("Synced not closed after the first update was applied")
	}
	first := rec.updates[0]
	if tu, _ := typeUpdate(first, meshv1.TypeWorkload); !tu.FullState || len(tu.Upserts) != 3 {
		t.Fatalf("first update: %+v, want full state with 3 workloads", tu)
	}
	if tu, _ := typeUpdate(first, meshv1.TypeService); !tu.FullState || len(tu.Upserts) != 1 {
		t.Fatalf("first update: %+v, want full state with 1 service", tu)
	}

	// w1 changes, w2 is unchanged, w3 is removed; services untouched.
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.1.1"), wl("w2", "10.0.0.2"))})
	rec.waitFor(t, "the change", func(r *recorder) bool { return len(r.updates) == 2 })
	u := rec.updates[1]
	if len(u.Types) != 1 {
		t.Fatalf("second update has %d types, want only Workload: %+v", len(u.Types), u)
	}
	tu := u.Types[0]
	if tu.TypeURL != meshv1.TypeWorkload || tu.FullState || !slices.Equal(upsertNames(tu), []string{"w1"}) || !slices.Equal(tu.Removes, []string{"w3"}) {
		t.Fatalf("second update = %+v, want upsert w1, remove w3, not full state", tu)
	}
	if got := rec.addr(meshv1.TypeWorkload, "w1"); got != "10.0.1.1" {
		t.Fatalf("w1 address %q", got)
	}
	if u.Version != srv.Version() || u.Epoch != srv.Epoch() {
		t.Fatalf("update at %s/%d, server at %s/%d", u.Epoch, u.Version, srv.Epoch(), srv.Version())
	}
	waitUntil(t, "ACK recorded", func() bool {
		st := srv.Status()
		return len(st) == 1 && st[0].AckedVersion == srv.Version()
	})
	if got := metricValue(t, reg, "ambit_push_connected_proxies", nil); got != 1 {
		t.Errorf("connected proxies = %v", got)
	}
	if got := metricValue(t, reg, "ambit_push_resources", map[string]string{"type": meshv1.TypeWorkload}); got != 2 {
		t.Errorf("ambit_push_resources{Workload} = %v, want 2", got)
	}
	if got := metricValue(t, reg, "ambit_push_responses_total", map[string]string{"type": meshv1.TypeWorkload, "kind": "delta"}); got != 1 {
		t.Errorf("delta responses = %v, want 1", got)
	}
	if got := metricValue(t, reg, "ambit_push_convergence_seconds", nil); got != 1 {
		t.Errorf("convergence samples = %v, want 1", got)
	}
}

func TestNackIsRecordedAndOthersKeepReceiving(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := push.New(push.Options{Registry: reg, Logger: testLogger(t)})
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"))})
	g := serve(t, srv, "127.0.0.1:0")

	picky := newRecorder()
	picky.reject = func(u *xds.Update) error {
		for _, tu := range u.Types {
			for _, r := range tu.Upserts {
				if w, ok := r.Message.(*meshv1.Workload); ok && w.Node == "broken" {
					return fmt.Errorf("workload %s: node %q is not usable", r.Name, w.Node)
				}
			}
		}
		return nil
	}
	happy := newRecorder()
	startClient(t, g.addr, "picky", picky, wildcardAll())
	startClient(t, g.addr, "happy", happy, wildcardAll())
	for _, r := range []*recorder{picky, happy} {
		r.waitFor(t, "initial sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 1 })
	}

	bad := wl("bad", "10.0.0.66")
	bad.Node = "broken"
	nacks := func() (uint64, *push.Nack) {
		for _, st := range srv.Status() {
			if st.ID == "picky" {
				return st.Nacks, st.LastNack
			}
		}
		return 0, nil
	}

	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), bad)}) // v2
	happy.waitFor(t, "bad delivered to the happy proxy", func(r *recorder) bool { return r.state[meshv1.TypeWorkload]["bad"] != nil })
	waitUntil(t, "NACK recorded", func() bool { n, _ := nacks(); return n == 1 })
	_, nack := nacks()
	if nack.Version != 2 || !slices.Equal(nack.Types, []string{meshv1.TypeWorkload}) || !strings.Contains(nack.Message, `node "broken" is not usable`) || codes.Code(nack.Code) != codes.InvalidArgument {
		t.Fatalf("NACK = %+v", nack)
	}
	if got := metricValue(t, reg, "ambit_push_nacks_total", nil); got != 1 {
		t.Fatalf("ambit_push_nacks_total = %v, want 1", got)
	}

	// Something else changes: the picky proxy gets everything it is missing
	// (still including bad) and rejects it again; the happy one moves on.
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), bad, wl("w2", "10.0.0.2"))}) // v3
	happy.waitFor(t, "w2 delivered", func(r *recorder) bool { return r.state[meshv1.TypeWorkload]["w2"] != nil })
	waitUntil(t, "second NACK", func() bool { n, _ := nacks(); return n == 2 })

	// Fixed: the picky proxy converges.
	fixed := wl("bad", "10.0.0.66")
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), fixed, wl("w2", "10.0.0.2"))}) // v4
	picky.waitFor(t, "picky converges", func(r *recorder) bool {
		return r.state[meshv1.TypeWorkload]["bad"] != nil && r.state[meshv1.TypeWorkload]["w2"] != nil
	})
	picky.mu.Lock()
	calls := picky.calls
	picky.mu.Unlock()
	// initial, v2 (rejected), v3 (rejected), v4: a NACKed version is never
	// re-sent on its own.
	if calls != 4 {
		t.Fatalf("picky handler called %d times, want 4", calls)
	}
	waitUntil(t, "picky ACK", func() bool {
		for _, st := range srv.Status() {
			if st.ID == "picky" {
				return st.AckedVersion == 4 && st.Nacks == 2
			}
		}
		return false
	})
}

func TestSlowConsumerDoesNotBlockAndConvergesCoalesced(t *testing.T) {
	srv := push.New(push.Options{Logger: testLogger(t)})
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.0"))})
	g := serve(t, srv, "127.0.0.1:0")
	slow, fast := newRecorder(), newRecorder()
	startClient(t, g.addr, "slow", slow, wildcardAll())
	startClient(t, g.addr, "fast", fast, wildcardAll())
	for _, r := range []*recorder{slow, fast} {
		r.waitFor(t, "initial sync", func(r *recorder) bool { return r.addr(meshv1.TypeWorkload, "w1") == "10.0.0.0" })
	}

	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	slow.mu.Lock()
	slow.gate, slow.entered = gate, entered
	slow.mu.Unlock()

	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"))})
	waitChan(t, entered, "slow handler blocked")

	// Many updates while the slow proxy is stuck: Update must not block.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 2; i <= 50; i++ {
			srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", fmt.Sprintf("10.0.0.%d", i)), wl(fmt.Sprintf("x%d", i), "10.1.0.1"))})
		}
	}()
	waitChan(t, done, "updates while a proxy is stuck")
	fast.waitFor(t, "fast proxy at the latest state", func(r *recorder) bool { return r.addr(meshv1.TypeWorkload, "w1") == "10.0.0.50" })

	for _, st := range srv.Status() {
		if st.ID == "slow" && (st.InFlightVersion != 2 || st.AckedVersion != 1) {
			t.Fatalf("slow proxy status %+v: want version 2 in flight and 1 acked", st)
		}
	}

	slow.mu.Lock()
	slow.gate, slow.entered = nil, nil
	slow.mu.Unlock()
	close(gate)
	slow.waitFor(t, "slow proxy at the latest state", func(r *recorder) bool {
		return r.addr(meshv1.TypeWorkload, "w1") == "10.0.0.50" && len(r.state[meshv1.TypeWorkload]) == 2
	})
	slow.mu.Lock()
	defer slow.mu.Unlock()
	// initial, the blocked one, then one coalesced update.
	if slow.calls != 3 {
		t.Fatalf("slow handler called %d times, want 3 (coalesced)", slow.calls)
	}
	last := slow.updates[2]
	tu, _ := typeUpdate(last, meshv1.TypeWorkload)
	if !slices.Equal(upsertNames(tu), []string{"w1", "x50"}) || !slices.Equal(tu.Removes, nil) || tu.FullState {
		t.Fatalf("coalesced update %+v", tu)
	}
}

func waitChan(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-timeAfter():
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestReconnect(t *testing.T) {
	initial := state{
		meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), wl("w2", "10.0.0.2"), wl("w3", "10.0.0.3"), wl("w4", "10.0.0.4"), wl("w5", "10.0.0.5")),
		meshv1.TypeService:  {"default/echo": svc("echo", "10.96.0.1")},
	}

	t.Run("same server: resume with only the missed deltas", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		srv := push.New(push.Options{Registry: reg, Logger: testLogger(t)})
		srv.Update(initial)
		g := serve(t, srv, "127.0.0.1:0")
		rec := newRecorder()
		c := startClient(t, g.addr, "a", rec, wildcardAll())
		rec.waitFor(t, "initial sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 5 })
		waitUntil(t, "ACK", func() bool { return len(srv.Status()) == 1 && srv.Status()[0].AckedVersion == 1 })
		fullBefore := metricValue(t, reg, "ambit_push_responses_total", map[string]string{"kind": "full"})

		g.gs.Stop()
		waitUntil(t, "stream gone", func() bool { return len(srv.Status()) == 0 })
		srv.Apply(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.9.1"), wl("w6", "10.0.0.6"))}, map[string][]string{meshv1.TypeWorkload: {"w2"}})
		serve(t, srv, g.addr)

		rec.waitFor(t, "missed deltas", func(r *recorder) bool { return len(r.updates) == 2 })
		u := rec.updates[1]
		if len(u.Types) != 1 {
			t.Fatalf("resume update %+v, want only workloads", u)
		}
		tu := u.Types[0]
		if tu.FullState || !slices.Equal(upsertNames(tu), []string{"w1", "w6"}) || !slices.Equal(tu.Removes, []string{"w2"}) {
			t.Fatalf("resume update %+v, want upserts w1 w6, removal w2, no full state", tu)
		}
		if got := metricValue(t, reg, "ambit_push_responses_total", map[string]string{"kind": "full"}); got != fullBefore {
			t.Fatalf("full-state responses went from %v to %v on resume", fullBefore, got)
		}
		waitUntil(t, "client status at the latest version", func() bool {
			st := c.Status()
			return st.Reconnects > 0 && st.Version == srv.Version() && st.Connected
		})
	})

	t.Run("new server instance: full state turned into a diff", func(t *testing.T) {
		srvA := push.New(push.Options{Logger: testLogger(t)})
		srvA.Update(initial)
		g := serve(t, srvA, "127.0.0.1:0")
		rec := newRecorder()
		startClient(t, g.addr, "a", rec, wildcardAll())
		rec.waitFor(t, "initial sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 5 })
		g.gs.Stop()

		srvB := push.New(push.Options{Logger: testLogger(t)})
		srvB.Update(state{
			meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), wl("w2", "10.0.9.2"), wl("w6", "10.0.0.6")),
			meshv1.TypeService:  {"default/echo": svc("echo", "10.96.0.1")},
		})
		serve(t, srvB, g.addr)
		rec.waitFor(t, "resync", func(r *recorder) bool { return len(r.updates) == 2 })
		u := rec.updates[1]
		if u.Epoch != srvB.Epoch() {
			t.Fatalf("epoch %q, want %q", u.Epoch, srvB.Epoch())
		}
		if len(u.Types) != 1 {
			t.Fatalf("resync update %+v: unchanged service must not be re-applied", u)
		}
		tu := u.Types[0]
		if !tu.FullState || !slices.Equal(upsertNames(tu), []string{"w2", "w6"}) || !slices.Equal(tu.Removes, []string{"w3", "w4", "w5"}) {
			t.Fatalf("resync update %+v, want full state diff: upserts w2 w6, removes w3 w4 w5", tu)
		}
		if got := summary(rec.state)[meshv1.TypeWorkload]; len(got) != 3 {
			t.Fatalf("handler holds %v", got)
		}
	})

	t.Run("same server, proxy behind the retained log: full state turned into a diff", func(t *testing.T) {
		srv := push.New(push.Options{Logger: testLogger(t), MaxLogEntries: 3})
		srv.Update(initial)
		g := serve(t, srv, "127.0.0.1:0")
		rec := newRecorder()
		startClient(t, g.addr, "a", rec, wildcardAll())
		rec.waitFor(t, "initial sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 5 })
		g.gs.Stop()
		waitUntil(t, "stream gone", func() bool { return len(srv.Status()) == 0 })
		for i := range 5 {
			srv.Apply(state{meshv1.TypeWorkload: workloads(wl("w1", fmt.Sprintf("10.0.8.%d", i)))}, nil)
		}
		srv.Apply(nil, map[string][]string{meshv1.TypeWorkload: {"w5"}})
		serve(t, srv, g.addr)
		rec.waitFor(t, "resync", func(r *recorder) bool { return len(r.updates) == 2 })
		tu, _ := typeUpdate(rec.updates[1], meshv1.TypeWorkload)
		if !tu.FullState || !slices.Equal(upsertNames(tu), []string{"w1"}) || !slices.Equal(tu.Removes, []string{"w5"}) {
			t.Fatalf("resync update %+v", tu)
		}
		if len(rec.updates[1].Types) != 1 {
			t.Fatalf("unchanged types re-applied: %+v", rec.updates[1])
		}
	})
}

func TestWildcardAddedWhileDisconnected(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := push.New(push.Options{Registry: reg, Logger: testLogger(t)})
	srv.Update(state{
		meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1")),
		meshv1.TypeService:  {"default/echo": svc("echo", "10.96.0.1")},
	})
	g := serve(t, srv, "127.0.0.1:0")
	rec := newRecorder()
	c := startClient(t, g.addr, "a", rec, map[string][]string{meshv1.TypeWorkload: {"*"}})
	rec.waitFor(t, "sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 1 })
	waitUntil(t, "ACK", func() bool { return len(srv.Status()) == 1 && srv.Status()[0].AckedVersion == 1 })
	g.gs.Stop()
	waitUntil(t, "stream gone", func() bool { return len(srv.Status()) == 0 })
	if err := c.Subscribe(meshv1.TypeService, "*"); err != nil {
		t.Fatal(err)
	}
	srv.Apply(state{meshv1.TypeWorkload: workloads(wl("w2", "10.0.0.2"))}, nil)
	serve(t, srv, g.addr)
	rec.waitFor(t, "services and the missed workload", func(r *recorder) bool {
		return len(r.state[meshv1.TypeService]) == 1 && len(r.state[meshv1.TypeWorkload]) == 2
	})
	// Workloads resumed (delta), services came as a full state.
	if got := metricValue(t, reg, "ambit_push_responses_total", map[string]string{"type": meshv1.TypeWorkload, "kind": "full"}); got != 1 {
		t.Fatalf("full-state workload responses = %v, want 1 (the first sync only)", got)
	}
	if got := metricValue(t, reg, "ambit_push_responses_total", map[string]string{"type": meshv1.TypeService, "kind": "full"}); got != 1 {
		t.Fatalf("full-state service responses = %v, want 1", got)
	}
}

func TestNamedSubscriptions(t *testing.T) {
	srv := push.New(push.Options{Logger: testLogger(t)})
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"), wl("w2", "10.0.0.2"), wl("w3", "10.0.0.3"))})
	g := serve(t, srv, "127.0.0.1:0")
	rec := newRecorder()
	c := startClient(t, g.addr, "a", rec, map[string][]string{meshv1.TypeWorkload: {"w1"}})
	rec.waitFor(t, "w1", func(r *recorder) bool { return r.state[meshv1.TypeWorkload]["w1"] != nil })
	if n := len(rec.state[meshv1.TypeWorkload]); n != 1 {
		t.Fatalf("holds %d workloads, want 1", n)
	}

	if err := c.Subscribe(meshv1.TypeWorkload, "w2", "later"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "w2 on subscribe", func(r *recorder) bool { return r.state[meshv1.TypeWorkload]["w2"] != nil })

	if err := c.Unsubscribe(meshv1.TypeWorkload, "w1"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	if rec.state[meshv1.TypeWorkload]["w1"] != nil {
		t.Fatal("w1 still held after Unsubscribe returned")
	}
	rec.mu.Unlock()
	waitUntil(t, "server sees the unsubscription", func() bool {
		st := srv.Status()
		return len(st) == 1 && slices.Equal(st[0].Subscriptions[meshv1.TypeWorkload], []string{"later", "w2"})
	})

	// w1 and w2 change in the same version: only w2 arrives.
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.9.1"), wl("w2", "10.0.9.2"), wl("w3", "10.0.0.3"))})
	rec.waitFor(t, "w2 change", func(r *recorder) bool { return r.addr(meshv1.TypeWorkload, "w2") == "10.0.9.2" })
	if rec.state[meshv1.TypeWorkload]["w1"] != nil {
		t.Fatal("unsubscribed w1 delivered")
	}

	// A name subscribed before it exists arrives when it is created.
	srv.Apply(state{meshv1.TypeWorkload: workloads(wl("later", "10.0.0.7"))}, nil)
	rec.waitFor(t, "later", func(r *recorder) bool { return r.state[meshv1.TypeWorkload]["later"] != nil })

	// Upgrading to a wildcard brings the rest.
	if err := c.Subscribe(meshv1.TypeWorkload, "*"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "everything", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 4 })

	// Dropping the wildcard keeps only the named ones.
	if err := c.Unsubscribe(meshv1.TypeWorkload, "*"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	got := summary(rec.state)[meshv1.TypeWorkload]
	rec.mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(got, []string{"later", "w2"}) {
		t.Fatalf("after dropping the wildcard the handler holds %v", got)
	}
}

func TestAuthenticateRefusal(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := push.New(push.Options{Registry: reg, Logger: testLogger(t), Authenticate: func(ctx context.Context, node *meshv1.ProxyNode) error {
		switch node.GetNodeName() {
		case "node-a":
			return nil
		case "node-plain":
			return errors.New("token is for another node")
		default:
			return status.Errorf(codes.Unauthenticated, "node %q: bad token", node.GetNodeName())
		}
	}})
	srv.Update(state{meshv1.TypeWorkload: workloads(wl("w1", "10.0.0.1"))})
	g := serve(t, srv, "127.0.0.1:0")
	cc, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := meshv1.NewDiscoveryClient(cc)

	for _, tc := range []struct {
		node string
		code codes.Code
	}{
		{"node-a", codes.OK},
		{"node-b", codes.Unauthenticated},
		{"node-plain", codes.PermissionDenied},
	} {
		t.Run(tc.node, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			stream, err := client.Delta(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&meshv1.DeltaRequest{
				Node:          &meshv1.ProxyNode{Id: tc.node + "-1", NodeName: tc.node},
				Subscriptions: []*meshv1.Subscription{{TypeUrl: meshv1.TypeWorkload, Subscribe: []string{"*"}}},
			}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			if tc.code == codes.OK && len(resp.GetResources()) != 1 {
				t.Fatalf("response %v", resp)
			}
		})
	}
	if got := metricValue(t, reg, "ambit_push_auth_failures_total", nil); got != 2 {
		t.Fatalf("auth failures = %v", got)
	}
}

func TestFilter(t *testing.T) {
	srv := push.New(push.Options{Logger: testLogger(t), Filter: func(node *meshv1.ProxyNode, typeURL, name string) bool {
		return typeURL != meshv1.TypeWorkload || strings.HasPrefix(name, node.GetNodeName()+"/")
	}})
	srv.Update(state{
		meshv1.TypeWorkload: workloads(wl("node-a/w1", "10.0.0.1"), wl("node-b/w2", "10.0.0.2")),
		meshv1.TypeService:  {"default/echo": svc("echo", "10.96.0.1")},
	})
	g := serve(t, srv, "127.0.0.1:0")
	rec := newRecorder()
	startClient(t, g.addr, "a", rec, wildcardAll())
	rec.waitFor(t, "sync", func(r *recorder) bool { return len(r.state[meshv1.TypeService]) == 1 })
	srv.Apply(state{meshv1.TypeWorkload: workloads(wl("node-b/w3", "10.0.0.3"), wl("node-a/w4", "10.0.0.4"))}, nil)
	rec.waitFor(t, "delta", func(r *recorder) bool { return r.state[meshv1.TypeWorkload]["node-a/w4"] != nil })
	got := summary(rec.state)[meshv1.TypeWorkload]
	slices.Sort(got)
	if !slices.Equal(got, []string{"node-a/w1", "node-a/w4"}) {
		t.Fatalf("node-a holds %v", got)
	}
}

func TestCompressedAndPlainProxiesShareNothingWrong(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := push.New(push.Options{Registry: reg, Logger: testLogger(t)})
	ws := make([]*meshv1.Workload, 0, 200)
	for i := range 200 {
		ws = append(ws, wl(fmt.Sprintf("w%d", i), fmt.Sprintf("10.0.%d.%d", i/256, i%256)))
	}
	srv.Update(state{meshv1.TypeWorkload: workloads(ws...)})
	g := serve(t, srv, "127.0.0.1:0")
	var recs []*recorder
	for i := range 4 {
		rec := newRecorder()
		recs = append(recs, rec)
		startClientWith(t, g.addr, fmt.Sprintf("p%d", i), rec, wildcardAll(), func(o *xds.Options) {
			if i%2 == 1 {
				o.Compression = "gzip"
			}
		})
	}
	for _, rec := range recs {
		rec.waitFor(t, "sync", func(r *recorder) bool { return len(r.state[meshv1.TypeWorkload]) == 200 })
	}
	srv.Apply(state{meshv1.TypeWorkload: workloads(wl("w7", "10.9.9.9"))}, nil)
	for _, rec := range recs {
		rec.waitFor(t, "change", func(r *recorder) bool { return r.addr(meshv1.TypeWorkload, "w7") == "10.9.9.9" })
	}
	// Every response was shared (counted just after the send returns).
	waitUntil(t, "8 shared sends", func() bool { return metricValue(t, reg, "ambit_push_shared_sends_total", nil) == 8 })
}
