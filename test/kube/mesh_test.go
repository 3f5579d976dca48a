//go:build linux

// Package kube_test runs Ambit against a real Kubernetes API server the way
// it runs on a cluster: the control plane with the Kubernetes source, the CA
// in a Secret and TokenReview-authenticated ztunnels; a node agent and a
// ztunnel per node; pods set up by the container runtime's path (libcni
// running the reference bridge plugin, then ambit-cni) in network
// namespaces on this machine. The test plays the kubelet: it creates Nodes
// and Pods, sets pod status, runs the pods' apps.
package kube_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	istiosecurityv1 "istio.io/client-go/pkg/apis/security/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/internal/ca"
	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/nodeagent"
	"github.com/ambit-mesh/ambit/internal/ztunnel"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type node struct {
	name    string
	agent   *nodeagent.Agent
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	metrics string
}

type pod struct {
	obj *corev1.Pod
	ns  *netns.NS
	ip  string
}

type cluster struct {
	t       *testing.T
	cl      *kube.Clients
	dir     string
	nodes   map[string]*node
	cpAddr  string // the control plane's gRPC listener; cpHTTP its metrics and readiness
	cpHTTP  string
	cpStop  func()
	rootPEM string
	// kubeconfig and binDir are the API server's and the built commands'.
	kubeconfig, binDir string
	// clusterNS holds the nodes' bridge: the pod network, as seen from a node.
	clusterNS *netns.NS
}

// startControlPlane runs `ambit controlplane --source kube` as a process,
// as its Deployment would (on the same ports after a restart), and waits
// until it is ready. Its waypoints reach it at inClusterControlPlane. The
// first start also writes the trust bundle it published, as the kubelet
// mounts it into node proxies.
func (c *cluster) startControlPlane() {
	t := c.t
	if c.cpAddr == "" {
		c.cpAddr, c.cpHTTP = freeAddr(t), freeAddr(t)
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "controlplane.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(t, err)
	cmd := exec.Command(filepath.Join(c.binDir, "ambit"), "controlplane", "--source", "kube", "--kubeconfig", c.kubeconfig,
		"--namespace", "ambit-system", "--ca-dir", filepath.Join(c.dir, "ca"), "--grpc-addr", c.cpAddr, "--http-addr", c.cpHTTP,
		"--replica", "controlplane-0", "--waypoint-control-plane", inClusterControlPlane)
	cmd.Stdout, cmd.Stderr = logf, logf
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	c.cpStop = func() {
		// Killed, not stopped: proxies get no goodbye.
		cmd.Process.Kill()
		<-exited
	}
	kubetest.Eventually(t, 2*time.Minute, "the control plane ready", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(c.dir, "controlplane.log"))
			t.Fatalf("the control plane exited:\n%s", b)
		default:
		}
		resp, err := http.Get("http://" + c.cpHTTP + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if c.rootPEM == "" {
		cm, err := c.cl.Kube.CoreV1().ConfigMaps("ambit-system").Get(context.Background(), kube.RootCertConfigMap, metav1.GetOptions{})
		must(t, err)
		c.rootPEM = filepath.Join(c.dir, "root-cert.pem")
		must(t, os.WriteFile(c.rootPEM, []byte(cm.Data[ca.RootCertFile]), 0o644))
	}
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().String()
}

// ztunnelToken is what the kubelet projects into the ztunnel pod: a token
// of service account ztunnel bound to that pod, for the control plane's audience.
func (c *cluster) ztunnelToken(nodeName string) string {
	t := c.t
	ctx := context.Background()
	p, err := c.cl.Kube.CoreV1().Pods("ambit-system").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-" + nodeName},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "ztunnel", Containers: []corev1.Container{{Name: "ztunnel", Image: "ambit"}}}}, metav1.CreateOptions{})
	must(t, err)
	tr, err := c.cl.Kube.CoreV1().ServiceAccounts("ambit-system").CreateToken(ctx, "ztunnel", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{ca.DefaultTokenAudience}, BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}, metav1.CreateOptions{})
	must(t, err)
	path := filepath.Join(c.dir, "token-"+nodeName)
	must(t, os.WriteFile(path, []byte(tr.Status.Token), 0o600))
	return path
}

