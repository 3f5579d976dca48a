// Command zonal is the experiment of seed 000 on the local cluster: the
// same fixed load from a client in each of three zones to an echo Service
// with backends in every zone behind a waypoint (one instance per zone),
// with locality off (the DestinationRule's round robin over every endpoint)
// and on (trafficDistribution: PreferClose), while zone-c is healthy and
// while its backends answer 300 ms late; then, locality on, every zone-a
// backend is deleted and brought back.
//
// It drives the cluster with the ambit CLI (up, apply, delete, exec, top)
// and fortio inside the client pods, and prints a table: cross-zone share
// of requests and of bytes (from the proxies' own metrics, 'ambit top
// zones -o json'), p50/p99 and errors (from fortio), per mode and phase.
// Run it through bench/zonal.sh.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/local"
)

var (
	bin      = flag.String("bin", "bench/.tools/zonal", "directory with ambit, ztunnel and waypoint")
	fortio   = flag.String("fortio", "bench/.tools/fortio", "fortio binary")
	example  = flag.String("f", "examples/zonal/zonal.yaml", "the zonal example manifest")
	name     = flag.String("name", "zonal", "local cluster name")
	qps      = flag.Int("qps", 100, "requests per second from each zone's client")
	conns    = flag.Int("c", 32, "connections per client (enough that slow answers do not hold the rate down)")
	dur      = flag.Duration("t", 30*time.Second, "length of each measured phase")
	delay    = flag.String("delay", "300ms", "how much later zone-c's backends answer when degraded")
	out      = flag.String("out", "", "also write the report to this file")
	keepUp   = flag.Bool("keep", false, "leave the cluster running at the end")
	warmup   = flag.Duration("warmup", 4*time.Second, "unmeasured load before each phase")
	reps     = flag.Int("reps", 3, "how many times the locality-on healthy and degraded phases run, in turn; the degraded/healthy p99 ratio is the median of the repetitions' ratios (a run's p99 moves with whatever else the 2-vCPU machine does)")
	uniform  = flag.Bool("uniform", true, "spread each client's connections evenly over fortio's pacing period (fortio -uniform); false sends all of a client's connections at the same instant, in bursts of -c requests")
	zones    = []string{"zone-a", "zone-b", "zone-c"}
	service  = "echo.zonal.svc.cluster.local"
	workDir  string
	logLines bytes.Buffer
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zonal:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	line := fmt.Sprintf("%s "+format, append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
	fmt.Fprintln(os.Stderr, line)
	fmt.Fprintln(&logLines, line)
}

// phase is one measured load run.
type phase struct {
	Mode, Name string
	Rep        int // 1-based repetition of the mode's healthy and degraded phases
	Requests   uint64
	Errors     uint64
	CrossReq   float64 // share of requests served in another zone than the client's
	CrossBytes float64 // share of bytes (both hops) that crossed zones
	Bytes      float64
	P50, P99   float64 // ms, all clients merged
	PerClient  map[string]clientResult
	Note       string
	Timeline   []second
}

type clientResult struct {
	Requests, Errors uint64
	P50, P99         float64
	QPS              float64
}

// second is one second of a timeline: requests served per zone, by the
// clients' zone.
type second struct {
	T      float64                      `json:"t"`
	Served map[string]map[string]uint64 `json:"served"` // client zone → serving zone → requests
}

func run() error {
	var err error
	if workDir, err = os.MkdirTemp("", "ambit-zonal-"); err != nil {
		return err
	}
	defer os.RemoveAll(workDir)
	base, err := os.ReadFile(*example)
	if err != nil {
		return err
	}
	ambit(nil, "down", "--name", *name) // leftovers of an earlier run
	setDelay("0s")
	if err := ambitErr("up", "--detach", "--name", *name, "-f", writeVariant(base, false)); err != nil {
		return err
	}
	if !*keepUp {
		defer ambit(nil, "down", "--name", *name)
	}
	if *reps < 1 {
		return fmt.Errorf("-reps %d: want at least 1", *reps)
	}
	var phases []*phase
	for _, mode := range []string{"off", "on"} {
		on := mode == "on"
		// Only the Service changes: no pod is replaced.
		if err := ambitErr("apply", "--name", *name, "-f", writeVariant(base, on)); err != nil {
			return err
		}
		time.Sleep(2 * time.Second) // the proxies have it well within this
		n := 1
		if on {
			n = *reps
		}
		for r := 1; r <= n; r++ {
			logf("locality %s, healthy (%d of %d)", mode, r, n)
			p, err := measure(mode, "healthy", *dur, nil)
			if err != nil {
				return err
			}
			p.Rep = r
			phases = append(phases, p)

			logf("locality %s, zone-c degraded (+%s) (%d of %d)", mode, *delay, r, n)
			p, err = measure(mode, "zone-c degraded", *dur, []event{{at: 3 * time.Second, do: func() { setDelay(*delay) }, what: "zone-c degraded"}})
			if err != nil {
				return err
			}
			p.Rep = r
			p.Note = steeredAway(p.Timeline, 3)
			phases = append(phases, p)
			setDelay("0s")
			// The next phase is meant to start healthy: keep the load on
			// until every waypoint has seen zone-c recover (fail-back is
			// deliberately slow: probes every 5 s, each moving the average
			// at most halfway).
			if err := settle(90 * time.Second); err != nil {
				return err
			}
		}
	}

	// Locality on: every zone-a backend process is killed, and kept dead
	// for 15 s; then the supervisor restarts them.
	logf("locality on, zone-a backends killed for 15 s")
	stop := make(chan struct{})
	p, err := measure("on", "zone-a killed", 45*time.Second, []event{
		{at: 8 * time.Second, do: func() { go killZoneA(stop) }, what: "zone-a backends killed (and their restarts)"},
		{at: 23 * time.Second, do: func() { close(stop) }, what: "zone-a backends allowed back"},
	})
	if err != nil {
		return err
	}
	p.Note = returned(p.Timeline, 23)
	phases = append(phases, p)

	report := render(phases)
	fmt.Print(report)
	if *out != "" {
		raw, _ := json.MarshalIndent(phases, "", "  ")
		if err := os.WriteFile(*out, []byte(report+"\nLog:\n"+logLines.String()), 0o644); err != nil {
			return err
		}
		return os.WriteFile(strings.TrimSuffix(*out, filepath.Ext(*out))+".json", raw, 0o644)
	}
	return nil
}

// writeVariant writes the example with locality on or off (the
// trafficDistribution line); zone-c's backends read their extra delay from
// delayFile, so degrading them replaces nothing.
func writeVariant(base []byte, on bool) string {
	docs := strings.Split(string(base), "\n---\n")
	for i, d := range docs {
		if !on {
			d = strings.Replace(d, "  trafficDistribution: PreferClose\n", "", 1)
		}
		if strings.Contains(d, "name: echo-c,") {
			d = strings.Replace(d, `command: ["ambit", "app", "echo"]`, `command: ["ambit", "app", "echo", "--delay-file", "`+delayFile()+`"]`, 1)
		}
		docs[i] = d
	}
	dir := filepath.Join(workDir, fmt.Sprintf("locality-%v", on))
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "zonal.yaml"), []byte(strings.Join(docs, "\n---\n")), 0o644)
	return dir
}

