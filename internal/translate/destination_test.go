package translate

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/model"
)

func TestDestinationRuleTranslation(t *testing.T) {
	ix := BuildRoutes(unvalidatedSnapshot(t, vsBase, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_CONN
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        failover:
        - {from: us-west, to: us-east}
        failoverPriority: [topology.kubernetes.io/zone]
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, idleTimeout: 1h}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 5, maxRetries: 3, idleTimeout: 90s}
    outlierDetection:
      consecutiveGatewayErrors: 3
      interval: 5s
      maxEjectionPercent: 50
  subsets:
  - name: sticky
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user}
  - name: plain
    labels: {version: v2}
`, &networkingv1.DestinationRule{}), model.DefaultMeshConfig())
	// Carried to the waypoint, which applies it (distribute before failover,
	// as in Istio, should validation have let both through).
	checkProblems(t, ix.Problems(), nil)
	top := &meshv1.TrafficPolicy{
		LoadBalancer: &meshv1.LoadBalancerPolicy{
			Simple: meshv1.LoadBalancerPolicy_LEAST_REQUEST,
			Locality: &meshv1.LoadBalancerPolicy_LocalityLb{
				Enabled:          true,
				Distribute:       []*meshv1.LoadBalancerPolicy_LocalityLb_Distribute{{From: "us-west/zone1/*", To: map[string]uint32{"us-west/zone1/*": 80, "us-west/zone2/*": 20}}},
				Failover:         []*meshv1.LoadBalancerPolicy_LocalityLb_Failover{{From: "us-west", To: "us-east"}},
				FailoverPriority: []string{"topology.kubernetes.io/zone"},
			},
		},
		ConnectionPool: &meshv1.ConnectionPool{
			MaxConnections: 100, ConnectTimeoutMs: 30, IdleTimeoutMs: 90_000,
			MaxPendingRequests: 10, MaxRequests: 1000, MaxRequestsPerConnection: 5, MaxRetries: 3,
		},
		// Unset fields take Envoy's defaults: 5 consecutive 5xx, 30s base ejection.
		OutlierDetection: &meshv1.OutlierDetection{
			Consecutive_5XxErrors: 5, ConsecutiveGatewayErrors: 3, IntervalMs: 5000, BaseEjectionTimeMs: 30_000, MaxEjectionPercent: 50,
		},
	}
	sticky := proto.Clone(top).(*meshv1.TrafficPolicy)
	sticky.LoadBalancer = &meshv1.LoadBalancerPolicy{HashHeader: "x-user"}
	want := &meshv1.DestinationPolicy{
		Service:       "shop/ratings.shop.svc.cluster.local",
		Origin:        "DestinationRule shop/ratings",
		TrafficPolicy: top,
		Subsets: []*meshv1.DestinationPolicy_Subset{
			{Name: "sticky", Labels: map[string]string{"version": "v1"}, TrafficPolicy: sticky},
			{Name: "plain", Labels: map[string]string{"version": "v2"}, TrafficPolicy: top},
		},
	}
	if got := ix.DestinationPolicy(model.Key{Namespace: "shop", Name: "ratings"}); !proto.Equal(got, want) {
		t.Errorf("policy:\n%v\nwant:\n%v", got, want)
	}
}

func TestDestinationRuleHashKeys(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want *meshv1.LoadBalancerPolicy
	}{
		{`{simple: ROUND_ROBIN}`, &meshv1.LoadBalancerPolicy{Simple: meshv1.LoadBalancerPolicy_ROUND_ROBIN}},
		{`{simple: RANDOM}`, &meshv1.LoadBalancerPolicy{Simple: meshv1.LoadBalancerPolicy_RANDOM}},
		{`{simple: PASSTHROUGH}`, &meshv1.LoadBalancerPolicy{Simple: meshv1.LoadBalancerPolicy_PASSTHROUGH}},
		{`{consistentHash: {httpCookie: {name: session}}}`, &meshv1.LoadBalancerPolicy{HashCookie: "session"}},
		{`{consistentHash: {useSourceIp: true}}`, &meshv1.LoadBalancerPolicy{HashSourceIp: true}},
		{`{consistentHash: {httpQueryParameterName: user}}`, &meshv1.LoadBalancerPolicy{HashQueryParam: "user"}},
		{`{localityLbSetting: {enabled: false}}`, &meshv1.LoadBalancerPolicy{Locality: &meshv1.LoadBalancerPolicy_LocalityLb{}}},
	} {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: `+c.yaml+`
`), model.DefaultMeshConfig())
		checkProblems(t, ix.Problems(), nil)
		got := ix.DestinationPolicy(model.Key{Namespace: "shop", Name: "ratings"}).GetTrafficPolicy().GetLoadBalancer()
		if !proto.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.yaml, got, c.want)
		}
	}
}

