package ztunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// The mesh under test: pods on two nodes joined by one bridge (the link
// between nodes), each node's ztunnel serving its pods.
//
//	client  10.244.1.2  node-a  shop/client   enrolled
//	server  10.244.2.2  node-b  shop/echo     enrolled, behind Service echo 10.96.0.10:80 → 8080, :9000 echo
//	outside 10.244.2.3  node-b  legacy        not in the mesh
const meshManifests = `
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {topology.kubernetes.io/zone: zone-b}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: echo}
  ports:
  - {name: tcp-whoami, port: 80, targetPort: 8080}
  - {name: tcp-echo, port: 9000}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: shop, labels: {app: echo}}
spec:
  nodeName: node-b
  serviceAccountName: echo
  containers: [{name: app}]
status: {podIP: 10.244.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  nodeName: node-a
  serviceAccountName: client
  containers: [{name: app}]
status: {podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: outside, namespace: legacy}
spec:
  nodeName: node-b
  containers: [{name: app}]
status: {podIP: 10.244.2.3}
`

type meshPod struct {
	ns   *netns.NS
	ip   netip.Addr
	info redirect.Pod
}

type testMesh struct {
	dir                     string
	bridge                  *netns.NS
	client, server, outside *meshPod
	cpCancel                context.CancelFunc
	cpDone                  chan struct{}
	authority               *ca.CA
	logs                    *logBuffer
	nodes                   map[string]*meshNode
}

// meshNode is one node's ztunnel, run as cmd/ztunnel runs it (Run), with
// its node agent.
type meshNode struct {
	Running
	agent  *redirect.Agent
	cancel context.CancelFunc // SIGTERM
	done   chan error         // Run's result
}

