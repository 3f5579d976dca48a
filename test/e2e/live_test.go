//go:build linux

package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

// pids lists every container process of the cluster by pod.
func pids(st *local.State) map[string]int {
	out := map[string]int{}
	for _, p := range st.Pods {
		for _, c := range p.Containers {
			out[p.Namespace+"/"+p.Name+"/"+c.Name] = c.PID
		}
	}
	return out
}

// samePIDs fails unless every process of before still runs with its pid.
func samePIDs(t *testing.T, before map[string]int, st *local.State) {
	t.Helper()
	now := pids(st)
	for k, pid := range before {
		if now[k] != pid || !alive(pid) {
			t.Errorf("%s: pid %d before, %d now (alive %v)", k, pid, now[k], alive(pid))
		}
	}
}

func writeManifest(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "change.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// gone waits until the terminating pods of deployment (those named, or
// all) are removed, which takes the grace period (about a second).
func gone(t *testing.T, name, deployment string, pods ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for _, p := range state(t, name).Pods {
			if p.Deployment == deployment && (len(pods) == 0 || slices.Contains(pods, p.Name)) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pods of %s still there 10 s after they were retired", left, deployment)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// within applies f with `ambit apply` and returns how long until ok holds
// for every one of 10 consecutive checks (failing after 10 s).
func within(t *testing.T, name, yaml string, ok func() bool) time.Duration {
	t.Helper()
	file := writeManifest(t, yaml)
	start := time.Now()
	t.Log(strings.TrimSpace(mustAmbit(t, "apply", "--name", name, "-f", file)))
	streak := 0
	var last time.Time
	for streak < 10 {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the change did not take effect in 10 s")
		}
		if ok() {
			if streak == 0 {
				last = time.Now()
			}
			streak++
		} else {
			streak = 0
		}
	}
	return last.Sub(start)
}

const allToV2 = `
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: inference-api-vs, namespace: ai-inference}
spec:
  hosts: [inference-api.ai-inference.svc.cluster.local]
  http:
  - route:
    - destination: {host: inference-api-v2}
`

const denyAdmin = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: ai-inference}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
`

const extraEcho = `
apiVersion: v1
kind: Service
metadata: {name: extra, namespace: ai-inference}
spec:
  selector: {app: extra}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: extra, namespace: ai-inference}
spec:
  replicas: 2
  selector: {matchLabels: {app: extra}}
  template:
    metadata: {labels: {app: extra}}
    spec:
      containers: [{name: echo, command: [ambit, app, echo], ports: [{containerPort: 8080}]}]
