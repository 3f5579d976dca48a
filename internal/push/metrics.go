package push

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	responses     *prometheus.CounterVec // type, kind
	resourcesSent *prometheus.CounterVec // type
	nacks         *prometheus.CounterVec // type
	connected     prometheus.Gauge
	resources     *prometheus.GaugeVec // type
	version       prometheus.Gauge
	convergence   prometheus.Histogram
	updateSeconds prometheus.Histogram
	authFailures  prometheus.Counter
	sharedEncodes prometheus.Counter
	sharedSends   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_push_responses_total",
			Help: "Responses sent to proxies, per resource type they carried and kind (full, delta, or version for a response that only advances the version: type \"\").",
		}, []string{"type", "kind"}),
		resourcesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_push_resources_sent_total",
			Help: "Resources and removals sent to proxies, per type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_push_nacks_total",
			Help: "Responses rejected by proxies, per resource type the rejected response carried.",
		}, []string{"type"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_push_connected_proxies",
			Help: "Proxy streams currently connected.",
		}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambit_push_resources",
			Help: "Resources in the desired state, per type.",
		}, []string{"type"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_push_version",
			Help: "Current system version.",
		}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ambit_push_convergence_seconds",
			Help:    "Time from a change being published to a proxy acknowledging a delta response that includes it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14), // 1ms .. ~150s
		}),
		updateSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ambit_push_update_seconds",
			Help:    "Duration of Update/Apply calls (diffing and publishing).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12), // 100µs .. ~18s
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambit_push_auth_failures_total",
			Help: "Streams refused by the authentication hook.",
		}),
		sharedEncodes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambit_push_shared_encodes_total",
			Help: "Responses encoded once for sending to several proxies.",
		}),
		sharedSends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambit_push_shared_sends_total",
			Help: "Responses sent from a shared encoding.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.responses, m.resourcesSent, m.nacks, m.connected, m.resources,
			m.version, m.convergence, m.updateSeconds, m.authFailures, m.sharedEncodes, m.sharedSends)
	}
	return m
}
