package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/telemetry"
)

func topCommand() *cli.Command {
	var name string
	var interval time.Duration
	var once bool
	var output string
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&output, "o", "", "output format: json (with --once: the raw counters per zone pair, for scripts)")
		fs.StringVar(&name, "name", "ambit", "cluster name")
		fs.DurationVar(&interval, "interval", 2*time.Second, "refresh period; each screen shows the traffic of the last period")
		fs.BoolVar(&once, "once", false, "print the totals since the proxies started, once, and exit")
	}}
	return &cli.Command{
		Name:  "top",
		Usage: "zones [--name NAME] [--interval 2s] [--once [-o json]]",
		Short: "Show traffic between zones per service, live from the proxies' metrics",
		Long: `Read the metrics of the local cluster NAME's proxies — every node's ztunnel
(:15020 in the node's network namespace) and every waypoint instance — and
print, per destination service:

  L7 (reported by waypoints): requests, bytes (request + response), errors
  (5xx), the cross-zone share of requests and bytes, and p50/p99 latency per
  (source zone, destination zone), from istio_request_duration_milliseconds.
  L4 (reported by the source ztunnel): connections opened and bytes per zone
  pair, and their cross-zone share.

A zone pair is the client's zone and the zone of the endpoint that served it
(for L4, of the endpoint or waypoint instance connected to). Without --once
the screen is redrawn every --interval with the traffic of that interval.`,
		Flags: lf.Flags,
		Run: func(ctx context.Context, args []string) error {
			args, _, err := lf.interspersed(args)
			if err != nil {
				return cli.Usagef("%v", err)
			}
			if len(args) != 1 || args[0] != "zones" {
				return cli.Usagef("want: ambit top zones")
			}
			if output != "" && (output != "json" || !once) {
				return cli.Usagef("-o %s: only -o json, with --once", output)
			}
			if interval <= 0 {
				return cli.Usagef("--interval %v: must be positive", interval)
			}
			st, err := local.LoadState(name)
			if err != nil {
				return err
			}
			out := cli.Stdout
			prev, err := scrapeZones(ctx, st)
			if err != nil && len(prev) == 0 {
				return err
			}
			if once && output == "json" {
				if werr := writeZonesJSON(out, prev); werr != nil {
					return werr
				}
				return err
			}
			if once {
				renderZones(out, prev, "since the proxies started")
				return err
			}
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
				cur, err := scrapeZones(ctx, st)
				fmt.Fprint(out, "\x1b[H\x1b[2J") // clear the terminal
				renderZones(out, cur.sub(prev), "last "+interval.String())
				if err != nil {
					fmt.Fprintf(out, "\n(some proxies did not answer: %v)\n", err)
				}
				prev = cur
			}
		},
	}
}

// zoneKey is one row: traffic of kind (L7 or L4) to service from clients
// in zone from, served in zone to.
type zoneKey struct{ service, kind, from, to string }

// zoneAgg adds up the series of one row. buckets are cumulative counts per
// telemetry.DurationBuckets bound, the last +Inf.
type zoneAgg struct {
	count, errors uint64
	bytes         float64
	buckets       []float64
}

// zoneTable is the traffic of a set of proxies by row.
type zoneTable map[zoneKey]*zoneAgg

func (t zoneTable) row(k zoneKey) *zoneAgg {
	a := t[k]
	if a == nil {
		a = &zoneAgg{buckets: make([]float64, len(telemetry.DurationBuckets)+1)}
		t[k] = a
	}
	return a
}

// sub returns the traffic of t that prev does not include (t is the later
// scrape). A counter that went down (a proxy restarted) counts from zero.
func (t zoneTable) sub(prev zoneTable) zoneTable {
	out := zoneTable{}
	for k, a := range t {
		p := prev[k]
		if p == nil || p.count > a.count {
			p = &zoneAgg{buckets: make([]float64, len(a.buckets))}
		}
		d := out.row(k)
		d.count, d.errors, d.bytes = a.count-p.count, a.errors-min(p.errors, a.errors), max(a.bytes-p.bytes, 0)
		for i := range a.buckets {
			d.buckets[i] = max(a.buckets[i]-p.buckets[i], 0)
		}
		if d.count == 0 && d.bytes == 0 {
			delete(out, k)
		}
	}
	return out
}

