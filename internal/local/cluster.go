//go:build linux

package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/redirect"
)

// Cluster is a running local cluster.
type Cluster struct {
	name  string
	dir   string
	opts  Options
	log   *slog.Logger
	cpLog *os.File

	ctx    context.Context
	cancel context.CancelFunc

	netNS  *netns.NS
	nodeNS map[string]*netns.NS
	agents map[string]*redirect.Agent
	cpDone chan struct{}
	cpAddr netip.Addr
	source *Source
	cp     *controlplane.Server
	// retiring counts background removals of terminating pods.
	retiring sync.WaitGroup
	zprocs   map[string]*proc
	vethSeq  atomic.Int64
	control  *http.Server

	// reconf serialises configuration changes (apply, delete, label).
	reconf sync.Mutex
	// stateMu guards prep, pods and state.
	stateMu sync.Mutex
	prep    *Prepared
	pods    map[string]*podRT // ns/name
	// svcCreated is when each Service (ns/name=VIP) appeared.
	svcCreated map[string]time.Time
	state      State
	closed     sync.Once
}

// Start creates the cluster: namespaces, control plane, node agents and
// ztunnels, enrolment, workloads. On failure everything created is removed.
func Start(ctx context.Context, prep *Prepared, opts Options) (c *Cluster, err error) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return nil, errors.New("ambit up needs root on Linux: it creates network namespaces; run it with sudo")
	}
	if opts.AmbitBin == "" || opts.ZtunnelBin == "" {
		a, z, w, err := Binaries()
		if err != nil {
			return nil, err
		}
		if opts.AmbitBin == "" {
			opts.AmbitBin = a
		}
		if opts.ZtunnelBin == "" {
			opts.ZtunnelBin = z
		}
		if opts.WaypointBin == "" {
			opts.WaypointBin = w
		}
	}
	if opts.WaypointBin == "" && prep.Plan.NeedsWaypoint() {
		return nil, errors.New("the manifests have a waypoint Gateway but there is no waypoint binary next to ambit nor in $PATH: build it with 'make build'")
	}
	if opts.Progress == nil {
		opts.Progress = func(string, ...any) {}
	}
	if opts.Supervisor == 0 {
		opts.Supervisor = os.Getpid()
	}
	name := prep.Name
	if st, err := LoadState(name); err == nil && pidAlive(st.Supervisor) && st.Supervisor != opts.Supervisor {
		return nil, fmt.Errorf("cluster %q is already running (pid %d); stop it with 'ambit down --name %s' or pick another --name", name, st.Supervisor, name)
	}
	// Leftovers of a crashed run.
	if found, err := Down(name, nil); err != nil {
		return nil, fmt.Errorf("removing leftovers of an earlier cluster %q: %w", name, err)
	} else if found {
		opts.Progress("removed leftovers of an earlier cluster %q", name)
	}
	c = &Cluster{name: name, dir: StateDir(name), prep: prep, opts: opts,
		nodeNS: map[string]*netns.NS{}, agents: map[string]*redirect.Agent{},
		zprocs: map[string]*proc{}, pods: map[string]*podRT{}, svcCreated: map[string]time.Time{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	for _, d := range []string{"logs", "nodes", "pods", "bin", "ca"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return c, err
		}
	}
	os.Symlink(opts.AmbitBin, filepath.Join(c.dir, "bin", "ambit"))
	os.Symlink(opts.ZtunnelBin, filepath.Join(c.dir, "bin", "ztunnel"))
	if opts.WaypointBin != "" {
		os.Symlink(opts.WaypointBin, filepath.Join(c.dir, "bin", "waypoint"))
	}
	c.cpLog, err = os.OpenFile(filepath.Join(c.dir, "logs", "controlplane.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return c, err
	}
	c.log = slog.New(slog.NewTextHandler(c.cpLog, nil))
	c.initState()
	if err := c.saveState(); err != nil {
		return c, err
	}
	steps := []struct {
		what string
		f    func() error
	}{
		{fmt.Sprintf("network: bridge, %d nodes, %d pods", len(prep.Plan.Nodes), len(prep.Plan.Pods)), c.createNetwork},
		{"control plane at " + c.state.ControlPlane, c.startControlPlane},
		{"ztunnels on " + strconv.Itoa(len(prep.Plan.Nodes)) + " nodes", c.startZtunnels},
		{"enrolling pods in the mesh", c.enrolPods},
		{"workloads", c.startWorkloads},
	}
	if prep.Plan.NeedsWaypoint() {
		steps = append(steps, struct {
			what string
			f    func() error
		}{"waypoints ready", c.waitWaypoints})
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.f(); err != nil {
			return c, err
		}
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		opts.Progress("  %-52s %5dms", s.what, time.Since(t).Milliseconds())
	}
	if err := c.serveControl(); err != nil {
		return c, err
	}
	c.stateMu.Lock()
	c.state.Ready = true
	c.stateMu.Unlock()
	return c, c.saveState()
}

func (c *Cluster) initState() {
	p := c.prep.Plan
	c.cpAddr = p.ControlPlaneAddr()
	st := State{Name: c.name, Supervisor: c.opts.Supervisor, StartedAt: time.Now().UTC(),
		ControlPlane:     netip.AddrPortFrom(c.cpAddr, cpGRPCPort).String(),
		ControlPlaneHTTP: netip.AddrPortFrom(c.cpAddr, cpHTTPPort).String(),
		NetNS:            netNSName(c.name)}
	for _, n := range p.Nodes {
		st.Nodes = append(st.Nodes, NodeState{Name: n.Name, Zone: n.Zone, Region: n.Region, NetNS: nodeNSName(c.name, n.Name),
			IP: n.Gateway().String(), PodCIDR: n.PodCIDR.String(),
			Metrics: fmt.Sprintf("http://%s/metrics", netip.AddrPortFrom(n.Gateway(), metricsPort)),
			Log:     filepath.Join(c.dir, "logs", "ztunnel-"+n.Name+".log")})
	}
	for _, pod := range p.Pods {
		c.pods[podKey(pod)] = c.newPodRT(pod)
	}
	c.state = st
	c.refreshState()
}

// refreshState rebuilds the state's pods and services from the plan and
// the running pods, with their pids. stateMu must be held, or the cluster
// not yet shared.
func (c *Cluster) refreshState() {
	c.state.Pods = c.state.Pods[:0]
	// The plan's pods in order, then those terminating.
	var rts []*podRT
	inPlan := map[*podRT]bool{}
	for _, pod := range c.prep.Plan.Pods {
		if rt := c.pods[podKey(pod)]; rt != nil {
			rts = append(rts, rt)
			inPlan[rt] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.pods)) {
		if rt := c.pods[k]; !inPlan[rt] {
			rts = append(rts, rt)
		}
	}
	for _, rt := range rts {
		ps := rt.state
		ps.Enrolled = rt.enrolled
		ps.Terminating = rt.terminating
		ps.Containers = nil
		for j, ct := range rt.pod.Spec.Containers {
			cs := ContainerState{Name: ct.Name}
			if j < len(rt.procs) && rt.procs[j] != nil {
				cs.PID, cs.Restarts = rt.procs[j].status()
			}
			ps.Containers = append(ps.Containers, cs)
		}
		c.state.Pods = append(c.state.Pods, ps)
	}
	c.state.Services = c.state.Services[:0]
	for _, s := range c.prep.Plan.Services {
		k := s.Namespace + "/" + s.Name + "=" + s.Spec.ClusterIP
		if c.svcCreated[k].IsZero() {
			c.svcCreated[k] = time.Now().UTC()
		}
		ss := ServiceState{Namespace: s.Namespace, Name: s.Name, ClusterIP: s.Spec.ClusterIP, Created: c.svcCreated[k]}
		for _, port := range s.Spec.Ports {
			ss.Ports = append(ss.Ports, fmt.Sprintf("%d/%s", port.Port, orDefault(string(port.Protocol), "TCP")))
		}
		c.state.Services = append(c.state.Services, ss)
	}
}

// inAmbient: the pod's own istio.io/dataplane-mode wins, else its namespace's.
func inAmbient(snap *model.Snapshot, pod *corev1.Pod) bool {
	const label = "istio.io/dataplane-mode"
	if m, ok := pod.Labels[label]; ok {
		return m == "ambient"
	}
	if ns := snap.Namespaces[pod.Namespace]; ns != nil {
		return ns.Labels[label] == "ambient"
	}
	return false
}

// State returns a copy of the cluster's current state.
func (c *Cluster) State() State {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	s := c.state
	s.Nodes = append([]NodeState(nil), s.Nodes...)
	s.Services = append([]ServiceState(nil), s.Services...)
	s.Pods = append([]PodState(nil), s.Pods...)
	for i := range s.Pods {
		s.Pods[i].Containers = append([]ContainerState(nil), s.Pods[i].Containers...)
	}
	return s
}

// saveState refreshes pids and restart counts and writes state.json.
func (c *Cluster) saveState() error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	for i := range c.state.Nodes {
		if p := c.zprocs[c.state.Nodes[i].Name]; p != nil {
			c.state.Nodes[i].ZtunnelPID, c.state.Nodes[i].Restarts = p.status()
		}
	}
	c.refreshState()
	return writeState(&c.state)
}

