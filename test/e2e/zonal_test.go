//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
)

// TestZonal: examples/zonal on the local cluster (seed 000). Each zone's
// client is served in its zone, through the waypoint instance of its zone;
// x-destination-zone pins another; when zone-c's backends turn slow, zone-c's
// client is moved to the other zones; ambit top zones shows the traffic.
func TestZonal(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	// The example, with zone-c's backends reading a delay file.
	dir := t.TempDir()
	delayFile := filepath.Join(dir, "zone-c-delay")
	b, err := os.ReadFile("../../examples/zonal/zonal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "\n---\n")
	for i, d := range docs {
		if strings.Contains(d, "name: echo-c,") {
			docs[i] = strings.Replace(d, `command: ["ambit", "app", "echo"]`, `command: ["ambit", "app", "echo", "--delay-file", "`+delayFile+`"]`, 1)
		}
	}
	manifests := filepath.Join(dir, "zonal.yaml")
	if err := os.WriteFile(manifests, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	name := clusterName(t, "z")
	upFrom(t, name, manifests)
	st := state(t, name)
	url := fmt.Sprintf("http://%s/", serviceIP(t, st, "zonal", "echo"))

	served := func(hc *http.Client, header map[string]string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Ambit-Served-Zone"), nil
	}
	for _, z := range []string{"a", "b", "c"} {
		hc := podClient(t, findPod(t, st, "client-"+z))
		local := 0
		const n = 40
		for i := range n {
			got, err := served(hc, nil)
			if err != nil {
				t.Fatalf("client-%s request %d: %v", z, i, err)
			}
			if got == "zone-"+z {
				local++
			}
		}
		// A probe (one request a second per waypoint) may go elsewhere.
		if local < n-3 {
			t.Errorf("client-%s: %d of %d requests served in zone-%s", z, local, n, z)
		}
		if got, err := served(hc, map[string]string{"x-destination-zone": "zone-b"}); err != nil || got != "zone-b" {
			t.Errorf("client-%s pinned to zone-b: served in %q (%v)", z, got, err)
		}
	}

	// zone-c degrades: its client is moved to zones a and b.
	if err := os.WriteFile(delayFile, []byte("300ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hc := podClient(t, findPod(t, st, "client-c"))
	start := time.Now()
	elsewhere := 0
	for elsewhere < 20 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("zone-c's client still served in zone-c 20 s after zone-c degraded")
		}
		got, err := served(hc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got == "zone-c" {
			elsewhere = 0
		} else {
			elsewhere++
		}
	}
	t.Logf("zone-c's client served elsewhere after %.1f s", time.Since(start).Seconds())

	out := mustAmbit(t, "top", "zones", "--name", name, "--once")
	for _, want := range []string{"echo.zonal.svc.cluster.local", "L7:", "zone-c  zone-a", "zone-a  zone-a", "L4:"} {
		if !strings.Contains(out, want) {
			t.Errorf("ambit top zones lacks %q:\n%s", want, out)
		}
	}
}
