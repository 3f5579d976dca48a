//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

var bins struct{ dir, ambit string }

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// build compiles ambit, ztunnel and waypoint into a temporary directory once.
func build(t testing.TB) string {
	t.Helper()
	if bins.ambit != "" {
		return bins.ambit
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ambit-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	bins.dir = dir
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", dir+"/", "./cmd/ambit", "./cmd/ztunnel", "./cmd/waypoint")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bins.ambit = filepath.Join(dir, "ambit")
	return bins.ambit
}

func ambit(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bins.ambit, args...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustAmbit(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ambit(t, args...)
	if err != nil {
		t.Fatalf("ambit %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func clusterName(t testing.TB, suffix string) string {
	return fmt.Sprintf("e2e%d%s", os.Getpid()%100000, suffix)
}

// up starts the quickstart as cluster name and removes it at the end.
func up(t *testing.T, name string) time.Duration {
	t.Helper()
	return upFrom(t, name, "examples/quickstart")
}

// upFrom starts cluster name from manifests and removes it at the end.
func upFrom(t *testing.T, name, manifests string) time.Duration {
	t.Helper()
	start := time.Now()
	t.Cleanup(func() { ambit(t, "down", "--name", name) })
	out := mustAmbit(t, "up", "--detach", "--name", name, "-f", manifests)
	d := time.Since(start)
	t.Logf("ambit up --detach --name %s -f %s (%.2fs):\n%s", name, manifests, d.Seconds(), out)
	if !strings.Contains(out, "ready in") {
		t.Fatalf("no \"ready in\" line:\n%s", out)
	}
	return d
}

func state(t *testing.T, name string) *local.State {
	t.Helper()
	st, err := local.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type echoAnswer struct{ Pod, Namespace, Peer string }

// get asks echo from the client pod of namespace demo through `ambit exec`.
func get(t *testing.T, name, url string) echoAnswer {
	t.Helper()
	return getIn(t, name, "demo", url)
}

// getIn asks echo from the client pod of namespace ns through `ambit exec`.
func getIn(t *testing.T, name, ns, url string) echoAnswer {
	t.Helper()
	out := mustAmbit(t, "exec", "--name", name, "-n", ns, "deploy/client", "--", "ambit", "internal", "http-get", url)
	var a echoAnswer
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("answer %q: %v", out, err)
	}
	return a
}

func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return !(i >= 0 && i+2 < len(b) && b[i+2] == 'Z')
}

func namespacesOf(name string) []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ambit-"+name+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestQuickstart(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	name := clusterName(t, "")
	rulesBefore := hostRules(t)
	if d := up(t, name); d > 10*time.Second {
		t.Errorf("ambit up --detach took %s", d)
	}
	st := state(t, name)

	t.Run("get pods -o json", func(t *testing.T) {
		var list struct{ Items []local.PodState }
		if err := json.Unmarshal([]byte(mustAmbit(t, "get", "pods", "--name", name, "-n", "demo", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 5 {
			t.Fatalf("%d pods, want 5 (4 echo, 1 client)", len(list.Items))
		}
		for _, p := range list.Items {
			if p.Node == "" || p.IP == "" || !p.Enrolled || len(p.Containers) != 1 || p.Containers[0].PID == 0 {
				t.Errorf("pod %+v: want a node, an IP, enrolled, a running container", p)
			}
		}
		if out := mustAmbit(t, "get", "workloads", "--name", name, "-n", "demo"); !strings.Contains(out, "spiffe://cluster.local/ns/demo/sa/echo") || !strings.Contains(out, "HBONE") {
			t.Errorf("ambit get workloads:\n%s", out)
		}
		for _, what := range []string{"nodes", "services"} {
			out := mustAmbit(t, "get", what, "-A", "--name", name, "-o", "wide")
			if !strings.Contains(out, "NAME") || len(strings.Split(strings.TrimSpace(out), "\n")) < 2 {
				t.Errorf("ambit get %s:\n%s", what, out)
			}
		}
	})

	t.Run("client to echo across zones", func(t *testing.T) {
		zoneOfNode, zoneOfPod := map[string]string{}, map[string]string{}
		for _, n := range st.Nodes {
			zoneOfNode[n.Name] = n.Zone
		}
		var client local.PodState
		for _, p := range st.Pods {
			zoneOfPod[p.Name] = zoneOfNode[p.Node]
			if p.Deployment == "client" {
				client = p
			}
		}
		crossZone := 0
		for i, url := range []string{"http://echo/", "http://echo.demo/", "http://echo.demo.svc.cluster.local/", "http://echo/", "http://echo/", "http://echo/"} {
			a := get(t, name, url)
			if a.Namespace != "demo" || zoneOfPod[a.Pod] == "" {
				t.Fatalf("request %d (%s) answered by unknown pod %+v", i, url, a)
			}
			if !strings.HasPrefix(a.Peer, client.IP+":") {
				t.Errorf("echo saw the caller as %s, want the client pod %s", a.Peer, client.IP)
			}
			if zoneOfPod[a.Pod] != zoneOfPod[client.Name] {
				crossZone++
			}
		}
		if crossZone == 0 {
			t.Error("no answer came from another zone than the client's")
		}
	})

	t.Run("exec exit code and environment", func(t *testing.T) {
		_, err := ambit(t, "exec", "--name", name, "-n", "demo", "deploy/client", "--", "sh", "-c", "exit 7")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("exit code not propagated: %v", err)
		}
		out := mustAmbit(t, "exec", "--name", name, "-n", "demo", "deploy/client", "--", "sh", "-c", "echo $POD_NAMESPACE $ECHO_SERVICE_HOST")
		if !strings.HasPrefix(out, "demo 10.96.") {
			t.Errorf("pod environment: %q", out)
		}
	})

	t.Run("crashed process is restarted", func(t *testing.T) {
		var echo local.PodState
		for _, p := range st.Pods {
			if p.Deployment == "echo-v2" {
				echo = p
			}
		}
		syscall.Kill(echo.Containers[0].PID, syscall.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for {
			p, err := state(t, name).FindPod("demo", echo.Name)
			if err != nil {
				t.Fatal(err)
			}
			if p.Containers[0].Restarts >= 1 && alive(p.Containers[0].PID) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not restarted: %+v", p.Containers)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if out := mustAmbit(t, "logs", "--name", name, "-n", "demo", echo.Name); !strings.Contains(out, "restarting in") {
			t.Errorf("logs do not mention the restart:\n%s", out)
		}
	})

	t.Run("a second cluster side by side", func(t *testing.T) {
		other := clusterName(t, "b")
		up(t, other)
		if a := get(t, other, "http://echo/"); a.Pod == "" {
			t.Errorf("second cluster: %+v", a)
		}
		if a := get(t, name, "http://echo/"); a.Pod == "" {
			t.Errorf("first cluster after the second started: %+v", a)
		}
		otherState := state(t, other)
		mustAmbit(t, "down", "--name", other)
		assertGone(t, other, otherState, rulesBefore)
		if a := get(t, name, "http://echo/"); a.Pod == "" {
			t.Errorf("first cluster after the second went down: %+v", a)
		}
	})

	t.Run("down removes everything, twice", func(t *testing.T) {
		st := state(t, name)
		t.Log(mustAmbit(t, "down", "--name", name))
		assertGone(t, name, st, rulesBefore)
		if out := mustAmbit(t, "down", "--name", name); !strings.Contains(out, "not running") {
			t.Errorf("second down: %s", out)
		}
	})
}

// hostRules is the host's iptables rules (both families), which a cluster
// must never touch: its rules live in its own namespaces.
func hostRules(t *testing.T) []string {
	t.Helper()
	var rules []string
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(prog).Output()
		if err != nil {
			t.Fatalf("%s: %v", prog, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, ":") {
				rules = append(rules, prog+" "+strings.Fields(l)[0]+" "+strings.Join(strings.Fields(l)[1:], " "))
			}
		}
	}
	return rules
}

// assertGone checks that cluster name, which ran as st, left nothing: no
// network namespace, process, mount, host iptables rule or state.
func assertGone(t *testing.T, name string, st *local.State, rulesBefore []string) {
	t.Helper()
	if ns := namespacesOf(name); len(ns) > 0 {
		t.Errorf("namespaces left: %v", ns)
	}
	for _, pid := range append(st.ProcessIDs(), st.Supervisor) {
		if alive(pid) {
			t.Errorf("process %d still alive", pid)
		}
	}
	// Processes the state may not list: anything naming the cluster's
	// state directory (ztunnels, waypoints, pod helpers) or its supervisor.
	dir := local.StateDir(name) + "/"
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, dir) || strings.Contains(cmd, "internal serve --name "+name+" ") {
			t.Errorf("process %s still runs: %s", e.Name(), cmd)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "/run/netns/ambit-"+name+"-") || strings.Contains(l, dir) {
			t.Errorf("mount left: %s", l)
		}
	}
	for _, r := range hostRules(t) {
		if !slices.Contains(rulesBefore, r) {
			t.Errorf("host iptables rule added: %s", r)
		}
	}
	if _, err := os.Stat(local.StateDir(name)); !os.IsNotExist(err) {
		t.Errorf("state dir %s: %v", local.StateDir(name), err)
	}
}

// A crashed supervisor leaves namespaces and processes: down removes them.
func TestDownAfterCrash(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	name := clusterName(t, "c")
	rulesBefore := hostRules(t)
	up(t, name)
	st := state(t, name)
	syscall.Kill(st.Supervisor, syscall.SIGKILL)
	for alive(st.Supervisor) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(namespacesOf(name)) == 0 {
		t.Fatal("expected leftovers after a crash")
	}
	mustAmbit(t, "down", "--name", name)
	assertGone(t, name, st, rulesBefore)
}

// Bad manifests fail before anything is created.
func TestBadManifestCreatesNothing(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	name := clusterName(t, "x")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, image: nginx}]\n"), 0o644)
	out, err := ambit(t, "up", "--detach", "--name", name, "-f", bad)
	if err == nil || !strings.Contains(out, "no command") {
		t.Fatalf("want a failure naming the container without command, got %v:\n%s", err, out)
	}
	if ns := namespacesOf(name); len(ns) > 0 {
		t.Errorf("namespaces created: %v", ns)
	}
	if _, err := os.Stat(local.StateDir(name)); !os.IsNotExist(err) {
		t.Errorf("state dir created: %v", err)
	}
}
