//go:build linux

package kube_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/nodeagent"
	"github.com/ambit-mesh/ambit/internal/redirect"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/waypointctl"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// inClusterControlPlane is where the test's waypoint pods reach the control
// plane: loopback inside their own network namespace, forwarded by the test
// to the control plane's listener (standing in for its Service and DNS).
const inClusterControlPlane = "127.0.0.1:15012"

// forwardControlPlane listens on inClusterControlPlane in p's namespace and
// relays each connection to the control plane.
func (c *cluster) forwardControlPlane(p *pod) {
	t := c.t
	l, err := netns.ListenTCP(p.ns, inClusterControlPlane, netns.SocketOptions{})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", c.cpAddr)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			}()
		}
	}()
}

// runContainer does the rest of the kubelet's work for a pod created with
// startPod: it fills the pod's volumes (projected service account tokens
// from the TokenRequest API, bound to the pod; ConfigMaps), runs the
// container's command as a process in the pod's network namespace — the
// image's binaries are those in binDir, volume mount paths are mapped to
// directories of the test, env fieldRefs resolved — probes its readiness
// from the node, and reports the pod ready.
func (c *cluster) runContainer(p *pod, binDir string) {
	t := c.t
	ctx := context.Background()
	spec := p.obj.Spec
	root := filepath.Join(c.dir, "pods", p.obj.Namespace, p.obj.Name)
	volumes := map[string]string{}
	for _, v := range spec.Volumes {
		dir := filepath.Join(root, "volumes", v.Name)
		must(t, os.MkdirAll(dir, 0o755))
		volumes[v.Name] = dir
		switch {
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				tok := src.ServiceAccountToken
				if tok == nil {
					t.Fatalf("pod %s: projected volume %s: only service account tokens are supported here", p.obj.Name, v.Name)
				}
				tr, err := c.cl.Kube.CoreV1().ServiceAccounts(p.obj.Namespace).CreateToken(ctx, spec.ServiceAccountName, &authnv1.TokenRequest{
					Spec: authnv1.TokenRequestSpec{Audiences: []string{tok.Audience}, ExpirationSeconds: tok.ExpirationSeconds,
						BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.obj.Name, UID: p.obj.UID}}}, metav1.CreateOptions{})
				must(t, err)
				must(t, os.WriteFile(filepath.Join(dir, tok.Path), []byte(tr.Status.Token), 0o600))
			}
		case v.ConfigMap != nil:
			cm, err := c.cl.Kube.CoreV1().ConfigMaps(p.obj.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			must(t, err)
			for k, data := range cm.Data {
				must(t, os.WriteFile(filepath.Join(dir, k), []byte(data), 0o644))
			}
		default:
			t.Fatalf("pod %s: volume %s: unsupported source", p.obj.Name, v.Name)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("pod %s: %d containers, the test runs one", p.obj.Name, len(spec.Containers))
	}
	ctr := spec.Containers[0]
	mapPath := func(s string) string {
		for _, m := range ctr.VolumeMounts {
			if rest, ok := strings.CutPrefix(s, m.MountPath); ok && (rest == "" || rest[0] == '/') {
				return volumes[m.Name] + rest
			}
		}
		return s
	}
	args := make([]string, len(ctr.Args))
	for i, a := range ctr.Args {
		args[i] = mapPath(a)
	}
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range ctr.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			switch f.FieldRef.FieldPath {
			case "metadata.name":
				v = p.obj.Name
			case "metadata.namespace":
				v = p.obj.Namespace
			case "spec.nodeName":
				v = spec.NodeName
			default:
				t.Fatalf("pod %s: env %s: field %s not supported here", p.obj.Name, e.Name, f.FieldRef.FieldPath)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	if len(ctr.Command) != 1 {
		t.Fatalf("pod %s: command %q", p.obj.Name, ctr.Command)
	}
	logPath := filepath.Join(root, "container.log")
	logf, err := os.Create(logPath)
	must(t, err)
	cmd := exec.Command(filepath.Join(binDir, filepath.Base(ctr.Command[0])), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	must(t, netns.StartCmd(p.ns, cmd))
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s/%s container log:\n%s", p.obj.Namespace, p.obj.Name, b)
		}
	})

	// The readiness probe, from the node.
	probe := ctr.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		t.Fatalf("pod %s: no HTTP readiness probe", p.obj.Name)
	}
	url := fmt.Sprintf("http://%s%s", net.JoinHostPort(p.ip, probe.HTTPGet.Port.String()), probe.HTTPGet.Path)
	node := httpClient(c.clusterNS)
	kubetest.Eventually(t, time.Minute, "pod "+p.obj.Name+" ready ("+url+")", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("pod %s: container exited:\n%s", p.obj.Name, b)
		default:
		}
		resp, err := node.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	c.setStatus(p, true)
}