// startMesh builds the mesh; drain, if given, sets a node's drain timeout
// (default a minute).
func startMesh(t *testing.T, drain ...map[string]time.Duration) *testMesh {
	t.Helper()
	netnstest.RequireRoot(t)
	m := &testMesh{dir: t.TempDir(), nodes: map[string]*meshNode{}, logs: &logBuffer{}}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, m.logs), &slog.HandlerOptions{Level: slog.LevelInfo}))

	// Network: a bridge namespace and three pod namespaces, no link to the host.
	m.bridge = netnstest.New(t)
	must(t, netns.AddBridge(m.bridge, "br0"))
	must(t, netns.AddAddr(m.bridge, "br0", netip.MustParsePrefix("10.244.0.1/16")))
	pod := func(name, ip, ns, sa string) *meshPod {
		p := &meshPod{ns: netnstest.New(t), ip: netip.MustParseAddr(ip),
			info: redirect.Pod{UID: name, Name: name, Namespace: ns, ServiceAccount: sa, IPs: []netip.Addr{netip.MustParseAddr(ip)}}}
		must(t, netns.AttachToBridge(m.bridge, "br0", p.ns, "eth0", "veth-"+name, netip.PrefixFrom(p.ip, 16)))
		must(t, netns.AddRoute(p.ns, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.244.0.1"), "eth0"))
		return p
	}
	m.client = pod("client", "10.244.1.2", "shop", "client")
	m.server = pod("server", "10.244.2.2", "shop", "echo")
	m.outside = pod("outside", "10.244.2.3", "legacy", "default")
	serveApps(t, m.server)
	serveApps(t, m.outside)

	// Control plane with its CA, fed from a directory.
	os.WriteFile(filepath.Join(m.dir, "mesh.yaml"), []byte(meshManifests), 0o644)
	var err error
	m.authority, err = ca.New(ca.Options{TrustDomain: "cluster.local", Dir: t.TempDir()})
	must(t, err)
	quiet := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src := &controlplane.FileSource{Paths: []string{m.dir}, Interval: 20 * time.Millisecond, Log: quiet}
	cp, err := controlplane.New(controlplane.Options{Source: src, Mesh: model.DefaultMeshConfig(), CA: m.authority,
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Log: quiet})
	must(t, err)
	cpCtx, cpCancel := context.WithCancel(context.Background())
	m.cpCancel, m.cpDone = cpCancel, make(chan struct{})
	go func() { cp.Run(cpCtx); close(m.cpDone) }()
	t.Cleanup(m.stopControlPlane)
	<-cp.Ready()
	rootPEM := filepath.Join(t.TempDir(), "root-cert.pem")
	must(t, os.WriteFile(rootPEM, []byte(strings.Join(m.authority.TrustBundlePEM(), "")), 0o644))

	// One ztunnel per node, run as cmd/ztunnel runs it, each with its node
	// agent socket.
	for node, pods := range map[string][]*meshPod{"node-a": {m.client}, "node-b": {m.server}} {
		dir := t.TempDir()
		token := filepath.Join(dir, "token")
		must(t, os.WriteFile(token, []byte(m.authority.NodeToken(node)), 0o600))
		socket := filepath.Join(dir, "agent.sock")
		agent := redirect.NewAgent(redirect.AgentConfig{})
		agentCtx, agentCancel := context.WithCancel(context.Background())
		go agent.ListenAndServe(agentCtx, socket)
		n := &meshNode{agent: agent, done: make(chan error, 1)}
		started := make(chan Running, 1)
		ctx, cancel := context.WithCancel(context.Background())
		n.cancel = cancel
		go func() {
			n.done <- Run(ctx, Config{NodeName: node, ControlPlane: cp.GRPCAddr(), TokenFile: token, RootCertFile: rootPEM,
				TrustDomain: "cluster.local", AgentSocket: socket, AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
				ReadyAddr: "127.0.0.1:0", DrainTimeout: drainTimeout(node, drain), Log: log.With("node", node),
				Started: func(r Running) { started <- r }})
		}()
		select {
		case n.Running = <-started:
		case err := <-n.done:
			t.Fatalf("%s: ztunnel did not start: %v", node, err)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: ztunnel did not start", node)
		}
		t.Cleanup(func() {
			cancel()
			select {
			case <-n.done:
			case <-time.After(time.Minute):
				t.Errorf("%s: ztunnel did not stop", node)
			}
			agentCancel()
			agent.Close()
		})
		m.nodes[node] = n
		eventually(t, node+" ready", func() bool { return httpGet(n.ReadyAddr, "/healthz/ready") == 200 })
		for _, p := range pods {
			must(t, redirect.Install(p.ns, redirect.Config{}))
			t.Cleanup(func() { redirect.Remove(p.ns, redirect.Config{}) })
			dup, err := p.ns.Dup()
			must(t, err)
			addCtx, addCancel := context.WithTimeout(context.Background(), 10*time.Second)
			for {
				// The ztunnel may not have dialled the agent yet.
				if err = agent.AddPod(addCtx, p.info, dup.File()); err == nil || addCtx.Err() != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			addCancel()
			must(t, err)
		}
	}
	return m
}

func drainTimeout(node string, drain []map[string]time.Duration) time.Duration {
	for _, d := range drain {
		if v, ok := d[node]; ok {
			return v
		}
	}
	return time.Minute
}

// httpGet returns the status of GET http://addr/path, 0 if it failed.
func httpGet(addr net.Addr, path string) int {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr.String() + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// httpBody returns the body of GET http://addr/path.
func httpBody(t *testing.T, addr net.Addr, path string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr.String() + path)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b)
}

// logBuffer keeps the ztunnels' logs for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (m *testMesh) stopControlPlane() {
	m.cpCancel()
	<-m.cpDone
}

// serveApps runs the pod's applications inside its namespace: on 8080 it
// answers with the caller's address and closes; on 9000 it echoes.
func serveApps(t *testing.T, p *meshPod) {
	whoami, err := netns.ListenTCP(p.ns, "0.0.0.0:8080", netns.SocketOptions{})
	must(t, err)
	echo, err := netns.ListenTCP(p.ns, "0.0.0.0:9000", netns.SocketOptions{})
	must(t, err)
	t.Cleanup(func() { whoami.Close(); echo.Close() })
	go func() {
		for {
			c, err := whoami.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				c.Close()
			}()
		}
	}()
}

func (m *testMesh) dial(t *testing.T, from *meshPod, to string) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return netns.DialTCP(ctx, from.ns, netip.MustParseAddrPort(to), netns.SocketOptions{})
}

