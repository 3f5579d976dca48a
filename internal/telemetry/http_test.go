package telemetry

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestHTTPMetricsText(t *testing.T) {
	m := NewHTTPMetrics()
	l := HTTPLabels{TCPLabels: TCPLabels{Reporter: "waypoint", SourceZone: "zone-a", DestinationZone: "zone-b",
		DestinationService: "echo.shop.svc.cluster.local", RequestProtocol: "grpc", ResponseFlags: "-", ConnectionSecurityPolicy: "mutual_tls"},
		ResponseCode: "200", GRPCResponseStatus: "0"}
	s := m.For(&l)
	s.Record(3*time.Millisecond, 10, 2000)
	s.Record(700*time.Millisecond, 0, 5)
	if m.For(&l) != s {
		t.Fatal("For returned a new series for the same labels")
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
	if f := families["istio_requests_total"]; f == nil || f.Metric[0].GetCounter().GetValue() != 2 {
		t.Fatalf("istio_requests_total = %v", f)
	}
	h := families["istio_request_duration_milliseconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 703 {
		t.Errorf("duration count %d sum %v, want 2 and 703", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 1000:
			want = 2
		case b.GetUpperBound() >= 5:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	rb := families["istio_response_bytes"].GetMetric()[0].GetHistogram()
	if rb.GetSampleSum() != 2005 {
		t.Errorf("response bytes sum %v", rb.GetSampleSum())
	}
	labels := map[string]string{}
	for _, lp := range families["istio_requests_total"].Metric[0].Label {
		labels[lp.GetName()] = lp.GetValue()
	}
	for k, v := range map[string]string{"reporter": "waypoint", "response_code": "200", "grpc_response_status": "0",
		"source_zone": "zone-a", "destination_zone": "zone-b", "request_protocol": "grpc", "source_workload": "unknown"} {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
}

func BenchmarkHTTPRecord(b *testing.B) {
	m := NewHTTPMetrics()
	l := HTTPLabels{TCPLabels: TCPLabels{Reporter: "waypoint", SourceWorkload: "client", DestinationService: "echo.shop.svc.cluster.local"}, ResponseCode: "200"}
	b.ReportAllocs()
	for b.Loop() {
		m.For(&l).Record(time.Millisecond, 100, 1000)
	}
}
