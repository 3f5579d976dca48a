//go:build linux

// Command ztunnel-bench compares three L4 data paths between a client pod on
// node-a and a server pod on node-b, interleaved round-robin in one run:
//
//	direct   client → server, plain TCP across the bridge
//	stunnel  client → stunnel (client ns) ═TLS 1.3 mTLS═▶ stunnel (server ns) → server
//	ztunnel  client ⇢ ztunnel node-a ═HBONE mTLS═▶ ztunnel node-b ⇢ server (Service VIP)
//
// Load: fortio (HTTP/1.1 keep-alive, 16 connections, 1 KiB payload) at
// 1000 qps and at max qps, and single-stream iperf3. All traffic stays in
// network namespaces this program creates (a bridge namespace and four pod
// namespaces, none linked to the host); the ztunnel processes run in the
// root namespace but only talk to the control plane on 127.0.0.1 and serve
// pods through namespace file descriptors handed over by the node agent.
//
// Run as root from the repository root, via bench/ztunnel.sh.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/redirect"
)

const manifests = `
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {topology.kubernetes.io/zone: zone-b}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bench, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: bench}
spec:
  clusterIP: 10.96.0.10
  selector: {app: server}
  ports:
  - {name: tcp-fortio, port: 8080, targetPort: 8080}
  - {name: tcp-iperf, port: 5201, targetPort: 5201}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench, labels: {app: server}}
spec:
  nodeName: node-b
  serviceAccountName: server
  containers: [{name: app}]
status: {podIP: 10.244.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench, labels: {app: client}}
spec:
  nodeName: node-a
  serviceAccountName: client
  containers: [{name: app}]
status: {podIP: 10.244.1.2}
---
# A second, independent ztunnel pair (optional -ztunnel2: another build).
apiVersion: v1
kind: Node
metadata: {name: node-c, labels: {topology.kubernetes.io/zone: zone-a}}
---
apiVersion: v1
kind: Node
metadata: {name: node-d, labels: {topology.kubernetes.io/zone: zone-b}}
---
apiVersion: v1
kind: Service
metadata: {name: server2, namespace: bench}
spec:
  clusterIP: 10.96.0.11
  selector: {app: server2}
  ports:
  - {name: tcp-fortio, port: 8080, targetPort: 8080}
  - {name: tcp-iperf, port: 5201, targetPort: 5201}
---
apiVersion: v1
kind: Pod
metadata: {name: server2, namespace: bench, labels: {app: server2}}
spec:
  nodeName: node-d
  serviceAccountName: server
  containers: [{name: app}]
status: {podIP: 10.244.2.4}
---
apiVersion: v1
kind: Pod
metadata: {name: client2, namespace: bench, labels: {app: client2}}
spec:
  nodeName: node-c
  serviceAccountName: client
  containers: [{name: app}]
status: {podIP: 10.244.1.4}
`

var (
	flagTools    = flag.String("tools", "bench/.tools", "directory with fortio and ztunnel binaries")
	flagRounds   = flag.Int("rounds", 2, "round-robin rounds; the median per way is reported")
	flagDuration = flag.Duration("duration", 10*time.Second, "length of each fortio run")
	flagIperfT   = flag.Int("iperf-time", 5, "iperf3 -t seconds")
	flagConns    = flag.Int("c", 16, "fortio connections")
	flagPayload  = flag.Int("payload", 1024, "fortio payload bytes")
	flagOut      = flag.String("out", "", "write raw results as JSON to this file")
	flagWays     = flag.String("ways", "direct,stunnel,ztunnel", "ways to run")
	flagTests    = flag.String("tests", "qps1000,qps1000u,qpsmax,iperf", "measurements of each round (for a quick A/B of one of them); qps1000u is 1000 qps with the connections spread over the pacing period (fortio -uniform) instead of sending together")
	flagPerf     = flag.String("perf", "", "after the rounds, record `perf` CPU profiles of each proxy pair at 1000 qps, max and under iperf3 into this directory")
	flagDiag     = flag.Bool("diag", false, "after the rounds, count syscalls, context switches and CPU time of each proxy pair (perf stat) per request at 1000 qps and max, and per MB under iperf3")
	flagKeep     = flag.Bool("v", false, "verbose: pass proxy logs through")
	flagZtunnel  = flag.String("ztunnel", "", "ztunnel binary (default TOOLS/ztunnel, built from ./cmd/ztunnel)")
	flagZ2       = flag.String("ztunnel2", "", "optional second ztunnel binary, run as a fourth way (own nodes, pods and VIP 10.96.0.11)")
	flagZ2Name   = flag.String("ztunnel2-name", "ztunnel2", "column name of the -ztunnel2 way")
	flagZEnv     = flag.String("ztunnel-env", "", "space-separated NAME=VALUE pairs added to the ztunnels' environment (e.g. GOGC=50), to compare runtime settings")
	flagPprof    = flag.Int("pprof-port", 0, "if set, ztunnel i serves net/http/pprof on 127.0.0.1:(this+i) (heap profiles: go tool pprof http://127.0.0.1:PORT/debug/pprof/heap)")
)

