// Command waypoint-bench measures Ambit's waypoint as an HTTP hop against
// nginx and haproxy doing the same job (see bench/README.md). Run it through
// bench/waypoint.sh, as root.
//
// Two network namespaces joined by a bridge, no link to the host: "proxy"
// (10.244.1.2) runs fortio's client, nginx, haproxy, and the waypoint
// process with its control plane; "server" (10.244.2.2) runs fortio's
// server. Every proxy listens on the proxy namespace's loopback and forwards
// to 10.244.2.2:8080 over HTTP/1.1 keep-alive; the waypoint does so as for
// a request to the Service echo (VIP 10.96.0.10:80) that its routes send to
// the server pod, with its whole request path (policy, route, load
// balancing, metrics) on and the access log off, as nginx's is.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/netns"
)

var (
	flagTools     = flag.String("tools", "bench/.tools", "directory with fortio and waypoint")
	flagRounds    = flag.Int("rounds", 1, "rounds (ways interleaved in each)")
	flagDuration  = flag.Duration("t", 10*time.Second, "duration of each fortio run")
	flagOut       = flag.String("out", "", "write the samples as JSON to this file")
	flagWaypoint2 = flag.String("waypoint2", "", "another waypoint binary, measured as a fifth interleaved way (\"waypoint2\") to compare two builds")
	flagWays      = flag.String("ways", "direct,waypoint,nginx,haproxy,waypoint2", "ways to measure (waypoint2 only with -waypoint2)")
	flagDiag      = flag.Bool("diag", false, "after the rounds, one more run per proxy and load under perf stat: system calls and context switches per request")
	flagPerf      = flag.String("perf", "", "after the rounds, record the waypoint with perf record -g during one more max-load run, into this directory")
	flagHold      = flag.Bool("hold", false, "once every way answers, print the processes and URLs and keep everything running until interrupted (for profiling by hand), instead of measuring")
)

const manifests = `
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: bench}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: bench, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.10
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench, labels: {app: echo}}
spec: {nodeName: node-a, containers: [{name: fortio}]}
status: {podIP: 10.244.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: bench, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: node-a, serviceAccountName: waypoint, containers: [{name: waypoint}]}
status: {podIP: 10.244.1.2}
`

const nginxConf = `worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/nginx-body;
  proxy_temp_path %[1]s/nginx-proxy;
  upstream up { server 10.244.2.2:8080; keepalive 64; }
  server {
    listen 127.0.0.1:18081;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`

const haproxyConf = `global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:18082
  default_backend be
backend be
  http-reuse always
  server s1 10.244.2.2:8080 maxconn 1000
`

type way struct {
	name string
	url  string
	proc *exec.Cmd // nil for direct
}

