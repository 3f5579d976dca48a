package waypoint

import (
	"bytes"
	"io"
	"net/netip"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/xds"
)

func TestCompileConfigRefusesBadInput(t *testing.T) {
	svc := "shop/echo.shop.svc.cluster.local"
	rule := func(r *meshv1.RouteRule) *meshv1.WaypointConfig {
		return &meshv1.WaypointConfig{Name: "w", Namespace: "shop", Services: []*meshv1.ServiceRoutes{{Service: svc, Ports: []*meshv1.PortRoutes{{Port: 80, Rules: []*meshv1.RouteRule{r}}}}}}
	}
	dest := &meshv1.Destination{Service: svc, Port: 80}
	for _, c := range []struct {
		name string
		wc   *meshv1.WaypointConfig
		want string
	}{
		{"no name", &meshv1.WaypointConfig{Namespace: "shop"}, "name and namespace"},
		{"waypoint_for", &meshv1.WaypointConfig{Name: "w", Namespace: "shop", WaypointFor: "sometimes"}, "waypoint_for"},
		{"service key", &meshv1.WaypointConfig{Name: "w", Namespace: "shop", Services: []*meshv1.ServiceRoutes{{Service: "echo"}}}, "services[0].service"},
		{"port", &meshv1.WaypointConfig{Name: "w", Namespace: "shop", Services: []*meshv1.ServiceRoutes{{Service: svc, Ports: []*meshv1.PortRoutes{{Port: 70000}}}}}, "services[0].ports[0].port"},
		{"regex", rule(&meshv1.RouteRule{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "(["}}}}), "rules[0].matches[0].path.value"},
		{"backend port", rule(&meshv1.RouteRule{Backends: []*meshv1.WeightedBackend{{Destination: &meshv1.Destination{Service: svc}, Weight: 1}}}), "rules[0].backends[0].destination.port"},
		{"redirect status", rule(&meshv1.RouteRule{Redirect: &meshv1.Redirect{StatusCode: 200}}), "rules[0].redirect.status_code"},
		{"mirror percent", rule(&meshv1.RouteRule{Mirrors: []*meshv1.Mirror{{Destination: dest, Percent: 150}}}), "rules[0].mirrors[0].percent"},
		{"fault", rule(&meshv1.RouteRule{Fault: &meshv1.Fault{AbortPercent: -1}}), "rules[0].fault"},
		{"retry code", rule(&meshv1.RouteRule{Retry: &meshv1.Retry{Codes: []uint32{42}}}), "rules[0].retry.codes[0]"},
		{"retry on", rule(&meshv1.RouteRule{Retry: &meshv1.Retry{RetryOn: []string{"sometimes"}}}), "rules[0].retry.retry_on"},
		{"policy", &meshv1.WaypointConfig{Name: "w", Namespace: "shop", Policies: []*meshv1.Authorization{{Name: "p", Namespace: "shop",
			Rules: []*meshv1.Rule{{From: []*meshv1.Source{{IpBlocks: []string{"10.0.0.256"}}}}}}}}, "policies[0] (shop/p)"},
		{"destination policy", &meshv1.WaypointConfig{Name: "w", Namespace: "shop", DestinationPolicies: []*meshv1.DestinationPolicy{{Service: svc, Origin: "DestinationRule shop/d",
			TrafficPolicy: &meshv1.TrafficPolicy{OutlierDetection: &meshv1.OutlierDetection{MaxEjectionPercent: 101}}}}}, "destination_policies[0] (DestinationRule shop/d)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := compileConfig(c.wc)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
}