func (c *cluster) startNode(name, zone string, clusterNS *netns.NS, binDir string) *node {
	t := c.t
	kubetest.Apply(t, c.cl, &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"topology.kubernetes.io/zone": zone}}})
	dir := filepath.Join(c.dir, name)
	must(t, os.MkdirAll(dir, 0o755))
	n := &node{name: name, agent: &nodeagent.Agent{Clients: c.cl, NodeName: name,
		ZtunnelSocket: filepath.Join(dir, "ztunnel.sock"), CNISocket: filepath.Join(dir, "cni.sock"), Log: slog.Default().With("node", name)}}
	ctx, cancel := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- n.agent.Run(ctx) }()
	select {
	case <-n.agent.Ready():
	case err := <-agentDone:
		t.Fatalf("node agent %s: %v", name, err)
	case <-time.After(time.Minute):
		t.Fatalf("node agent %s not ready", name)
	}
	token := c.ztunnelToken(name)
	started := make(chan ztunnel.Running, 1)
	ztDone := make(chan error, 1)
	go func() {
		ztDone <- ztunnel.Run(ctx, ztunnel.Config{NodeName: name, ControlPlane: c.cpAddr, TokenFile: token, RootCertFile: c.rootPEM,
			TrustDomain: "cluster.local", AgentSocket: n.agent.ZtunnelSocket, AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			ReadyAddr: "127.0.0.1:0", DrainTimeout: time.Second, Log: slog.Default().With("node", name, "component", "ztunnel"),
			Started: func(r ztunnel.Running) { started <- r }})
	}()
	select {
	case r := <-started:
		n.metrics = r.MetricsAddr.String()
	case err := <-ztDone:
		t.Fatalf("ztunnel %s: %v", name, err)
	case <-time.After(time.Minute):
		t.Fatalf("ztunnel %s did not start", name)
	}
	t.Cleanup(func() {
		cancel()
		<-ztDone
		<-agentDone
	})
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cni-cache"), &kubetest.NetnsExec{NS: clusterNS})
	list, err := libcni.ConfListFromBytes(fmt.Appendf(nil, `{
		"cniVersion": "1.0.0", "name": "k8s-pod-network",
		"plugins": [
			{"type": "bridge", "bridge": "cni0", "isGateway": true,
			 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.9.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
			{"type": "ambit-cni", "agentSocket": %q}
		]}`, filepath.Join(c.dir, "ipam"), n.agent.CNISocket))
	must(t, err)
	n.list = list
	return n
}

// runPod does what the kubelet does for a pod: create it (scheduled on
// node), set up its network through CNI, report it running with its IP.
func (c *cluster) runPod(n *node, namespace, name, sa string, labels map[string]string) *pod {
	p := c.startPod(n, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "ambit",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}})
	// A process lives in the pod's namespace, as the pod's containers do.
	sleeper := exec.Command("sleep", "3600")
	must(c.t, netns.StartCmd(p.ns, sleeper))
	c.t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	c.setStatus(p, true)
	return p
}

// startPod creates obj scheduled on node n, sets up its network through
// CNI and reports it running with its IP, not yet ready, as the kubelet
// does once the pod's sandbox is up.
func (c *cluster) startPod(n *node, obj *corev1.Pod) *pod {
	t := c.t
	ctx := context.Background()
	obj.Spec.NodeName = n.name
	obj, err := c.cl.Kube.CoreV1().Pods(obj.Namespace).Create(ctx, obj, metav1.CreateOptions{})
	must(t, err)
	p := &pod{obj: obj, ns: netnstest.New(t)}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r, err := n.cni.AddNetworkList(actx, n.list, &libcni.RuntimeConf{ContainerID: "c-" + string(obj.UID), NetNS: p.ns.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", obj.Namespace}, {"K8S_POD_NAME", obj.Name}, {"K8S_POD_UID", string(obj.UID)}}})
	if err != nil {
		t.Fatalf("CNI ADD %s/%s: %v", obj.Namespace, obj.Name, err)
	}
	res, err := current.NewResultFromResult(r)
	must(t, err)
	p.ip = res.IPs[0].Address.IP.String()
	c.setStatus(p, false)
	return p
}

// setStatus reports the pod running with its IP, and whether it is ready
// (its containers pass their readiness probes).
func (c *cluster) setStatus(p *pod, ready bool) {
	obj := p.obj
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	obj.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}}
	var err error
	p.obj, err = c.cl.Kube.CoreV1().Pods(obj.Namespace).UpdateStatus(context.Background(), obj, metav1.UpdateOptions{})
	must(c.t, err)
}

