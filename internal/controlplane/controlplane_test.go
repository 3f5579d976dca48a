package controlplane

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/xds"
)

const manifests = `
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  selector:
    app: echo
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: echo-a
  namespace: shop
  labels:
    app: echo
spec:
  nodeName: node-a
  serviceAccountName: echo
  containers: [{name: app, image: echo}]
status:
  podIP: 10.244.1.5
---
apiVersion: v1
kind: Pod
metadata:
  name: client-b
  namespace: shop
spec:
  nodeName: node-b
  serviceAccountName: client
  containers: [{name: app, image: client}]
status:
  podIP: 10.244.2.7
`

// meshEnv is a running control plane on loopback, fed from a temp directory.
type meshEnv struct {
	dir     string
	ca      *ca.CA
	srv     *Server
	mesh    model.MeshConfig
	bundle  *identity.Bundle
	cancel  context.CancelFunc
	stopped chan error
}

func startControlPlane(t *testing.T) *meshEnv {
	return startControlPlaneInterval(t, 20*time.Millisecond)
}

func startControlPlaneInterval(t testing.TB, interval time.Duration) *meshEnv {
	t.Helper()
	e := &meshEnv{dir: t.TempDir(), mesh: model.DefaultMeshConfig(), stopped: make(chan error, 1)}
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), manifests)
	var err error
	e.ca, err = ca.New(ca.Options{TrustDomain: e.mesh.TrustDomain, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e.bundle = identity.NewBundle(e.ca.TrustBundle())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := &FileSource{Paths: []string{e.dir}, Interval: interval, Log: log}
	e.srv, err = New(Options{Source: src, Mesh: e.mesh, CA: e.ca, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	src.OnResult = e.srv.SourceResult
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.stopped <- e.srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.stopped; err != nil {
			t.Errorf("control plane Run: %v", err)
		}
	})
	select {
	case <-e.srv.Ready():
	case err := <-e.stopped:
		t.Fatalf("control plane stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready")
	}
	return e
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	// Write-then-rename, as editors and kubectl-style tools do, so the
	// watcher never reads a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// conn dials the control plane as a proxy on node, with node's token unless token is given.
func (e *meshEnv) conn(t testing.TB, node, token string) *grpc.ClientConn {
	t.Helper()
	if token == "" {
		token = e.ca.NodeToken(node)
	}
	cc, err := grpc.NewClient(e.srv.GRPCAddr(),
		grpc.WithTransportCredentials(credentials.NewTLS(identity.ControlPlaneTLSConfig(e.bundle, e.mesh.TrustDomain))),
		grpc.WithPerRPCCredentials(identity.NodeTokenCredentials(identity.StaticToken(token))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// store is a proxy's view of pushed config.
type store struct {
	mu      sync.Mutex
	res     map[string]map[string]proto.Message
	changed chan struct{}
	reject  string
}

func newStore() *store {
	return &store{res: map[string]map[string]proto.Message{}, changed: make(chan struct{}, 1)}
}

func (s *store) Apply(u *xds.Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reject != "" {
		return io.ErrUnexpectedEOF // stands for any validation failure
	}
	for _, tu := range u.Types {
		m := s.res[tu.TypeURL]
		if m == nil {
			m = map[string]proto.Message{}
			s.res[tu.TypeURL] = m
		}
		for _, r := range tu.Upserts {
			m[r.Name] = r.Message
		}
		for _, n := range tu.Removes {
			delete(m, n)
		}
	}
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *store) workload(uid string) *meshv1.Workload {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, _ := s.res[meshv1.TypeWorkload][uid].(*meshv1.Workload)
	return w
}

// waitFor polls cond on every change until it holds or the deadline passes.
func (s *store) waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (e *meshEnv) proxy(t testing.TB, node string, st *store) *xds.Client {
	t.Helper()
	c, err := xds.New(xds.Options{
		Conn:    e.conn(t, node, ""),
		Node:    &meshv1.ProxyNode{Id: "ztunnel-" + node, NodeName: node},
		Handler: st,
		Subscriptions: map[string][]string{
			meshv1.TypeWorkload: {"*"}, meshv1.TypeService: {"*"},
			meshv1.TypeAuthorization: {"*"}, meshv1.TypePeerAuthentication: {"*"},
		},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func TestFileChangesReachProxies(t *testing.T) {
	e := startControlPlane(t)
	a, b := newStore(), newStore()
	e.proxy(t, "node-a", a)
	e.proxy(t, "node-b", b)
	const echoUID = "Kubernetes/Pod/shop/echo-a"
	for _, s := range []*store{a, b} {
		s.waitFor(t, "initial config", 10*time.Second, func() bool { return s.workload(echoUID) != nil })
	}

	// A valid edit reaches every proxy (how fast: BenchmarkFileChangeReachesProxies).
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), strings.Replace(manifests, "10.244.1.5", "10.244.1.6", 1))
	for _, s := range []*store{a, b} {
		s.waitFor(t, "the new pod IP", 5*time.Second, func() bool {
			w := s.workload(echoUID)
			return w != nil && w.Addresses[0] == "10.244.1.6"
		})
	}

	// An invalid edit is rejected: the metric says so and the last good
	// config stays in force, also for a proxy that connects afterwards.
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), strings.Replace(manifests, "port: 80", "port: 80000", 1))
	waitMetric(t, e, "ambit_config_last_load_success 0")
	late := newStore()
	e.proxy(t, "node-a", late)
	late.waitFor(t, "config on a late proxy", 5*time.Second, func() bool {
		w := late.workload(echoUID)
		return w != nil && w.Addresses[0] == "10.244.1.6"
	})
	if body := e.get(t, "/debug/config"); !strings.Contains(body, `"problems"`) {
		t.Errorf("/debug/config = %s", body)
	}

	// Fixing the file resumes updates; a removed pod disappears.
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), manifests[:strings.Index(manifests, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client-b")])
	waitMetric(t, e, "ambit_config_last_load_success 1")
	b.waitFor(t, "client-b removed", 5*time.Second, func() bool { return b.workload("Kubernetes/Pod/shop/client-b") == nil })
}

func TestNackIsRecordedAndOthersKeepReceiving(t *testing.T) {
	e := startControlPlane(t)
	good, bad := newStore(), newStore()
	bad.reject = "no"
	e.proxy(t, "node-a", good)
	e.proxy(t, "node-b", bad)
	good.waitFor(t, "initial config", 10*time.Second, func() bool { return good.workload("Kubernetes/Pod/shop/echo-a") != nil })
	deadline := time.Now().Add(10 * time.Second)
	for {
		var nacked bool
		for _, p := range e.srv.Push().Status() {
			if p.NodeName == "node-b" && p.LastNack != nil && strings.Contains(p.LastNack.Message, io.ErrUnexpectedEOF.Error()) {
				nacked = true
			}
		}
		if nacked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NACK from node-b not recorded: %+v", e.srv.Push().Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitMetric(t, e, "ambit_push_nacks_total")
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), strings.Replace(manifests, "10.244.1.5", "10.244.1.9", 1))
	good.waitFor(t, "update after another proxy's NACK", 5*time.Second, func() bool {
		return good.workload("Kubernetes/Pod/shop/echo-a").GetAddresses()[0] == "10.244.1.9"
	})
}

func TestProxyMustUseItsOwnNodeCredential(t *testing.T) {
	e := startControlPlane(t)
	tests := []struct {
		name  string
		token string
		code  codes.Code
	}{
		{"another node's token", e.ca.NodeToken("node-a"), codes.PermissionDenied},
		{"forged token", "bm9kZS1i.AAAA", codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := meshv1.NewDiscoveryClient(e.conn(t, "node-b", tt.token)).Delta(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&meshv1.DeltaRequest{Node: &meshv1.ProxyNode{Id: "z", NodeName: "node-b"}}); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if status.Code(err) != tt.code {
				t.Fatalf("got %v, want code %v", err, tt.code)
			}
		})
	}
}

func TestNodeMayObtainOnlyItsPodsIdentities(t *testing.T) {
	e := startControlPlane(t)
	m, err := identity.NewManager(identity.Options{
		Client: meshv1.NewCertificateAuthorityClient(e.conn(t, "node-a", "")),
		Bundle: e.bundle,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	echo := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "echo"}
	cert, err := m.Certificate(ctx, echo)
	if err != nil {
		t.Fatalf("node-a runs echo but was refused: %v", err)
	}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if id, err := m.VerifyPeer(chain, x509.ExtKeyUsageServerAuth); err != nil || id != echo {
		t.Fatalf("issued certificate: id %v, err %v", id, err)
	}
	client := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
	_, err = m.Certificate(ctx, client)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "node-a") {
		t.Fatalf("node-a obtained (or got a wrong error for) an identity it does not run: %v", err)
	}
}

func waitMetric(t *testing.T, e *meshEnv, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.get(t, "/metrics"), want) {
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %q", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *meshEnv) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.srv.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A broken file blocks every change until it is fixed: configuration changes
// atomically, never half-applied.
func TestBrokenFileBlocksOtherChanges(t *testing.T) {
	e := startControlPlane(t)
	a := newStore()
	e.proxy(t, "node-a", a)
	const echoUID = "Kubernetes/Pod/shop/echo-a"
	a.waitFor(t, "initial config", 10*time.Second, func() bool { return a.workload(echoUID) != nil })

	writeFile(t, filepath.Join(e.dir, "broken.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n  - port: -1\n")
	waitMetric(t, e, "ambit_config_last_load_success 0")
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), strings.Replace(manifests, "10.244.1.5", "10.244.1.8", 1))
	waitMetric(t, e, `ambit_config_loads_total{result="rejected"} 2`)
	if ip := a.workload(echoUID).GetAddresses()[0]; ip != "10.244.1.5" {
		t.Fatalf("a change was applied while another file is broken: pod IP %s", ip)
	}
	os.Remove(filepath.Join(e.dir, "broken.yaml"))
	a.waitFor(t, "the change once the broken file is gone", 5*time.Second, func() bool {
		return a.workload(echoUID).GetAddresses()[0] == "10.244.1.8"
	})
}

// BenchmarkFileChangeReachesProxies measures the time from writing a changed
// manifest to two connected proxies having applied it, with the control
// plane's default 200ms watch interval (half of it is waiting on average).
//
//	go test -run XXX -bench FileChange -benchtime 20x ./internal/controlplane/
func BenchmarkFileChangeReachesProxies(b *testing.B) {
	e := startControlPlaneInterval(b, 200*time.Millisecond)
	a, c := newStore(), newStore()
	e.proxy(b, "node-a", a)
	e.proxy(b, "node-b", c)
	const echoUID = "Kubernetes/Pod/shop/echo-a"
	a.waitFor(b, "initial config", 10*time.Second, func() bool { return a.workload(echoUID) != nil })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip := fmt.Sprintf("10.244.1.%d", 10+i%200)
		writeFile(b, filepath.Join(e.dir, "mesh.yaml"), strings.Replace(manifests, "10.244.1.5", ip, 1))
		for _, s := range []*store{a, c} {
			s.waitFor(b, "the change", 10*time.Second, func() bool { return s.workload(echoUID).GetAddresses()[0] == ip })
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/change")
}