// parseZoneMetrics adds the Prometheus text of one proxy to t: the
// waypoints' request metrics (reporter="waypoint") as L7 rows, the
// ztunnels' TCP metrics as reported at the source as L4 rows.
func parseZoneMetrics(r io.Reader, t zoneTable) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, err := parseSample(line)
		if err != nil {
			return fmt.Errorf("metrics line %d: %w", n, err)
		}
		if !strings.HasPrefix(name, "istio_") {
			continue
		}
		kind := ""
		switch labels["reporter"] {
		case "waypoint":
			kind = "L7"
		case "source":
			kind = "L4"
		default:
			continue
		}
		k := zoneKey{service: labels["destination_service"], kind: kind, from: labels["source_zone"], to: labels["destination_zone"]}
		switch {
		case kind == "L7" && name == "istio_requests_total":
			a := t.row(k)
			a.count += uint64(value)
			if c := labels["response_code"]; strings.HasPrefix(c, "5") || c == "0" {
				a.errors += uint64(value)
			}
		case kind == "L7" && (name == "istio_request_bytes_sum" || name == "istio_response_bytes_sum"):
			t.row(k).bytes += value
		case kind == "L7" && name == "istio_request_duration_milliseconds_bucket":
			i := len(telemetry.DurationBuckets)
			if le := labels["le"]; le != "+Inf" {
				b, err := strconv.ParseFloat(le, 64)
				if err != nil {
					return fmt.Errorf("metrics line %d: le %q: %w", n, le, err)
				}
				if i = slices.Index(telemetry.DurationBuckets, b); i < 0 {
					continue // not our buckets
				}
			}
			t.row(k).buckets[i] += value
		case kind == "L4" && name == "istio_tcp_connections_opened_total":
			t.row(k).count += uint64(value)
		case kind == "L4" && (name == "istio_tcp_sent_bytes_total" || name == "istio_tcp_received_bytes_total"):
			t.row(k).bytes += value
		}
	}
	return sc.Err()
}

// parseSample splits `name{a="x",b="y"} value` (the text format; a
// timestamp after the value is ignored).
func parseSample(line string) (string, map[string]string, float64, error) {
	labels := map[string]string{}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, 0, fmt.Errorf("no metric name in %q", line)
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ,")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				return "", nil, 0, fmt.Errorf("bad label in %q", line)
			}
			key := rest[:eq]
			rest = rest[eq+2:]
			var v strings.Builder
			j := 0
			for ; j < len(rest) && rest[j] != '"'; j++ {
				if rest[j] == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						v.WriteByte('\n')
					default:
						v.WriteByte(rest[j])
					}
					continue
				}
				v.WriteByte(rest[j])
			}
			if j == len(rest) {
				return "", nil, 0, fmt.Errorf("unterminated label value in %q", line)
			}
			labels[key] = v.String()
			rest = rest[j+1:]
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, fmt.Errorf("no value in %q", line)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", nil, 0, fmt.Errorf("value of %q: %w", line, err)
	}
	return name, labels, v, nil
}

// quantile estimates the q-quantile (0..1) of a row's latency as
// Prometheus's histogram_quantile does: linear within the bucket holding
// the rank; in the +Inf bucket, the highest finite bound.
func (a *zoneAgg) quantile(q float64) (float64, bool) {
	total := a.buckets[len(a.buckets)-1]
	if total == 0 {
		return 0, false
	}
	rank := q * total
	bounds := telemetry.DurationBuckets
	for i, b := range bounds {
		if a.buckets[i] >= rank {
			lo, below := 0.0, 0.0
			if i > 0 {
				lo, below = bounds[i-1], a.buckets[i-1]
			}
			in := a.buckets[i] - below
			if in == 0 {
				return b, true
			}
			return lo + (b-lo)*(rank-below)/in, true
		}
	}
	return bounds[len(bounds)-1], true
}

