package waypoint

import (
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// FuzzCompileConfig: whatever the control plane sends, compiling it
// returns a config or an error, never panics.
func FuzzCompileConfig(f *testing.F) {
	seed, _ := proto.Marshal(&meshv1.WaypointConfig{Name: "w", Namespace: "shop", Services: []*meshv1.ServiceRoutes{{Service: "shop/echo.shop.svc.cluster.local",
		Ports: []*meshv1.PortRoutes{{Port: 80, Rules: []*meshv1.RouteRule{{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "/v[0-9]+"}}},
			Retry: &meshv1.Retry{Attempts: 1, RetryOn: []string{"5xx"}}}}}}}},
		Policies: []*meshv1.Authorization{{Name: "p", Namespace: "shop", Rules: []*meshv1.Rule{{When: []*meshv1.Condition{{Key: "request.headers[x]", Values: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Any{Any: true}}}}}}}}}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		wc := &meshv1.WaypointConfig{}
		if proto.Unmarshal(b, wc) != nil {
			return
		}
		c, err := compileConfig(wc)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

// FuzzDetectAndUpstreamHost: the protocol sniffer and the pool-key parser
// take anything.
func FuzzDetectAndUpstreamHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1"), "0a:80")
	f.Add([]byte("PRI * HTTP/2.0"), "00000000000000000000ffff0af40202.00000000000000000000ffff0af40102:8080")
	f.Fuzz(func(t *testing.T, b []byte, host string) {
		classify(b)
		parseUpstreamHost(host)
	})
}