`

// Live changes with `ambit apply` and `ambit delete`: routes and policies
// take effect within 2 s, new workloads start and resolve by name, nothing
// that was running restarts.
func TestLiveApply(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	name := clusterName(t, "l")
	upFrom(t, name, "examples/inference-canary")
	st := state(t, name)
	before := pids(st)
	hc := podClient(t, findPod(t, st, "client"))
	base := fmt.Sprintf("http://%s", serviceIP(t, st, "ai-inference", "inference-api"))

	t.Run("VirtualService", func(t *testing.T) {
		d := within(t, name, allToV2, func() bool { return answeredBy(t.Context(), hc, base+"/") == "inference-api-v2" })
		t.Logf("all traffic to v2 %.0f ms after 'ambit apply' started", d.Seconds()*1000)
		if d > 2*time.Second {
			t.Errorf("the VirtualService change took %s, want < 2 s", d)
		}
	})
	t.Run("AuthorizationPolicy", func(t *testing.T) {
		status := func(path string) int {
			resp, err := hc.Get(base + path)
			if err != nil {
				return 0
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		d := within(t, name, denyAdmin, func() bool { return status("/admin") == http.StatusForbidden })
		t.Logf("/admin denied %.0f ms after 'ambit apply' started", d.Seconds()*1000)
		if d > 2*time.Second {
			t.Errorf("the AuthorizationPolicy took %s, want < 2 s", d)
		}
		if s := status("/predict"); s != http.StatusOK {
			t.Errorf("/predict answered %d under a policy denying /admin only", s)
		}
	})
	t.Run("new Deployment and Service", func(t *testing.T) {
		file := writeManifest(t, extraEcho)
		out := mustAmbit(t, "apply", "--name", name, "-f", file)
		if !strings.Contains(out, "Deployment ai-inference/extra created") {
			t.Errorf("apply said:\n%s", out)
		}
		// The new Service resolves by name in a pod that was already running.
		a := getIn(t, name, "ai-inference", "http://extra/")
		if !strings.HasPrefix(a.Pod, "extra-") {
			t.Errorf("extra answered by %+v", a)
		}
		if out := mustAmbit(t, "apply", "--name", name, "-f", file); !strings.Contains(out, "unchanged") {
			t.Errorf("second apply said:\n%s", out)
		}
		var extraNS []string
		for _, p := range state(t, name).Pods {
			if p.Deployment == "extra" {
				extraNS = append(extraNS, p.NetNS)
			}
		}
		if len(extraNS) != 2 {
			t.Fatalf("%d extra pods, want 2", len(extraNS))
		}
		mustAmbit(t, "delete", "--name", name, "-f", file)
		for _, p := range state(t, name).Pods {
			if p.Deployment == "extra" && !p.Terminating {
				t.Errorf("pod %s still there after delete, not terminating", p.Name)
			}
		}
		gone(t, name, "extra")
		for _, ns := range extraNS {
			if slices.Contains(namespacesOf(name), ns) {
				t.Errorf("namespace %s left after delete", ns)
			}
		}
	})
	rolled := map[string]bool{}
	t.Run("changed Deployment rolls without a failed request", func(t *testing.T) {
		oldV2 := map[string]bool{}
		for _, p := range state(t, name).Pods {
			if p.Deployment == "inference-api-v2" {
				oldV2[p.Name] = true
			}
		}
		// All traffic goes to v2 since the VirtualService subtest.
		ld := startLoad(t, hc, base+"/", 4)
		// The template changes (an environment variable): new pods, new names.
		b, err := os.ReadFile("../../examples/inference-canary/inference.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var v2 string
		for _, doc := range strings.Split(string(b), "\n---\n") {
			if strings.Contains(doc, "kind: Deployment") && strings.Contains(doc, "name: inference-api-v2\n") {
				v2 = doc
			}
		}
		file := writeManifest(t, strings.Replace(v2, `value: "v2"`, `value: "v2-rolled"`, 1))
		out := mustAmbit(t, "apply", "--name", name, "-f", file)
		for before := ld.answered(); ld.answered() < before+50; {
			time.Sleep(10 * time.Millisecond)
		}
		counts := ld.Stop()
		failed, firstErr := failures(counts)
		t.Logf("%s%d requests answered, %d failed during the rollout", out, ld.answered(), failed)
		if failed > 0 {
			t.Errorf("%d requests failed during the rollout, first: %v", failed, firstErr)
			st := state(t, name)
			cp, _ := os.ReadFile(filepath.Join(local.StateDir(name), "logs", "controlplane.log"))
			t.Logf("control plane:\n%s", cp[max(0, len(cp)-6000):])
			files := []string{findPod(t, st, "waypoint").Log}
			for _, n := range st.Nodes {
				files = append(files, n.Log)
			}
			for _, f := range files {
				b, _ := os.ReadFile(f)
				var keep []string
				for _, l := range strings.Split(string(b), "\n") {
					if l != "" && !strings.Contains(l, `"response_code":200`) && !strings.Contains(l, "level=INFO") {
						keep = append(keep, l)
					}
				}
				t.Logf("%s (not OK, not INFO):\n%s", f, strings.Join(keep, "\n"))
			}
		}
		if strings.TrimSpace(out) != "Deployment ai-inference/inference-api-v2 configured" {
			t.Errorf("apply said:\n%s", out)
		}
		gone(t, name, "inference-api-v2", slices.Collect(maps.Keys(oldV2))...)
		n := 0
		for _, p := range state(t, name).Pods {
			if p.Deployment == "inference-api-v2" {
				n++
				if oldV2[p.Name] {
					t.Errorf("pod %s of the old template still runs", p.Name)
				}
			}
		}
		if n != 3 {
			t.Errorf("%d v2 pods after the rollout, want 3", n)
		}
		for k := range oldV2 {
			rolled[k] = true
		}
	})
	t.Run("bad manifest changes nothing", func(t *testing.T) {
		file := writeManifest(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: ai-inference}\nspec:\n  containers: [{name: c, image: nginx}]\n")
		out, err := ambit(t, "apply", "--name", name, "-f", file)
		if err == nil || !strings.Contains(out, "no command") {
			t.Errorf("apply of a pod without command: %v\n%s", err, out)
		}
		if _, err := state(t, name).FindPod("ai-inference", "bad"); err == nil {
			t.Error("the bad pod was created")
		}
	})
	for k := range before {
		if rolled[strings.Split(k, "/")[1]] {
			delete(before, k)
		}
	}
	samePIDs(t, before, state(t, name))
}

// capture reads every frame crossing the cluster's bridge and tells
// whether a marker went by in clear.
type capture struct {
	mu       sync.Mutex
	seen     map[string]bool
	sentinel atomic.Int64
	f        *os.File
}

func startCapture(t *testing.T, nsName string) *capture {
	t.Helper()
	ns, err := netns.OpenNamed(nsName)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var fd int
	if err := netns.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := &capture{seen: map[string]bool{}, f: os.NewFile(uintptr(fd), "capture")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := c.f.Read(buf)
			if err != nil {
				return
			}
			frame := buf[:n]
			if i := bytes.Index(frame, []byte("AMBIT-MARK-")); i >= 0 && i+11+16 <= n {
				c.mu.Lock()
				c.seen[string(frame[i+11:i+11+16])] = true
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { c.f.Close(); <-done })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func newMark() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// inClear reports whether mark crossed the bridge in clear before the call:
// a UDP datagram with a fresh sentinel mark is sent across the bridge
// between two nodes, and once the capture has read it, every earlier frame
// has been read too.
func (c *capture) inClear(t *testing.T, st *local.State, mark string) bool {
	t.Helper()
	ns, err := netns.OpenNamed(st.Nodes[0].NetNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	sentinel := newMark()
	var conn net.Conn
	if err := netns.Do(ns, func() error {
		var err error
		conn, err = net.Dial("udp", st.Nodes[1].IP+":9")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn.Write([]byte("AMBIT-MARK-" + sentinel))
		c.mu.Lock()
		synced, found := c.seen[sentinel], c.seen[mark]
		c.mu.Unlock()
		if synced {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatal("the capture never saw the sentinel")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ztunnelConnections sums the ztunnels' istio_tcp_connections_opened_total.
func ztunnelConnections(t *testing.T, st *local.State) float64 {
	t.Helper()
	var sum float64
	for _, n := range st.Nodes {
		ns, err := netns.OpenNamed(n.NetNS)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(ns, netns.SocketOptions{}), DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := hc.Get("http://127.0.0.1:15020/metrics")
		if err != nil {
			ns.Close()
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ns.Close()
		sum += metric(string(b), "istio_tcp_connections_opened_total")
	}
	return sum
}

// `ambit label namespace` enrols and un-enrols running pods: in the mesh,
// requests between nodes cross the wire encrypted (HBONE) and the ztunnels
// count them; out of it, in clear and uncounted; no workload restarts.
func TestLiveEnrolment(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	name := clusterName(t, "e")
	up(t, name)
	st := state(t, name)
	before := pids(st)
	client := findPod(t, st, "client")
	capt := startCapture(t, st.NetNS)
	// A connection per request: one kept alive would stay on the path it
	// was opened on (through the ztunnel or not) across the label changes.
	hc := podClient(t, client)
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	vip := serviceIP(t, st, "demo", "echo")
	nodeOf := map[string]string{}
	for _, p := range st.Pods {
		nodeOf[p.Name] = p.Node
	}
	// request sends marked requests until one is answered from another node
	// than the client's, and returns its mark and answer.
	request := func(t *testing.T) (string, echoAnswer) {
		t.Helper()
		for range 50 {
			mark := newMark()
			resp, err := hc.Get(fmt.Sprintf("http://%s/AMBIT-MARK-%s", vip, mark))
			if err != nil {
				t.Fatal(err)
			}
			var a echoAnswer
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if nodeOf[a.Pod] != client.Node {
				return mark, a
			}
		}
		t.Fatal("no answer from another node in 50 requests")
		return "", echoAnswer{}
	}
	enrolled := func(t *testing.T, want bool) {
		t.Helper()
		for _, p := range state(t, name).Pods {
			if p.Enrolled != want {
				t.Errorf("pod %s enrolled %v, want %v", p.Name, p.Enrolled, want)
			}
		}
	}

	check := func(t *testing.T, mesh bool) {
		conns := ztunnelConnections(t, st)
		mark, a := request(t)
		clear := capt.inClear(t, st, mark)
		counted := ztunnelConnections(t, st) > conns
		t.Logf("answered by %s (peer %s): in clear %v, counted by ztunnels %v", a.Pod, a.Peer, clear, counted)
		if clear == mesh || counted != mesh {
			t.Errorf("in the mesh %v: request crossed the wire in clear %v, counted by ztunnels %v", mesh, clear, counted)
		}
		if mesh && !strings.HasPrefix(a.Peer, client.IP+":") {
			t.Errorf("in the mesh, echo saw the caller as %s, want the client %s", a.Peer, client.IP)
		}
	}
	t.Run("enrolled: mTLS between nodes", func(t *testing.T) { check(t, true) })
	t.Run("un-enrolled: plaintext", func(t *testing.T) {
		t.Log(strings.TrimSpace(mustAmbit(t, "label", "--name", name, "namespace", "demo", "istio.io/dataplane-mode-")))
		enrolled(t, false)
		check(t, false)
	})
	t.Run("re-enrolled: mTLS again", func(t *testing.T) {
		t.Log(strings.TrimSpace(mustAmbit(t, "label", "--name", name, "namespace", "demo", "istio.io/dataplane-mode=ambient")))
		enrolled(t, true)
		check(t, true)
	})
	t.Run("one pod out and back with ambit label pod", func(t *testing.T) {
		t.Log(strings.TrimSpace(mustAmbit(t, "label", "--name", name, "-n", "demo", "pod", client.Name, "istio.io/dataplane-mode=none")))
		for _, p := range state(t, name).Pods {
			if p.Enrolled != (p.Name != client.Name) {
				t.Errorf("pod %s enrolled %v", p.Name, p.Enrolled)
			}
		}
		mark, _ := request(t)
		if !capt.inClear(t, st, mark) {
			t.Error("the client out of the mesh sent its request encrypted")
		}
		t.Log(strings.TrimSpace(mustAmbit(t, "label", "--name", name, "-n", "demo", "pod", client.Name, "istio.io/dataplane-mode-")))
		enrolled(t, true)
		check(t, true)
	})
	samePIDs(t, before, state(t, name))
}