func (c *Cluster) changed() {
	if err := c.saveState(); err != nil {
		c.log.Warn("cannot write state", "err", err)
	}
}

// parallel runs f for 0..n-1 with a few workers, returning the first error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) createNetwork() error {
	p := c.prep.Plan
	var err error
	if c.netNS, err = netns.NewNamed(netNSName(c.name)); err != nil {
		return err
	}
	if err := netns.AddBridge(c.netNS, bridgeName); err != nil {
		return err
	}
	bits := p.PodCIDR.Bits()
	if err := netns.AddAddr(c.netNS, bridgeName, netip.PrefixFrom(c.cpAddr, bits)); err != nil {
		return err
	}
	var mu sync.Mutex
	if err := parallel(len(p.Nodes), func(i int) error {
		n := p.Nodes[i]
		ns, err := netns.NewNamed(nodeNSName(c.name, n.Name))
		if err != nil {
			return err
		}
		mu.Lock()
		c.nodeNS[n.Name] = ns
		mu.Unlock()
		if err := netns.AttachToBridge(c.netNS, bridgeName, ns, "eth0", fmt.Sprintf("vn%d", i), netip.PrefixFrom(n.Gateway(), bits)); err != nil {
			return err
		}
		// The node forwards what it DNATs to Service endpoints (svcproxy.go).
		return netns.SetSysctl(ns, "net.ipv4.ip_forward", "1")
	}); err != nil {
		return err
	}
	if err := c.syncServiceProxy(p, nil); err != nil {
		return err
	}
	pods := c.podList()
	return parallel(len(pods), func(i int) error { return c.createPodNetwork(pods[i]) })
}