type sample struct {
	Way, Load     string
	Round         int
	QPS           float64
	P50, P90, P99 float64 // ms
	Errors        int
	CPUPer1000    float64 // vCPU seconds per second per 1000 rps
	RSSMiB        float64
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	tools, err := filepath.Abs(*flagTools)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "waypoint-bench-")
	if err != nil {
		return err
	}
	log.Printf("work dir %s (process logs; removed after a successful run)", work)

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
	pod := func(name, ip string) (*netns.NS, error) {
		ns, err := netns.New()
		if err != nil {
			return nil, err
		}
		if err := netns.AttachToBridge(bridge, "br0", ns, "eth0", "veth-"+name, netip.MustParsePrefix(ip+"/16")); err != nil {
			return nil, err
		}
		return ns, netns.AddRoute(ns, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.244.0.1"), "eth0")
	}
	proxyNS, err := pod("proxy", "10.244.1.2")
	if err != nil {
		return err
	}
	defer proxyNS.Close()
	serverNS, err := pod("server", "10.244.2.2")
	if err != nil {
		return err
	}
	defer serverNS.Close()

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			p.Wait()
		}
	}()
	start := func(ns *netns.NS, name string, args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		lf, err := os.Create(filepath.Join(work, name+".log"))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := netns.StartCmd(ns, cmd); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		return cmd, nil
	}
	fortio := filepath.Join(tools, "fortio")
	if _, err := start(serverNS, "fortio-server", fortio, "server", "-http-port", "10.244.2.2:8080", "-grpc-port", "disabled", "-redirect-port", "disabled"); err != nil {
		return err
	}

	// The waypoint's control plane, listening on the proxy namespace's loopback.
	dir := filepath.Join(work, "manifests")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(manifests), 0o644); err != nil {
		return err
	}
	authority, err := ca.New(ca.Options{TrustDomain: "cluster.local", Dir: filepath.Join(work, "ca")})
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var cp *controlplane.Server
	if err := netns.Do(proxyNS, func() error {
		cp, err = controlplane.New(controlplane.Options{Source: &controlplane.FileSource{Paths: []string{dir}, Log: quiet}, Mesh: model.DefaultMeshConfig(),
			CA: authority, GRPCAddr: "127.0.0.1:15012", HTTPAddr: "127.0.0.1:15014", Log: quiet})
		return err
	}); err != nil {
		return err
	}
	cpCtx, cpCancel := context.WithCancel(ctx)
	defer cpCancel()
	go cp.Run(cpCtx)
	<-cp.Ready()
	token, root := filepath.Join(work, "token"), filepath.Join(work, "root.pem")
	os.WriteFile(token, []byte(authority.NodeToken("node-a")), 0o600)
	os.WriteFile(root, []byte(strings.Join(authority.TrustBundlePEM(), "")), 0o644)

	ways := []*way{{name: "direct", url: "http://10.244.2.2:8080/echo"}}
	// Waypoint i serves plain HTTP on 127.0.0.1:18080+3i and its HBONE,
	// admin, metrics and readiness ports 100i above the usual ones; both
	// are pods of the same Gateway.
	startWaypoint := func(name, bin string, i int) error {
		port := func(base int) string { return "127.0.0.1:" + strconv.Itoa(base+100*i) }
		plain := "127.0.0.1:" + strconv.Itoa(18080+3*i)
		wp, err := start(proxyNS, name, bin, "--node", "node-a", "--control-plane", "127.0.0.1:15012",
			"--token-file", token, "--root-cert", root, "--namespace", "bench", "--gateway", "waypoint", "--service-account", "waypoint",
			"--hbone-addr", port(15008), "--admin-addr", port(15000), "--metrics-addr", port(15020), "--ready-addr", port(15021),
			"--access-log", "", "--plain-http", plain+"=10.96.0.10:80")
		if err != nil {
			return err
		}
		ways = append(ways, &way{name: name, url: "http://" + plain + "/echo", proc: wp})
		return nil
	}
	if err := startWaypoint("waypoint", filepath.Join(tools, "waypoint"), 0); err != nil {
		return err
	}
	if *flagWaypoint2 != "" {
		if err := startWaypoint("waypoint2", *flagWaypoint2, 1); err != nil {
			return err
		}
	}
	os.WriteFile(filepath.Join(work, "nginx.conf"), []byte(fmt.Sprintf(nginxConf, work)), 0o644)
	ng, err := start(proxyNS, "nginx", "nginx", "-c", filepath.Join(work, "nginx.conf"))
	if err != nil {
		return err
	}
	ways = append(ways, &way{name: "nginx", url: "http://127.0.0.1:18081/echo", proc: ng})
	os.WriteFile(filepath.Join(work, "haproxy.cfg"), []byte(haproxyConf), 0o644)
	hp, err := start(proxyNS, "haproxy", "haproxy", "-db", "-f", filepath.Join(work, "haproxy.cfg"))
	if err != nil {
		return err
	}
	ways = append(ways, &way{name: "haproxy", url: "http://127.0.0.1:18082/echo", proc: hp})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: netns.Dialer(proxyNS, netns.SocketOptions{})}}
	for _, w := range ways {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := client.Get(w.url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s never answered 200 at %s (logs in %s): %v", w.name, w.url, work, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	if *flagHold {
		for _, w := range ways {
			pid := 0
			if w.proc != nil {
				pid = w.proc.Process.Pid
			}
			log.Printf("%-9s pid %-7d %s", w.name, pid, w.url)
		}
		log.Printf("holding; the proxy namespace is /proc/%d/ns/net (nsenter --net=...); interrupt to end", ways[1].proc.Process.Pid)
		<-ctx.Done()
		cpCancel()
		return os.RemoveAll(work)
	}

	want := map[string]bool{}
	for _, n := range strings.Split(*flagWays, ",") {
		want[strings.TrimSpace(n)] = true
	}
	measured := ways[:0]
	for _, w := range ways {
		if want[w.name] {
			measured = append(measured, w)
		}
	}
	ways = measured
	if len(ways) == 0 {
		return fmt.Errorf("-ways %q names none of direct, waypoint, nginx, haproxy, waypoint2", *flagWays)
	}

	var samples []sample
	for round := 1; round <= *flagRounds; round++ {
		for i := range ways {
			w := ways[(i+round-1)%len(ways)]
			for _, qps := range []string{"1000", "0"} {
				s, err := measure(ctx, proxyNS, fortio, work, w, qps)
				if err != nil {
					return err
				}
				s.Round = round
				samples = append(samples, s)
				log.Printf("round %d %-9s qps=%-4s achieved %7.0f  p50 %.3f p90 %.3f p99 %.3f ms  errors %d  vCPU/1000rps %.3f  RSS %.1f MiB",
					round, w.name, qps, s.QPS, s.P50, s.P90, s.P99, s.Errors, s.CPUPer1000, s.RSSMiB)
			}
		}
	}
	report(samples)
	if *flagDiag {
		if err := diag(ctx, proxyNS, fortio, work, ways); err != nil {
			return err
		}
	}
	if *flagPerf != "" {
		if err := perfRecord(ctx, proxyNS, fortio, work, ways); err != nil {
			return err
		}
	}
	if *flagOut != "" {
		b, _ := json.MarshalIndent(samples, "", "  ")
		if err := os.WriteFile(*flagOut, b, 0o644); err != nil {
			return err
		}
	}
	cpCancel() // before its manifests go
	return os.RemoveAll(work)
}

