package state

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

func ep(name, region, zone, subzone, node, cluster string) *Endpoint {
	w := wl("ns", name, "10.0.0.1")
	w.Locality = &meshv1.Locality{Region: region, Zone: zone, Subzone: subzone}
	w.Node = node
	w.ClusterId = cluster
	return &Endpoint{Workload: w, Locality: w.Locality}
}

func TestMergeEndpointsMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	mk := func(i int) *Endpoint {
		return ep(fmt.Sprintf("w%03d", i), fmt.Sprintf("r%d", rng.IntN(2)), fmt.Sprintf("z%d", rng.IntN(3)), "", fmt.Sprintf("n%d", rng.IntN(4)), "")
	}
	for iter := range 500 {
		cur := map[int]*Endpoint{}
		var old []*Endpoint
		for i := range rng.IntN(40) {
			cur[i] = mk(i)
			old = append(old, cur[i])
		}
		slices.SortFunc(old, CompareEndpoints)
		d := &endpointDelta{}
		touched := map[int]bool{}
		for range rng.IntN(10) {
			i := rng.IntN(50)
			if touched[i] { // one change per workload per update
				continue
			}
			touched[i] = true
			if prev, ok := cur[i]; ok {
				d.drop = append(d.drop, &Endpoint{Workload: prev.Workload, Locality: prev.Locality})
				delete(cur, i)
			}
			if rng.IntN(3) > 0 {
				cur[i] = mk(i)
				d.add = append(d.add, cur[i])
			}
		}
		got := mergeEndpoints(old, d)
		want := slices.Collect(maps.Values(cur))
		slices.SortFunc(want, CompareEndpoints)
		if !slices.Equal(got, want) {
			t.Fatalf("iteration %d: merge gives %d endpoints, want %d", iter, len(got), len(want))
		}
	}
}
