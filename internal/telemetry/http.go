package telemetry

import (
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPLabels are the labels of Istio's request metrics: the TCP labels plus
// the response code and gRPC status ("" becomes "unknown"; request_protocol
// is "http" or "grpc").
type HTTPLabels struct {
	TCPLabels
	ResponseCode       string
	GRPCResponseStatus string
}

var httpLabelNames = append(append([]string(nil), tcpLabelNames...), "response_code", "grpc_response_status")

func (l *HTTPLabels) values() []string {
	return append(l.TCPLabels.values(), l.ResponseCode, l.GRPCResponseStatus)
}

// Bucket boundaries as Istio's defaults: durations in milliseconds, sizes
// in bytes.
var (
	DurationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	SizeBuckets     = []float64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}
)

// Histogram is a fixed-bucket histogram updated with atomic adds.
type Histogram struct {
	bounds []float64
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	// sum in thousandths of the unit, so that it stays an integer add.
	milliSum atomic.Uint64
}

func newHistogram(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v: le semantics
	h.counts[i].Add(1)
	if v > 0 {
		h.milliSum.Add(uint64(math.Round(v * 1000)))
	}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// HTTPSeries holds the four request metrics of one label set.
type HTTPSeries struct {
	Requests      atomic.Uint64
	Duration      *Histogram // milliseconds
	RequestBytes  *Histogram
	ResponseBytes *Histogram
}

// Record counts one finished request.
func (s *HTTPSeries) Record(d time.Duration, reqBytes, respBytes int64) {
	s.Requests.Add(1)
	s.Duration.Observe(float64(d.Microseconds()) / 1000)
	s.RequestBytes.Observe(float64(reqBytes))
	s.ResponseBytes.Observe(float64(respBytes))
}

// HTTPMetrics holds the request metrics of every label set seen:
// istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes and istio_response_bytes.
type HTTPMetrics struct {
	mu sync.RWMutex
	m  map[HTTPLabels]*HTTPSeries
}

// NewHTTPMetrics returns an empty set.
func NewHTTPMetrics() *HTTPMetrics {
	return &HTTPMetrics{m: map[HTTPLabels]*HTTPSeries{}}
}

// For returns the series of l, creating it on first use.
func (t *HTTPMetrics) For(l *HTTPLabels) *HTTPSeries {
	t.mu.RLock()
	s := t.m[*l]
	t.mu.RUnlock()
	if s != nil {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s = t.m[*l]; s == nil {
		s = &HTTPSeries{Duration: newHistogram(DurationBuckets), RequestBytes: newHistogram(SizeBuckets), ResponseBytes: newHistogram(SizeBuckets)}
		t.m[*l] = s
	}
	return s
}

// WriteTo writes the four families in the Prometheus text format, series
// sorted so the output is stable.
func (t *HTTPMetrics) WriteTo(w io.Writer) (int64, error) {
	type series struct {
		labels string
		s      *HTTPSeries
	}
	t.mu.RLock()
	all := make([]series, 0, len(t.m))
	for l, s := range t.m {
		all = append(all, series{labels: formatLabels(httpLabelNames, l.values()), s: s})
	}
	t.mu.RUnlock()
	sort.Slice(all, func(i, j int) bool { return all[i].labels < all[j].labels })

	ew := &errWriter{w: w}
	writeHeader(ew, "istio_requests_total", "Total requests.", "counter")
	for _, s := range all {
		writeSample(ew, "istio_requests_total", s.labels, s.s.Requests.Load())
	}
	for _, f := range []struct {
		name, help string
		get        func(*HTTPSeries) *Histogram
	}{
		{"istio_request_duration_milliseconds", "Request duration in milliseconds.", func(s *HTTPSeries) *Histogram { return s.Duration }},
		{"istio_request_bytes", "Request sizes in bytes (headers and body).", func(s *HTTPSeries) *Histogram { return s.RequestBytes }},
		{"istio_response_bytes", "Response sizes in bytes (headers and body).", func(s *HTTPSeries) *Histogram { return s.ResponseBytes }},
	} {
		writeHeader(ew, f.name, f.help, "histogram")
		for _, s := range all {
			writeHistogram(ew, f.name, s.labels, f.get(s.s))
		}
	}
	return ew.n, ew.err
}

// writeHistogram writes the cumulative buckets, sum and count; labels is
// "{...}" and gets the le label added inside.
func writeHistogram(w *errWriter, name, labels string, h *Histogram) {
	prefix := labels[:len(labels)-1] + `,le="`
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		w.WriteString(name + "_bucket" + prefix + strconv.FormatFloat(b, 'g', -1, 64) + "\"} " + strconv.FormatUint(cum, 10) + "\n")
	}
	cum += h.counts[len(h.bounds)].Load()
	w.WriteString(name + "_bucket" + prefix + "+Inf\"} " + strconv.FormatUint(cum, 10) + "\n")
	w.WriteString(name + "_sum" + labels + " " + strconv.FormatFloat(float64(h.milliSum.Load())/1000, 'g', -1, 64) + "\n")
	writeSample(w, name+"_count", labels, cum)
}
