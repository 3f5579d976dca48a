package push

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// Benchmarks at the target scale: 10,000 Services, 100,000 Workloads, 100
// proxies. Run with
//
//	go test -run XXX -bench . -benchtime 5x ./internal/push/
const (
	benchServices  = 10_000
	benchWorkloads = 100_000
	benchClients   = 100
	benchNodes     = 100
)

func benchService(i int) *meshv1.Service {
	ns := fmt.Sprintf("ns-%d", i%100)
	name := fmt.Sprintf("svc-%d", i)
	return &meshv1.Service{
		Name: name, Namespace: ns, Hostname: name + "." + ns + ".svc.cluster.local",
		Addresses: []string{fmt.Sprintf("10.96.%d.%d", i/256, i%256)},
		Ports: []*meshv1.ServicePort{
			{Port: 80, TargetPort: 8080, Name: "http", AppProtocol: meshv1.AppProtocol_HTTP},
		},
	}
}

func benchWorkload(i int, gen int) *meshv1.Workload {
	s := i % benchServices
	ns := fmt.Sprintf("ns-%d", s%100)
	svcName := fmt.Sprintf("svc-%d", s)
	pod := fmt.Sprintf("%s-7f9c8d6b5-%05d", svcName, i)
	return &meshv1.Workload{
		Uid:               "Kubernetes/Pod/" + ns + "/" + pod,
		Name:              pod,
		Namespace:         ns,
		Addresses:         []string{fmt.Sprintf("10.%d.%d.%d", 1+gen%200, i/256%256, i%256)},
		Node:              fmt.Sprintf("node-%03d", i%benchNodes),
		ServiceAccount:    svcName,
		TrustDomain:       "cluster.local",
		WorkloadName:      svcName,
		CanonicalName:     svcName,
		CanonicalRevision: "v1",
		Locality:          &meshv1.Locality{Region: "us-east1", Zone: fmt.Sprintf("us-east1-%c", 'a'+i%3)},
		TunnelProtocol:    meshv1.TunnelProtocol_HBONE,
		Services: map[string]*meshv1.PortList{
			ns + "/" + svcName + "." + ns + ".svc.cluster.local": {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}}},
		},
		ClusterId: "Kubernetes",
	}
}

func benchState() map[string]map[string]proto.Message {
	svcs := make(map[string]proto.Message, benchServices)
	for i := range benchServices {
		s := benchService(i)
		svcs[s.Namespace+"/"+s.Hostname] = s
	}
	wls := make(map[string]proto.Message, benchWorkloads)
	for i := range benchWorkloads {
		w := benchWorkload(i, 0)
		wls[w.Uid] = w
	}
	return map[string]map[string]proto.Message{meshv1.TypeService: svcs, meshv1.TypeWorkload: wls}
}

func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkUpdate measures Update of the full desired state (110,000
// resources) in which one workload changed: what a control plane that
// recomputes everything on each event pays.
func BenchmarkUpdate(b *testing.B) {
	st := benchState()
	s := New(Options{})
	s.Update(st)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := benchWorkload(7, i+1)
		st[meshv1.TypeWorkload][w.Uid] = w
		s.Update(st)
	}
	b.StopTimer()
	if s.Version() != uint64(b.N)+1 {
		b.Fatalf("version %d", s.Version())
	}
}

// BenchmarkUpdateImmutable is BenchmarkUpdate with Options.ImmutableMessages:
// the caller passes the same message pointers for unchanged resources.
func BenchmarkUpdateImmutable(b *testing.B) {
	st := benchState()
	s := New(Options{ImmutableMessages: true})
	s.Update(st)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := benchWorkload(7, i+1)
		st[meshv1.TypeWorkload][w.Uid] = w
		s.Update(st)
	}
	b.StopTimer()
	if s.Version() != uint64(b.N)+1 {
		b.Fatalf("version %d", s.Version())
	}
}

// BenchmarkApplyOne measures an incremental one-workload change.
func BenchmarkApplyOne(b *testing.B) {
	s := New(Options{})
	s.Update(benchState())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := benchWorkload(7, i+1)
		s.Apply(map[string]map[string]proto.Message{meshv1.TypeWorkload: {w.Uid: w}}, nil)
	}
}

// scanned is what a simulated proxy decodes of a response: it walks the
// top-level fields only, so that 100 simulated proxies in the benchmark
// process do not each decode 110,000 resources (a real proxy is another
// process; its own cost is BenchmarkClientFullState in internal/xds).
type scanned struct {
	version   uint64
	nonce     string
	resources int
}

type scanCodec struct{}

func (scanCodec) Name() string { return "proto" }

