//go:build linux

package nodeagent_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/nodeagent"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// fakeZtunnel speaks the real node-agent protocol (redirect.DialAgent) and
// records what it is given, checking each namespace is a real one.
type fakeZtunnel struct {
	mu     sync.Mutex
	pods   map[string]netns.ID
	refuse string // uid to refuse
}

func (z *fakeZtunnel) AddPod(ctx context.Context, pod redirect.Pod, f *os.File) error {
	ns, err := netns.FromFile(f)
	if err != nil {
		f.Close()
		return err
	}
	defer ns.Close()
	if pod.UID == z.refuse {
		return fmt.Errorf("no certificate for %s", pod.ServiceAccount)
	}
	id, err := ns.ID()
	if err != nil {
		return err
	}
	z.mu.Lock()
	z.pods[pod.UID] = id
	z.mu.Unlock()
	return nil
}

func (z *fakeZtunnel) DelPod(ctx context.Context, uid string) error {
	z.mu.Lock()
	delete(z.pods, uid)
	z.mu.Unlock()
	return nil
}

func (z *fakeZtunnel) SnapshotSent(context.Context, []string) error { return nil }

func (z *fakeZtunnel) has(uid string) (netns.ID, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	id, ok := z.pods[uid]
	return id, ok
}

func hasRules(t *testing.T, ns *netns.NS) bool {
	t.Helper()
	out, err := netns.Output(ns, "", "iptables-save")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(out, redirect.ChainPrefix)
}

