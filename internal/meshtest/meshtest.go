//go:build linux

// Package meshtest builds a whole mesh for integration tests: pods in
// network namespaces joined by one bridge (no link to the host), the
// control plane with its CA fed from a directory of manifests, one ztunnel
// per node run as cmd/ztunnel runs it (ztunnel.Run, with its node agent),
// and the enrolled pods handed to them. Tests add what they exercise (echo
// servers in pods, waypoints) and send traffic from inside pods.
//
// Only test code may import this package. It needs root (netnstest.RequireRoot).
package meshtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/waypoint"
	"github.com/ambit-mesh/ambit/internal/ztunnel"
)

// Pod is one pod of the mesh. Its manifest is generated from these fields;
// Enrolled pods get the in-pod redirection and are handed to their node's
// ztunnel (the manifests must also put them in ambient mode, usually with the
// namespace label).
type Pod struct {
	Name, Namespace, Node, ServiceAccount string
	IP                                    netip.Addr
	Labels                                map[string]string
	Enrolled                              bool
	// NS is the pod's network namespace, set by Start.
	NS *netns.NS
}

// Options describe the mesh.
type Options struct {
	// Nodes maps node names to zones ("zone", in region "local") or
	// "region/zone".
	Nodes map[string]string
	Pods  []*Pod
	// Manifests are the other objects: namespaces, services, routes, policies.
	Manifests string
	// Log receives the ztunnels' logs (default: the test log, warnings up).
	Log *slog.Logger
}

// Mesh is a running mesh.
type Mesh struct {
	Dir          string // the control plane's manifest directory
	Bridge       *netns.NS
	CA           *ca.CA
	ControlPlane string // gRPC address
	// ControlPlaneHTTP serves /debug/config (the pushed version).
	ControlPlaneHTTP string
	RootCertFile     string
	Pods             map[string]*Pod // by name
	Ztunnels         map[string]ztunnel.Running

	cpCancel context.CancelFunc
	cpDone   chan struct{}
	stopOnce sync.Once
}

