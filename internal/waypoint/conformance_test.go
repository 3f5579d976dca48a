//go:build linux

package waypoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
	"github.com/ambit-mesh/ambit/internal/echo"
	"github.com/ambit-mesh/ambit/internal/meshtest"
	"github.com/ambit-mesh/ambit/test/conformance"
)

// The Gateway API mesh (GAMMA) conformance cases (test/conformance,
// CASES.md), run through the real path: client pod → ztunnel → waypoint →
// ztunnel → `ambit app echo`, with the suite's own manifests. The cases are
// shared with the local cluster's end-to-end test (test/e2e).
const (
	meshNS     = conformance.MeshNS
	consumerNS = conformance.ConsumerNS
)

// conformanceVIPs are the addresses given to the suite's Services (the
// manifests leave them to the cluster).
var conformanceVIPs = map[string]string{"echo-v1": "10.96.1.1", "echo-v2": "10.96.1.2", "echo": "10.96.1.3"}

// conformancePods are the addresses of the echo pods by Deployment.
var conformancePods = map[string]string{"echo-v1": "10.244.2.2", "echo-v2": "10.244.2.3"}

// conformanceManifests are the suite's base manifests as a cluster would
// run them: namespaces in ambient mode using the waypoint, Service VIPs,
// and Deployments replaced by the test's pods.
func conformanceManifests(t *testing.T) string {
	base, err := conformance.Manifest("manifests.yaml")
	meshtest.Must(t, err)
	var out []string
	out = append(out, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %s, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Namespace
metadata: {name: %s, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: %[1]s}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: %[1]s, labels: {istio.io/use-waypoint: none}}
spec:
  clusterIP: 10.96.1.20
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
`, meshNS, consumerNS))
	for _, doc := range strings.Split(base, "\n---\n") {
		if !strings.Contains(doc, "kind: Service\n") {
			continue
		}
		for name, ip := range conformanceVIPs {
			if strings.Contains(doc, "  name: "+name+"\n") {
				doc = strings.Replace(doc, "spec:\n", "spec:\n  clusterIP: "+ip+"\n", 1)
			}
		}
		out = append(out, doc)
	}
	return strings.Join(out, "\n---\n")
}

type conformanceMesh struct {
	*meshtest.Mesh
	clients map[string]*meshtest.Pod
	admin   string
}

func startConformance(t *testing.T) *conformanceMesh {
	pod := func(name, ns, node, ip string, labels map[string]string, enrolled bool) *meshtest.Pod {
		return &meshtest.Pod{Name: name, Namespace: ns, Node: node, ServiceAccount: "default", IP: netip.MustParseAddr(ip), Labels: labels, Enrolled: enrolled}
	}
	v1 := pod("echo-v1-0", meshNS, "node-b", conformancePods["echo-v1"], map[string]string{"app": "echo", "version": "v1"}, true)
	v2 := pod("echo-v2-0", meshNS, "node-b", conformancePods["echo-v2"], map[string]string{"app": "echo", "version": "v2"}, true)
	client := pod("client-0", meshNS, "node-a", "10.244.1.2", map[string]string{"app": "client"}, true)
	consumer := pod("consumer-0", consumerNS, "node-a", "10.244.1.3", map[string]string{"app": "client"}, true)
	wp := pod("waypoint-0", meshNS, "node-a", "10.244.1.10", map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint", "istio.io/dataplane-mode": "none"}, false)
	wp.ServiceAccount = "waypoint"
	c := &conformanceMesh{Mesh: meshtest.Start(t, meshtest.Options{
		Nodes: map[string]string{"node-a": "zone-a", "node-b": "zone-b"},
		Pods:  []*meshtest.Pod{v1, v2, client, consumer, wp}, Manifests: conformanceManifests(t),
	}), clients: map[string]*meshtest.Pod{"client": client, "consumer": consumer}}
	for _, p := range []*meshtest.Pod{v1, v2} {
		var srv *echo.Server
		meshtest.Must(t, p.Do(func() error {
			var err error
			srv, err = echo.Start(echo.Options{HTTPPorts: []int{8080, 8443}, GRPCPorts: []int{7070}, TCPPorts: []int{9090}, Pod: p.Name, Namespace: p.Namespace})
			return err
		}))
		t.Cleanup(srv.Close)
	}
	c.admin = c.StartWaypoint(t, wp, "waypoint", nil).AdminAddr.String()
	return c
}

// HTTP implements conformance.Harness.
func (c *conformanceMesh) HTTP(t *testing.T, cc conformance.Case) (int, http.Header, echo.Response) {
	host := cc.Host
	if host == "" {
		host = "echo"
	}
	name, port, ok := strings.Cut(host, ":")
	if !ok {
		port = "80"
	}
	name, _, _ = strings.Cut(name, ".")
	addr := conformanceVIPs[name] + ":" + port
	if cc.PodIP {
		addr = conformancePods[name] + ":" + port
	}
	from := c.clients[cc.From]
	if from == nil {
		from = c.clients["client"]
	}
	client := &http.Client{Timeout: 20 * time.Second,
		Transport:     &http.Transport{DialContext: from.Dialer(), DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest("GET", "http://"+addr+cc.Path, nil)
	meshtest.Must(t, err)
	req.Host = strings.TrimSuffix(host, ":80")
	for k, v := range cc.Header {
		if strings.EqualFold(k, "host") {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s%s: %v", host, cc.Path, err)
	}
	defer resp.Body.Close()
	var e echo.Response
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp.StatusCode, resp.Header, e
}

// Apply implements conformance.Harness.
func (c *conformanceMesh) Apply(t *testing.T, file string) {
	t.Helper()
	yaml, err := conformance.Manifest(file)
	meshtest.Must(t, err)
	c.Change(t, file, yaml, c.admin)
	t.Cleanup(func() { c.Change(t, file, "", c.admin) })
}

func TestConformance(t *testing.T) {
	conformance.Run(t, startConformance(t))
}

// GRPC implements conformance.Harness.
func (c *conformanceMesh) GRPC(t *testing.T, target string) echov1.EchoClient {
	name, port, _ := strings.Cut(target, ":")
	dial := c.clients["client"].Dialer()
	cc, err := grpc.NewClient(conformanceVIPs[name]+":"+port, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(target),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	meshtest.Must(t, err)
	t.Cleanup(func() { cc.Close() })
	return echov1.NewEchoClient(cc)
}