// The CNI plugin driven by libcni as a runtime drives it, chained after
// the reference bridge plugin, with real network namespaces; the node
// agent enrols pods of ambient namespaces (and only those) before ADD
// returns, releases them on DEL, and follows label changes of running pods.
func TestCNIAndLiveEnrolment(t *testing.T) {
	netnstest.RequireRoot(t)
	refPlugins := "/usr/lib/cni"
	if _, err := os.Stat(filepath.Join(refPlugins, "bridge")); err != nil {
		if kubetest.InCI() {
			t.Fatalf("CNI reference plugins missing (apt-get install containernetworking-plugins): %v", err)
		}
		t.Skip("CNI reference plugins missing (apt-get install containernetworking-plugins)")
	}
	c := kubetest.Start(t)
	cl := c.Clients(t)
	ctx := context.Background()
	dir := t.TempDir()

	// The plugin binary, beside the reference plugins it chains after.
	binDir := filepath.Join(dir, "bin")
	os.MkdirAll(binDir, 0o755)
	if out, err := exec.Command("go", "build", "-o", binDir, "github.com/ambit-mesh/ambit/cmd/ambit-cni").CombinedOutput(); err != nil {
		t.Fatalf("build ambit-cni: %v\n%s", err, out)
	}
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink(filepath.Join(refPlugins, p), filepath.Join(binDir, p)); err != nil {
			t.Fatal(err)
		}
	}

	// Kubernetes objects, as the scheduler leaves them.
	mk := func(obj any) { kubetest.Apply(t, cl, obj) }
	mk(&corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	mk(&corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: "mesh", Labels: map[string]string{nodeagent.DataplaneModeLabel: "ambient"}}})
	mk(&corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: "plain"}})
	newPod := func(ns, name string) *corev1.Pod {
		p, err := cl.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "ambit"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	meshPod, plainPod, refusedPod := newPod("mesh", "app"), newPod("plain", "app"), newPod("mesh", "refused")

	// The node agent, acting as its service account with the RBAC ambit
	// install grants it, and a ztunnel connected to it.
	objs, err := install.Render(install.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := install.Install(ctx, cl, objs, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	agentConfig, err := kube.RESTConfig(c.KubeconfigFor(t, "ambit-system", install.NodeAgentName))
	if err != nil {
		t.Fatal(err)
	}
	agentClients, err := kube.NewClients(agentConfig, "ambit-nodeagent/node-a")
	if err != nil {
		t.Fatal(err)
	}
	agent := &nodeagent.Agent{Clients: agentClients, NodeName: "node-a", ZtunnelSocket: filepath.Join(dir, "ztunnel.sock"), CNISocket: filepath.Join(dir, "cni.sock")}
	actx, cancel := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(actx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-agentDone; err != nil {
			t.Errorf("node agent: %v", err)
		}
	})
	select {
	case <-agent.Ready():
	case err := <-agentDone:
		t.Fatalf("node agent: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("node agent not ready after a minute")
	}
	zt := &fakeZtunnel{pods: map[string]netns.ID{}, refuse: string(refusedPod.UID)}
	conn, err := redirect.DialAgent(actx, agent.ZtunnelSocket)
	if err != nil {
		t.Fatal(err)
	}
	go conn.Serve(actx, zt)
	t.Cleanup(func() { conn.Close() })

	node := netnstest.New(t)
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), &kubetest.NetnsExec{NS: node})
	list, err := libcni.ConfListFromBytes(fmt.Appendf(nil, `{
		"cniVersion": "1.0.0", "name": "k8s-pod-network",
		"plugins": [
			{"type": "bridge", "bridge": "cni0", "isGateway": true,
			 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.7.0/24"}]], "dataDir": %q}},
			{"type": "ambit-cni", "agentSocket": %q}
		]}`, filepath.Join(dir, "ipam"), agent.CNISocket))
	if err != nil {
		t.Fatal(err)
	}
	rt := func(p *corev1.Pod, ns *netns.NS) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: "c-" + string(p.UID), NetNS: ns.Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name}, {"K8S_POD_UID", string(p.UID)}}}
	}
	add := func(p *corev1.Pod, ns *netns.NS) (*current.Result, error) {
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := cniConf.AddNetworkList(actx, list, rt(p, ns))
		if err != nil {
			return nil, err
		}
		return current.NewResultFromResult(r)
	}

	// ADD for an ambient pod: enrolled (the ztunnel holds its namespace,
	// the rules are in it) by the time ADD returns; the bridge's result
	// is passed on.
	meshNS := netnstest.New(t)
	res, err := add(meshPod, meshNS)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.250.7.") {
		t.Errorf("ADD result lost the bridge's IP: %+v", res.IPs)
	}
	want, _ := meshNS.ID()
	if got, ok := zt.has(string(meshPod.UID)); !ok || got != want {
		t.Fatalf("ztunnel: pod enrolled %v, namespace %v (want %v)", ok, got, want)
	}
	if !hasRules(t, meshNS) {
		t.Error("no redirection rules in the ambient pod's namespace")
	}
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if err := cniConf.CheckNetworkList(cctx, list, rt(meshPod, meshNS)); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	// ADD for a pod outside ambient: untouched.
	plainNS := netnstest.New(t)
	plainRes, err := add(plainPod, plainNS)
	if err != nil {
		t.Fatalf("ADD (plain): %v", err)
	}
	if _, ok := zt.has(string(plainPod.UID)); ok || hasRules(t, plainNS) {
		t.Error("a pod outside the ambient mesh was touched")
	}

	// The ztunnel refuses a pod: ADD fails with its reason, nothing stays.
	refusedNS := netnstest.New(t)
	if _, err := add(refusedPod, refusedNS); err == nil || !strings.Contains(err.Error(), "no certificate for default") {
		t.Errorf("ADD of a refused pod: %v", err)
	}
	if hasRules(t, refusedNS) {
		t.Error("rules left behind after a failed ADD")
	}

	// Live: the plain pod is running (a process in its namespace); labelling
	// its namespace enrols it, unlabelling releases it.
	sleeper := exec.Command("sleep", "600")
	if err := netns.StartCmd(plainNS, sleeper); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	ip := plainRes.IPs[0].Address.IP.String()
	plainPod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := cl.Kube.CoreV1().Pods("plain").UpdateStatus(ctx, plainPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	label := func(mode string) {
		ns, err := cl.Kube.CoreV1().Namespaces().Get(ctx, "plain", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Labels = map[string]string{}
		if mode != "" {
			ns.Labels[nodeagent.DataplaneModeLabel] = mode
		}
		if _, err := cl.Kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	label("ambient")
	wantPlain, _ := plainNS.ID()
	kubetest.Eventually(t, time.Minute, "the running pod enrolled after labelling its namespace", func() bool {
		got, ok := zt.has(string(plainPod.UID))
		return ok && got == wantPlain
	})
	if !hasRules(t, plainNS) {
		t.Error("live-enrolled pod has no rules")
	}
	label("")
	// The ztunnel lets go first, then the agent removes the rules.
	kubetest.Eventually(t, time.Minute, "the pod released and its rules removed after unlabelling", func() bool {
		_, ok := zt.has(string(plainPod.UID))
		return !ok && !hasRules(t, plainNS)
	})

	// DEL: released and cleaned up; a second DEL is fine.
	for range 2 {
		dctx, dcancel := context.WithTimeout(ctx, time.Minute)
		if err := cniConf.DelNetworkList(dctx, list, rt(meshPod, meshNS)); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		dcancel()
	}
	if _, ok := zt.has(string(meshPod.UID)); ok || hasRules(t, meshNS) {
		t.Error("DEL left the pod enrolled")
	}

	// Without the node agent, ADD fails saying so.
	cancel()
	<-agentDone
	agentDone <- nil
	late := netnstest.New(t)
	if _, err := add(meshPod, late); err == nil || !strings.Contains(err.Error(), "node agent") {
		t.Errorf("ADD without a node agent: %v", err)
	}
}
