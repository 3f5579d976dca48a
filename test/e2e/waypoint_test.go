//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

// podClient sends HTTP from inside pod's network namespace, as a process
// of the pod would: through the pod's redirection to its ztunnel.
func podClient(t *testing.T, pod local.PodState) *http.Client {
	t.Helper()
	ns, err := netns.OpenNamed(pod.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(ns, netns.SocketOptions{}), MaxIdleConnsPerHost: 64},
		Timeout: 10 * time.Second}
}

func findPod(t *testing.T, st *local.State, deployment string) local.PodState {
	t.Helper()
	for _, p := range st.Pods {
		if p.Deployment == deployment {
			return p
		}
	}
	t.Fatalf("no pod of deployment %s in %+v", deployment, st.Pods)
	return local.PodState{}
}

func serviceIP(t *testing.T, st *local.State, ns, name string) string {
	t.Helper()
	for _, s := range st.Services {
		if s.Namespace == ns && s.Name == name {
			return s.ClusterIP
		}
	}
	t.Fatalf("no Service %s/%s", ns, name)
	return ""
}

// load sends n GETs to url with c workers (bounded by a minute) and counts
// the answers by the pod's Deployment (its name up to the template hash);
// failures are counted under "error: ...".
func load(t *testing.T, hc *http.Client, url string, n, c int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	counts := map[string]int{}
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				key := answeredBy(ctx, hc, url)
				mu.Lock()
				counts[key]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return counts
}

// loadRun is traffic in the background: workers GET a URL over and over
// until Stop, counting the answers as answeredBy names them.
type loadRun struct {
	mu     sync.Mutex
	counts map[string]int
	ok     atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// startLoad starts workers sending GET url with hc; the load stops at the
// end of the test at the latest.
func startLoad(t *testing.T, hc *http.Client, url string, workers int) *loadRun {
	l := &loadRun{counts: map[string]int{}, stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				r := answeredBy(t.Context(), hc, url)
				if !strings.HasPrefix(r, "error") {
					l.ok.Add(1)
				}
				l.mu.Lock()
				l.counts[r]++
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// answered is how many requests were answered (not failed) so far.
func (l *loadRun) answered() int64 { return l.ok.Load() }

// Stop ends the load and returns the answers by who gave them, failures
// under "error: ...".
func (l *loadRun) Stop() map[string]int {
	l.once.Do(func() { close(l.stop); l.wg.Wait() })
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts
}

// failures sums the failed answers of counts and names one of them.
func failures(counts map[string]int) (n int, first string) {
	for r, c := range counts {
		if strings.HasPrefix(r, "error") {
			n += c
			first = r
		}
	}
	return n, first
}

func answeredBy(ctx context.Context, hc *http.Client, url string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "error: " + resp.Status
	}
	var a echoAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return "error: " + err.Error()
	}
	// name-<template hash>-<suffix> → name
	parts := strings.Split(a.Pod, "-")
	if len(parts) < 3 {
		return a.Pod
	}
	return strings.Join(parts[:len(parts)-2], "-")
}

// metric sums the samples of name whose labels contain every one of want.
func metric(text, name string, want ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if i := strings.LastIndexByte(line, ' '); ok && i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			sum += v
		}
	}
	return sum
}

// Seed 001: the inference API's VirtualService splits 80/20 between v1 and
// v2 through the namespace's waypoint, which `ambit up` runs from the
// Gateway alone.
func TestWaypointCanary(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	name := clusterName(t, "w")
	upFrom(t, name, "examples/inference-canary")
	st := state(t, name)
	wp := findPod(t, st, "waypoint")
	if wp.Enrolled {
		t.Errorf("waypoint pod %s is enrolled in ambient; it terminates HBONE itself", wp.Name)
	}
	if out := mustAmbit(t, "get", "pods", "--name", name, "-n", "ai-inference"); !strings.Contains(out, wp.Name) {
		t.Errorf("ambit get pods does not show the waypoint pod %s:\n%s", wp.Name, out)
	}
	if ip := serviceIP(t, st, "ai-inference", "waypoint"); ip == "" {
		t.Error("the waypoint's Service has no VIP")
	}
	hc := podClient(t, findPod(t, st, "client"))
	url := fmt.Sprintf("http://%s/predict", serviceIP(t, st, "ai-inference", "inference-api"))

	// Binomial with p = 0.2: the standard deviation of v2's share over 1000
	// requests is 1.3 points, so ±5 points is four of them.
	const n = 1000
	counts := load(t, hc, url, n, 50)
	t.Logf("answers: %v", counts)
	v1, v2 := counts["inference-api-v1"], counts["inference-api-v2"]
	if v1+v2 != n {
		t.Fatalf("%d of %d requests answered by v1 or v2: %v", v1+v2, n, counts)
	}
	if v1 < n*75/100 || v1 > n*85/100 || v2 < n*15/100 || v2 > n*25/100 {
		t.Errorf("split v1 %d / v2 %d of %d, want 80±5 %% / 20±5 %%", v1, v2, n)
	}

	metrics := mustAmbit(t, "exec", "--name", name, "-n", "ai-inference", wp.Name, "--",
		"ambit", "internal", "http-get", "http://127.0.0.1:15020/metrics")
	for _, v := range []string{"v1", "v2"} {
		got := metric(metrics, "istio_requests_total", `reporter="waypoint"`, `destination_service_name="inference-api-`+v+`"`, `response_code="200"`)
		if int(got) < counts["inference-api-"+v] {
			t.Errorf("waypoint counted %v requests to inference-api-%s, want at least %d", got, v, counts["inference-api-"+v])
		}
	}
}