// whoami connects and returns what the 8080 app saw as the caller ("" if the
// connection was refused or closed without an answer).
func (m *testMesh) whoami(t *testing.T, from *meshPod, to string) string {
	c, err := m.dial(t, from, to)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// eventually retries f until it returns true or 10 s pass (config pushes are asynchronous).
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMesh(t *testing.T) {
	m := startMesh(t)
	const marker = "AMBIT-MARKER-7f3c9e21-plaintext-must-not-cross"
	capture := startCapture(t, m.bridge, marker)

	t.Run("service VIP across nodes keeps the client IP", func(t *testing.T) {
		got := m.whoami(t, m.client, "10.96.0.10:80")
		if !strings.HasPrefix(got, "10.244.1.2:") {
			t.Fatalf("server saw caller %q, want the client pod 10.244.1.2", got)
		}
	})
	t.Run("pod IP across nodes", func(t *testing.T) {
		if got := m.whoami(t, m.client, "10.244.2.2:8080"); !strings.HasPrefix(got, "10.244.1.2:") {
			t.Fatalf("server saw caller %q", got)
		}
	})
	t.Run("no plaintext between nodes", func(t *testing.T) {
		c, err := m.dial(t, m.client, "10.96.0.10:9000")
		must(t, err)
		io.WriteString(c, marker)
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != marker {
			t.Fatalf("echo returned %q", b)
		}
		if capture.seen(t, m) {
			t.Fatal("the marker crossed the link between nodes in clear")
		}
		if capture.packets() == 0 {
			t.Fatal("the capture saw no packets at all: it is not watching the link")
		}
	})
	t.Run("100 MB each way, exact", func(t *testing.T) {
		c, err := m.dial(t, m.client, "10.96.0.10:9000")
		must(t, err)
		defer c.Close()
		const size = 100 << 20
		sent, got := sha256.New(), sha256.New()
		var n int64
		go func() {
			buf := make([]byte, 1<<20)
			for i := 0; i < size/len(buf); i++ {
				rand.Read(buf)
				sent.Write(buf)
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
			c.CloseWrite()
		}()
		n, err = io.Copy(got, c)
		if err != nil || n != size || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
			t.Fatalf("echoed %d of %d bytes (err %v); checksums equal: %v", n, size, err, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
		}
	})
	t.Run("plaintext from outside the mesh: PERMISSIVE then STRICT", func(t *testing.T) {
		if got := m.whoami(t, m.outside, "10.244.2.2:8080"); !strings.HasPrefix(got, "10.244.2.3:") {
			t.Fatalf("PERMISSIVE: server saw %q", got)
		}
		m.apply(t, "strict.yaml", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n")
		eventually(t, "STRICT refuses plaintext", func() bool { return m.whoami(t, m.outside, "10.244.2.2:8080") == "" })
		if got := m.whoami(t, m.client, "10.96.0.10:80"); !strings.HasPrefix(got, "10.244.1.2:") {
			t.Fatalf("STRICT must still admit mesh traffic; server saw %q", got)
		}
		m.remove(t, "strict.yaml")
	})
	t.Run("authorization allow/deny", func(t *testing.T) {
		cases := []struct {
			name, policy string
			allowed      bool
		}{
			{"deny the client's namespace", "  action: DENY\n  rules: [{from: [{source: {namespaces: [shop]}}]}]\n", false},
			{"allow only another principal", "  action: ALLOW\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/other]}}]}]\n", false},
			{"allow the client's principal", "  action: ALLOW\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]\n", true},
			{"allow another port only", "  action: ALLOW\n  rules: [{to: [{operation: {ports: [\"9000\"]}}]}]\n", false},
			{"L7 rule fails closed", "  action: ALLOW\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n", false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				m.apply(t, "authz.yaml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: {matchLabels: {app: echo}}\n"+tc.policy)
				eventually(t, "policy in force", func() bool {
					return strings.HasPrefix(m.whoami(t, m.client, "10.96.0.10:80"), "10.244.1.2:") == tc.allowed
				})
				m.remove(t, "authz.yaml")
				eventually(t, "policy removed", func() bool { return strings.HasPrefix(m.whoami(t, m.client, "10.96.0.10:80"), "10.244.1.2:") })
			})
		}
	})
	t.Run("a certificate from another CA is refused", func(t *testing.T) {
		other, err := ca.New(ca.Options{TrustDomain: "cluster.local"})
		must(t, err)
		cert := foreignCert(t, other, spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"})
		raw, err := m.dial(t, m.outside, "10.244.2.2:15008")
		must(t, err)
		tc := tls.Client(raw, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3 clients learn of a rejected certificate on first read.
			_, err = tc.Read(make([]byte, 1))
		}
		tc.Close()
		if err == nil {
			t.Fatal("the ztunnel accepted a client certificate from a foreign CA")
		}
	})
	t.Run("admin config_dump", func(t *testing.T) {
		body := httpBody(t, m.nodes["node-b"].AdminAddr, "/config_dump")
		var dump configDump
		must(t, json.Unmarshal([]byte(body), &dump))
		if len(dump.Pods) != 1 || dump.Pods[0].Name != "server" || dump.Pods[0].Identity != "spiffe://cluster.local/ns/shop/sa/echo" {
			t.Errorf("pods = %+v, want the server pod with its identity", dump.Pods)
		}
		names := map[string]bool{}
		for _, w := range dump.Config.Workloads {
			names[w.Namespace+"/"+w.Name] = true
		}
		if !names["shop/server"] || !names["shop/client"] || len(dump.Config.Services) == 0 {
			t.Errorf("config dump lacks workloads or services: workloads %v, %d services", names, len(dump.Config.Services))
		}
		var cert *certificateDump
		for i, c := range dump.Certificates {
			if c.Identity == "spiffe://cluster.local/ns/shop/sa/echo" {
				cert = &dump.Certificates[i]
			}
		}
		if cert == nil || cert.State != "valid" || !cert.NotAfter.After(time.Now()) {
			t.Errorf("certificates = %+v, want the server's, valid, with its expiry", dump.Certificates)
		}
		if strings.Contains(body, "PRIVATE KEY") || strings.Contains(strings.ToLower(body), "privatekey") {
			t.Error("config_dump shows key material")
		}
		if !dump.ControlPlane.Synced {
			t.Error("config_dump: control plane not synced")
		}
	})
	t.Run("bad input is refused and logged, the proxy keeps serving", func(t *testing.T) {
		hbone := "10.244.2.2:15008"
		t.Run("garbage instead of a TLS hello", func(t *testing.T) {
			c, err := m.dial(t, m.outside, hbone)
			must(t, err)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage")
			if b, _ := io.ReadAll(c); len(b) > 0 && b[0] != 0x15 { // at most a TLS alert
				t.Errorf("answered garbage with %q", b)
			}
			c.Close()
			eventually(t, "a log line for the refused hello", func() bool { return strings.Contains(m.logs.String(), "refused connection: TLS handshake failed") })
		})
		t.Run("client without a certificate", func(t *testing.T) {
			raw, err := m.dial(t, m.outside, hbone)
			must(t, err)
			before := strings.Count(m.logs.String(), "refused connection: TLS handshake failed")
			tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Read(make([]byte, 1)) // TLS 1.3: the refusal arrives after the client's handshake
			}
			tc.Close()
			if err == nil {
				t.Fatal("a client without a certificate got through")
			}
			eventually(t, "a log line for the refused client", func() bool {
				return strings.Count(m.logs.String(), "refused connection: TLS handshake failed") > before
			})
		})
		t.Run("malformed HBONE requests", func(t *testing.T) {
			tr := m.h2Transport(t, m.outside, spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"})
			for _, tc := range []struct {
				name, method, authority string
				want                    int
			}{
				{"GET instead of CONNECT", http.MethodGet, "10.244.2.2:8080", http.StatusMethodNotAllowed},
				{"authority is no address", http.MethodConnect, "server.shop:8080", http.StatusBadRequest},
				{"authority is not a pod here", http.MethodConnect, "10.244.1.2:8080", http.StatusBadRequest},
				{"authority is a ztunnel port", http.MethodConnect, "10.244.2.2:15008", http.StatusBadRequest},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req := &http.Request{Method: tc.method, URL: &url.URL{Scheme: "https", Host: tc.authority}, Host: tc.authority, Header: http.Header{}}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					resp, err := tr.RoundTrip(req.WithContext(ctx))
					must(t, err)
					resp.Body.Close()
					if resp.StatusCode != tc.want {
						t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
					}
				})
			}
			if !strings.Contains(m.logs.String(), "rejected malformed CONNECT") || !strings.Contains(m.logs.String(), "inbound: refused") {
				t.Error("malformed requests were not logged")
			}
		})
		if got := m.whoami(t, m.client, "10.96.0.10:80"); !strings.HasPrefix(got, "10.244.1.2:") {
			t.Fatalf("after bad input the proxy no longer serves: server saw %q", got)
		}
	})
	t.Run("waypoint-bound workload accepts only its waypoint", func(t *testing.T) {
		bound := strings.Replace(meshManifests, "metadata: {name: server, namespace: shop, labels: {app: echo}}",
			"metadata: {name: server, namespace: shop, labels: {app: echo, istio.io/use-waypoint: waypoint}}", 1)
		m.apply(t, "mesh.yaml", bound+waypointManifests)
		defer func() {
			m.apply(t, "mesh.yaml", meshManifests)
			eventually(t, "the waypoint binding to be gone", func() bool {
				return strings.HasPrefix(m.whoami(t, m.client, "10.244.2.2:8080"), "10.244.1.2:")
			})
		}()
		id := func(sa string) spiffe.ID {
			return spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: sa}
		}
		eventually(t, "the server to be bound to the waypoint", func() bool {
			w := m.nodes["node-b"].Proxy.store.View().WorkloadByIP(m.server.ip)
			return w != nil && w.GetWaypoint() != nil && m.nodes["node-b"].Proxy.store.View().IsWaypoint(w.GetWaypoint(), id("waypoint"))
		})
		opened := func(flags string) bool {
			return strings.Contains(httpBody(t, m.nodes["node-b"].MetricsAddr, "/metrics"), `response_flags="`+flags+`"`)
		}
		// A mesh client dialling the pod directly, not through the waypoint.
		if status := m.hboneConnect(t, m.outside, id("client"), "10.244.2.2:8080"); status != http.StatusUnauthorized {
			t.Errorf("a client bypassing the waypoint got %d, want 401", status)
		}
		if !strings.Contains(m.logs.String(), "destination is bound to a waypoint and the peer is not it") || !opened("DENY") {
			t.Error("the refusal was not logged or counted (response_flags=\"DENY\")")
		}
		// The waypoint itself.
		if status := m.hboneConnect(t, m.outside, id("waypoint"), "10.244.2.2:8080"); status != http.StatusOK {
			t.Errorf("the waypoint got %d, want 200", status)
		}
		// Plaintext from outside the mesh would bypass it too.
		if got := m.whoami(t, m.outside, "10.244.2.2:8080"); got != "" {
			t.Errorf("plaintext to a waypoint-bound pod went through: %q", got)
		}
	})
	t.Run("client address out of source ports: connect from the pod's address", func(t *testing.T) {
		// One ephemeral port in the server pod: a connection from the client
		// holds it, so the next one cannot use the client's address.
		portRange := func(v string) error {
			return netns.Do(m.server.ns, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte(v), 0o644) })
		}
		var old []byte
		must(t, netns.Do(m.server.ns, func() (err error) {
			old, err = os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
			return err
		}))
		// The previous subtest's configuration change must have reached the
		// client's node for the Service too, not just for the pod it checked.
		eventually(t, "the Service VIP to answer", func() bool {
			return strings.HasPrefix(m.whoami(t, m.client, "10.96.0.10:80"), "10.244.1.2:")
		})
		must(t, portRange("40000 40000"))
		defer func() { must(t, portRange(strings.TrimSpace(string(old)))) }()
		held, err := m.dial(t, m.client, "10.96.0.10:9000")
		must(t, err)
		defer held.Close()
		held.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(held, "x")
		if _, err := io.ReadFull(held, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		got := m.whoami(t, m.client, "10.96.0.10:80")
		if !strings.HasPrefix(got, "10.244.2.2:") {
			t.Fatalf("with no port left for the client's address the server saw %q, want the pod's own address", got)
		}
		if !strings.Contains(m.logs.String(), "no free port to connect from the client's address") {
			t.Error("the fallback was not logged")
		}
	})
	t.Run("control plane down: new connections still work", func(t *testing.T) {
		m.stopControlPlane()
		for range 3 {
			if got := m.whoami(t, m.client, "10.96.0.10:80"); !strings.HasPrefix(got, "10.244.1.2:") {
				t.Fatalf("with the control plane down, server saw %q", got)
			}
		}
	})
	t.Run("un-enrolling restores the pod's own networking", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		must(t, m.nodes["node-a"].agent.DelPod(ctx, "client"))
		must(t, redirect.Remove(m.client.ns, redirect.Config{}))
		// Without the ztunnel the server sees the client directly: plaintext,
		// not through a tunnel — and nothing listens on 15001 any more.
		if got := m.whoami(t, m.client, "10.244.2.2:8080"); !strings.HasPrefix(got, "10.244.1.2:") {
			t.Fatalf("after un-enrolling, server saw %q", got)
		}
		if c, err := m.dial(t, m.client, "127.0.0.1:15001"); err == nil {
			c.Close()
			t.Fatal("the outbound listener is still open in the un-enrolled pod")
		}
	})
	t.Run("metrics", func(t *testing.T) {
		out := httpBody(t, m.nodes["node-b"].MetricsAddr, "/metrics")
		for _, want := range []string{`reporter="destination"`, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`,
			`connection_security_policy="mutual_tls"`, `destination_zone="zone-b"`, `source_zone="zone-a"`, "istio_tcp_received_bytes_total{",
			// The destination side guesses the service from the target port, as Istio does.
			`destination_service="echo.shop.svc.cluster.local",destination_service_namespace="shop",destination_service_name="echo"`,
			"process_resident_memory_bytes ", "go_goroutines ", "go_memstats_heap_inuse_bytes "} {
			if !strings.Contains(out, want) {
				t.Errorf("node-b metrics lack %s", want)
			}
		}
		// The source side knows the service only when the client dialled its
		// VIP; for a pod IP it is unknown, never made up from the pod's name.
		src := httpBody(t, m.nodes["node-a"].MetricsAddr, "/metrics")
		var viaVIP, viaPod bool
		for _, line := range strings.Split(src, "\n") {
			if !strings.HasPrefix(line, "istio_tcp_connections_opened_total{") || !strings.Contains(line, `destination_workload="server"`) {
				continue
			}
			viaVIP = viaVIP || strings.Contains(line, `destination_service="echo.shop.svc.cluster.local"`)
			viaPod = viaPod || strings.Contains(line, `destination_service="unknown",destination_service_namespace="unknown",destination_service_name="unknown"`)
			if strings.Contains(line, `destination_service="server`) {
				t.Errorf("a service named after the pod: %s", line)
			}
		}
		if !viaVIP || !viaPod {
			t.Errorf("node-a metrics: series via the VIP %v, via the pod IP with an unknown service %v\n%s", viaVIP, viaPod, src)
		}
	})
}

