package waypoint

import (
	"strconv"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/telemetry"
)

// forwardedProtoHTTP is the X-Forwarded-Proto value set on requests that
// arrive without one (shared: header values are replaced, never changed in
// place).
var forwardedProtoHTTP = []string{"http"}

// seriesKey is what decides a request's metric labels besides its tunnel
// (whose peer identity is fixed): workloads and Services by pointer, as a
// configuration view holds them, and the outcome.
type seriesKey struct {
	src, dst    *meshv1.Workload
	svc         *meshv1.Service
	status      int
	grpc, flags string
	grpcReq     bool
}

// lastSeries is a tunnel's last request's series, by its key.
type lastSeries struct {
	key seriesKey
	s   *telemetry.HTTPSeries
}

// series returns the request's metrics series. Requests on one tunnel
// mostly repeat the labels of the one before: that series is reused without
// building the labels (some thirty strings, two SPIFFE IDs formatted) and
// looking them up.
func (x *exchange) series() *telemetry.HTTPSeries {
	var k seriesKey
	if x.t != nil {
		k.src = x.source()
	}
	k.svc = x.dstSvc
	if k.svc == nil {
		k.svc = x.svc
	}
	if x.endpoint != nil {
		k.dst = x.endpoint.Workload
	} else if x.view != nil && x.upstream.IsValid() {
		k.dst = x.view.WorkloadByIP(x.upstream.Addr())
	}
	k.status, k.grpc, k.flags, k.grpcReq = x.status, x.grpc, x.flags, x.grpcReq
	if x.t != nil {
		if last := x.t.series.Load(); last != nil && last.key == k {
			return last.s
		}
	}
	labels := telemetry.HTTPLabels{ResponseCode: strconv.Itoa(k.status), GRPCResponseStatus: k.grpc}
	labels.Reporter, labels.ResponseFlags, labels.ConnectionSecurityPolicy = "waypoint", k.flags, "mutual_tls"
	labels.RequestProtocol = "http"
	if k.grpcReq {
		labels.RequestProtocol = "grpc"
	}
	if x.t != nil {
		sourceLabels(&labels.TCPLabels, k.src, x.t.peer)
	}
	if k.svc != nil {
		labels.DestinationService, labels.DestinationServiceName, labels.DestinationServiceNamespace = k.svc.GetHostname(), k.svc.GetName(), k.svc.GetNamespace()
	}
	destinationLabels(&labels.TCPLabels, k.dst)
	s := x.p.metrics.For(&labels)
	if x.t != nil {
		x.t.series.Store(&lastSeries{key: k, s: s})
	}
	return s
}

// source is the client's workload, if it is one (looked up once).
func (x *exchange) source() *meshv1.Workload {
	if !x.srcDone {
		x.srcW, x.srcDone = x.view.WorkloadByIP(x.t.src), true
	}
	return x.srcW
}