// Start builds the mesh; everything is torn down when the test ends.
func Start(t *testing.T, opts Options) *Mesh {
	t.Helper()
	netnstest.RequireRoot(t)
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(TestWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	m := &Mesh{Dir: t.TempDir(), Pods: map[string]*Pod{}, Ztunnels: map[string]ztunnel.Running{}}

	m.Bridge = netnstest.New(t)
	Must(t, netns.AddBridge(m.Bridge, "br0"))
	Must(t, netns.AddAddr(m.Bridge, "br0", netip.MustParsePrefix("10.244.0.1/16")))
	var manifests strings.Builder
	for _, node := range slices.Sorted(maps.Keys(opts.Nodes)) {
		region, zone, ok := strings.Cut(opts.Nodes[node], "/")
		if !ok {
			region, zone = "local", opts.Nodes[node]
		}
		fmt.Fprintf(&manifests, "apiVersion: v1\nkind: Node\nmetadata: {name: %s, labels: {topology.kubernetes.io/region: %s, topology.kubernetes.io/zone: %s}}\n---\n", node, region, zone)
	}
	for i, p := range opts.Pods {
		p.NS = netnstest.New(t)
		Must(t, netns.AttachToBridge(m.Bridge, "br0", p.NS, "eth0", fmt.Sprintf("veth-p%d", i), netip.PrefixFrom(p.IP, 16)))
		Must(t, netns.AddRoute(p.NS, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.244.0.1"), "eth0"))
		m.Pods[p.Name] = p
		sa := p.ServiceAccount
		if sa == "" {
			sa = "default"
		}
		var labels []string
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			labels = append(labels, fmt.Sprintf("%q: %q", k, p.Labels[k]))
		}
		fmt.Fprintf(&manifests, "apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {%s}}\nspec: {nodeName: %s, serviceAccountName: %s, containers: [{name: app}]}\nstatus: {podIP: %s}\n---\n",
			p.Name, p.Namespace, strings.Join(labels, ", "), p.Node, sa, p.IP)
	}
	manifests.WriteString(opts.Manifests)
	Must(t, os.WriteFile(filepath.Join(m.Dir, "mesh.yaml"), []byte(manifests.String()), 0o644))

	var err error
	m.CA, err = ca.New(ca.Options{TrustDomain: "cluster.local", Dir: t.TempDir()})
	Must(t, err)
	quiet := slog.New(slog.NewTextHandler(TestWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src := &controlplane.FileSource{Paths: []string{m.Dir}, Interval: 20 * time.Millisecond, Log: quiet}
	cp, err := controlplane.New(controlplane.Options{Source: src, Mesh: model.DefaultMeshConfig(), CA: m.CA,
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Log: quiet})
	Must(t, err)
	cpCtx, cpCancel := context.WithCancel(context.Background())
	m.cpCancel, m.cpDone = cpCancel, make(chan struct{})
	go func() { cp.Run(cpCtx); close(m.cpDone) }()
	t.Cleanup(m.StopControlPlane)
	<-cp.Ready()
	m.ControlPlane, m.ControlPlaneHTTP = cp.GRPCAddr(), cp.HTTPAddr()
	m.RootCertFile = filepath.Join(t.TempDir(), "root-cert.pem")
	Must(t, os.WriteFile(m.RootCertFile, []byte(strings.Join(m.CA.TrustBundlePEM(), "")), 0o644))

	for _, node := range slices.Sorted(maps.Keys(opts.Nodes)) {
		var pods []*Pod
		for _, p := range opts.Pods {
			if p.Node == node && p.Enrolled {
				pods = append(pods, p)
			}
		}
		m.startZtunnel(t, node, pods, log.With("node", node))
	}
	return m
}

// startZtunnel runs a node's ztunnel as cmd/ztunnel does, with its node
// agent, and enrols the pods.
func (m *Mesh) startZtunnel(t *testing.T, node string, pods []*Pod, log *slog.Logger) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "agent.sock")
	agent := redirect.NewAgent(redirect.AgentConfig{})
	agentCtx, agentCancel := context.WithCancel(context.Background())
	go agent.ListenAndServe(agentCtx, socket)
	started := make(chan ztunnel.Running, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- ztunnel.Run(ctx, ztunnel.Config{NodeName: node, ControlPlane: m.ControlPlane, TokenFile: m.TokenFile(t, node),
			RootCertFile: m.RootCertFile, TrustDomain: "cluster.local", AgentSocket: socket, AdminAddr: "127.0.0.1:0",
			MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0", DrainTimeout: 5 * time.Second, Log: log,
			Started: func(r ztunnel.Running) { started <- r }})
	}()
	var r ztunnel.Running
	select {
	case r = <-started:
	case err := <-done:
		t.Fatalf("%s: ztunnel did not start: %v", node, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: ztunnel did not start", node)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Errorf("%s: ztunnel did not stop", node)
		}
		agentCancel()
		agent.Close()
	})
	m.Ztunnels[node] = r
	Eventually(t, node+" ztunnel ready", func() bool { return HTTPStatus(r.ReadyAddr.String(), "/healthz/ready") == 200 })
	for _, p := range pods {
		Must(t, redirect.Install(p.NS, redirect.Config{}))
		t.Cleanup(func() { redirect.Remove(p.NS, redirect.Config{}) })
		dup, err := p.NS.Dup()
		Must(t, err)
		info := redirect.Pod{UID: p.Namespace + "/" + p.Name, Name: p.Name, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount, IPs: []netip.Addr{p.IP}}
		addCtx, addCancel := context.WithTimeout(context.Background(), 10*time.Second)
		for {
			// The ztunnel may not have dialled the agent yet.
			if err = agent.AddPod(addCtx, info, dup.File()); err == nil || addCtx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		addCancel()
		Must(t, err)
	}
}

// TokenFile writes node's control-plane credential to a file.
func (m *Mesh) TokenFile(t *testing.T, node string) string {
	f := filepath.Join(t.TempDir(), "token")
	Must(t, os.WriteFile(f, []byte(m.CA.NodeToken(node)), 0o600))
	return f
}

// StopControlPlane stops the control plane (the proxies keep their config).
func (m *Mesh) StopControlPlane() {
	m.stopOnce.Do(func() {
		m.cpCancel()
		<-m.cpDone
	})
}

// Apply writes a manifest file into the control plane's directory.
func (m *Mesh) Apply(t *testing.T, name, yaml string) {
	t.Helper()
	m.writeManifest(t, name, yaml)
}

// writeManifest replaces a manifest file atomically: the control plane polls
// the directory, and a half-written file can be valid YAML holding a subset
// of the objects (which would also count as the change being pushed).
func (m *Mesh) writeManifest(t testing.TB, name, yaml string) {
	t.Helper()
	tmp := filepath.Join(m.Dir, "."+name+".tmp")
	Must(t, os.WriteFile(tmp, []byte(yaml), 0o644))
	Must(t, os.Rename(tmp, filepath.Join(m.Dir, name)))
}

// Remove deletes a manifest file.
func (m *Mesh) Remove(t *testing.T, name string) {
	t.Helper()
	Must(t, os.Remove(filepath.Join(m.Dir, name)))
}

// Version is the configuration version the control plane has pushed.
func (m *Mesh) Version(t testing.TB) uint64 {
	t.Helper()
	var v struct{ Version uint64 }
	Must(t, getJSON("http://"+m.ControlPlaneHTTP+"/debug/config", &v))
	return v.Version
}

// Change applies a manifest (yaml empty: removes it) and waits until the
// control plane has pushed it and every proxy whose admin endpoint is given
// (address of /config_dump) has applied it.
func (m *Mesh) Change(t testing.TB, name, yaml string, admins ...string) {
	t.Helper()
	before := m.Version(t)
	if yaml == "" {
		Must(t, os.Remove(filepath.Join(m.Dir, name)))
	} else {
		m.writeManifest(t, name, yaml)
	}
	var now uint64
	Eventually(t, name+" pushed", func() bool { now = m.Version(t); return now > before })
	for _, a := range admins {
		Eventually(t, name+" applied by "+a, func() bool {
			var d struct{ ControlPlane struct{ Version uint64 } }
			return getJSON("http://"+a+"/config_dump", &d) == nil && d.ControlPlane.Version >= now
		})
	}
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Dialer dials from inside a pod (through its ztunnel when enrolled).
func (p *Pod) Dialer() netns.DialFunc { return netns.Dialer(p.NS, netns.SocketOptions{}) }

// Listen opens a listener inside the pod.
func (p *Pod) Listen(network, addr string) (net.Listener, error) {
	return netns.ListenTCP(p.NS, addr, netns.SocketOptions{})
}

// Do runs f inside the pod's network namespace (sockets f creates stay there).
func (p *Pod) Do(f func() error) error { return netns.Do(p.NS, f) }

// HTTPStatus returns the status of GET http://addr/path from the test
// process, 0 if the request failed.
func HTTPStatus(addr, path string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Eventually retries f until it returns true or 20 s pass (configuration
// pushes are asynchronous).
func Eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Must fails the test on an error.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriter writes to the test log.
type TestWriter struct{ T testing.TB }

func (w TestWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// StartWaypoint runs the waypoint of Gateway "<namespace>/<gateway>" in pod
// p, as cmd/waypoint runs it (waypoint.Run): HBONE on the pod's 15008,
// upstream connections from the pod; its admin, metrics and readiness
// endpoints listen on the test process's loopback. It returns once ready.
func (m *Mesh) StartWaypoint(t *testing.T, p *Pod, gateway string, accessLog io.Writer) waypoint.Running {
	t.Helper()
	started := make(chan waypoint.Running, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(TestWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		done <- waypoint.Run(ctx, waypoint.Config{NodeName: p.Node, ControlPlane: m.ControlPlane, TokenFile: m.TokenFile(t, p.Node),
			RootCertFile: m.RootCertFile, TrustDomain: "cluster.local", Namespace: p.Namespace, Gateway: gateway, ServiceAccount: p.ServiceAccount,
			HBONEAddr: "0.0.0.0:15008", Listen: p.Listen, Dial: hbone.DialFunc(p.Dialer()),
			AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0", AccessLog: accessLog,
			DrainTimeout: 5 * time.Second, Log: log.With("waypoint", gateway), Started: func(r waypoint.Running) { started <- r }})
	}()
	var r waypoint.Running
	select {
	case r = <-started:
	case err := <-done:
		t.Fatalf("waypoint %s did not start: %v", gateway, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("waypoint %s did not start", gateway)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Errorf("waypoint %s did not stop", gateway)
		}
	})
	Eventually(t, "waypoint ready", func() bool { return HTTPStatus(r.ReadyAddr.String(), "/healthz/ready") == 200 })
	return r
}