// serveWhoami answers every connection on 8080 with the caller's address.
func serveWhoami(t *testing.T, p *pod) {
	l, err := netns.ListenTCP(p.ns, "0.0.0.0:8080", netns.SocketOptions{})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
}

// whoami connects from p to addr and returns what the server saw as the
// caller, or an error.
func whoami(p *pod, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := netns.DialTCP(ctx, p.ns, netip.MustParseAddrPort(addr), netns.SocketOptions{})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	if len(b) == 0 {
		return "", fmt.Errorf("connection closed without an answer")
	}
	return string(b), nil
}

func metrics(t *testing.T, addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// buildBinaries builds the named commands of this module into dir.
func buildBinaries(t *testing.T, dir string, cmds ...string) {
	t.Helper()
	args := []string{"build", "-o", dir + "/"}
	for _, c := range cmds {
		args = append(args, "github.com/ambit-mesh/ambit/cmd/"+c)
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("build %v: %v\n%s", cmds, err, out)
	}
}

// newCluster starts an API server with the CRDs, the control plane and two
// nodes (node-a in zone-a, node-b in zone-b), each with a node agent, a
// ztunnel and the CNI chain (bridge, then ambit-cni) in one "cluster
// network" namespace. binDir holds ambit, ambit-cni and the extra commands.
func newCluster(t *testing.T, extra ...string) (c *cluster, a, b *node, binDir string) {
	netnstest.RequireRoot(t)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		if kubetest.InCI() {
			t.Fatalf("CNI reference plugins missing (apt-get install containernetworking-plugins): %v", err)
		}
		t.Skip("CNI reference plugins missing (apt-get install containernetworking-plugins)")
	}
	k := kubetest.Start(t)
	c = &cluster{t: t, cl: k.Clients(t), dir: t.TempDir(), nodes: map[string]*node{}}
	// What ambit install creates: CRDs, namespace, service accounts, RBAC
	// (its Deployment and DaemonSets stay unscheduled: the test runs their
	// processes itself). The control plane acts as its service account.
	objs, err := install.Render(install.DefaultOptions())
	must(t, err)
	ictx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	must(t, install.Install(ictx, c.cl, objs, false, io.Discard))
	c.kubeconfig = k.KubeconfigFor(t, "ambit-system", install.ControlPlaneName)

	binDir = filepath.Join(c.dir, "bin")
	must(t, os.MkdirAll(binDir, 0o755))
	c.binDir = binDir
	buildBinaries(t, binDir, append([]string{"ambit", "ambit-cni"}, extra...)...)
	for _, p := range []string{"bridge", "host-local"} {
		must(t, os.Symlink(filepath.Join("/usr/lib/cni", p), filepath.Join(binDir, p)))
	}
	c.startControlPlane()
	t.Cleanup(func() {
		c.cpStop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.dir, "controlplane.log"))
			t.Logf("control plane log:\n%s", b)
		}
	})
	clusterNS := netnstest.New(t)
	c.clusterNS = clusterNS
	a = c.startNode("node-a", "zone-a", clusterNS, binDir)
	b = c.startNode("node-b", "zone-b", clusterNS, binDir)
	return c, a, b, binDir
}