// httpClient makes HTTP requests from network namespace ns, one connection each.
func httpClient(ns *netns.NS) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return netns.DialTCP(ctx, ns, ap, netns.SocketOptions{})
		}}}
}

// serveVersion answers HTTP on the pod's 8080 with version.
func serveVersion(t *testing.T, p *pod, version string) {
	l, err := netns.ListenTCP(p.ns, "0.0.0.0:8080", netns.SocketOptions{})
	must(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, version) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// A waypoint on Kubernetes, end to end: a Gateway of class istio-waypoint
// created with the API makes the controller create the waypoint's
// Deployment; the test plays the kubelet and runs its pod (the waypoint
// binary with the Deployment's arguments, its bound service account token,
// in its own network namespace); traffic to a Service bound to it with
// istio.io/use-waypoint goes through it, and an HTTPRoute applied with the
// API takes effect. The CA, asked with the API's view of the pods, gives
// each caller only the identities it may hold.
func TestWaypointOnKubernetes(t *testing.T) {
	c, a, b, binDir := newCluster(t, "waypoint")
	ctx := context.Background()
	svc := func(name string, labels map[string]string) *corev1.Service {
		return &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: name, Labels: labels},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	}
	port := gatewayv1.PortNumber(80)
	backend := func(name string) []gatewayv1.HTTPBackendRef {
		return []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &port}}}}
	}
	group, kind := gatewayv1.Group(""), gatewayv1.Kind("Service")
	kubetest.Apply(t, c.cl, nsObj("store", map[string]string{nodeagent.DataplaneModeLabel: "ambient"}),
		saObj("store", "client"), saObj("store", "products"),
		svc("products", map[string]string{"istio.io/use-waypoint": "waypoint"}), svc("products-v2", nil),
		&gatewayv1.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: "waypoint"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: waypointctl.ClassName,
				Listeners: []gatewayv1.Listener{{Name: "mesh", Port: waypointctl.HBONEPort, Protocol: waypointctl.HBONEProtocol}}}},
		&gatewayv1.HTTPRoute{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: "products"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: &group, Kind: &kind, Name: "products", Port: &port}}},
				Rules: []gatewayv1.HTTPRouteRule{
					{Matches: []gatewayv1.HTTPRouteMatch{{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "true"}}}}, BackendRefs: backend("products-v2")},
					{Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier,
						ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-served-by", Value: "waypoint"}}}}},
						BackendRefs: backend("products")},
				}}})

	// The Deployment the control plane's waypoint controller (it leads)
	// creates, run as the kubelet would on node-a.
	var tmpl corev1.PodTemplateSpec
	kubetest.Eventually(t, time.Minute, "the waypoint Deployment created by the controller", func() bool {
		d, err := c.cl.Kube.AppsV1().Deployments("store").Get(ctx, "waypoint", metav1.GetOptions{})
		if err == nil {
			tmpl = d.Spec.Template
		}
		return err == nil
	})
	wp := c.startPod(a, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: "waypoint-0", Labels: tmpl.Labels}, Spec: tmpl.Spec})
	c.forwardControlPlane(wp)
	c.runContainer(wp, binDir)
	// The waypoint opts out of capture (istio.io/dataplane-mode=none in its
	// template): the CNI plugin left its namespace without redirection.
	if rules, err := netns.Output(wp.ns, "", "iptables-save"); err != nil || strings.Contains(rules, redirect.ChainPrefix) {
		t.Errorf("the waypoint pod was captured (%v):\n%s", err, rules)
	}

	v1 := c.runPod(b, "store", "products-v1", "products", map[string]string{"app": "products"})
	serveVersion(t, v1, "v1")
	v2 := c.runPod(b, "store", "products-v2", "products", map[string]string{"app": "products-v2"})
	serveVersion(t, v2, "v2")
	client := c.runPod(a, "store", "client", "client", nil)

	s, err := c.cl.Kube.CoreV1().Services("store").Get(ctx, "products", metav1.GetOptions{})
	must(t, err)
	url := "http://" + net.JoinHostPort(s.Spec.ClusterIP, "80") + "/"
	hc := httpClient(client.ns)
	get := func(canary bool) (string, http.Header, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if canary {
			req.Header.Set("x-canary", "true")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return string(body), resp.Header, err
	}
	kubetest.Eventually(t, time.Minute, "the Service answered through the waypoint (route's default rule)", func() bool {
		body, h, err := get(false)
		return err == nil && body == "v1" && h.Get("x-served-by") == "waypoint"
	})
	kubetest.Eventually(t, time.Minute, "the route's header match answered by products-v2", func() bool {
		body, _, err := get(true)
		return err == nil && body == "v2"
	})
	// Settled: every request follows the route.
	for range 5 {
		if body, _, err := get(true); err != nil || body != "v2" {
			t.Fatalf("x-canary request not sent to products-v2: %q, %v", body, err)
		}
		if body, h, err := get(false); err != nil || body != "v1" || h.Get("x-served-by") != "waypoint" {
			t.Fatalf("plain request not sent to products through the route's default rule: %q %v, %v", body, h, err)
		}
	}
	// The backends' ztunnel saw the waypoint's identity over mutual TLS.
	kubetest.Eventually(t, 30*time.Second, "mTLS from the waypoint in node-b's ztunnel metrics", func() bool {
		m := metrics(t, b.metrics)
		return strings.Contains(m, `source_principal="spiffe://cluster.local/ns/store/sa/waypoint"`) && strings.Contains(m, `connection_security_policy="mutual_tls"`)
	})
	gw, err := c.cl.Gateway.GatewayV1().Gateways("store").Get(ctx, "waypoint", metav1.GetOptions{})
	must(t, err)
	wsvc, err := c.cl.Kube.CoreV1().Services("store").Get(ctx, "waypoint", metav1.GetOptions{})
	must(t, err)
	if p := meta.FindStatusCondition(gw.Status.Conditions, "Programmed"); p == nil || p.Status != metav1.ConditionTrue ||
		len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != wsvc.Spec.ClusterIP {
		t.Errorf("waypoint Gateway status: %+v", gw.Status)
	}

	// The CA, with the API's view of where pods run: node-a's ztunnel may
	// obtain the identity of the client (on node-a), not of the products
	// pods (node-b only); the waypoint's own token gets only its identity.
	certificate := func(tokenFile, sa string) error {
		conn, bundle, err := identity.DialControlPlane(c.cpAddr, c.rootPEM, "cluster.local", tokenFile)
		must(t, err)
		defer conn.Close()
		m, err := identity.NewManager(identity.Options{Client: meshv1.NewCertificateAuthorityClient(conn), Bundle: bundle})
		must(t, err)
		defer m.Close()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err = m.Certificate(cctx, spiffe.ID{TrustDomain: "cluster.local", Namespace: "store", ServiceAccount: sa})
		return err
	}
	ztunnelA := filepath.Join(c.dir, "token-node-a")
	waypointTok := filepath.Join(c.dir, "pods", "store", "waypoint-0", "volumes", "ambit-token", "ambit-token")
	for _, tc := range []struct {
		name, token, sa string
		want            codes.Code
		msg             string
	}{
		{"node-a's ztunnel, a pod on node-a", ztunnelA, "client", codes.OK, ""},
		{"node-a's ztunnel, pods on node-b only", ztunnelA, "products", codes.PermissionDenied, "no pod with that identity runs on node-a"},
		{"the waypoint, its own identity", waypointTok, "waypoint", codes.OK, ""},
		{"the waypoint, another identity on its node", waypointTok, "client", codes.PermissionDenied, "may obtain only its own identity"},
	} {
		err := certificate(tc.token, tc.sa)
		if status.Code(err) != tc.want || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("%s: %v, want %v %q", tc.name, err, tc.want, tc.msg)
		}
	}
}
