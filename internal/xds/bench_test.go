package xds

import (
	"fmt"
	"runtime"
	rtmetrics "runtime/metrics"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// A full state like the one in internal/push's benchmarks: 100,000
// workloads and 10,000 services.
func benchFullState(b *testing.B, gen int) *meshv1.DeltaResponse {
	resp := &meshv1.DeltaResponse{Epoch: "e", Version: uint64(gen + 1), Nonce: "n", FullStateTypes: []string{meshv1.TypeWorkload, meshv1.TypeService}}
	for i := range 10_000 {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%d", i)
		s := &meshv1.Service{Name: name, Namespace: ns, Hostname: name + "." + ns + ".svc.cluster.local",
			Addresses: []string{fmt.Sprintf("10.96.%d.%d", i/256, i%256)},
			Ports:     []*meshv1.ServicePort{{Port: 80, TargetPort: 8080, Name: "http", AppProtocol: meshv1.AppProtocol_HTTP}}}
		body, err := anypb.New(s)
		if err != nil {
			b.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &meshv1.Resource{Name: ns + "/" + s.Hostname, Version: 1, Body: body})
	}
	for i := range 100_000 {
		s := i % 10_000
		ns, svc := fmt.Sprintf("ns-%d", s%100), fmt.Sprintf("svc-%d", s)
		pod := fmt.Sprintf("%s-7f9c8d6b5-%05d", svc, i)
		w := &meshv1.Workload{
			Uid: "Kubernetes/Pod/" + ns + "/" + pod, Name: pod, Namespace: ns,
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+gen%200, i/256%256, i%256)},
			Node:      fmt.Sprintf("node-%03d", i%100), ServiceAccount: svc, TrustDomain: "cluster.local",
			WorkloadName: svc, CanonicalName: svc, CanonicalRevision: "v1",
			Locality:       &meshv1.Locality{Region: "us-east1", Zone: "us-east1-b"},
			TunnelProtocol: meshv1.TunnelProtocol_HBONE,
			Services: map[string]*meshv1.PortList{
				ns + "/" + svc + "." + ns + ".svc.cluster.local": {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}}},
			},
			ClusterId: "Kubernetes",
		}
		body, err := anypb.New(w)
		if err != nil {
			b.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &meshv1.Resource{Name: w.Uid, Version: 1, Body: body})
	}
	return resp
}

func heapObjects() uint64 {
	runtime.GC()
	runtime.GC()
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

func newBenchClient(b *testing.B) *Client {
	c, err := New(Options{
		Target:        "unused",
		Node:          &meshv1.ProxyNode{Id: "bench"},
		Handler:       HandlerFunc(func(*Update) error { return nil }),
		Subscriptions: map[string][]string{meshv1.TypeWorkload: {meshv1.Wildcard}, meshv1.TypeService: {meshv1.Wildcard}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkClientFullState: a proxy applying a first full state of 110,000
// resources (decode every body; the handler does nothing). Reports the
// memory the client keeps to diff later full states (names + hashes).
func BenchmarkClientFullState(b *testing.B) {
	var held uint64
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		h0 := heapObjects()
		resp := benchFullState(b, i)
		c := newBenchClient(b)
		b.StartTimer()
		if err := c.apply(resp); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		resp = nil // the names the client keeps are its own allocations
		held = heapObjects() - h0
		runtime.KeepAlive(c)
	}
	b.ReportMetric(float64(held)/(1<<20), "held-MiB")
	b.ReportMetric(float64(held)/110, "held-B/1k-res")
}

// BenchmarkClientFullStateResync: the same proxy receiving a full state
// from a restarted control plane in which 1% of the workloads changed: only
// those are decoded and handed to the handler.
func BenchmarkClientFullStateResync(b *testing.B) {
	first := benchFullState(b, 0)
	second := benchFullState(b, 0)
	for i := 0; i < len(second.Resources); i += 100 {
		r := second.Resources[i]
		if r.Body.TypeUrl == meshv1.TypeWorkload {
			w := &meshv1.Workload{}
			if err := r.Body.UnmarshalTo(w); err != nil {
				b.Fatal(err)
			}
			w.Addresses = []string{"192.168.0.1"}
			body, _ := anypb.New(w)
			second.Resources[i] = &meshv1.Resource{Name: r.Name, Version: 2, Body: body}
		}
	}
	second.Epoch = "other"
	var changed int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := newBenchClient(b)
		if err := c.apply(first); err != nil {
			b.Fatal(err)
		}
		changed = 0
		c.opts.Handler = HandlerFunc(func(u *Update) error {
			for _, tu := range u.Types {
				changed += len(tu.Upserts) + len(tu.Removes)
			}
			return nil
		})
		b.StartTimer()
		if err := c.apply(second); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if changed != 1000 {
		b.Fatalf("handler saw %d changes, want 1000", changed)
	}
}
