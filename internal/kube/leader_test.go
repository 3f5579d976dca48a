package kube_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// One of two replicas leads; when it stops, the other takes over.
func TestElection(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	var (
		mu      sync.Mutex
		leading = map[string]bool{}
		ever    = map[string]bool{}
	)
	cancels := map[string]context.CancelFunc{}
	done := map[string]chan struct{}{}
	for _, id := range []string{"a", "b"} {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[id], done[id] = cancel, make(chan struct{})
		e := &kube.Election{Clients: cl, Namespace: "default", Name: "ambit-test", Identity: id,
			LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond}
		go func() {
			defer close(done[id])
			e.Run(ctx, func(ctx context.Context) {
				mu.Lock()
				leading[id], ever[id] = true, true
				mu.Unlock()
				<-ctx.Done()
				mu.Lock()
				leading[id] = false
				mu.Unlock()
			})
		}()
	}
	t.Cleanup(func() {
		for id, cancel := range cancels {
			cancel()
			<-done[id]
		}
	})
	count := func() (n int, who string) {
		mu.Lock()
		defer mu.Unlock()
		for id, l := range leading {
			if l {
				n++
				who = id
			}
		}
		return n, who
	}
	var first string
	kubetest.Eventually(t, time.Minute, "a leader", func() bool {
		n, who := count()
		first = who
		return n == 1
	})
	cancels[first]()
	<-done[first]
	other := map[string]string{"a": "b", "b": "a"}[first]
	kubetest.Eventually(t, time.Minute, "the other replica to take over", func() bool {
		n, who := count()
		return n == 1 && who == other
	})
}