// waypointManifests add a workload waypoint for shop, with one instance
// on node-b (its process is never started: the tests speak for it).
const waypointManifests = `
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: workload}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec:
  nodeName: node-b
  serviceAccountName: waypoint
  containers: [{name: app}]
status: {podIP: 10.244.2.9}
`

// meshCerts issues mesh certificates for any identity straight from the
// mesh's CA (the tests play other workloads with them).
func (m *testMesh) meshCerts(t *testing.T) *identity.Manager {
	mgr, err := identity.NewManager(identity.Options{Client: directCA{m.authority}, Bundle: identity.NewBundle(m.authority.TrustBundle())})
	must(t, err)
	t.Cleanup(mgr.Close)
	return mgr
}

// h2Transport speaks HTTP/2 over mutual TLS with a mesh certificate for id
// to the server pod's HBONE port, from pod from, to send requests an HBONE
// client would not.
func (m *testMesh) h2Transport(t *testing.T, from *meshPod, id spiffe.ID) *http2.Transport {
	certs := m.meshCerts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cert, err := certs.Certificate(ctx, id)
	must(t, err)
	tr := &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			raw, err := netns.DialTCP(ctx, from.ns, netip.AddrPortFrom(m.server.ip, 15008), netns.SocketOptions{Timeout: 10 * time.Second})
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, &tls.Config{Certificates: []tls.Certificate{*cert}, InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// hboneConnect opens a tunnel to authority at the server pod as id, from
// pod from, and returns the response status (for a 200, after reading what
// the application answered).
func (m *testMesh) hboneConnect(t *testing.T, from *meshPod, id spiffe.ID, authority string) int {
	t.Helper()
	pool, err := hbone.NewPool(hbone.PoolOptions{Certificates: m.meshCerts(t)})
	must(t, err)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, _, err := pool.Connect(ctx, hbone.Target{
		Source:      id,
		Destination: []spiffe.ID{{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "echo"}},
		Addr:        netip.AddrPortFrom(m.server.ip, 15008),
		Dial:        hbone.DialFunc(netns.Dialer(from.ns, netns.SocketOptions{})),
		Authority:   netip.MustParseAddrPort(authority),
	})
	var se *hbone.StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	must(t, err)
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(s)
	if err != nil || !strings.HasPrefix(string(b), from.ip.String()+":") {
		t.Errorf("through the tunnel the application saw %q (%v), want %s", b, err, from.ip)
	}
	return http.StatusOK
}

// SIGTERM: readiness fails, no new connections, open ones finish within
// the grace period, then the ztunnel exits; past the grace period what is
// still open is cut.
func TestDrain(t *testing.T) {
	m := startMesh(t, map[string]time.Duration{"node-a": time.Second})
	echo := func(c *net.TCPConn, msg string) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != msg {
			return fmt.Errorf("echoed %q", b)
		}
		return nil
	}
	open, err := m.dial(t, m.client, "10.96.0.10:9000")
	must(t, err)
	must(t, echo(open, "before"))
	passthrough, err := m.dial(t, m.client, "10.244.2.3:9000") // outside the mesh: node-a alone carries it
	must(t, err)
	must(t, echo(passthrough, "before"))

	b := m.nodes["node-b"]
	b.cancel() // SIGTERM
	eventually(t, "node-b to report not ready", func() bool { return httpGet(b.ReadyAddr, "/healthz/ready") == http.StatusServiceUnavailable })
	eventually(t, "node-b to refuse new connections", func() bool { return m.whoami(t, m.client, "10.96.0.10:80") == "" })
	if err := echo(open, "during the drain"); err != nil {
		t.Fatalf("the open connection broke during the drain: %v", err)
	}
	select {
	case err := <-b.done:
		t.Fatalf("node-b exited with a connection still open (and a minute of grace): %v", err)
	default:
	}
	open.CloseWrite()
	if rest, err := io.ReadAll(open); err != nil || len(rest) != 0 {
		t.Fatalf("closing the open connection: %q, %v", rest, err)
	}
	open.Close()
	select {
	case err := <-b.done:
		must(t, err)
	case <-time.After(time.Minute):
		t.Fatal("node-b did not exit once its last connection closed")
	}
	b.done <- nil // for the cleanup
	if !strings.Contains(m.logs.String(), "ztunnel drained: every connection finished") {
		t.Error("node-b did not log a complete drain")
	}

	// node-a has a second of grace: the passthrough connection stays open
	// past it and is cut.
	a := m.nodes["node-a"]
	a.cancel()
	select {
	case err := <-a.done:
		must(t, err)
	case <-time.After(time.Minute):
		t.Fatal("node-a did not exit after its grace period")
	}
	a.done <- nil
	// The proxy let go of the connection: the client reads its end (EOF or
	// a reset), not a timeout.
	passthrough.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(passthrough); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the connection still open after the grace period was not cut")
	}
	if !strings.Contains(m.logs.String(), "grace period over; closed the connections still open") {
		t.Error("node-a did not log that it cut connections at the end of its grace period")
	}
}

