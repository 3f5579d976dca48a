package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/telemetry"
)

var updateTop = flag.Bool("update-top", false, "rewrite testdata/top_zones*.golden")

// proxyMetrics is what a waypoint and a ztunnel export after a known set
// of requests and connections: text produced by the telemetry package, as
// the proxies serve it.
func proxyMetrics(t *testing.T, scale int) []byte {
	t.Helper()
	h := telemetry.NewHTTPMetrics()
	req := func(svc, from, to, code string, n int, d time.Duration, in, out int64) {
		l := &telemetry.HTTPLabels{TCPLabels: telemetry.TCPLabels{Reporter: "waypoint", SourceZone: from, DestinationZone: to,
			DestinationService: svc, RequestProtocol: "http", ConnectionSecurityPolicy: "mutual_tls"}, ResponseCode: code}
		s := h.For(l)
		for range n * scale {
			s.Record(d, in, out)
		}
	}
	const echo = "echo.zonal.svc.cluster.local"
	req(echo, "zone-a", "zone-a", "200", 900, 800*time.Microsecond, 100, 1000)
	req(echo, "zone-a", "zone-a", "200", 90, 3*time.Millisecond, 100, 1000)
	req(echo, "zone-a", "zone-a", "200", 10, 40*time.Millisecond, 100, 1000)
	req(echo, "zone-a", "zone-b", "200", 45, 2*time.Millisecond, 100, 1000)
	req(echo, "zone-a", "zone-b", "503", 5, 20*time.Millisecond, 100, 200)
	req(echo, "zone-c", "zone-b", "200", 100, 310*time.Millisecond, 100, 4000)
	req("api.zonal.svc.cluster.local", "zone-b", "zone-b", "200", 20, 7*time.Millisecond, 50, 50)

	tcp := telemetry.NewTCPMetrics()
	conn := func(reporter, svc, from, to string, n int, sent, received uint64) {
		c := tcp.For(telemetry.TCPLabels{Reporter: reporter, SourceZone: from, DestinationZone: to, DestinationService: svc,
			RequestProtocol: "tcp", ConnectionSecurityPolicy: "mutual_tls"})
		for range n * scale {
			c.Opened.Add(1)
			c.Closed.Add(1)
			c.Sent.Add(sent)
			c.Received.Add(received)
		}
	}
	conn("source", "db.zonal.svc.cluster.local", "zone-a", "zone-a", 8, 4096, 512)
	conn("source", "db.zonal.svc.cluster.local", "zone-a", "zone-c", 2, 4096, 512)
	// The destination ztunnel reports the same connections: not counted twice.
	conn("destination", "db.zonal.svc.cluster.local", "zone-a", "zone-a", 8, 4096, 512)

	var b bytes.Buffer
	if _, err := h.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := tcp.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateTop {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-top to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (-update-top rewrites it); got:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestTopZonesGolden(t *testing.T) {
	tbl := zoneTable{}
	if err := parseZoneMetrics(bytes.NewReader(proxyMetrics(t, 1)), tbl); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	renderZones(&out, tbl, "since the proxies started")
	golden(t, "top_zones.golden", out.Bytes())
	var js bytes.Buffer
	if err := writeZonesJSON(&js, tbl); err != nil {
		t.Fatal(err)
	}
	var rows []ZoneRow
	if err := json.Unmarshal(js.Bytes(), &rows); err != nil || len(rows) != 6 {
		t.Fatalf("json: %d rows, %v", len(rows), err)
	}
	if r := rows[len(rows)-1]; r.Service != "echo.zonal.svc.cluster.local" || r.From != "zone-c" || r.To != "zone-b" || r.Count != 100 || r.Buckets[len(r.Buckets)-1] != 100 {
		t.Errorf("last json row %+v", r)
	}

	// An interval's screen is the difference of two scrapes: the second
	// scrape has every count tripled, so the interval shows twice the first.
	later := zoneTable{}
	if err := parseZoneMetrics(bytes.NewReader(proxyMetrics(t, 3)), later); err != nil {
		t.Fatal(err)
	}
	twice := zoneTable{}
	if err := parseZoneMetrics(bytes.NewReader(proxyMetrics(t, 2)), twice); err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	renderZones(&a, later.sub(tbl), "last 2s")
	renderZones(&b, twice, "last 2s")
	if a.String() != b.String() {
		t.Errorf("interval view:\n%s\nwant:\n%s", a.String(), b.String())
	}
}

func TestTopZonesQuantile(t *testing.T) {
	// 100 observations, all in the (1, 5] ms bucket: p50 interpolates to 3ms.
	a := &zoneAgg{buckets: make([]float64, len(telemetry.DurationBuckets)+1)}
	for i := range a.buckets {
		if i >= 2 { // le=5 and above are cumulative
			a.buckets[i] = 100
		}
	}
	if q, _ := a.quantile(0.5); q != 3 {
		t.Errorf("p50 = %v, want 3", q)
	}
	if q, _ := a.quantile(0.99); q < 4.9 || q > 5 {
		t.Errorf("p99 = %v, want 4.96", q)
	}
	if _, ok := (&zoneAgg{buckets: make([]float64, len(telemetry.DurationBuckets)+1)}).quantile(0.5); ok {
		t.Error("quantile of nothing")
	}
}

func TestParseSampleErrors(t *testing.T) {
	for _, line := range []string{`{a="b"} 1`, `m{a="b} 1`, `m{a} 1`, `m{a="b"}`, `m{a="b"} x`} {
		if _, _, _, err := parseSample(line); err == nil {
			t.Errorf("%q parsed", line)
		}
	}
	name, labels, v, err := parseSample(`m{a="x\"y",b="\\"} 2.5 1700000000`)
	if err != nil || name != "m" || labels["a"] != `x"y` || labels["b"] != `\` || v != 2.5 {
		t.Errorf("got %q %v %v %v", name, labels, v, err)
	}
}
