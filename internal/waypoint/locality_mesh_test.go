//go:build linux

package waypoint_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/echo"
	"github.com/ambit-mesh/ambit/internal/meshtest"
)

// TestLocalityLbSetting: a DestinationRule's localityLbSetting distribute,
// failover and failoverPriority decide which zone serves, judged from the
// waypoint's own locality and labels (as Envoy's), not the client's. The
// waypoint runs in r1/zone-a, where no echo runs; the client in r2/zone-b
// beside echo-b (tier gold); echo-c in r3/zone-c (tier silver). Left to
// itself the waypoint treats both other regions alike.
func TestLocalityLbSetting(t *testing.T) {
	client := &meshtest.Pod{Name: "client", Namespace: "shop", Node: "node-b", ServiceAccount: "client", IP: netip.MustParseAddr("10.244.2.2"),
		Labels: map[string]string{"app": "client"}, Enrolled: true}
	echoB := &meshtest.Pod{Name: "echo-b", Namespace: "shop", Node: "node-b", ServiceAccount: "echo", IP: netip.MustParseAddr("10.244.2.3"),
		Labels: map[string]string{"app": "echo", "tier": "gold"}, Enrolled: true}
	echoC := &meshtest.Pod{Name: "echo-c", Namespace: "shop", Node: "node-c", ServiceAccount: "echo", IP: netip.MustParseAddr("10.244.3.2"),
		Labels: map[string]string{"app": "echo", "tier": "silver"}, Enrolled: true}
	wp := &meshtest.Pod{Name: "waypoint-0", Namespace: "shop", Node: "node-a", ServiceAccount: "waypoint", IP: netip.MustParseAddr("10.244.1.10"),
		Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint", "istio.io/dataplane-mode": "none", "tier": "gold"}}
	m := &testMesh{Mesh: meshtest.Start(t, meshtest.Options{
		Nodes:     map[string]string{"node-a": "r1/zone-a", "node-b": "r2/zone-b", "node-c": "r3/zone-c"},
		Pods:      []*meshtest.Pod{client, echoB, echoC, wp},
		Manifests: meshManifests,
	}), client: client, access: &syncBuffer{}}
	servedB := &pathCounter{n: map[string]int64{}}
	for _, p := range []*meshtest.Pod{echoB, echoC} {
		var srv *echo.Server
		log := slog.New(slog.DiscardHandler)
		if p == echoB {
			log = slog.New(servedB)
		}
		meshtest.Must(t, p.Do(func() error {
			var err error
			srv, err = echo.Start(echo.Options{HTTPPorts: []int{8080}, Pod: p.Name, Namespace: p.Namespace, Log: log})
			return err
		}))
		t.Cleanup(srv.Close)
	}
	m.wp = m.StartWaypoint(t, wp, "waypoint", m.access)

	// served sends requests and returns the set of zones that served them.
	c := m.httpClient(false)
	served := func() map[string]bool {
		zones := map[string]bool{}
		for range 30 {
			req, _ := http.NewRequest("GET", "http://10.96.0.10/", nil)
			resp, err := c.Do(req)
			if err != nil {
				return nil
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return nil
			}
			zones[resp.Header.Get("X-Ambit-Served-Zone")] = true
		}
		return zones
	}
	only := func(zone string) func() bool {
		return func() bool { z := served(); return len(z) == 1 && z[zone] }
	}
	both := func() bool { z := served(); return len(z) == 2 && z["zone-b"] && z["zone-c"] }

	// Round robin: a uniform choice within the tier, so one zone serving
	// 30 requests in a row is the policy's doing (least request would
	// keep to the faster endpoint of two).
	dr := func(setting string) string {
		return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: shop}
spec:
  host: echo.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      %s
`, setting)
	}
	admin := m.wp.AdminAddr.String()
	m.Change(t, "dr.yaml", dr(""), admin)
	meshtest.Eventually(t, "both regions serve with no locality setting", both)
	for _, tt := range []struct {
		name, setting, zone string
	}{
		// The waypoint's region r1 matches; the client's (r2) would not.
		{"distribute", `localityLbSetting: {distribute: [{from: "r1/*", to: {"r2/zone-b": 100}}]}`, "zone-b"},
		{"failover", `localityLbSetting: {failover: [{from: r1, to: r3}]}`, "zone-c"},
		// The waypoint's own label: gold, as echo-b.
		{"failoverPriority", `localityLbSetting: {failoverPriority: [tier]}`, "zone-b"},
		{"failoverPriority with a value", `localityLbSetting: {failoverPriority: [tier=silver]}`, "zone-c"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m.Change(t, "dr.yaml", dr(tt.setting), admin)
			meshtest.Eventually(t, tt.name+": only "+tt.zone, only(tt.zone))
			m.Change(t, "dr.yaml", dr(""), admin)
			meshtest.Eventually(t, "both regions serve again", both)
		})
	}

	// The zone traffic does not reach is probed once a second: by a copy
	// of a GET (the client's answer comes from where the policy says), by
	// a request itself when it cannot be copied (a POST with a body).
	t.Run("probes", func(t *testing.T) {
		m.Change(t, "dr.yaml", dr(`localityLbSetting: {failover: [{from: r1, to: r3}]}`), admin)
		meshtest.Eventually(t, "only zone-c", only("zone-c"))
		send := func(method, path string) (toB int) {
			for range 50 { // 2.5 s
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("x")
				}
				req, _ := http.NewRequest(method, "http://10.96.0.10"+path, body)
				resp, err := c.Do(req)
				meshtest.Must(t, err)
				resp.Body.Close()
				if resp.Header.Get("X-Ambit-Served-Zone") == "zone-b" {
					toB++
				}
				time.Sleep(50 * time.Millisecond)
			}
			return toB
		}
		if toB := send("GET", "/copied"); toB != 0 {
			t.Errorf("%d GETs answered by zone-b: probes should be copies", toB)
		}
		meshtest.Eventually(t, "copies of GETs reached zone-b", func() bool { return servedB.count("/copied") >= 1 })
		if toB := send("POST", "/posted"); toB == 0 {
			t.Error("no POST probed zone-b in 2.5 s")
		}
		m.Change(t, "dr.yaml", dr(""), admin)
	})
}