// apply replaces a manifest file atomically: the control plane polls the
// directory, and a half-written file can be valid YAML holding a subset of
// the objects (a mesh without the Service the next subtest dials).
func (m *testMesh) apply(t *testing.T, name, yaml string) {
	t.Helper()
	tmp := filepath.Join(m.dir, "."+name+".tmp")
	must(t, os.WriteFile(tmp, []byte(yaml), 0o644))
	must(t, os.Rename(tmp, filepath.Join(m.dir, name)))
}

func (m *testMesh) remove(t *testing.T, name string) {
	t.Helper()
	must(t, os.Remove(filepath.Join(m.dir, name)))
}

func foreignCert(t *testing.T, other *ca.CA, id spiffe.ID) tls.Certificate {
	t.Helper()
	m, err := identity.NewManager(identity.Options{Client: directCA{other}, Bundle: identity.NewBundle(other.TrustBundle())})
	must(t, err)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := m.Certificate(ctx, id)
	must(t, err)
	return *c
}

// directCA signs without gRPC or node checks: it stands for an attacker's CA.
type directCA struct{ ca *ca.CA }

func (d directCA) CreateCertificate(ctx context.Context, req *meshv1.CertificateRequest, _ ...grpc.CallOption) (*meshv1.CertificateResponse, error) {
	csr, err := d.ca.ParseCSR([]byte(req.Csr))
	if err != nil {
		return nil, err
	}
	issued, err := d.ca.Issue(csr, 0)
	if err != nil {
		return nil, err
	}
	return &meshv1.CertificateResponse{CertChain: issued.ChainPEM(), TrustBundle: d.ca.TrustBundlePEM()}, nil
}

