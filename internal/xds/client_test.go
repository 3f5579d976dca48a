package xds

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

const waitTimeout = 20 * time.Second

// fakeServer hands each stream to the test, which scripts it.
type fakeServer struct {
	meshv1.UnimplementedDiscoveryServer
	streams chan *fakeStream
}

type fakeStream struct {
	first *meshv1.DeltaRequest
	reqs  chan *meshv1.DeltaRequest
	send  chan *meshv1.DeltaResponse
	end   chan struct{} // close to end the stream from the server side
}

func (f *fakeServer) Delta(stream meshv1.Discovery_DeltaServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	fs := &fakeStream{first: first, reqs: make(chan *meshv1.DeltaRequest, 100), send: make(chan *meshv1.DeltaResponse), end: make(chan struct{})}
	f.streams <- fs
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			fs.reqs <- req
		}
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-fs.end:
			return nil
		case r := <-fs.send:
			if err := stream.Send(r); err != nil {
				return err
			}
		}
	}
}

func startFake(t *testing.T) (*fakeServer, string) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{streams: make(chan *fakeStream, 10)}
	gs := grpc.NewServer()
	meshv1.RegisterDiscoveryServer(gs, f)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return f, lis.Addr().String()
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// holder is a Handler keeping name -> address of workloads.
type holder struct {
	mu      sync.Mutex
	state   map[string]string
	updates []*Update
	fail    error
}

func (h *holder) Apply(u *Update) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail != nil {
		return h.fail
	}
	h.updates = append(h.updates, u)
	for _, tu := range u.Types {
		for _, n := range tu.Removes {
			if _, ok := h.state[n]; !ok {
				return errors.New("removal of a name not held: " + n)
			}
			delete(h.state, n)
		}
		for _, r := range tu.Upserts {
			h.state[r.Name] = r.Message.(*meshv1.Workload).Addresses[0]
		}
	}
	return nil
}