// syncServiceProxy writes every node's Service rules for plan, with the
// pods of serving as endpoints as well.
func (c *Cluster) syncServiceProxy(plan *Plan, serving []*corev1.Pod) error {
	rules := serviceRules(plan.Services, append(slices.Clip(plan.Pods), serving...))
	return parallel(len(plan.Nodes), func(i int) error {
		if _, err := netns.Output(c.nodeNS[plan.Nodes[i].Name], rules, "iptables-restore"); err != nil {
			return fmt.Errorf("node %s: Service rules: %w", plan.Nodes[i].Name, err)
		}
		return nil
	})
}

// podList is the running pods in plan order.
func (c *Cluster) podList() []*podRT {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	var out []*podRT
	for _, pod := range c.prep.Plan.Pods {
		if rt := c.pods[podKey(pod)]; rt != nil {
			out = append(out, rt)
		}
	}
	return out
}

// Source delivers the cluster's configuration to the control plane: the
// manifests with the plan applied (nodes, Service VIPs, placed pods), first
// as Start made it, then as 'ambit apply', 'delete' and 'label' change it.
type Source struct {
	mu     sync.Mutex
	snap   *model.Snapshot
	update func(*model.Snapshot)
}

// NewSource returns a source delivering snap first.
func NewSource(snap *model.Snapshot) *Source { return &Source{snap: snap} }