// measure runs fortio (16 connections, 1 KiB payload each way) against a
// way, with the proxy's CPU time and peak RSS over the run.
func measure(ctx context.Context, ns *netns.NS, fortio, work string, w *way, qps string) (sample, error) {
	s := sample{Way: w.name, Load: map[string]string{"0": "max"}[qps]}
	if s.Load == "" {
		s.Load = qps + " rps"
	}
	var pids []int
	if w.proc != nil {
		pids = group(w.proc.Process.Pid)
		for _, pid := range pids {
			os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
		}
	}
	cpu0 := cpuTicks(pids)
	t0 := time.Now()
	out := filepath.Join(work, "fortio.json")
	cmd := exec.CommandContext(ctx, fortio, "load", "-qps", qps, "-c", "16", "-t", flagDuration.String(), "-payload-size", "1024",
		"-r", "0.00001", "-p", "50,90,99", "-json", out, "-quiet", w.url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := netns.RunCmd(ns, cmd); err != nil {
		return s, fmt.Errorf("fortio against %s: %w", w.name, err)
	}
	wall := time.Since(t0).Seconds()
	cpu := float64(cpuTicks(pids)-cpu0) / 100 // USER_HZ
	var r struct {
		ActualQPS         float64
		DurationHistogram struct {
			Percentiles []struct{ Percentile, Value float64 }
		}
		RetCodes map[string]int
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return s, err
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
	if len(pids) > 0 && s.QPS > 0 {
		s.CPUPer1000 = cpu / wall / (s.QPS / 1000)
		for _, pid := range pids {
			s.RSSMiB += float64(statusKiB(pid, "VmHWM:")) / 1024
		}
	}
	return s, nil
}

// diag counts the system calls and context switches of each proxy's
// processes per request, with perf stat during one more run at each load.
func diag(ctx context.Context, ns *netns.NS, fortio, work string, ways []*way) error {
	fmt.Printf("\n%-9s %-9s %14s %14s\n", "way", "load", "syscalls/req", "ctxsw/req")
	for _, w := range ways {
		if w.proc == nil {
			continue
		}
		for _, qps := range []string{"1000", "0"} {
			var pids []string
			for _, pid := range group(w.proc.Process.Pid) {
				pids = append(pids, strconv.Itoa(pid))
			}
			out := filepath.Join(work, "perf-stat.csv")
			perf := exec.CommandContext(ctx, "perf", "stat", "-x", ",", "-o", out, "-e", "raw_syscalls:sys_enter,context-switches", "-p", strings.Join(pids, ","))
			s, err := measureUnder(perf, func() (sample, error) { return measure(ctx, ns, fortio, work, w, qps) })
			if err != nil {
				return err
			}
			b, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			counts := map[string]float64{}
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Split(l, ","); len(f) > 2 {
					v, _ := strconv.ParseFloat(f[0], 64)
					counts[f[2]] = v
				}
			}
			reqs := s.QPS * flagDuration.Seconds()
			fmt.Printf("%-9s %-9s %14.1f %14.2f\n", w.name, s.Load, counts["raw_syscalls:sys_enter"]/reqs, counts["context-switches"]/reqs)
		}
	}
	return nil
}

// perfRecord records the waypoint's call graphs (perf record -g) during
// one more run at each load, into -perf DIR/waypoint-{1000,max}.perf.data.
func perfRecord(ctx context.Context, ns *netns.NS, fortio, work string, ways []*way) error {
	for _, w := range ways {
		if w.name != "waypoint" {
			continue
		}
		if err := os.MkdirAll(*flagPerf, 0o755); err != nil {
			return err
		}
		for _, qps := range []string{"1000", "0"} {
			out := filepath.Join(*flagPerf, "waypoint-"+map[string]string{"1000": "1000", "0": "max"}[qps]+".perf.data")
			perf := exec.CommandContext(ctx, "perf", "record", "-g", "-F", "999", "-o", out, "-p", strconv.Itoa(w.proc.Process.Pid))
			perf.Stdout, perf.Stderr = os.Stderr, os.Stderr
			s, err := measureUnder(perf, func() (sample, error) { return measure(ctx, ns, fortio, work, w, qps) })
			if err != nil {
				return err
			}
			log.Printf("perf run: %s at %.0f qps, %.3f vCPU/1000rps; profile in %s", w.name, s.QPS, s.CPUPer1000, out)
		}
	}
	return nil
}

// group lists the processes of pid's process group (nginx's master and
// workers).
func group(pid int) []int {
	out := []int{pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func cpuTicks(pids []int) int64 {
	var t int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		sy, _ := strconv.ParseInt(f[12], 10, 64)
		t += u + sy
	}
	return t
}

func statusKiB(pid int, key string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return 0
}

// report prints medians per way and load, and the ratios.
func report(samples []sample) {
	type key struct{ way, load string }
	med := map[key]sample{}
	groups := map[key][]sample{}
	for _, s := range samples {
		k := key{s.Way, s.Load}
		groups[k] = append(groups[k], s)
	}
	median := func(ss []sample, f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		sort.Float64s(v)
		if len(v)%2 == 0 {
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		return v[len(v)/2]
	}
	for k, ss := range groups {
		med[k] = sample{Way: k.way, Load: k.load, QPS: median(ss, func(s sample) float64 { return s.QPS }),
			P50: median(ss, func(s sample) float64 { return s.P50 }), P90: median(ss, func(s sample) float64 { return s.P90 }),
			P99: median(ss, func(s sample) float64 { return s.P99 }), CPUPer1000: median(ss, func(s sample) float64 { return s.CPUPer1000 }),
			RSSMiB: median(ss, func(s sample) float64 { return s.RSSMiB })}
	}
	fmt.Printf("\n%-9s %-9s %9s %8s %8s %8s %14s %9s\n", "way", "load", "qps", "p50 ms", "p90 ms", "p99 ms", "vCPU/1000rps", "RSS MiB")
	for _, load := range []string{"1000 rps", "max"} {
		for _, w := range []string{"direct", "waypoint", "waypoint2", "nginx", "haproxy"} {
			s, ok := med[key{w, load}]
			if !ok {
				continue
			}
			fmt.Printf("%-9s %-9s %9.0f %8.3f %8.3f %8.3f %14.3f %9.1f\n", w, load, s.QPS, s.P50, s.P90, s.P99, s.CPUPer1000, s.RSSMiB)
		}
	}
	ng, d, nm := med[key{"nginx", "1000 rps"}], med[key{"direct", "1000 rps"}], med[key{"nginx", "max"}]
	fmt.Println()
	for _, name := range []string{"waypoint", "waypoint2"} {
		wp, ok := med[key{name, "1000 rps"}]
		if !ok {
			continue
		}
		wm := med[key{name, "max"}]
		fmt.Printf("%s/nginx vCPU per 1000 rps: %.2f at 1000 rps, %.2f at max (target ≤ 1.5)\n", name, wp.CPUPer1000/ng.CPUPer1000, wm.CPUPer1000/nm.CPUPer1000)
		fmt.Printf("%s added p99 at 1000 rps: %.3f ms, nginx %.3f ms, ratio %.2f (target ≤ 2)\n", name, wp.P99-d.P99, ng.P99-d.P99, (wp.P99-d.P99)/(ng.P99-d.P99))
		fmt.Printf("%s peak RSS at 16 connections: %.1f MiB (target ≤ 40)\n", name, max(wp.RSSMiB, wm.RSSMiB))
	}
}

// measureUnder runs one measurement while perf watches, and stops perf
// (SIGINT, so it writes its output) when the measurement ends.
func measureUnder(perf *exec.Cmd, run func() (sample, error)) (sample, error) {
	if err := perf.Start(); err != nil {
		return sample{}, fmt.Errorf("perf: %w", err)
	}
	s, err := run()
	perf.Process.Signal(os.Interrupt)
	perf.Wait()
	return s, err
}