func nsObj(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func saObj(ns, name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func TestMeshOnKubernetes(t *testing.T) {
	c, a, b, _ := newCluster(t)
	ctx := context.Background()
	kubetest.Apply(t, c.cl, nsObj("shop", map[string]string{nodeagent.DataplaneModeLabel: "ambient"}), nsObj("late", nil),
		saObj("shop", "client"), saObj("shop", "server"), saObj("late", "default"),
		&corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "server"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})

	server := c.runPod(b, "shop", "server", "server", map[string]string{"app": "server"})
	serveWhoami(t, server)
	client := c.runPod(a, "shop", "client", "client", map[string]string{"app": "client"})
	svc, err := c.cl.Kube.CoreV1().Services("shop").Get(ctx, "server", metav1.GetOptions{})
	must(t, err)
	vip := net.JoinHostPort(svc.Spec.ClusterIP, "80")

	// Through the mesh, by the Service VIP (only the mesh knows it), with
	// mutual TLS between the nodes and the client's address preserved.
	var got string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if got, err = whoami(client, vip); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client → Service VIP %s not answered through the mesh: %v", vip, err)
		}
	}
	if host, _, _ := net.SplitHostPort(got); host != client.ip {
		t.Errorf("server saw the caller as %s, want the client pod's %s", got, client.ip)
	}
	kubetest.Eventually(t, 30*time.Second, "mTLS in node-b's ztunnel metrics", func() bool {
		m := metrics(t, b.metrics)
		return strings.Contains(m, `connection_security_policy="mutual_tls"`) && strings.Contains(m, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`)
	})

	// An AuthorizationPolicy applied with the API takes effect, and its
	// removal too.
	deny := &istiosecurityv1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "only-admin"},
		Spec: securityv1beta1.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "server"}},
			Action:   securityv1beta1.AuthorizationPolicy_ALLOW,
			Rules:    []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Principals: []string{"cluster.local/ns/shop/sa/admin"}}}}}},
		},
	}
	kubetest.Apply(t, c.cl, deny)
	kubetest.Eventually(t, time.Minute, "the policy to deny the client", func() bool {
		_, err := whoami(client, vip)
		return err != nil
	})
	must(t, c.cl.Istio.SecurityV1().AuthorizationPolicies("shop").Delete(ctx, "only-admin", metav1.DeleteOptions{}))
	kubetest.Eventually(t, time.Minute, "the client allowed again", func() bool {
		_, err := whoami(client, vip)
		return err == nil
	})

	// A running pod of an unlabelled namespace joins when the namespace is
	// labelled: no restart, its next connections go through the mesh.
	late := c.runPod(a, "late", "worker", "default", nil)
	// Outside the mesh nothing here knows the VIP (there is no kube-proxy):
	// reaching it later proves the mesh carries the traffic.
	if got, err := whoami(late, vip); err == nil {
		t.Fatalf("a pod outside the mesh reached the VIP (%s)", got)
	}
	lns, err := c.cl.Kube.CoreV1().Namespaces().Get(ctx, "late", metav1.GetOptions{})
	must(t, err)
	lns.Labels = map[string]string{nodeagent.DataplaneModeLabel: "ambient"}
	_, err = c.cl.Kube.CoreV1().Namespaces().Update(ctx, lns, metav1.UpdateOptions{})
	must(t, err)
	kubetest.Eventually(t, time.Minute, "the labelled namespace's running pod reaches the Service through the mesh", func() bool {
		got, err := whoami(late, vip)
		host, _, _ := net.SplitHostPort(got)
		return err == nil && host == late.ip
	})
	if m := metrics(t, b.metrics); !strings.Contains(m, `source_principal="spiffe://cluster.local/ns/late/sa/default"`) {
		t.Error("node-b's ztunnel saw no mTLS from the late-enrolled pod")
	}

	// The control plane stops and restarts while traffic flows: proxies
	// keep their configuration and certificates; no request fails.
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := whoami(client, vip); err != nil {
				failed.Add(1)
				t.Logf("request failed during the control plane restart: %v", err)
			} else {
				ok.Add(1)
			}
		}
	})
	kubetest.Eventually(t, time.Minute, "traffic flowing", func() bool { return ok.Load() > 20 })
	c.cpStop()
	before := ok.Load()
	kubetest.Eventually(t, time.Minute, "traffic flowing without the control plane", func() bool { return ok.Load() > before+50 })
	c.startControlPlane()
	after := ok.Load()
	kubetest.Eventually(t, time.Minute, "traffic flowing after the restart", func() bool { return ok.Load() > after+50 })
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed across the control plane restart", failed.Load(), ok.Load()+failed.Load())
	}
	t.Logf("%d requests across the control plane restart, %d failed", ok.Load(), failed.Load())
}