// pod is one pod network namespace.
type pod struct {
	name string
	ns   *netns.NS
	ip   netip.Addr
}

type way struct {
	name    string
	client  *pod
	httpURL string // fortio target, as seen from the client pod
	iperfIP string
	iperfP  int
	proxies []*proc // the proxy pair whose CPU/RSS is measured
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// sample is one run's result.
type sample struct {
	Way, Test       string
	Round           int
	QPS             float64 `json:",omitempty"`
	P50, P90, P99   float64 `json:",omitempty"` // ms
	Errors          int64   `json:",omitempty"`
	Gbps            float64 `json:",omitempty"`
	ProxyCPUSeconds float64 `json:",omitempty"`
	Seconds         float64 `json:",omitempty"`
	HWMKiB          []int64 `json:",omitempty"` // per proxy, peak RSS during the run
}

var (
	mu       sync.Mutex
	children []*proc
	logDir   string
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx)
	stop()
	cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel-bench:", err)
		os.Exit(1)
	}
}

var log = stdLog{}

type stdLog struct{}

func (stdLog) SetFlags(int) {}
func (stdLog) Printf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", args...)
}

// cleanup stops every child (SIGTERM, then SIGKILL after 2 s). The pod and
// bridge namespaces are anonymous: they vanish with this process and its
// children. Redirection rules live inside pod namespaces and go with them.
func cleanup() {
	mu.Lock()
	cs := children
	children = nil
	mu.Unlock()
	for _, c := range cs {
		if c.cmd.Process != nil {
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(2 * time.Second)
	for _, c := range cs {
		select {
		case <-c.done:
		case <-deadline:
		}
	}
	for _, c := range cs {
		if c.cmd.Process != nil {
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// start starts a long-running child, in ns if non-nil, in its own process
// group, killed if this process dies.
func start(name string, ns *netns.NS, bin string, args ...string) (*proc, error) {
	return startEnv(name, ns, nil, bin, args...)
}

// startEnv is start with env added to this process's environment.
func startEnv(name string, ns *netns.NS, env []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	lf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if *flagKeep {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(lf, os.Stderr), io.MultiWriter(lf, os.Stderr)
	}
	if ns != nil {
		err = netns.StartCmd(ns, cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.done) }()
	mu.Lock()
	children = append(children, p)
	mu.Unlock()
	return p, nil
}

// output runs a bounded command in ns and returns its stdout.
func output(ctx context.Context, ns *netns.NS, timeout time.Duration, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := netns.StartCmd(ns, cmd); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	if err != nil {
		return []byte(stdout.String()), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return []byte(stdout.String()), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

func run(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces)")
	}
	tools, err := filepath.Abs(*flagTools)
	if err != nil {
		return err
	}
	fortio, ztunnelBin := filepath.Join(tools, "fortio"), filepath.Join(tools, "ztunnel")
	if *flagZtunnel != "" {
		ztunnelBin = *flagZtunnel
	}
	for _, b := range []string{fortio, ztunnelBin} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s missing (run bench/ztunnel.sh): %w", b, err)
		}
	}
	stunnelBin, err := exec.LookPath("stunnel4")
	if err != nil {
		if stunnelBin, err = exec.LookPath("stunnel"); err != nil {
			return errors.New("stunnel4 not installed (apt-get install stunnel4)")
		}
	}
	iperf, err := exec.LookPath("iperf3")
	if err != nil {
		return errors.New("iperf3 not installed (apt-get install iperf3)")
	}
	work, err := os.MkdirTemp("", "ztunnel-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logDir = filepath.Join(work, "logs")
	os.MkdirAll(logDir, 0o755)
	defer func() {
		// Keep the logs for post-mortem if anything was written.
		keep := filepath.Join(tools, "last-logs")
		os.RemoveAll(keep)
		exec.Command("cp", "-r", logDir, keep).Run()
	}()

	// Network: bridge namespace + four pod namespaces, none linked to the host.
	bridge, err := netns.New()
	if err != nil {
		return err
	}
	defer bridge.Close()
	if err := netns.AddBridge(bridge, "br0"); err != nil {
		return err
	}
	if err := netns.AddAddr(bridge, "br0", netip.MustParsePrefix("10.244.0.1/16")); err != nil {
		return err
	}
	newPod := func(name, ip string) (*pod, error) {
		ns, err := netns.New()
		if err != nil {
			return nil, err
		}
		p := &pod{name: name, ns: ns, ip: netip.MustParseAddr(ip)}
		if err := netns.AttachToBridge(bridge, "br0", ns, "eth0", "veth-"+name, netip.PrefixFrom(p.ip, 16)); err != nil {
			return nil, err
		}
		return p, netns.AddRoute(ns, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.244.0.1"), "eth0")
	}
	pods := map[string]*pod{}
	for _, p := range []struct{ name, ip string }{
		{"zclient", "10.244.1.2"}, {"zserver", "10.244.2.2"}, // enrolled in the mesh
		{"pclient", "10.244.1.3"}, {"pserver", "10.244.2.3"}, // plain (direct, stunnel)
		{"hclient", "10.244.1.4"}, {"hserver", "10.244.2.4"}, // enrolled with -ztunnel2
	} {
		if p.name[0] == 'h' && *flagZ2 == "" {
			continue
		}
		if pods[p.name], err = newPod(p.name, p.ip); err != nil {
			return fmt.Errorf("pod %s: %w", p.name, err)
		}
		defer pods[p.name].ns.Close()
	}

	// Apps in both server pods.
	for _, name := range []string{"zserver", "pserver", "hserver"} {
		p := pods[name]
		if p == nil {
			continue
		}
		if _, err := start("fortio-server-"+name, p.ns, fortio, "server", "-http-port", "8080", "-grpc-port", "disabled",
			"-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled", "-loglevel", "Warning"); err != nil {
			return err
		}
		if _, err := start("iperf3-server-"+name, p.ns, iperf, "-s", "-p", "5201"); err != nil {
			return err
		}
	}

	// stunnel pair.
	stunnels, err := startStunnel(work, stunnelBin, pods["pclient"], pods["pserver"])
	if err != nil {
		return err
	}

	// Control plane + two ztunnel processes + node agents.
	enrol := []enrolment{
		{"node-a", "zclient", "client", "client", ztunnelBin},
		{"node-b", "zserver", "server", "server", ztunnelBin},
	}
	if *flagZ2 != "" {
		enrol = append(enrol, enrolment{"node-c", "hclient", "client2", "client", *flagZ2}, enrolment{"node-d", "hserver", "server2", "server", *flagZ2})
	}
	zprocs, err := startMesh(ctx, work, enrol, pods)
	if err != nil {
		return err
	}
	ztunnels := zprocs[:2]

	all := map[string]*way{
		"direct":  {name: "direct", client: pods["pclient"], httpURL: "http://10.244.2.3:8080/echo", iperfIP: "10.244.2.3", iperfP: 5201},
		"stunnel": {name: "stunnel", client: pods["pclient"], httpURL: "http://127.0.0.1:18080/echo", iperfIP: "127.0.0.1", iperfP: 15201, proxies: stunnels},
		"ztunnel": {name: "ztunnel", client: pods["zclient"], httpURL: "http://10.96.0.10:8080/echo", iperfIP: "10.96.0.10", iperfP: 5201, proxies: ztunnels},
	}
	if *flagZ2 != "" {
		all[*flagZ2Name] = &way{name: *flagZ2Name, client: pods["hclient"], httpURL: "http://10.96.0.11:8080/echo", iperfIP: "10.96.0.11", iperfP: 5201, proxies: zprocs[2:]}
		*flagWays += "," + *flagZ2Name
	}
	var ways []*way
	for _, n := range strings.Split(*flagWays, ",") {
		w, ok := all[n]
		if !ok {
			return fmt.Errorf("unknown way %q", n)
		}
		ways = append(ways, w)
	}
	for _, w := range ways {
		if err := waitHTTP(ctx, w); err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
	}
	log.Printf("all paths answer; %d rounds × %d ways × (%s: fortio runs of %v, iperf3 %ds)", *flagRounds, len(ways), *flagTests, *flagDuration, *flagIperfT)

	var samples []sample
	tests := strings.Split(*flagTests, ",")
	for _, t := range tests {
		if t != "qps1000" && t != "qps1000u" && t != "qpsmax" && t != "iperf" {
			return fmt.Errorf("unknown test %q (want qps1000, qps1000u, qpsmax, iperf)", t)
		}
	}
	for r := 0; r < *flagRounds; r++ {
		for _, test := range tests {
			for i := range ways {
				w := ways[(i+r)%len(ways)] // rotate the order each round
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s, err := measure(ctx, w, test, fortio, iperf)
				if err != nil {
					return fmt.Errorf("round %d %s %s: %w", r+1, w.name, test, err)
				}
				s.Round = r + 1
				log.Printf("round %d %-7s %-7s qps=%.0f p50=%.3fms p90=%.3fms p99=%.3fms err=%d gbps=%.2f proxyCPU=%.2fs hwm=%v",
					s.Round, s.Way, s.Test, s.QPS, s.P50, s.P90, s.P99, s.Errors, s.Gbps, s.ProxyCPUSeconds, s.HWMKiB)
				samples = append(samples, s)
			}
		}
	}
	if *flagOut != "" {
		b, _ := json.MarshalIndent(samples, "", "  ")
		os.WriteFile(*flagOut, b, 0o644)
	}
	report(ways, samples)

	if *flagDiag || *flagPerf != "" {
		for _, n := range []string{"stunnel", "ztunnel", *flagZ2Name} {
			for _, load := range []string{"1000", "0", "iperf"} {
				if w := all[n]; w != nil && ctx.Err() == nil {
					if err := diag(ctx, w, fortio, iperf, load); err != nil {
						log.Printf("diag %s: %v", n, err)
					}
				}
			}
		}
	}
	return nil
}

func (w *way) proxies0() string {
	if len(w.proxies) == 0 {
		return ""
	}
	return w.proxies[0].name
}

// --- measurement -----------------------------------------------------------

func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// fields after "(comm) ": state=0 ... utime is field 14 overall → index 11 here.
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st, nil
}

const clkTck = 100 // USER_HZ on Linux

func hwmKiB(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			n, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return n
		}
	}
	return -1
}

// resetHWM resets a process's peak RSS (VmHWM) to its current RSS.
func resetHWM(pid int) { os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) }

func measure(ctx context.Context, w *way, test, fortio, iperf string) (sample, error) {
	s := sample{Way: w.name, Test: test}
	for _, p := range w.proxies {
		select {
		case <-p.done:
			return s, fmt.Errorf("proxy %s exited (see %s/last-logs)", p.name, *flagTools)
		default:
		}
		resetHWM(p.cmd.Process.Pid)
	}
	var before int64
	for _, p := range w.proxies {
		t, _ := cpuTicks(p.cmd.Process.Pid)
		before += t
	}
	t0 := time.Now()
	var err error
	switch test {
	case "qps1000", "qps1000u", "qpsmax":
		qps := "1000"
		if test == "qpsmax" {
			qps = "0"
		}
		err = runFortio(ctx, w, fortio, qps, test == "qps1000u", *flagDuration, &s)
	case "iperf":
		err = runIperf(ctx, w, iperf, &s)
	}
	s.Seconds = time.Since(t0).Seconds()
	var after int64
	for _, p := range w.proxies {
		t, _ := cpuTicks(p.cmd.Process.Pid)
		after += t
		s.HWMKiB = append(s.HWMKiB, hwmKiB(p.cmd.Process.Pid))
	}
	s.ProxyCPUSeconds = float64(after-before) / clkTck
	return s, err
}

// runFortio loads w's path at qps (0: as fast as it goes). fortio paces each
// connection at qps/c from the same start, so by default the c connections
// send together, in bursts of c requests; uniform spreads their requests
// evenly over the period (fortio -uniform), a steady arrival rate.
func runFortio(ctx context.Context, w *way, fortio, qps string, uniform bool, d time.Duration, s *sample) error {
	out := filepath.Join(logDir, fmt.Sprintf("fortio-%s-%s-%d.json", w.name, qps, time.Now().UnixNano()))
	args := []string{"load", "-qps", qps, "-c", strconv.Itoa(*flagConns), "-t", d.String(),
		"-payload-size", strconv.Itoa(*flagPayload), "-r", "0.00001", "-json", out, "-quiet", "-loglevel", "Error"}
	if uniform {
		args = append(args, "-uniform")
	}
	_, err := output(ctx, w.client.ns, d+30*time.Second, fortio, append(args, w.httpURL)...)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	var r struct {
		ActualQPS         float64
		ActualDuration    int64
		RetCodes          map[string]int64
		DurationHistogram struct {
			Count       int64
			Percentiles []struct{ Percentile, Value float64 }
		}
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	s.QPS = r.ActualQPS
	for _, p := range r.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			s.P50 = p.Value * 1000
		case 90:
			s.P90 = p.Value * 1000
		case 99:
			s.P99 = p.Value * 1000
		}
	}
	for code, n := range r.RetCodes {
		if code != "200" {
			s.Errors += n
		}
	}
	if s.Errors > 0 {
		log.Printf("%s: %d non-200 responses: %v", w.name, s.Errors, r.RetCodes)
	}
	return nil
}

