// Package telemetry keeps the proxies' metrics under Istio's standard names
// and labels (istio_tcp_*, and for waypoints istio_requests_*), plus
// source_zone and destination_zone, and writes them in the Prometheus text
// format.
//
// It is written for the data path: a connection looks up its counter set
// once when it opens, and every byte count after that is one atomic add. It
// depends only on the standard library, so the ztunnel binary stays small.
package telemetry

import (
	"io"
	"sort"
	"sync"
	"sync/atomic"
)

// TCPLabels are the labels of Istio's TCP metrics. Empty values are
// exported as "unknown", as Istio does.
type TCPLabels struct {
	Reporter                     string // "source" or "destination"
	SourceWorkload               string
	SourceCanonicalService       string
	SourceCanonicalRevision      string
	SourceWorkloadNamespace      string
	SourcePrincipal              string // "spiffe://..."
	SourceApp                    string
	SourceVersion                string
	SourceCluster                string
	SourceZone                   string
	DestinationService           string // FQDN
	DestinationServiceNamespace  string
	DestinationServiceName       string
	DestinationWorkload          string
	DestinationCanonicalService  string
	DestinationCanonicalRevision string
	DestinationWorkloadNamespace string
	DestinationPrincipal         string
	DestinationApp               string
	DestinationVersion           string
	DestinationCluster           string
	DestinationZone              string
	RequestProtocol              string // "tcp"
	ResponseFlags                string // "-" when none
	ConnectionSecurityPolicy     string // "mutual_tls" or "none"
}

var tcpLabelNames = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster", "source_zone",
	"destination_service", "destination_service_namespace", "destination_service_name",
	"destination_workload", "destination_canonical_service", "destination_canonical_revision",
	"destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_cluster", "destination_zone",
	"request_protocol", "response_flags", "connection_security_policy",
}

func (l *TCPLabels) values() []string {
	return []string{
		l.Reporter,
		l.SourceWorkload, l.SourceCanonicalService, l.SourceCanonicalRevision, l.SourceWorkloadNamespace,
		l.SourcePrincipal, l.SourceApp, l.SourceVersion, l.SourceCluster, l.SourceZone,
		l.DestinationService, l.DestinationServiceNamespace, l.DestinationServiceName,
		l.DestinationWorkload, l.DestinationCanonicalService, l.DestinationCanonicalRevision,
		l.DestinationWorkloadNamespace, l.DestinationPrincipal, l.DestinationApp, l.DestinationVersion,
		l.DestinationCluster, l.DestinationZone,
		l.RequestProtocol, l.ResponseFlags, l.ConnectionSecurityPolicy,
	}
}

// TCPCounters are the four TCP metrics of one label set. As in Istio, Sent
// counts bytes sent in response to the client (server → client) and
// Received bytes received from the client (client → server), whichever side
// reports.
type TCPCounters struct {
	Opened, Closed, Sent, Received atomic.Uint64
}

// TCPMetrics holds the TCP counters of every label set seen.
type TCPMetrics struct {
	mu sync.RWMutex
	m  map[TCPLabels]*TCPCounters
}

// NewTCPMetrics returns an empty set.
func NewTCPMetrics() *TCPMetrics {
	return &TCPMetrics{m: map[TCPLabels]*TCPCounters{}}
}

// For returns the counters of l, creating them on first use. Call it once per
// connection and keep the pointer.
func (t *TCPMetrics) For(l TCPLabels) *TCPCounters {
	t.mu.RLock()
	c := t.m[l]
	t.mu.RUnlock()
	if c != nil {
		return c
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c = t.m[l]; c == nil {
		c = &TCPCounters{}
		t.m[l] = c
	}
	return c
}

// WriteTo writes the four metric families in the Prometheus text format,
// series sorted so the output is stable.
func (t *TCPMetrics) WriteTo(w io.Writer) (int64, error) {
	t.mu.RLock()
	type series struct {
		labels string
		c      *TCPCounters
	}
	all := make([]series, 0, len(t.m))
	for l, c := range t.m {
		all = append(all, series{labels: formatLabels(tcpLabelNames, l.values()), c: c})
	}
	t.mu.RUnlock()
	sort.Slice(all, func(i, j int) bool { return all[i].labels < all[j].labels })

	ew := &errWriter{w: w}
	families := []struct {
		name, help string
		get        func(*TCPCounters) uint64
	}{
		{"istio_tcp_connections_opened_total", "Total TCP connections opened.", func(c *TCPCounters) uint64 { return c.Opened.Load() }},
		{"istio_tcp_connections_closed_total", "Total TCP connections closed.", func(c *TCPCounters) uint64 { return c.Closed.Load() }},
		{"istio_tcp_sent_bytes_total", "Total bytes sent in response to the client.", func(c *TCPCounters) uint64 { return c.Sent.Load() }},
		{"istio_tcp_received_bytes_total", "Total bytes received from the client.", func(c *TCPCounters) uint64 { return c.Received.Load() }},
	}
	for _, f := range families {
		writeHeader(ew, f.name, f.help, "counter")
		for _, s := range all {
			writeSample(ew, f.name, s.labels, f.get(s.c))
		}
	}
	return ew.n, ew.err
}