// Run delivers the current snapshot, then every Set, until ctx ends.
func (s *Source) Run(ctx context.Context, update func(*model.Snapshot)) error {
	s.mu.Lock()
	s.update = update
	update(s.snap)
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.update = nil
	s.mu.Unlock()
	return nil
}

// Set delivers snap; once it returns, the control plane has translated it
// (its CA knows the pods it places) and is pushing it.
func (s *Source) Set(snap *model.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap = snap
	if s.update != nil {
		s.update(snap)
	}
}

func (c *Cluster) startControlPlane() error {
	authority, err := ca.New(ca.Options{TrustDomain: TrustDomain, Dir: filepath.Join(c.dir, "ca"), Logger: c.log.With("component", "ca")})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "root-cert.pem"), []byte(strings.Join(authority.TrustBundlePEM(), "")), 0o644); err != nil {
		return err
	}
	for _, n := range c.prep.Plan.Nodes {
		if err := os.MkdirAll(filepath.Join(c.dir, "nodes", n.Name), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.dir, "nodes", n.Name, "token"), []byte(authority.NodeToken(n.Name)), 0o600); err != nil {
			return err
		}
	}
	mesh := model.DefaultMeshConfig()
	mesh.TrustDomain = TrustDomain
	c.source = NewSource(c.prep.Plan.Apply(c.prep.Snapshot))
	var cp *controlplane.Server
	// The listeners are created inside the cluster's network namespace.
	err = netns.Do(c.netNS, func() error {
		var err error
		cp, err = controlplane.New(controlplane.Options{
			Source: c.source, Mesh: mesh, CA: authority,
			GRPCAddr: c.state.ControlPlane, HTTPAddr: c.state.ControlPlaneHTTP,
			ServingHosts: []string{"localhost", "127.0.0.1", c.cpAddr.String(), "ambit-controlplane"},
			Log:          c.log,
		})
		return err
	})
	if err != nil {
		return err
	}
	c.cp = cp
	c.cpDone = make(chan struct{})
	go func() {
		defer close(c.cpDone)
		if err := cp.Run(c.ctx); err != nil {
			c.log.Error("control plane stopped", "err", err)
		}
	}()
	select {
	case <-cp.Ready():
		return nil
	case <-time.After(startTimeout):
		return errors.New("the control plane did not become ready (see " + c.cpLog.Name() + ")")
	}
}

func (c *Cluster) startZtunnels() error {
	for _, n := range c.prep.Plan.Nodes {
		nodeDir := filepath.Join(c.dir, "nodes", n.Name)
		socket := filepath.Join(nodeDir, "agent.sock")
		agent := redirect.NewAgent(redirect.AgentConfig{Logf: func(f string, a ...any) {
			c.log.Info(fmt.Sprintf(f, a...), "component", "node-agent", "node", n.Name)
		}})
		c.agents[n.Name] = agent
		go agent.ListenAndServe(c.ctx, socket)
		args := []string{"--node", n.Name, "--control-plane", c.state.ControlPlane,
			"--token-file", filepath.Join(nodeDir, "token"), "--root-cert", filepath.Join(c.dir, "root-cert.pem"),
			"--trust-domain", TrustDomain, "--agent-socket", socket,
			"--admin-addr", "127.0.0.1:15000", "--metrics-addr", fmt.Sprintf(":%d", metricsPort),
			"--ready-addr", fmt.Sprintf(":%d", readyPort), "--drain-timeout", "1s"}
		name := n.Name
		p := newProc("ztunnel "+name, c.nodeNS[name], filepath.Join(c.dir, "logs", "ztunnel-"+name+".log"), func() *exec.Cmd {
			cmd := exec.Command(c.opts.ZtunnelBin, args...)
			cmd.Env = []string{"NODE_NAME=" + name, "PATH=" + os.Getenv("PATH")}
			return cmd
		}, c.changed)
		c.zprocs[name] = p
		if err := p.start(); err != nil {
			return err
		}
	}
	return parallel(len(c.prep.Plan.Nodes), func(i int) error {
		n := c.prep.Plan.Nodes[i]
		return waitReady(c.nodeNS[n.Name], "ztunnel on "+n.Name, filepath.Join(c.dir, "logs", "ztunnel-"+n.Name+".log"))
	})
}