// A bad WaypointConfig is refused whole: the last good one stays, and the
// workloads of the same update are not applied either.
func TestStoreKeepsLastGoodConfig(t *testing.T) {
	s := NewStore("shop/waypoint")
	good := &meshv1.WaypointConfig{Name: "waypoint", Namespace: "shop"}
	if err := s.Apply(&xds.Update{Version: 1, Types: []xds.TypeUpdate{{TypeURL: meshv1.TypeWaypointConfig, Upserts: []xds.Resource{{Name: "shop/waypoint", Message: good}}}}}); err != nil {
		t.Fatal(err)
	}
	first := s.config()
	bad := &meshv1.WaypointConfig{Name: "waypoint", Namespace: "shop", WaypointFor: "bogus"}
	w := &meshv1.Workload{Uid: "c/Pod/shop/a", Name: "a", Namespace: "shop", Addresses: []string{"10.244.1.2"}}
	err := s.Apply(&xds.Update{Version: 2, Types: []xds.TypeUpdate{
		{TypeURL: meshv1.TypeWaypointConfig, Upserts: []xds.Resource{{Name: "shop/waypoint", Message: bad}}},
		{TypeURL: meshv1.TypeWorkload, Upserts: []xds.Resource{{Name: w.Uid, Message: w}}},
	}})
	if err == nil || !strings.Contains(err.Error(), `WaypointConfig "shop/waypoint": waypoint_for`) {
		t.Fatalf("error %v", err)
	}
	if s.config() != first || s.State().WorkloadByUID(w.Uid) != nil {
		t.Fatal("a refused update changed the store")
	}
	if err := s.Apply(&xds.Update{Version: 3, Types: []xds.TypeUpdate{{TypeURL: meshv1.TypeWaypointConfig, Upserts: []xds.Resource{{Name: "shop/other", Message: good}}}}}); err == nil {
		t.Fatal("another Gateway's config accepted")
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		in   string
		want detected
		done bool
	}{
		{"GET / HTTP/1.1\r\n", detectedHTTP, true},
		{"PRI * HTTP/2.0\r\n", detectedHTTP, true},
		{"DELETE ", detectedHTTP, true},
		{"GE", detectedTCP, false},
		{"\x16\x03\x01\x02", detectedTCP, true},
		{" GET", detectedTCP, true},
		{"get /", detectedTCP, true},
		{"ABCDEFGHIJKLMNOPQ", detectedTCP, true},
	} {
		got, done := classify([]byte(c.in))
		if got != c.want || done != c.done {
			t.Errorf("%q: %v %v, want %v %v", c.in, got, done, c.want, c.done)
		}
	}
}

func TestUpstreamHostRoundTrip(t *testing.T) {
	var p Proxy
	for _, c := range []struct{ dst, src string }{{"10.244.2.2:8080", "10.244.1.2"}, {"[fd00::2]:80", "fd00::1"}} {
		dst, src := netip.MustParseAddrPort(c.dst), netip.MustParseAddr(c.src)
		h := p.upstreamHost(dst, src)
		gd, gs, err := parseUpstreamHost(h)
		if err != nil || gd != dst || gs != src {
			t.Errorf("%s: %v %v %v", h, gd, gs, err)
		}
	}
	for _, bad := range []string{"10.0.0.1:80", "zz.zz:80", "00.00:99999", ""} {
		if _, _, err := parseUpstreamHost(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBodyTapReplays(t *testing.T) {
	tap := newBodyTap(io.NopCloser(strings.NewReader("hello world")), 64)
	a := tap.attempt()
	b := make([]byte, 5)
	io.ReadFull(a, b) // the first attempt read "hello" and failed
	a.Close()
	if _, err := a.Read(b); err == nil {
		t.Fatal("a closed attempt still reads")
	}
	all, _ := io.ReadAll(tap.attempt())
	if string(all) != "hello world" || !tap.replayable() {
		t.Fatalf("replay %q", all)
	}
	if body, ok := tap.complete(); !ok || !bytes.Equal(body, all) {
		t.Fatalf("complete %q %v", body, ok)
	}
	big := newBodyTap(io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)
	n, _ := io.Copy(io.Discard, big.attempt())
	if n != 100 || big.replayable() || big.bytesRead() != 100 {
		t.Fatalf("over the limit: read %d, replayable %v", n, big.replayable())
	}
}

func TestRetryPolicy(t *testing.T) {
	p, err := compileRetry("retry", &meshv1.Retry{Attempts: 2, RetryOn: []string{"gateway-error", "unavailable"}, Codes: []uint32{409}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		code int
		grpc string
		want bool
	}{{502, "", true}, {503, "", true}, {500, "", false}, {409, "", true}, {200, "14", true}, {200, "0", false}} {
		if got := p.retriableStatus(c.code, c.grpc); got != c.want {
			t.Errorf("%d/%s: %v", c.code, c.grpc, got)
		}
	}
	def, _ := compileRetry("retry", &meshv1.Retry{Attempts: 2})
	if !def.retriableStatus(503, "") || def.retriableStatus(500, "") {
		t.Error("a retry without conditions retries 503 only")
	}
}