// renderZones prints t, services in name order, L7 before L4, zone pairs
// in order.
func renderZones(w io.Writer, t zoneTable, window string) {
	keys := make([]zoneKey, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b zoneKey) int {
		return cmpAll(strings.Compare(a.service, b.service), -strings.Compare(a.kind, b.kind), strings.Compare(a.from, b.from), strings.Compare(a.to, b.to))
	})
	fmt.Fprintf(w, "Traffic between zones, %s\n", window)
	if len(keys) == 0 {
		fmt.Fprintln(w, "\n(no traffic)")
		return
	}
	for i := 0; i < len(keys); {
		svc := keys[i].service
		fmt.Fprintf(w, "\n%s\n", svc)
		for i < len(keys) && keys[i].service == svc {
			kind := keys[i].kind
			j := i
			var n, cross, errs uint64
			var bytes, crossBytes float64
			for ; j < len(keys) && keys[j].service == svc && keys[j].kind == kind; j++ {
				a := t[keys[j]]
				n, bytes, errs = n+a.count, bytes+a.bytes, errs+a.errors
				if keys[j].from != keys[j].to {
					cross, crossBytes = cross+a.count, crossBytes+a.bytes
				}
			}
			unit := "requests"
			if kind == "L4" {
				unit = "connections"
			}
			fmt.Fprintf(w, "  %s: %d %s, %s; cross-zone %s of %s, %s of bytes", kind, n, unit, humanBytes(bytes),
				percent(float64(cross), float64(n)), unit, percent(crossBytes, bytes))
			if kind == "L7" {
				fmt.Fprintf(w, "; %d errors", errs)
			}
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			if kind == "L7" {
				fmt.Fprintln(tw, "    FROM\tTO\tREQUESTS\tSHARE\tBYTES\tERRORS\tP50\tP99")
			} else {
				fmt.Fprintln(tw, "    FROM\tTO\tCONNECTIONS\tSHARE\tBYTES")
			}
			for ; i < j; i++ {
				k, a := keys[i], t[keys[i]]
				fmt.Fprintf(tw, "    %s\t%s\t%d\t%s\t%s", orUnknown(k.from), orUnknown(k.to), a.count, percent(float64(a.count), float64(n)), humanBytes(a.bytes))
				if kind == "L7" {
					fmt.Fprintf(tw, "\t%d\t%s\t%s", a.errors, latency(a, 0.5), latency(a, 0.99))
				}
				fmt.Fprintln(tw)
			}
			tw.Flush()
		}
	}
}

func cmpAll(cs ...int) int {
	for _, c := range cs {
		if c != 0 {
			return c
		}
	}
	return 0
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func percent(part, whole float64) string {
	if whole == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*part/whole, 'f', 1, 64) + "%"
}

func latency(a *zoneAgg, q float64) string {
	v, ok := a.quantile(q)
	if !ok {
		return "-"
	}
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(math.Round(v), 'f', 0, 64) + "ms"
}

func humanBytes(b float64) string {
	const k = 1024
	switch {
	case b < k:
		return strconv.FormatFloat(b, 'f', 0, 64) + " B"
	case b < k*k:
		return strconv.FormatFloat(b/k, 'f', 1, 64) + " KiB"
	case b < k*k*k:
		return strconv.FormatFloat(b/k/k, 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(b/k/k/k, 'f', 2, 64) + " GiB"
}

// ZoneRow is one row of 'ambit top zones --once -o json': the totals since
// the proxies started of one (service, kind, source zone, destination
// zone). Buckets are cumulative counts at DurationBoundsMs (the last is
// +Inf), L7 only.
type ZoneRow struct {
	Service  string    `json:"service"`
	Kind     string    `json:"kind"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Count    uint64    `json:"count"`
	Errors   uint64    `json:"errors"`
	Bytes    float64   `json:"bytes"`
	Buckets  []float64 `json:"buckets,omitempty"`
	BoundsMs []float64 `json:"boundsMs,omitempty"`
}

func writeZonesJSON(w io.Writer, t zoneTable) error {
	rows := []ZoneRow{}
	for k, a := range t {
		r := ZoneRow{Service: k.service, Kind: k.kind, From: k.from, To: k.to, Count: a.count, Errors: a.errors, Bytes: a.bytes}
		if k.kind == "L7" {
			r.Buckets, r.BoundsMs = a.buckets, telemetry.DurationBuckets
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b ZoneRow) int {
		return cmpAll(strings.Compare(a.Service, b.Service), strings.Compare(a.Kind, b.Kind), strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
	})
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// scrapeZones reads the metrics of every ztunnel and waypoint of the local
// cluster. Proxies that do not answer are reported in the error; the table
// has the others.
func scrapeZones(ctx context.Context, st *local.State) (zoneTable, error) {
	t := zoneTable{}
	var errs []error
	for _, n := range st.Nodes {
		if err := scrapeInto(ctx, n.NetNS, n.Metrics, t); err != nil {
			errs = append(errs, fmt.Errorf("ztunnel of node %s: %w", n.Name, err))
		}
	}
	for _, p := range st.Pods {
		if !slices.ContainsFunc(p.Containers, func(c local.ContainerState) bool { return c.Name == "waypoint" }) {
			continue
		}
		if err := scrapeInto(ctx, p.NetNS, "http://127.0.0.1:15020/metrics", t); err != nil {
			errs = append(errs, fmt.Errorf("waypoint %s/%s: %w", p.Namespace, p.Name, err))
		}
	}
	return t, errors.Join(errs...)
}