// waitReady polls the readiness endpoint (:15021/healthz/ready, ztunnels'
// and waypoints' alike) inside ns until it answers 200.
func waitReady(ns *netns.NS, what, log string) error {
	client := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(ns, netns.SocketOptions{}), DisableKeepAlives: true},
		Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", readyPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not become ready (see %s)", what, log)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitWaypoints waits until every waypoint instance is ready: it has its
// configuration and certificate.
func (c *Cluster) waitWaypoints() error {
	return c.waitWaypointPods(c.podList())
}

func (c *Cluster) waitWaypointPods(pods []*podRT) error {
	var wps []*podRT
	for _, rt := range pods {
		if isWaypointPod(rt.pod) {
			wps = append(wps, rt)
		}
	}
	return parallel(len(wps), func(i int) error {
		return waitReady(wps[i].ns, "waypoint "+podKey(wps[i].pod), wps[i].state.Log)
	})
}

func (c *Cluster) enrolPods() error {
	pods := c.podList()
	return parallel(len(pods), func(i int) error {
		if !inAmbient(c.prep.Snapshot, pods[i].pod) {
			return nil
		}
		return c.enrol(pods[i])
	})
}

// PathEnv is $PATH inside pods: the cluster's bin directory (ambit,
// ztunnel) first.
func pathEnv(dir string) string {
	return "PATH=" + filepath.Join(dir, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

func (c *Cluster) containerEnv(pod *corev1.Pod, ct *corev1.Container) []string {
	env := []string{pathEnv(c.dir), "HOME=/root", "HOSTNAME=" + pod.Name}
	for _, e := range ct.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	return env
}

func (c *Cluster) startWorkloads() error {
	pods := c.podList()
	for _, rt := range pods {
		if err := c.startProcs(rt, c.prep.Plan.Services); err != nil {
			return err
		}
	}
	c.waitListening(pods)
	return nil
}

// Close tears the cluster down: workloads, ztunnels, node agents, control
// plane, namespaces, state directory. It is safe to call more than once.
func (c *Cluster) Close() error {
	var err error
	c.closed.Do(func() {
		if c.control != nil {
			c.control.Close()
		}
		// A change in progress finishes first; none starts after.
		c.reconf.Lock()
		var all []*proc
		c.stateMu.Lock()
		for _, rt := range c.pods {
			all = append(all, rt.procs...)
		}
		c.stateMu.Unlock()
		stopAll(all)
		var zs []*proc
		for _, p := range c.zprocs {
			zs = append(zs, p)
		}
		stopAll(zs)
		c.cancel()
		c.retiring.Wait()
		for _, a := range c.agents {
			a.Close()
		}
		if c.cpDone != nil {
			<-c.cpDone
		}
		for _, rt := range c.pods {
			if rt.ns != nil {
				rt.ns.Close()
			}
		}
		for _, ns := range c.nodeNS {
			ns.Close()
		}
		if c.netNS != nil {
			c.netNS.Close()
		}
		if c.cpLog != nil {
			c.cpLog.Close()
		}
		// Removes the namespaces (by name) and the state directory, and
		// anything still running in them.
		_, err = Down(c.name, nil)
	})
	return err
}

func stopAll(ps []*proc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop() }()
	}
	wg.Wait()
}