func delayFile() string { return filepath.Join(workDir, "zone-c-delay") }

// setDelay makes zone-c's backends answer d late (their --delay-file).
func setDelay(d string) {
	if err := os.WriteFile(delayFile(), []byte(d+"\n"), 0o644); err != nil {
		logf("delay file: %v", err)
	}
}

// killZoneA kills every zone-a backend process, and every restart of one,
// until stop is closed; then the cluster's supervisor restarts them.
func killZoneA(stop <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if st, err := local.LoadState(*name); err == nil {
			for _, p := range st.Pods {
				if p.Namespace == "zonal" && strings.HasPrefix(p.Name, "echo-a-") {
					for _, c := range p.Containers {
						if c.PID > 0 {
							syscall.Kill(c.PID, syscall.SIGKILL)
						}
					}
				}
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func ambit(stdout io.Writer, args ...string) error {
	cmd := exec.Command(filepath.Join(*bin, "ambit"), args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ambit %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func ambitErr(args ...string) error { return ambit(io.Discard, args...) }

// zoneRow is a row of 'ambit top zones -o json'.
type zoneRow struct {
	Service, Kind, From, To string
	Count, Errors           uint64
	Bytes                   float64
}

func scrape() (map[string]zoneRow, error) {
	var b bytes.Buffer
	if err := ambit(&b, "top", "zones", "--name", *name, "--once", "-o", "json"); err != nil {
		return nil, err
	}
	var rows []zoneRow
	if err := json.Unmarshal(b.Bytes(), &rows); err != nil {
		return nil, err
	}
	m := map[string]zoneRow{}
	for _, r := range rows {
		if r.Service == service {
			m[r.Kind+"|"+r.From+"|"+r.To] = r
		}
	}
	return m, nil
}

func diff(a, b map[string]zoneRow) map[string]zoneRow {
	out := map[string]zoneRow{}
	for k, r := range b {
		p := a[k]
		r.Count -= min(p.Count, r.Count)
		r.Errors -= min(p.Errors, r.Errors)
		r.Bytes = max(r.Bytes-p.Bytes, 0)
		out[k] = r
	}
	return out
}

type event struct {
	at   time.Duration
	do   func()
	what string
}

// measure runs the load from every client for d, with events at their
// times, sampling the proxies' metrics every second.
func measure(mode, name string, d time.Duration, events []event) (*phase, error) {
	// The load runs continuously in the experiment's story: a few seconds
	// of it, not measured, let the proxies settle after the last change
	// (a zone that recovered while no traffic flowed is seen to).
	if *warmup > 0 {
		var wg sync.WaitGroup
		for _, z := range zones {
			wg.Go(func() { load("client-"+z[len(z)-1:], *warmup) })
		}
		wg.Wait()
	}
	before, err := scrape()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]fortioResult, len(zones))
	errs := make([]error, len(zones))
	for i, z := range zones {
		wg.Go(func() {
			results[i], errs[i] = load("client-"+z[len(z)-1:], d)
		})
	}
	for _, e := range events {
		wg.Go(func() {
			time.Sleep(time.Until(start.Add(e.at)))
			logf("  t=%.1fs %s", time.Since(start).Seconds(), e.what)
			e.do()
		})
	}
	var timeline []second
	prev := before
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
sampling:
	for {
		select {
		case <-done:
			break sampling
		case <-tick.C:
			cur, err := scrape()
			if err != nil {
				continue
			}
			s := second{T: time.Since(start).Seconds(), Served: map[string]map[string]uint64{}}
			for _, r := range diff(prev, cur) {
				if r.Kind == "L7" {
					if s.Served[r.From] == nil {
						s.Served[r.From] = map[string]uint64{}
					}
					s.Served[r.From][r.To] += r.Count
				}
			}
			timeline = append(timeline, s)
			prev = cur
		}
	}
	tick.Stop()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	time.Sleep(1500 * time.Millisecond) // connections closed: their L4 bytes are counted
	after, err := scrape()
	if err != nil {
		return nil, err
	}
	p := &phase{Mode: mode, Name: name, PerClient: map[string]clientResult{}, Timeline: timeline}
	var l7, l4, cross7, crossB float64
	for _, r := range diff(before, after) {
		if r.From != r.To {
			crossB += r.Bytes
		}
		p.Bytes += r.Bytes
		if r.Kind == "L7" {
			l7 += float64(r.Count)
			if r.From != r.To {
				cross7 += float64(r.Count)
			}
		} else {
			l4 += float64(r.Count)
		}
	}
	p.CrossReq, p.CrossBytes = cross7/math.Max(l7, 1), crossB/math.Max(p.Bytes, 1)
	var all []bucket
	for i, z := range zones {
		r := results[i]
		ok := r.RetCodes["200"]
		c := clientResult{Requests: r.DurationHistogram.Count, Errors: r.DurationHistogram.Count - ok, QPS: r.ActualQPS,
			P50: percentile(r.DurationHistogram.Data, 0.5), P99: percentile(r.DurationHistogram.Data, 0.99)}
		p.PerClient[z] = c
		p.Requests += c.Requests
		p.Errors += c.Errors
		all = append(all, r.DurationHistogram.Data...)
	}
	p.P50, p.P99 = percentile(all, 0.5), percentile(all, 0.99)
	logf("  %d requests, %d errors, cross-zone %.1f%% of requests, %.1f%% of bytes, p50 %.2fms p99 %.2fms", p.Requests, p.Errors, 100*p.CrossReq, 100*p.CrossBytes, p.P50, p.P99)
	return p, nil
}

type bucket struct {
	Start, End float64 // seconds
	Count      uint64
}

type fortioResult struct {
	ActualQPS         float64
	RetCodes          map[string]uint64
	DurationHistogram struct {
		Count uint64
		Data  []bucket
	}
}

func load(client string, d time.Duration) (fortioResult, error) {
	var r fortioResult
	path := filepath.Join(workDir, client+".json")
	fortioBin, _ := filepath.Abs(*fortio)
	args := []string{"exec", "--name", *name, "-n", "zonal", "deploy/" + client, "--", fortioBin, "load", "-quiet",
		"-qps", fmt.Sprint(*qps), "-c", fmt.Sprint(*conns), "-t", d.String(), "-r", "0.0001", "-timeout", "5s",
		"-allow-initial-errors", "-json", path}
	if *uniform {
		args = append(args, "-uniform")
	}
	args = append(args, "http://echo/")
	if err := ambit(io.Discard, args...); err != nil {
		// fortio exits non-zero when some requests failed; the JSON says how many.
		if _, serr := os.Stat(path); serr != nil {
			return r, err
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

// percentile of fortio histogram buckets (several runs' merged), in ms:
// linear within the bucket holding the rank.
func percentile(data []bucket, q float64) float64 {
	bs := slices.Clone(data)
	slices.SortFunc(bs, func(a, b bucket) int {
		if a.Start != b.Start {
			return cmpF(a.Start, b.Start)
		}
		return cmpF(a.End, b.End)
	})
	var total uint64
	for _, b := range bs {
		total += b.Count
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum float64
	for _, b := range bs {
		if cum+float64(b.Count) >= rank {
			return 1000 * (b.Start + (b.End-b.Start)*(rank-cum)/float64(b.Count))
		}
		cum += float64(b.Count)
	}
	return 1000 * bs[len(bs)-1].End
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func share(s second, from, to string) (float64, uint64) {
	var n uint64
	for _, c := range s.Served[from] {
		n += c
	}
	if n == 0 {
		return 0, 0
	}
	return float64(s.Served[from][to]) / float64(n), n
}

// steeredAway: seconds after the degradation (at t=at) from which at most
// 5% of every second's requests are served in zone-c, for good.
func steeredAway(tl []second, at float64) string {
	last := -1.0
	for _, s := range tl {
		var toC, n uint64
		for _, m := range s.Served {
			for z, c := range m {
				n += c
				if z == "zone-c" {
					toC += c
				}
			}
		}
		if n > 0 && float64(toC) > 0.05*float64(n) {
			last = s.T
		}
	}
	switch {
	case last < 0 || last <= at:
		return "zone-c served ≤5% of requests from the degradation on"
	case last >= tl[len(tl)-1].T-1:
		return "zone-c kept >5% of requests to the end"
	}
	return fmt.Sprintf("steered away from zone-c %.0f s after it degraded (every later second ≤5%% to zone-c)", last-at)
}

// returned: seconds after the zone-a backends came back (t=at) until zone-a
// served most of zone-a's clients' requests again.
func returned(tl []second, at float64) string {
	var gone []string
	for _, s := range tl {
		if f, n := share(s, "zone-a", "zone-a"); n > 0 && f < 0.05 && s.T < at {
			gone = append(gone, fmt.Sprintf("%.0f", s.T))
		}
	}
	for _, s := range tl {
		if s.T <= at {
			continue
		}
		if f, _ := share(s, "zone-a", "zone-a"); f >= 0.5 {
			return fmt.Sprintf("zone-a's clients served elsewhere while zone-a was down (seconds %s); served in zone-a again %.0f s after its backends came back", strings.Join(gone, ","), s.T-at)
		}
	}
	return "zone-a's clients were not served in zone-a again before the end"
}

func render(ps []*phase) string {
	var b strings.Builder
	pacing := "connections spread evenly (-uniform)"
	if !*uniform {
		pacing = "connections in step"
	}
	fmt.Fprintf(&b, "Zonal routing experiment (seed 000): %d qps from each of 3 zones' clients (fortio, %d connections each, %s), %s per phase; zone-c degraded = its backends +%s\n\n", *qps, *conns, pacing, *dur, *delay)
	fmt.Fprintf(&b, "%-16s %-9s %9s %7s %10s %11s %9s %9s\n", "phase", "locality", "requests", "errors", "cross-req", "cross-bytes", "p50 ms", "p99 ms")
	for _, p := range ps {
		fmt.Fprintf(&b, "%-16s %-9s %9d %7d %9.1f%% %10.1f%% %9.2f %9.2f\n", p.Name, p.modeRep(), p.Requests, p.Errors, 100*p.CrossReq, 100*p.CrossBytes, p.P50, p.P99)
	}
	fmt.Fprintln(&b)
	find := func(mode, name string) *phase {
		for _, p := range ps {
			if p.Mode == mode && p.Name == name {
				return p
			}
		}
		return nil
	}
	// Locality on: each repetition's healthy and degraded phases.
	var pairs [][2]*phase
	for _, p := range ps {
		if p.Mode == "on" && p.Name == "healthy" {
			for _, d := range ps {
				if d.Mode == "on" && d.Name == "zone-c degraded" && d.Rep == p.Rep {
					pairs = append(pairs, [2]*phase{p, d})
				}
			}
		}
	}
	if off := find("off", "healthy"); off != nil && off.CrossBytes > 0 {
		for _, hd := range pairs {
			fmt.Fprintf(&b, "healthy%s: cross-zone bytes reduced by %.1f%% with locality on (target ≥ 82%%)\n", hd[0].repSuffix(), 100*(1-hd[0].CrossBytes/off.CrossBytes))
		}
	}
	var ratios []float64
	for _, hd := range pairs {
		h, d := hd[0], hd[1]
		ratios = append(ratios, d.P99/h.P99)
		fmt.Fprintf(&b, "degraded%s, locality on: p99 %.2f ms = %.2f × the healthy p99, %d failed requests (target 0); %s\n", d.repSuffix(), d.P99, d.P99/h.P99, d.Errors, d.Note)
	}
	if len(ratios) > 0 {
		fmt.Fprintf(&b, "degraded/healthy p99, median of %d repetitions: %.2f × (target ≤ 1.5)\n", len(ratios), medianOf(ratios))
	}
	if d := find("off", "zone-c degraded"); d != nil {
		fmt.Fprintf(&b, "degraded, locality off: %s\n", d.Note)
	}
	if k := find("on", "zone-a killed"); k != nil {
		a := k.PerClient["zone-a"]
		fmt.Fprintf(&b, "zone-a killed, locality on: %d of %d requests failed (%.2f%%, target < 1%%), zone-a's client %d of %d; %s\n",
			k.Errors, k.Requests, 100*float64(k.Errors)/math.Max(float64(k.Requests), 1), a.Errors, a.Requests, k.Note)
	}
	fmt.Fprintln(&b, "\nPer client (p50/p99 ms, errors):")
	for _, p := range ps {
		fmt.Fprintf(&b, "  %-16s %-6s", p.Name, p.modeRep())
		for _, z := range zones {
			c := p.PerClient[z]
			fmt.Fprintf(&b, "  %s %.2f/%.2f %d", z, c.P50, c.P99, c.Errors)
		}
		fmt.Fprintln(&b)
	}
	return b.String()
}

// modeRep is the table's locality column: the mode, and the repetition
// when the mode's phases ran more than once.
func (p *phase) modeRep() string { return p.Mode + p.repSuffix() }

func (p *phase) repSuffix() string {
	if p.Mode == "on" && p.Name != "zone-a killed" && *reps > 1 {
		return fmt.Sprintf(" #%d", p.Rep)
	}
	return ""
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// settle runs unmeasured load until no waypoint still holds zone-c
// degraded, as their logs say, or fails after limit.
func settle(limit time.Duration) error {
	start := time.Now()
	for {
		var wg sync.WaitGroup
		for _, z := range zones {
			wg.Go(func() { load("client-"+z[len(z)-1:], 5*time.Second) })
		}
		wg.Wait()
		degraded, err := zoneCDegraded()
		if err != nil {
			return err
		}
		if degraded == 0 {
			logf("  zone-c recovered at every waypoint %.0f s after its delay was removed", time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > limit {
			return fmt.Errorf("zone-c still degraded at %d waypoint(s) %s after its delay was removed", degraded, limit)
		}
	}
}

// zoneCDegraded counts the waypoints whose last zone-c health event is
// "zone degraded".
func zoneCDegraded() (int, error) {
	logs, err := filepath.Glob(filepath.Join("/run/ambit", *name, "logs", "*waypoint*.log"))
	if err != nil || len(logs) == 0 {
		return 0, fmt.Errorf("no waypoint logs under /run/ambit/%s/logs: %v", *name, err)
	}
	n := 0
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		last := ""
		for line := range strings.Lines(string(b)) {
			if !strings.Contains(line, " zone=zone-c ") {
				continue
			}
			switch {
			case strings.Contains(line, `msg="zone degraded"`):
				last = "degraded"
			case strings.Contains(line, `msg="zone recovered"`):
				last = "recovered"
			}
		}
		if last == "degraded" {
			n++
		}
	}
	return n, nil
}
