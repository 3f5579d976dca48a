package controlplane

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/push"
	"github.com/ambit-mesh/ambit/internal/translate"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// scaleSnapshot builds a mesh of nServices Services in 100 namespaces, each
// backed by nPods/nServices pods spread over nNodes nodes in 3 zones.
func scaleSnapshot(nServices, nPods, nNodes int) *model.Snapshot {
	snap := model.NewSnapshot()
	add := func(obj any) {
		if err := snap.Add(obj, model.Origin{File: "generated"}); err != nil {
			panic(err)
		}
	}
	for i := range nNodes {
		add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i), Labels: map[string]string{
			"topology.kubernetes.io/region": "local", "topology.kubernetes.io/zone": fmt.Sprintf("zone-%c", 'a'+i%3)}}})
	}
	for i := range 100 {
		add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", i), Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}})
	}
	for i := range nServices {
		ns := fmt.Sprintf("ns-%d", i%100)
		add(&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: ns},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1),
				Selector:  map[string]string{"app": fmt.Sprintf("svc-%d", i)},
				Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		})
	}
	for i := range nPods {
		svc := i % nServices
		add(scalePod(i, svc, nNodes, fmt.Sprintf("10.%d.%d.%d", 64+i/65536, i/256%256, i%256)))
	}
	return snap
}

func scalePod(i, svc, nNodes int, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Namespace: fmt.Sprintf("ns-%d", svc%100),
			Labels: map[string]string{"app": fmt.Sprintf("svc-%d", svc), "version": "v1"}},
		Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%nNodes), ServiceAccountName: fmt.Sprintf("sa-%d", svc)},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

// BenchmarkScalePush measures, at 10,000 services, 100,000 workloads and 100
// connected node clients: the time from a one-endpoint change in the model
// (one pod's IP, put into a Clone of the snapshot as the Kubernetes source
// and the local cluster do) to every node having applied it, through the
// control plane's translator and push server; the first full translation;
// and the control plane's live heap.
//
//	go test -run XXX -bench ScalePush -benchtime 5x ./internal/controlplane/
func BenchmarkScalePush(b *testing.B) {
	const nServices, nPods, nNodes, nClients = 10_000, 100_000, 100, 100
	mesh := model.DefaultMeshConfig()
	snap := scaleSnapshot(nServices, nPods, nNodes)

	tr := translate.NewTranslator(mesh)
	t0 := time.Now()
	out := tr.Translate(snap)
	translateTime := time.Since(t0)
	if len(out.Workloads) != nPods || len(out.Services) != nServices {
		b.Fatalf("translated %d workloads, %d services", len(out.Workloads), len(out.Services))
	}
	ps := push.New(push.Options{ImmutableMessages: true})
	ps.Update(out.Resources())

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(push.ServerOptions()...)
	ps.Register(gs)
	go gs.Serve(lis)
	defer gs.Stop()

	// Each client counts the workloads it holds and records the IP of the
	// pod the benchmark changes.
	const changed = "Kubernetes/Pod/ns-7/pod-7"
	type client struct {
		n  atomic.Int64
		ip atomic.Value
	}
	clients := make([]*client, nClients)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	t0 = time.Now()
	for i := range clients {
		c := &client{}
		clients[i] = c
		h := xds.HandlerFunc(func(u *xds.Update) error {
			for _, tu := range u.Types {
				if tu.TypeURL != meshv1.TypeWorkload {
					continue
				}
				c.n.Add(int64(len(tu.Upserts) - len(tu.Removes)))
				for _, r := range tu.Upserts {
					if r.Name == changed {
						c.ip.Store(r.Message.(*meshv1.Workload).Addresses[0])
					}
				}
			}
			return nil
		})
		xc, err := xds.New(xds.Options{
			Target:      lis.Addr().String(),
			DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
			Node:        &meshv1.ProxyNode{Id: fmt.Sprintf("ztunnel-%d", i), NodeName: fmt.Sprintf("node-%d", i)},
			Subscriptions: map[string][]string{
				meshv1.TypeWorkload: {"*"}, meshv1.TypeService: {"*"}, meshv1.TypeAuthorization: {"*"},
			},
			Handler: h,
		})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); xc.Run(ctx) }()
	}
	waitAll := func(cond func(*client) bool) {
		for _, c := range clients {
			for !cond(c) {
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
	waitAll(func(c *client) bool { return c.n.Load() == nPods })
	initialSync := time.Since(t0)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// The benchmark's own clients live in this process; their share is
	// measured separately below and subtracted.
	heapAll := ms.HeapAlloc

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip := fmt.Sprintf("10.200.%d.%d", i/250, i%250+1)
		next := snap.Clone()
		_ = next.Put(scalePod(7, 7, nNodes, ip), model.Origin{File: "generated"})
		snap = next
		ps.Update(tr.Translate(snap).Resources())
		waitAll(func(c *client) bool { v, _ := c.ip.Load().(string); return v == ip })
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "change-to-all-nodes-ms")
	b.ReportMetric(float64(translateTime.Milliseconds()), "full-translate-ms")
	b.ReportMetric(float64(initialSync.Milliseconds()), "initial-sync-ms")

	cancel()
	wg.Wait()
	clients = nil
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "controlplane-heap-MiB")
	b.ReportMetric(float64(heapAll)/(1<<20), "heap-with-100-clients-MiB")
}