func (scanCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (scanCodec) Unmarshal(data mem.BufferSlice, v any) error {
	out := v.(*scanned)
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			out.version, b = v, b[n:]
			continue
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			out.nonce, b = string(v), b[n:]
			continue
		case num == 4:
			out.resources++
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// tracker knows the version each simulated proxy has applied.
type tracker struct {
	mu        sync.Mutex
	versions  []uint64
	waitV     uint64
	remaining int
	done      chan struct{}
}

func (t *tracker) report(i int, v uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.versions[i]
	t.versions[i] = v
	if t.done != nil && old < t.waitV && v >= t.waitV {
		t.remaining--
		if t.remaining == 0 {
			close(t.done)
			t.done = nil
		}
	}
}

// all returns a channel closed once every proxy is at version >= v.
func (t *tracker) all(v uint64) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	n := 0
	for _, have := range t.versions {
		if have < v {
			n++
		}
	}
	if n == 0 {
		close(ch)
		return ch
	}
	t.waitV, t.remaining, t.done = v, n, ch
	return ch
}

type fanoutFixture struct {
	srv         *Server
	tr          *tracker
	syncTime    time.Duration
	stateBytes  uint64 // heap of the server state alone
	totalBytes  uint64 // heap with every proxy connected (server + in-process proxy streams)
	perConn     uint64 // heap per connected proxy (both ends of the loopback stream)
	reg         *prometheus.Registry
	fullRespMiB float64
}

var (
	fanoutMu       sync.Mutex
	fanoutFixtures = map[string]*fanoutFixture{}
)

// setupFanout starts (once per compression) a server with the benchmark
// state and 100 simulated proxies, and measures their initial sync.
func setupFanout(b *testing.B, compression string) *fanoutFixture {
	fanoutMu.Lock()
	defer fanoutMu.Unlock()
	if f := fanoutFixtures[compression]; f != nil {
		return f
	}
	{
		f := &fanoutFixture{tr: &tracker{versions: make([]uint64, benchClients)}, reg: prometheus.NewRegistry()}
		h0 := heapBytes()
		f.srv = New(Options{Registry: f.reg})
		f.srv.Update(benchState())
		h1 := heapBytes()
		f.stateBytes = h1 - h0
		for _, ts := range f.srv.typeList {
			for _, r := range ts.res {
				f.fullRespMiB += float64(proto.Size(r)+4) / (1 << 20)
			}
		}

		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		gs := grpc.NewServer()
		f.srv.Register(gs)
		go gs.Serve(lis)

		start := time.Now()
		synced := f.tr.all(f.srv.Version())
		for i := range benchClients {
			go simulatedProxy(b, lis.Addr().String(), i, f.tr, compression)
		}
		<-synced
		f.syncTime = time.Since(start)

		// Let the shared full-state encoding expire, then measure.
		time.Sleep(shareLinger + 500*time.Millisecond)
		h2 := heapBytes()
		f.totalBytes = h2 - h0
		f.perConn = (h2 - h1) / benchClients
		fanoutFixtures[compression] = f
		return f
	}
}

func simulatedProxy(b *testing.B, addr string, i int, tr *tracker, compression string) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Error(err)
		return
	}
	opts := []grpc.CallOption{grpc.ForceCodecV2(scanCodec{}), grpc.MaxCallRecvMsgSize(1 << 30)}
	if compression != "" {
		opts = append(opts, grpc.UseCompressor(compression))
	}
	stream, err := meshv1.NewDiscoveryClient(cc).Delta(context.Background(), opts...)
	if err != nil {
		b.Error(err)
		return
	}
	err = stream.Send(&meshv1.DeltaRequest{
		Node: &meshv1.ProxyNode{Id: fmt.Sprintf("ztunnel-%d", i), NodeName: fmt.Sprintf("node-%03d", i)},
		Subscriptions: []*meshv1.Subscription{
			{TypeUrl: meshv1.TypeWorkload, Subscribe: []string{"*"}},
			{TypeUrl: meshv1.TypeService, Subscribe: []string{"*"}},
			{TypeUrl: meshv1.TypeAuthorization, Subscribe: []string{"*"}},
			{TypeUrl: meshv1.TypePeerAuthentication, Subscribe: []string{"*"}},
		},
	})
	if err != nil {
		b.Error(err)
		return
	}
	for {
		var m scanned
		if err := stream.RecvMsg(&m); err != nil {
			return
		}
		tr.report(i, m.version)
		if err := stream.Send(&meshv1.DeltaRequest{ResponseNonce: m.nonce}); err != nil {
			return
		}
	}
}

// BenchmarkFanout: 100 proxies over loopback gRPC subscribed to the whole
// mesh. ns/op is the time from a one-workload change (Apply) to all 100
// proxies having received it. Also reported: the initial sync of all
// proxies, and heap figures.
func BenchmarkFanout(b *testing.B) { benchFanout(b, "") }

// BenchmarkFanoutGzip is BenchmarkFanout with proxies asking for gzip. Not
// run by default (set PUSH_BENCH_GZIP=1): the 100 in-process proxies then
// spend most of the time decompressing, which real proxies do on their own
// CPUs, so the initial-sync figure says little about the server.
func BenchmarkFanoutGzip(b *testing.B) {
	if os.Getenv("PUSH_BENCH_GZIP") == "" {
		b.Skip("set PUSH_BENCH_GZIP=1")
	}
	benchFanout(b, "gzip")
}

func benchFanout(b *testing.B, compression string) {
	f := setupFanout(b, compression)
	b.ResetTimer()
	var worst time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		w := benchWorkload(42, int(f.srv.Version())+i)
		f.srv.Apply(map[string]map[string]proto.Message{meshv1.TypeWorkload: {w.Uid: w}}, nil)
		<-f.tr.all(f.srv.Version())
		worst = max(worst, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(worst.Seconds()*1000, "worst-change-ms")
	b.ReportMetric(f.syncTime.Seconds(), "initial-sync-s")
	b.ReportMetric(float64(f.stateBytes)/(1<<20), "state-MiB")
	b.ReportMetric(float64(f.stateBytes)/float64(benchServices+benchWorkloads)*1000/1024, "state-KiB/1k-res")
	b.ReportMetric(float64(f.totalBytes)/(1<<20), "heap-100-proxies-MiB")
	b.ReportMetric(float64(f.perConn)/1024, "heap-KiB/proxy")
	b.ReportMetric(f.fullRespMiB, "full-state-MiB")
	b.ReportMetric(gathered(b, f.reg, "ambit_push_shared_encodes_total"), "shared-encodes")
	b.ReportMetric(gathered(b, f.reg, "ambit_push_shared_sends_total"), "shared-sends")
}

func gathered(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
