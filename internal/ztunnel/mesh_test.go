package ztunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
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
	proxies                 map[string]*Proxy
	stores                  map[string]*state.Store
	agents                  map[string]*redirect.Agent
}

func startMesh(t *testing.T) *testMesh {
	t.Helper()
	netnstest.RequireRoot(t)
	m := &testMesh{dir: t.TempDir(), proxies: map[string]*Proxy{}, stores: map[string]*state.Store{}, agents: map[string]*redirect.Agent{}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

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
	src := &controlplane.FileSource{Paths: []string{m.dir}, Interval: 20 * time.Millisecond, Log: log}
	cp, err := controlplane.New(controlplane.Options{Source: src, Mesh: model.DefaultMeshConfig(), CA: m.authority,
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Log: log})
	must(t, err)
	cpCtx, cpCancel := context.WithCancel(context.Background())
	m.cpCancel, m.cpDone = cpCancel, make(chan struct{})
	go func() { cp.Run(cpCtx); close(m.cpDone) }()
	t.Cleanup(m.stopControlPlane)
	<-cp.Ready()

	// One ztunnel per node, each with its node agent socket.
	for node, pods := range map[string][]*meshPod{"node-a": {m.client}, "node-b": {m.server}} {
		bundle := identity.NewBundle(m.authority.TrustBundle())
		conn, err := grpc.NewClient(cp.GRPCAddr(),
			grpc.WithTransportCredentials(credentials.NewTLS(identity.ControlPlaneTLSConfig(bundle, "cluster.local"))),
			grpc.WithPerRPCCredentials(identity.NodeTokenCredentials(identity.StaticToken(m.authority.NodeToken(node)))))
		must(t, err)
		t.Cleanup(func() { conn.Close() })
		store := state.NewStore(state.Options{})
		subs := map[string][]string{}
		for _, typ := range state.TypeURLs {
			subs[typ] = []string{meshv1.Wildcard}
		}
		xc, err := xds.New(xds.Options{Conn: conn, Node: &meshv1.ProxyNode{Id: "ztunnel-" + node, NodeName: node}, Subscriptions: subs, Handler: store,
			BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
		must(t, err)
		certs, err := identity.NewManager(identity.Options{Client: meshv1.NewCertificateAuthorityClient(conn), Bundle: bundle})
		must(t, err)
		t.Cleanup(certs.Close)
		proxy, err := New(Options{NodeName: node, Store: store, Certs: certs, Log: log.With("node", node)})
		must(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		go xc.Run(ctx)
		select {
		case <-xc.Synced():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no configuration from the control plane", node)
		}
		socket := filepath.Join(t.TempDir(), "agent.sock")
		agent := redirect.NewAgent(redirect.AgentConfig{})
		go agent.ListenAndServe(ctx, socket)
		go serveAgent(ctx, socket, proxy, log)
		t.Cleanup(func() { cancel(); agent.Close(); proxy.Close() })
		m.proxies[node], m.stores[node], m.agents[node] = proxy, store, agent
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
		if capture.seen() {
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
		must(t, m.agents["node-a"].DelPod(ctx, "client"))
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
		var b strings.Builder
		m.proxies["node-b"].Metrics().WriteTo(&b)
		out := b.String()
		for _, want := range []string{`reporter="destination"`, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`,
			`connection_security_policy="mutual_tls"`, `destination_zone="zone-b"`, `source_zone="zone-a"`, "istio_tcp_received_bytes_total{"} {
			if !strings.Contains(out, want) {
				t.Errorf("node-b metrics lack %s", want)
			}
		}
	})
}

func (m *testMesh) apply(t *testing.T, name, yaml string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(m.dir, name), []byte(yaml), 0o644))
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

// capture watches every frame on the bridge namespace's interfaces for a marker.
type capture struct {
	found atomic.Bool
	n     atomic.Int64
}

func (c *capture) seen() bool     { time.Sleep(200 * time.Millisecond); return c.found.Load() }
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