func TestDestinationRuleSelection(t *testing.T) {
	dr := func(name, ns, created, host, extra string) string {
		ts := ""
		if created != "" {
			ts = `, creationTimestamp: "` + created + `"`
		}
		return `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ` + name + `, namespace: ` + ns + ts + `}
spec:
  host: ` + host + `
` + extra
	}
	ratings := model.Key{Namespace: "shop", Name: "ratings"}
	mesh := model.DefaultMeshConfig()

	t.Run("same namespace merges, first wins", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase,
			dr("b", "shop", "2024-01-01T00:00:00Z", "ratings", `
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: v1}}
`),
			dr("a", "shop", "2024-02-01T00:00:00Z", "ratings.shop.svc.cluster.local", `
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: other}}
  - {name: v2, labels: {version: v2}}
`),
			dr("elsewhere", "frontend", "2023-01-01T00:00:00Z", "ratings.shop.svc.cluster.local", ""),
			dr("private", "frontend", "", "ratings.shop.svc.cluster.local", `  exportTo: ["."]`),
			dr("nohost", "shop", "", "nothing", ""),
			dr("sidecar", "shop", "", "ratings", "  workloadSelector: {matchLabels: {app: x}}"),
		), mesh)
		checkProblems(t, ix.Problems(), []string{
			"DestinationRule shop/a: spec.trafficPolicy: ignored: merged with DestinationRule shop/b",
			`DestinationRule shop/a: spec.subsets[0]: subset "v1" is already defined by DestinationRule shop/b`,
			"DestinationRule frontend/elsewhere: spec.host: ignored for Service shop/ratings: DestinationRule shop/b applies",
			"DestinationRule frontend/private: spec.exportTo: not exported to namespace shop",
			`DestinationRule shop/nohost: spec.host: host "nothing" (nothing.shop.svc.cluster.local) matches no Service`,
			"DestinationRule shop/sidecar: spec.workloadSelector",
		})
		dp := ix.DestinationPolicy(ratings)
		if dp.GetOrigin() != "DestinationRule shop/b" || dp.GetTrafficPolicy().GetLoadBalancer().GetSimple() != meshv1.LoadBalancerPolicy_RANDOM {
			t.Errorf("policy %v", dp)
		}
		if len(dp.GetSubsets()) != 2 || dp.GetSubsets()[0].GetLabels()["version"] != "v1" || dp.GetSubsets()[1].GetName() != "v2" {
			t.Errorf("subsets %v", dp.GetSubsets())
		}
	})

	t.Run("service namespace beats root namespace beats wildcard", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase,
			dr("wild", "shop", "", `"*.shop.svc.cluster.local"`, "  trafficPolicy: {loadBalancer: {simple: RANDOM}}"),
			dr("root", "istio-system", "", "ratings.shop.svc.cluster.local", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}"),
		), mesh)
		if got := ix.DestinationPolicy(ratings).GetOrigin(); got != "DestinationRule istio-system/root" {
			t.Errorf("ratings: %s", got)
		}
		// reviews has its own DestinationRule in vsBase (exact host) and
		// the wildcard is reported as ignored for it.
		if got := ix.DestinationPolicy(model.Key{Namespace: "shop", Name: "reviews"}).GetOrigin(); got != "DestinationRule shop/reviews" {
			t.Errorf("reviews: %s", got)
		}
		if got := ix.DestinationPolicy(model.Key{Namespace: "other", Name: "mirror"}); got != nil {
			t.Errorf("mirror: %v", got)
		}
	})

	t.Run("unsupported fields are reported", func(t *testing.T) {
		ix := BuildRoutes(snapshotFromYAML(t, vsBase, dr("x", "shop", "", "ratings", `
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 8080}
      loadBalancer: {simple: RANDOM}
`)), mesh)
		checkProblems(t, ix.Problems(), []string{
			"DestinationRule shop/x: spec.trafficPolicy: not supported, ignored: tls (mode SIMPLE; mesh traffic always uses HBONE mTLS), portLevelSettings",
		})
	})
}