func runIperf(ctx context.Context, w *way, iperf string, s *sample) error {
	b, err := output(ctx, w.client.ns, time.Duration(*flagIperfT+30)*time.Second, iperf, "-c", w.iperfIP, "-p", strconv.Itoa(w.iperfP),
		"-t", strconv.Itoa(*flagIperfT), "-P", "1", "-J")
	if err != nil {
		return err
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	if r.Error != "" {
		return errors.New(r.Error)
	}
	s.Gbps = r.End.SumReceived.BitsPerSecond / 1e9
	return nil
}

// waitHTTP polls the way's fortio target from the client pod.
func waitHTTP(ctx context.Context, w *way) error {
	dial := netns.Dialer(w.client.ns, netns.SocketOptions{})
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var resp *http.Response
		resp, err = c.Get(w.httpURL)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not answering: %v", w.httpURL, err)
}

// --- stunnel ---------------------------------------------------------------

func startStunnel(work, bin string, client, server *pod) ([]*proc, error) {
	dir := filepath.Join(work, "stunnel")
	os.MkdirAll(dir, 0o700)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	writePEM := func(name, typ string, der []byte) {
		os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	writePEM("ca.pem", "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, eku x509.ExtKeyUsage, ips []net.IP) error {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}, IPAddresses: ips,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku}}
		der, err := x509.CreateCertificate(rand.Reader, t, caCert, &k.PublicKey, caKey)
		if err != nil {
			return err
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		writePEM(name+".pem", "CERTIFICATE", der)
		writePEM(name+".key", "PRIVATE KEY", kd)
		return nil
	}
	if err := leaf("server", 2, x509.ExtKeyUsageServerAuth, []net.IP{server.ip.AsSlice()}); err != nil {
		return nil, err
	}
	if err := leaf("client", 3, x509.ExtKeyUsageClientAuth, nil); err != nil {
		return nil, err
	}
	// TLS 1.3 only, AES-128-GCM (what Go's TLS, hence the ztunnel, negotiates
	// on AES-NI hardware), peer certificate required and verified both ways.
	common := fmt.Sprintf(`foreground = yes
pid =
debug = info
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
curves = X25519:P-256
CAfile = %[1]s/ca.pem
verifyChain = yes
requireCert = yes
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
`, dir)
	serverConf := common + fmt.Sprintf(`cert = %[1]s/server.pem
key = %[1]s/server.key
[fortio]
accept = %[2]s:8443
connect = 127.0.0.1:8080
[iperf]
accept = %[2]s:8444
connect = 127.0.0.1:5201
`, dir, server.ip)
	clientConf := common + fmt.Sprintf(`client = yes
cert = %[1]s/client.pem
key = %[1]s/client.key
checkHost = server
[fortio]
accept = 127.0.0.1:18080
connect = %[2]s:8443
[iperf]
accept = 127.0.0.1:15201
connect = %[2]s:8444
`, dir, server.ip)
	os.WriteFile(filepath.Join(dir, "server.conf"), []byte(serverConf), 0o600)
	os.WriteFile(filepath.Join(dir, "client.conf"), []byte(clientConf), 0o600)
	s, err := start("stunnel-server", server.ns, bin, filepath.Join(dir, "server.conf"))
	if err != nil {
		return nil, err
	}
	c, err := start("stunnel-client", client.ns, bin, filepath.Join(dir, "client.conf"))
	if err != nil {
		return nil, err
	}
	return []*proc{c, s}, nil
}

// --- mesh ------------------------------------------------------------------

type enrolment struct{ node, pod, podName, sa, bin string }

func startMesh(ctx context.Context, work string, enrol []enrolment, pods map[string]*pod) ([]*proc, error) {
	cfgDir := filepath.Join(work, "manifests")
	os.MkdirAll(cfgDir, 0o755)
	if err := os.WriteFile(filepath.Join(cfgDir, "mesh.yaml"), []byte(manifests), 0o644); err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	authority, err := ca.New(ca.Options{TrustDomain: "cluster.local", Dir: filepath.Join(work, "ca")})
	if err != nil {
		return nil, err
	}
	src := &controlplane.FileSource{Paths: []string{cfgDir}, Interval: time.Second, Log: quiet}
	cp, err := controlplane.New(controlplane.Options{Source: src, Mesh: model.DefaultMeshConfig(), CA: authority,
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Log: quiet})
	if err != nil {
		return nil, err
	}
	go cp.Run(ctx)
	select {
	case <-cp.Ready():
	case <-time.After(10 * time.Second):
		return nil, errors.New("control plane not ready")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rootPEM := filepath.Join(work, "root-cert.pem")
	os.WriteFile(rootPEM, []byte(strings.Join(authority.TrustBundlePEM(), "")), 0o644)

	var procs []*proc
	for i, n := range enrol {
		tok := filepath.Join(work, n.node+".token")
		os.WriteFile(tok, []byte(authority.NodeToken(n.node)), 0o600)
		socket := filepath.Join(work, n.node+".sock")
		agent := redirect.NewAgent(redirect.AgentConfig{})
		go agent.ListenAndServe(ctx, socket)
		for i := 0; i < 50; i++ { // the socket must exist before the ztunnel dials
			if _, err := os.Stat(socket); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		args := []string{"--node", n.node, "--control-plane", cp.GRPCAddr(),
			"--token-file", tok, "--root-cert", rootPEM, "--trust-domain", "cluster.local", "--agent-socket", socket,
			"--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--ready-addr", "127.0.0.1:0", "--drain-timeout", "1s"}
		if *flagPprof != 0 { // older builds (-ztunnel2) may not know the flag
			args = append(args, "--pprof-addr", fmt.Sprintf("127.0.0.1:%d", *flagPprof+i))
		}
		p, err := startEnv("ztunnel-"+n.node, nil, strings.Fields(*flagZEnv), n.bin, args...)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		pd := pods[n.pod]
		if err := redirect.Install(pd.ns, redirect.Config{}); err != nil {
			return nil, fmt.Errorf("redirect in %s: %w", n.pod, err)
		}
		info := redirect.Pod{UID: n.podName, Name: n.podName, Namespace: "bench", ServiceAccount: n.sa, IPs: []netip.Addr{pd.ip}}
		addCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		for {
			dup, derr := pd.ns.Dup()
			if derr != nil {
				cancel()
				return nil, derr
			}
			err = agent.AddPod(addCtx, info, dup.File())
			dup.Close()
			if err == nil || addCtx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err != nil {
			return nil, fmt.Errorf("enrol %s on %s: %w", n.pod, n.node, err)
		}
	}
	return procs, nil
}

// --- perf diagnostics ------------------------------------------------------

// diag runs one more measurement of w — fortio at qps ("0": max) or, for
// load "iperf", one iperf3 transfer — with the proxy pair under perf:
// `perf stat` (-diag) counts system calls and context switches per
// request or per MB; `perf record -g` (-perf DIR) writes a CPU profile of
// each proxy to DIR/<way>-<load>-<proxy>.perf.data. perf follows threads
// created after it attaches.
func diag(ctx context.Context, w *way, fortio, iperf, load string) error {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return err
	}
	var pids []string
	for _, p := range w.proxies {
		pids = append(pids, strconv.Itoa(p.cmd.Process.Pid))
	}
	secs := strconv.Itoa(int(flagDuration.Seconds()))
	if load == "iperf" {
		secs = strconv.Itoa(*flagIperfT + 2)
	}
	var stat *exec.Cmd
	var stderr strings.Builder
	var recs []*exec.Cmd
	if *flagDiag {
		stat = exec.CommandContext(ctx, perf, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches,cpu-migrations,task-clock",
			"-p", strings.Join(pids, ","), "--", "sleep", secs)
		stat.Stderr = &stderr
		recs = append(recs, stat)
	}
	if *flagPerf != "" {
		os.MkdirAll(*flagPerf, 0o755)
		for _, p := range w.proxies {
			out := filepath.Join(*flagPerf, fmt.Sprintf("%s-%s-%s.perf.data", w.name, loadName(load), p.name))
			c := exec.CommandContext(ctx, perf, "record", "-F", "999", "-g", "-o", out, "-p", strconv.Itoa(p.cmd.Process.Pid), "--", "sleep", secs)
			c.Stderr = io.Discard
			recs = append(recs, c)
		}
	}
	for _, c := range recs {
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			return err
		}
	}
	time.Sleep(time.Second) // let perf attach before fortio opens its connections (stunnel: a thread each)
	var s sample
	var units float64 // requests or MB moved while perf watched
	unit := "request"
	if load == "iperf" {
		err = runIperf(ctx, w, iperf, &s)
		units = s.Gbps * 1e9 / 8 * float64(*flagIperfT) / 1e6
		unit = "MB"
	} else {
		d := max(*flagDuration-2*time.Second, time.Second)
		err = runFortio(ctx, w, fortio, load, false, d, &s)
		units = s.QPS * d.Seconds()
	}
	for _, c := range recs {
		c.Wait()
	}
	if stat != nil {
		counts := map[string]float64{}
		for _, l := range strings.Split(stderr.String(), "\n") {
			f := strings.Split(l, ",")
			if len(f) >= 3 {
				v, _ := strconv.ParseFloat(f[0], 64)
				counts[f[2]] = v
			}
		}
		log.Printf("diag %s %s: %.0f qps, %.2f Gbit/s; proxy pair per %s: %.2f syscalls, %.2f context switches, %.3f migrations, %.3f CPU ms",
			w.name, loadName(load), s.QPS, s.Gbps, unit, counts["raw_syscalls:sys_enter"]/units, counts["context-switches"]/units,
			counts["cpu-migrations"]/units, counts["task-clock"]/units) // perf reports task-clock in ms
	}
	if *flagPerf != "" {
		log.Printf("perf: %s %s profiled (qps=%.0f p50=%.3fms gbps=%.2f) into %s (perf report -i ... --no-children)", w.name, loadName(load), s.QPS, s.P50, s.Gbps, *flagPerf)
	}
	return err
}

func loadName(load string) string {
	switch load {
	case "0":
		return "max"
	case "iperf":
		return "iperf"
	}
	return load + "qps"
}

// --- report ----------------------------------------------------------------

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type agg map[string]float64 // metric → median

func report(ways []*way, samples []sample) {
	res := map[string]agg{}
	for _, w := range ways {
		vals := map[string][]float64{}
		for _, s := range samples {
			if s.Way != w.name {
				continue
			}
			switch s.Test {
			case "qps1000", "qps1000u", "qpsmax":
				k := s.Test
				vals[k+".qps"] = append(vals[k+".qps"], s.QPS)
				vals[k+".p50"] = append(vals[k+".p50"], s.P50)
				vals[k+".p90"] = append(vals[k+".p90"], s.P90)
				vals[k+".p99"] = append(vals[k+".p99"], s.P99)
				if len(w.proxies) > 0 && s.QPS > 0 {
					vals[k+".cpu"] = append(vals[k+".cpu"], s.ProxyCPUSeconds/s.Seconds/(s.QPS/1000))
					vals[k+".cpuabs"] = append(vals[k+".cpuabs"], s.ProxyCPUSeconds/s.Seconds)
				}
			case "iperf":
				vals["iperf.gbps"] = append(vals["iperf.gbps"], s.Gbps)
				if len(w.proxies) > 0 {
					vals["iperf.cpuabs"] = append(vals["iperf.cpuabs"], s.ProxyCPUSeconds/s.Seconds)
				}
			}
			for i, h := range s.HWMKiB {
				k := fmt.Sprintf("hwm%d.%s", i, s.Test)
				vals[k] = append(vals[k], float64(h)/1024)
			}
		}
		a := agg{}
		for k, v := range vals {
			a[k] = median(v)
		}
		// Peak over all runs rather than median for RSS.
		for _, s := range samples {
			if s.Way != w.name {
				continue
			}
			for i, h := range s.HWMKiB {
				k := fmt.Sprintf("hwm%d.peak", i)
				if s.Test != "iperf" && s.Round == 1 && float64(h)/1024 > a[k] {
					a[k] = float64(h) / 1024
				}
				k2 := fmt.Sprintf("hwm%d.peakall", i)
				if float64(h)/1024 > a[k2] {
					a[k2] = float64(h) / 1024
				}
			}
		}
		res[w.name] = a
	}
	rows := []struct{ label, key, unit string }{
		{"1000 qps: achieved qps", "qps1000.qps", "%.0f"},
		{"1000 qps: p50 ms", "qps1000.p50", "%.3f"},
		{"1000 qps: p90 ms", "qps1000.p90", "%.3f"},
		{"1000 qps: p99 ms", "qps1000.p99", "%.3f"},
		{"1000 qps: proxy pair vCPU", "qps1000.cpuabs", "%.3f"},
		{"1000 qps: pair vCPU per 1000 rps", "qps1000.cpu", "%.3f"},
		{"1000 qps spread (-uniform): p50 ms", "qps1000u.p50", "%.3f"},
		{"1000 qps spread (-uniform): p90 ms", "qps1000u.p90", "%.3f"},
		{"1000 qps spread (-uniform): p99 ms", "qps1000u.p99", "%.3f"},
		{"1000 qps spread (-uniform): pair vCPU per 1000 rps", "qps1000u.cpu", "%.3f"},
		{"max qps: achieved qps", "qpsmax.qps", "%.0f"},
		{"max qps: p50 ms", "qpsmax.p50", "%.3f"},
		{"max qps: p90 ms", "qpsmax.p90", "%.3f"},
		{"max qps: p99 ms", "qpsmax.p99", "%.3f"},
		{"max qps: proxy pair vCPU", "qpsmax.cpuabs", "%.3f"},
		{"max qps: pair vCPU per 1000 rps", "qpsmax.cpu", "%.3f"},
		{"iperf3 -P1: Gbit/s", "iperf.gbps", "%.2f"},
		{"iperf3 -P1: proxy pair vCPU", "iperf.cpuabs", "%.3f"},
		{"peak RSS MiB, client-side proxy (round-1 fortio)", "hwm0.peak", "%.1f"},
		{"peak RSS MiB, server-side proxy (round-1 fortio)", "hwm1.peak", "%.1f"},
		{"peak RSS MiB, client-side proxy (all runs)", "hwm0.peakall", "%.1f"},
		{"peak RSS MiB, server-side proxy (all runs)", "hwm1.peakall", "%.1f"},
	}
	fmt.Printf("\nZtunnel benchmark — medians of %d rounds, %s, fortio -c %d -payload-size %d -t %v, iperf3 -t %d -P 1\n\n",
		*flagRounds, time.Now().UTC().Format(time.RFC3339), *flagConns, *flagPayload, *flagDuration, *flagIperfT)
	fmt.Printf("| %-50s |", "metric")
	for _, w := range ways {
		fmt.Printf(" %12s |", w.name)
	}
	fmt.Printf("\n|%s|", strings.Repeat("-", 52))
	for range ways {
		fmt.Printf("%s|", strings.Repeat("-", 14))
	}
	fmt.Println()
	for _, r := range rows {
		fmt.Printf("| %-50s |", r.label)
		for _, w := range ways {
			v, ok := res[w.name][r.key]
			if !ok {
				fmt.Printf(" %12s |", "—")
				continue
			}
			fmt.Printf(" %12s |", fmt.Sprintf(r.unit, v))
		}
		fmt.Println()
	}
	for _, w := range ways {
		if strings.HasPrefix(w.proxies0(), "ztunnel") {
			ratios(w.name, res[w.name], res["stunnel"], res["direct"])
		}
	}
}

func ratios(zname string, z, s, d agg) {
	if z == nil || s == nil || d == nil {
		return
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "NOT MET"
	}
	fmt.Printf("\nRatios %s / stunnel (targets in brackets):\n", zname)
	fmt.Printf("  CPU per 1000 rps @1000 qps   %s  [≤ 1]  %s\n", ratio(z["qps1000.cpu"], s["qps1000.cpu"]), verdict(z["qps1000.cpu"] <= s["qps1000.cpu"]))
	fmt.Printf("  CPU per 1000 rps @max qps    %s  [≤ 1]  %s\n", ratio(z["qpsmax.cpu"], s["qpsmax.cpu"]), verdict(z["qpsmax.cpu"] <= s["qpsmax.cpu"]))
	za, sa := z["qps1000.p50"]-d["qps1000.p50"], s["qps1000.p50"]-d["qps1000.p50"]
	fmt.Printf("  added p50 @1000 qps          %s  (ztunnel +%.3f ms, stunnel +%.3f ms over direct)  [≤ 1]  %s\n", ratio(za, sa), za, sa, verdict(za <= sa))
	if _, ok := z["qps1000u.p50"]; ok {
		za, sa = z["qps1000u.p50"]-d["qps1000u.p50"], s["qps1000u.p50"]-d["qps1000u.p50"]
		fmt.Printf("  added p50 @1000 qps spread   %s  (ztunnel +%.3f ms, stunnel +%.3f ms over direct)  [≤ 1]  %s\n", ratio(za, sa), za, sa, verdict(za <= sa))
		fmt.Printf("  CPU per 1000 rps @1000 spread %s  [≤ 1]  %s\n", ratio(z["qps1000u.cpu"], s["qps1000u.cpu"]), verdict(z["qps1000u.cpu"] <= s["qps1000u.cpu"]))
	}
	za, sa = z["qpsmax.p50"]-d["qpsmax.p50"], s["qpsmax.p50"]-d["qpsmax.p50"]
	fmt.Printf("  added p50 @max qps           %s  (ztunnel +%.3f ms, stunnel +%.3f ms)  (informational: queueing)\n", ratio(za, sa), za, sa)
	fmt.Printf("  single-stream throughput     %s  [≥ 1]  %s\n", ratio(z["iperf.gbps"], s["iperf.gbps"]), verdict(z["iperf.gbps"] >= s["iperf.gbps"]))
	zr := max(z["hwm0.peak"], z["hwm1.peak"])
	sr := max(s["hwm0.peak"], s["hwm1.peak"])
	fmt.Printf("  peak RSS per proxy (16 conns, before any iperf) %s  (ztunnel %.1f MiB, stunnel %.1f MiB)  [ztunnel ≤ 20 MiB]  %s\n", ratio(zr, sr), zr, sr, verdict(zr <= 20))
	zr2 := max(z["hwm0.peakall"], z["hwm1.peakall"])
	sr2 := max(s["hwm0.peakall"], s["hwm1.peakall"])
	fmt.Printf("  peak RSS per proxy (all runs, incl. after iperf) %s  (ztunnel %.1f MiB, stunnel %.1f MiB)\n", ratio(zr2, sr2), zr2, sr2)
}