// capture watches every frame on the bridge namespace's interfaces for a
// marker (and for the sentinel of sync).
type capture struct {
	found, synced atomic.Bool
	n             atomic.Int64
}

// captureSentinel crosses the bridge in clear when sync asks for it.
const captureSentinel = "AMBIT-CAPTURE-SENTINEL-0b6d"

// seen reports whether the marker crossed in clear in any frame sent
// before the call: it sends a plaintext sentinel across the bridge (from
// the pod outside the mesh) and waits until the capture has read it, so
// every earlier frame has been read too.
func (c *capture) seen(t *testing.T, m *testMesh) bool {
	t.Helper()
	conn, err := m.dial(t, m.outside, "10.244.1.2:9")
	must(t, err)
	io.WriteString(conn, captureSentinel)
	eventually(t, "the capture to read the sentinel", c.synced.Load)
	conn.Close()
	return c.found.Load()
}

func (c *capture) packets() int64 { return c.n.Load() }

func startCapture(t *testing.T, ns *netns.NS, marker string) *capture {
	t.Helper()
	var fd int
	must(t, netns.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		return err
	}))
	c := &capture{}
	f := os.NewFile(uintptr(fd), "capture")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			c.n.Add(1)
			if bytes.Contains(buf[:n], []byte(marker)) {
				c.found.Store(true)
			}
			if bytes.Contains(buf[:n], []byte(captureSentinel)) {
				c.synced.Store(true)
			}
		}
	}()
	t.Cleanup(func() { f.Close(); unix.Close(fd); wg.Wait() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// A new pod given the address of one that left (the local cluster reuses
// pod IPs): the client's ztunnel drains its pooled HBONE connection to the
// address when the push replaces the workload, and the next connection
// dials afresh instead of going onto a connection to a pod that is gone.
func TestReplacedWorkloadDrainsPool(t *testing.T) {
	m := startMesh(t)
	a := m.nodes["node-a"].Proxy
	key := hbone.Target{
		Source:      spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"},
		SourceAddr:  m.client.ip,
		Destination: []spiffe.ID{{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "echo"}},
		Addr:        netip.AddrPortFrom(m.server.ip, 15008),
	}.Key()
	if got := m.whoami(t, m.client, "10.96.0.10:80"); !strings.HasPrefix(got, "10.244.1.2:") {
		t.Fatalf("before: server saw caller %q", got)
	}
	if n := a.pool.Conns(key); n != 1 {
		t.Fatalf("before: %d pooled connections to the server, want 1", n)
	}
	opened := a.pool.Stats().ConnectionsOpened

	// The server pod is replaced by another (new uid) at the same address.
	m.apply(t, "mesh.yaml", strings.Replace(meshManifests, "name: server, namespace: shop", "name: server-2, namespace: shop", 1))
	eventually(t, "node-a to drain its connection to the replaced workload", func() bool { return a.pool.Conns(key) == 0 })
	if w := a.store.View().WorkloadByIP(m.server.ip); w.GetName() != "server-2" {
		t.Fatalf("drained while %s still has workload %q", m.server.ip, w.GetName())
	}
	if got := m.whoami(t, m.client, "10.96.0.10:80"); !strings.HasPrefix(got, "10.244.1.2:") {
		t.Fatalf("after: server saw caller %q", got)
	}
	if got := a.pool.Stats().ConnectionsOpened - opened; got != 1 {
		t.Errorf("after the replacement %d connections were dialled, want 1 (a new one)", got)
	}
	if n := a.pool.Conns(key); n != 1 {
		t.Errorf("after: %d pooled connections to the server, want 1", n)
	}

	// Removed altogether: drained again.
	i := strings.Index(meshManifests, "apiVersion: v1\nkind: Pod\nmetadata: {name: server,")
	j := strings.Index(meshManifests, "apiVersion: v1\nkind: Pod\nmetadata: {name: client,")
	m.apply(t, "mesh.yaml", meshManifests[:i]+meshManifests[j:])
	eventually(t, "node-a to drain its connection to the removed workload", func() bool { return a.pool.Conns(key) == 0 })
}
