//go:build linux

package e2e

import (
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

// BenchmarkUpDetach measures `ambit up --detach -f examples/quickstart`
// until it returns ready (3 nodes, 5 pods, a proof request across the mesh),
// and `ambit down` separately:
//
//	go test -run '^$' -bench UpDetach -benchtime 5x ./test/e2e/
func BenchmarkUpDetach(b *testing.B) {
	netnstest.RequireRoot(b)
	build(b)
	name := clusterName(b, "bench")
	var up, down time.Duration
	for b.Loop() {
		start := time.Now()
		if out, err := ambit(b, "up", "--detach", "--name", name, "-f", "examples/quickstart"); err != nil {
			b.Fatalf("up: %v\n%s", err, out)
		}
		up += time.Since(start)
		start = time.Now()
		if out, err := ambit(b, "down", "--name", name); err != nil {
			b.Fatalf("down: %v\n%s", err, out)
		}
		down += time.Since(start)
	}
	b.ReportMetric(float64(up.Milliseconds())/float64(b.N), "up-ms/op")
	b.ReportMetric(float64(down.Milliseconds())/float64(b.N), "down-ms/op")
}