func run(t *testing.T, addr string, h Handler, subs map[string][]string) *Client {
	c, err := New(Options{
		Target:        addr,
		DialOptions:   []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:          &meshv1.ProxyNode{Id: "ztunnel-a", NodeName: "node-a"},
		Subscriptions: subs,
		Handler:       h,
		BackoffMin:    5 * time.Millisecond,
		BackoffMax:    50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func res(name, addr string, version uint64) *meshv1.Resource {
	body, err := anypb.New(&meshv1.Workload{Uid: name, Addresses: []string{addr}})
	if err != nil {
		panic(err)
	}
	return &meshv1.Resource{Name: name, Version: version, Body: body}
}

func TestAckNackAndFullStateDiff(t *testing.T) {
	f, addr := startFake(t)
	h := &holder{state: map[string]string{}}
	c := run(t, addr, h, map[string][]string{meshv1.TypeWorkload: {"*"}})
	s := recv(t, f.streams, "stream")
	if s.first.GetNode().GetId() != "ztunnel-a" || s.first.GetResume() != nil ||
		len(s.first.GetSubscriptions()) != 1 || !slices.Equal(s.first.GetSubscriptions()[0].GetSubscribe(), []string{"*"}) {
		t.Fatalf("first request %v", s.first)
	}

	expectAck := func(nonce string) {
		t.Helper()
		req := recv(t, s.reqs, "ACK "+nonce)
		if req.GetResponseNonce() != nonce || req.GetError() != nil {
			t.Fatalf("want ACK of %s, got %v", nonce, req)
		}
	}
	expectNack := func(nonce, msg string) {
		t.Helper()
		req := recv(t, s.reqs, "NACK "+nonce)
		if req.GetResponseNonce() != nonce || req.GetError() == nil ||
			codes.Code(req.GetError().GetCode()) != codes.InvalidArgument || !strings.Contains(req.GetError().GetMessage(), msg) {
			t.Fatalf("want NACK of %s containing %q, got %v", nonce, msg, req)
		}
	}

	s.send <- &meshv1.DeltaResponse{Epoch: "e1", Version: 1, Nonce: "n1", FullStateTypes: []string{meshv1.TypeWorkload},
		Resources: []*meshv1.Resource{res("a", "10.0.0.1", 1), res("b", "10.0.0.2", 1), res("c", "10.0.0.3", 1)}}
	expectAck("n1")

	bad := []struct {
		name string
		r    *meshv1.Resource
		msg  string
	}{
		{"unknown type", &meshv1.Resource{Name: "x", Body: &anypb.Any{TypeUrl: "type.googleapis.com/nope.Nothing", Value: []byte{}}}, `unknown type URL "type.googleapis.com/nope.Nothing"`},
		{"undecodable", &meshv1.Resource{Name: "x", Body: &anypb.Any{TypeUrl: meshv1.TypeWorkload, Value: []byte{0x0a, 0xff}}}, `resource "x" of type ` + meshv1.TypeWorkload + ` cannot be decoded`},
		{"no body", &meshv1.Resource{Name: "x"}, `resource "x" has no body`},
	}
	for i, tc := range bad {
		nonce := "bad" + string(rune('0'+i))
		// The bad resource comes with a good change: all or nothing.
		s.send <- &meshv1.DeltaResponse{Epoch: "e1", Version: 2, Nonce: nonce, Resources: []*meshv1.Resource{res("a", "10.9.9.9", 2), tc.r}}
		expectNack(nonce, tc.msg)
	}
	h.mu.Lock()
	h.fail = errors.New("proxy says no")
	h.mu.Unlock()
	s.send <- &meshv1.DeltaResponse{Epoch: "e1", Version: 2, Nonce: "n2", Resources: []*meshv1.Resource{res("a", "10.9.9.9", 2)}}
	expectNack("n2", "proxy says no")
	h.mu.Lock()
	h.fail = nil
	if len(h.updates) != 1 || h.state["a"] != "10.0.0.1" {
		t.Fatalf("state changed by rejected responses: %v", h.state)
	}
	h.mu.Unlock()
	if st := c.Status(); st.Version != 1 || st.Nacks != 4 || !strings.Contains(st.LastNack, "proxy says no") {
		t.Fatalf("status %+v", st)
	}

	// Full state: a unchanged (not re-applied), b changed, c gone, d new.
	s.send <- &meshv1.DeltaResponse{Epoch: "e2", Version: 7, Nonce: "n3", FullStateTypes: []string{meshv1.TypeWorkload},
		Resources: []*meshv1.Resource{res("a", "10.0.0.1", 3), res("b", "10.0.1.2", 5), res("d", "10.0.0.4", 7)}}
	expectAck("n3")
	h.mu.Lock()
	u := h.updates[len(h.updates)-1]
	h.mu.Unlock()
	if len(u.Types) != 1 || !u.Types[0].FullState || u.Epoch != "e2" || u.Version != 7 {
		t.Fatalf("update %+v", u)
	}
	var ups []string
	for _, r := range u.Types[0].Upserts {
		ups = append(ups, r.Name)
	}
	slices.Sort(ups)
	if !slices.Equal(ups, []string{"b", "d"}) || !slices.Equal(u.Types[0].Removes, []string{"c"}) {
		t.Fatalf("full-state diff: upserts %v removes %v, want [b d] [c]", ups, u.Types[0].Removes)
	}

	// A response with nothing new still ACKs and moves the version, without
	// calling the handler.
	s.send <- &meshv1.DeltaResponse{Epoch: "e2", Version: 8, Nonce: "n4"}
	expectAck("n4")
	h.mu.Lock()
	calls := len(h.updates)
	h.mu.Unlock()
	if calls != 2 {
		t.Fatalf("handler called for an empty response")
	}

	// The server ends the stream: the client resumes from what it applied.
	close(s.end)
	s2 := recv(t, f.streams, "second stream")
	if r := s2.first.GetResume(); r.GetEpoch() != "e2" || r.GetVersion() != 8 {
		t.Fatalf("resume point %v, want e2/8", r)
	}
	if st := c.Status(); st.Resources[meshv1.TypeWorkload] != 3 {
		t.Fatalf("status %+v", st)
	}
}

func TestSubscriptionRequests(t *testing.T) {
	f, addr := startFake(t)
	h := &holder{state: map[string]string{}}
	c := run(t, addr, h, map[string][]string{meshv1.TypeWorkload: {"a"}})
	s := recv(t, f.streams, "stream")
	s.send <- &meshv1.DeltaResponse{Epoch: "e1", Version: 1, Nonce: "n1", FullStateTypes: []string{meshv1.TypeWorkload},
		Resources: []*meshv1.Resource{res("a", "10.0.0.1", 1), res("zzz", "10.0.0.9", 1)}} // zzz: not subscribed, ignored
	recv(t, s.reqs, "ACK")
	if err := c.Subscribe(meshv1.TypeWorkload, "b", "a"); err != nil {
		t.Fatal(err)
	}
	req := recv(t, s.reqs, "subscribe")
	if sub := req.GetSubscriptions(); len(sub) != 1 || !slices.Equal(sub[0].GetSubscribe(), []string{"b"}) {
		t.Fatalf("subscribe request %v", req)
	}
	if err := c.Unsubscribe(meshv1.TypeWorkload, "a"); err != nil {
		t.Fatal(err)
	}
	req = recv(t, s.reqs, "unsubscribe")
	if sub := req.GetSubscriptions(); len(sub) != 1 || !slices.Equal(sub[0].GetUnsubscribe(), []string{"a"}) {
		t.Fatalf("unsubscribe request %v", req)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.state) != 0 {
		t.Fatalf("handler holds %v after unsubscribing a (zzz must never have been applied)", h.state)
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{opts: Options{BackoffMin: time.Second, BackoffMax: 30 * time.Second}}
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{
		{0, 500 * time.Millisecond, time.Second},
		{1, time.Second, 2 * time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{5, 15 * time.Second, 30 * time.Second},
		{50, 15 * time.Second, 30 * time.Second},
	} {
		for range 100 {
			if d := c.backoff(tc.n); d < tc.min || d > tc.max {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tc.n, d, tc.min, tc.max)
			}
		}
	}
}

func TestNewValidates(t *testing.T) {
	h := HandlerFunc(func(*Update) error { return nil })
	node := &meshv1.ProxyNode{Id: "x"}
	for _, o := range []Options{
		{Target: "x", Handler: h},
		{Target: "x", Node: node},
		{Node: node, Handler: h},
		{Target: "x", Node: node, Handler: h, Subscriptions: map[string][]string{"": {"*"}}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
