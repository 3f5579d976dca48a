package telemetry

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestTCPMetricsText(t *testing.T) {
	m := NewTCPMetrics()
	l := TCPLabels{
		Reporter: "destination", SourceWorkload: "client", SourceWorkloadNamespace: "shop",
		SourcePrincipal: "spiffe://cluster.local/ns/shop/sa/client", SourceZone: "zone-a",
		DestinationService: "echo.shop.svc.cluster.local", DestinationWorkload: "echo-v1", DestinationZone: "zone-b",
		DestinationApp: `we"ird\app` + "\n", RequestProtocol: "tcp", ResponseFlags: "-", ConnectionSecurityPolicy: "mutual_tls",
	}
	c := m.For(l)
	c.Opened.Add(1)
	c.Received.Add(100)
	c.Sent.Add(2048)
	c.Closed.Add(1)
	if m.For(l) != c {
		t.Fatal("For returned a new counter set for the same labels")
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("output is not valid Prometheus text: %v\n%s", err, buf.String())
	}
	want := map[string]float64{
		"istio_tcp_connections_opened_total": 1, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total": 2048, "istio_tcp_received_bytes_total": 100,
	}
	for name, v := range want {
		f := families[name]
		if f == nil || len(f.Metric) != 1 || f.Metric[0].GetCounter().GetValue() != v {
			t.Errorf("%s = %v, want one series with value %v", name, f, v)
			continue
		}
		labels := map[string]string{}
		for _, lp := range f.Metric[0].Label {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, v := range map[string]string{
			"source_zone": "zone-a", "destination_zone": "zone-b", "connection_security_policy": "mutual_tls",
			"destination_app": `we"ird\app` + "\n", "source_app": "unknown", "reporter": "destination",
		} {
			if labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", name, k, labels[k], v)
			}
		}
		if len(labels) != len(tcpLabelNames) {
			t.Errorf("%s has %d labels, want %d", name, len(labels), len(tcpLabelNames))
		}
	}
	for _, n := range tcpLabelNames {
		if !model.LegacyValidation.IsValidLabelName(n) {
			t.Errorf("invalid label name %q", n)
		}
	}
}

func TestTCPMetricsConcurrent(t *testing.T) {
	m := NewTCPMetrics()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 1000 {
				c := m.For(TCPLabels{Reporter: "source", DestinationWorkload: string(rune('a' + (i+j)%4))})
				c.Opened.Add(1)
				c.Sent.Add(10)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b bytes.Buffer
			m.WriteTo(&b)
		}()
	}
	wg.Wait()
	var b bytes.Buffer
	m.WriteTo(&b)
	if got := strings.Count(b.String(), "istio_tcp_connections_opened_total{"); got != 4 {
		t.Errorf("%d opened series, want 4", got)
	}
}

func TestForDoesNotAllocate(t *testing.T) {
	m := NewTCPMetrics()
	l := TCPLabels{Reporter: "source", SourceWorkload: "a", DestinationWorkload: "b"}
	m.For(l)
	if n := testing.AllocsPerRun(1000, func() { m.For(l).Sent.Add(1) }); n != 0 {
		t.Errorf("For on a known label set allocates %v times", n)
	}
}
