//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/yaml"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
	"github.com/ambit-mesh/ambit/internal/echo"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/netns/netnstest"
	"github.com/ambit-mesh/ambit/test/conformance"
)

// echoCommand replaces the conformance echo image: the local cluster runs
// commands, not images, and `ambit app echo` serves what the suite's
// echo-advanced serves on the ports its Services target (HTTP 8080 and
// 8443 — plain HTTP: no case uses TLS —, gRPC 7070, TCP 9090).
var echoCommand = []any{"ambit", "app", "echo", "--port", "8080,8443", "--grpc-port", "7070", "--tcp-port", "9090"}

// conformanceManifests turns the suite's base manifests into what `ambit
// up` runs, by a small transformation of the parsed objects:
//   - every Deployment's containers run echoCommand (the image and its
//     args, which are echo-advanced flags, are dropped: a container's args
//     would follow the command);
//   - both namespaces are in ambient mode and the mesh namespace uses the
//     waypoint (istio.io/use-waypoint), as an Istio installation running
//     the suite labels them;
//
// and adds the waypoint Gateway and a client Deployment in each namespace
// for the requests (the suite sends from its echo pods; a pod of its own
// keeps the backends' request counts clean).
func conformanceManifests() (string, error) {
	objs, err := localObjects()
	if err != nil {
		return "", err
	}
	docs, err := marshalAll(objs)
	if err != nil {
		return "", err
	}
	docs = append(docs, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: %s}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
`, conformance.MeshNS))
	for _, ns := range []string{conformance.MeshNS, conformance.ConsumerNS} {
		docs = append(docs, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: %s}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers: [{name: client, command: [sleep, infinity]}]
`, ns))
	}
	return strings.Join(docs, "---\n"), nil
}

// localObjects are the suite's base objects, transformed for the local
// cluster (see conformanceManifests).
func localObjects() ([]map[string]any, error) {
	base, err := conformance.Manifest("manifests.yaml")
	if err != nil {
		return nil, err
	}
	var objs []map[string]any
	for _, doc := range strings.Split(base, "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("manifests.yaml: %w", err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		switch obj["kind"] {
		case "Namespace":
			labels, _ := meta["labels"].(map[string]any)
			if labels == nil {
				labels = map[string]any{}
				meta["labels"] = labels
			}
			labels["istio.io/dataplane-mode"] = "ambient"
			if meta["name"] == conformance.MeshNS {
				labels["istio.io/use-waypoint"] = "waypoint"
			}
		case "Deployment":
			containers := containersOf(obj)
			if len(containers) == 0 {
				return nil, fmt.Errorf("manifests.yaml: Deployment %v has no containers", meta["name"])
			}
			for _, c := range containers {
				delete(c, "args")
				delete(c, "image")
				delete(c, "imagePullPolicy")
				c["command"] = echoCommand
			}
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// containersOf returns the containers of a Deployment's pod template.
func containersOf(dep map[string]any) []map[string]any {
	spec, _ := dep["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	podSpec, _ := tmpl["spec"].(map[string]any)
	list, _ := podSpec["containers"].([]any)
	var out []map[string]any
	for _, c := range list {
		if c, ok := c.(map[string]any); ok {
			out = append(out, c)
		}
	}
	return out
}

func marshalAll(objs []map[string]any) ([]string, error) {
	var docs []string
	for _, obj := range objs {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(b))
	}
	return docs, nil
}

// rolledEchoes are the echo Deployments of MeshNS with a changed pod
// template (an environment variable): applied, every pod behind Service
// echo is replaced.
func rolledEchoes(value string) (string, error) {
	objs, err := localObjects()
	if err != nil {
		return "", err
	}
	var deps []map[string]any
	for _, obj := range objs {
		meta, _ := obj["metadata"].(map[string]any)
		if obj["kind"] == "Deployment" && meta["namespace"] == conformance.MeshNS {
			for _, c := range containersOf(obj) {
				c["env"] = []any{map[string]any{"name": "ROLLOUT", "value": value}}
			}
			deps = append(deps, obj)
		}
	}
	docs, err := marshalAll(deps)
	return strings.Join(docs, "---\n"), err
}

// conformanceCluster is a local cluster running the suite's manifests.
type conformanceCluster struct {
	name    string
	st      *local.State
	dir     string                  // where route files are written for ambit apply/delete
	clients map[string]*http.Client // by conformance.Case.From
	dialers map[string]netns.DialFunc
	cp      *http.Client // to the control plane's debug endpoints
}

func startConformanceCluster(t *testing.T) *conformanceCluster {
	t.Helper()
	manifests, err := conformanceManifests()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base", "manifests.yaml")
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base, []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &conformanceCluster{name: clusterName(t, "c"), dir: dir, clients: map[string]*http.Client{}, dialers: map[string]netns.DialFunc{}}
	upFrom(t, k.name, base)
	k.st = state(t, k.name)
	for from, ns := range map[string]string{"client": conformance.MeshNS, "consumer": conformance.ConsumerNS} {
		hc := podClient(t, k.pod(t, ns, "client"))
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		k.clients[from] = hc
		k.dialers[from] = hc.Transport.(*http.Transport).DialContext
	}
	cpNS, err := netns.OpenNamed(k.st.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpNS.Close() })
	k.cp = &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(cpNS, netns.SocketOptions{})}, Timeout: 5 * time.Second}
	return k
}

// pod is the first pod of Deployment deployment in namespace ns.
func (k *conformanceCluster) pod(t *testing.T, ns, deployment string) local.PodState {
	t.Helper()
	for _, p := range k.st.Pods {
		if p.Namespace == ns && p.Deployment == deployment && !p.Terminating {
			return p
		}
	}
	t.Fatalf("no pod of Deployment %s/%s", ns, deployment)
	return local.PodState{}
}

// addr is where a request for host ("name[.namespace][:port]") goes: the
// Service's VIP, or with podIP its first pod's address.
func (k *conformanceCluster) addr(t *testing.T, host string, podIP bool) string {
	t.Helper()
	name, port, ok := strings.Cut(host, ":")
	if !ok {
		port = "80"
	}
	name, ns, ok := strings.Cut(name, ".")
	if !ok {
		ns = conformance.MeshNS
	}
	if podIP {
		return net.JoinHostPort(k.pod(t, ns, name).IP, port)
	}
	return net.JoinHostPort(serviceIP(t, k.st, ns, name), port)
}

// debug GETs a control plane debug endpoint into v.
func (k *conformanceCluster) debug(path string, v any) error {
	resp, err := k.cp.Get("http://" + k.st.ControlPlaneHTTP + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (k *conformanceCluster) version(t *testing.T) uint64 {
	t.Helper()
	var cfg struct{ Version uint64 }
	if err := k.debug("/debug/config", &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Version
}

// change runs `ambit apply|delete -f file` and returns once the control
// plane pushed the change and every proxy (the waypoint among them)
// acknowledged it, so the next request sees it — no stale route can pass
// a case, nor a new one fail it while it propagates.
func (k *conformanceCluster) change(t *testing.T, op, file string) {
	t.Helper()
	before := k.version(t)
	mustAmbit(t, op, "--name", k.name, "-f", file)
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := k.version(t)
		var proxies []struct {
			ID           string
			AckedVersion uint64
		}
		if err := k.debug("/debug/proxies", &proxies); err != nil {
			t.Fatal(err)
		}
		behind := ""
		for _, p := range proxies {
			if p.AckedVersion < now {
				behind = fmt.Sprintf("%s at version %d", p.ID, p.AckedVersion)
			}
		}
		if now > before && behind == "" && len(proxies) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ambit %s -f %s: version %d (before %d) not applied in 10 s: %s", op, filepath.Base(file), now, before, behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// with applies yaml (written as file name) for the rest of the test and
// deletes it at its end.
func (k *conformanceCluster) with(t *testing.T, name, yaml string) {
	t.Helper()
	file := filepath.Join(k.dir, name)
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	k.change(t, "apply", file)
	t.Cleanup(func() { k.change(t, "delete", file) })
}

// Apply implements conformance.Harness: the suite's manifest file for the
// rest of the test.
func (k *conformanceCluster) Apply(t *testing.T, file string) {
	t.Helper()
	yaml, err := conformance.Manifest(file)
	if err != nil {
		t.Fatal(err)
	}
	k.with(t, file, yaml)
}

// request sends cc from its client pod and returns the answer (the echo's
// description of the request as the backend saw it, when it answered).
func (k *conformanceCluster) request(t *testing.T, cc conformance.Case) (int, http.Header, echo.Response, string) {
	t.Helper()
	if cc.Host == "" {
		cc.Host = "echo"
	}
	from := cc.From
	if from == "" {
		from = "client"
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+k.addr(t, cc.Host, cc.PodIP)+cc.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = cc.Authority()
	for h, v := range cc.Header {
		if strings.EqualFold(h, "host") {
			req.Host = v
		} else {
			req.Header.Set(h, v)
		}
	}
	resp, err := k.clients[from].Do(req)
	if err != nil {
		t.Fatalf("%s%s: %v", cc.Host, cc.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s%s: reading the answer: %v", cc.Host, cc.Path, err)
	}
	var e echo.Response
	json.Unmarshal(b, &e) // redirects and errors carry no echo answer
	return resp.StatusCode, resp.Header, e, string(b)
}

// HTTP implements conformance.Harness.
func (k *conformanceCluster) HTTP(t *testing.T, cc conformance.Case) (int, http.Header, echo.Response) {
	t.Helper()
	status, h, e, _ := k.request(t, cc)
	return status, h, e
}

func (k *conformanceCluster) check(t *testing.T, cc conformance.Case) {
	t.Helper()
	status, h, e := k.HTTP(t, cc)
	if err := cc.Check(status, h, e); err != nil {
		t.Errorf("%s%s from %s: %v", cc.Host, cc.Path, cc.From, err)
	}
}

// GRPC implements conformance.Harness.
func (k *conformanceCluster) GRPC(t *testing.T, target string) echov1.EchoClient {
	t.Helper()
	dial := k.dialers["client"]
	cc, err := grpc.NewClient(k.addr(t, target, false), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(target),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return echov1.NewEchoClient(cc)
}

// TestConformanceLocal runs the Gateway API mesh conformance cases
// (test/conformance/gateway-api-mesh/CASES.md) end to end on one local
// cluster: client pod → ztunnel → waypoint → ztunnel → `ambit app echo`,
// each test's routes applied with `ambit apply` and removed with `ambit
// delete` around its cases; then Istio's VirtualService and
// DestinationRule, L7 authorization, retries and timeouts.
func TestConformanceLocal(t *testing.T) {
	netnstest.RequireRoot(t)
	build(t)
	k := startConformanceCluster(t)
	if wp := k.pod(t, conformance.MeshNS, "waypoint"); wp.Enrolled {
		t.Fatalf("waypoint pod %s is enrolled", wp.Name)
	}
	// The cases' requests leave from the client pods' network namespaces
	// (through their redirection to the ztunnel, like a process of the
	// pod); a process run in the pod by ambit exec resolves the Services
	// by name as well.
	t.Run("ambit exec", func(t *testing.T) {
		for ns, url := range map[string]string{conformance.MeshNS: "http://echo/", conformance.ConsumerNS: "http://echo.gateway-conformance-mesh/"} {
			if a := getIn(t, k.name, ns, url); !strings.HasPrefix(a.Pod, "echo-v") || a.Namespace != conformance.MeshNS {
				t.Errorf("%s from %s answered by %+v", url, ns, a)
			}
		}
	})
	conformance.Run(t, k)

	t.Run("VirtualServiceDestinationRule", func(t *testing.T) {
		k.with(t, "istio-routing.yaml", istioRouting)
		for _, cc := range []conformance.Case{
			{Path: "/", Backend: "echo-v1", NoResp: []string{"X-Route"}},
			{Path: "/", Header: map[string]string{"X-Version": "v2"}, Backend: "echo-v2", RespHdr: map[string]string{"X-Route": "canary"}},
			{Path: "/old/page", Backend: "echo-v1", EchoPath: "/new/page"},
		} {
			k.check(t, cc)
		}
	})
	t.Run("AuthorizationPolicy", func(t *testing.T) {
		k.with(t, "authz.yaml", l7Authz)
		for _, cc := range []conformance.Case{
			{Path: "/admin/users", Status: http.StatusForbidden},
			{Path: "/"},
			{Host: "echo.gateway-conformance-mesh", Path: "/private", From: "consumer", Status: http.StatusForbidden},
			{Host: "echo.gateway-conformance-mesh", Path: "/", From: "consumer"},
			{Path: "/private"},
		} {
			k.check(t, cc)
		}
		if _, _, _, body := k.request(t, conformance.Case{Path: "/admin"}); strings.TrimSpace(body) != "RBAC: access denied" {
			t.Errorf("denied request answered %q, want \"RBAC: access denied\"", body)
		}
	})
	t.Run("RetriesAndTimeouts", func(t *testing.T) {
		k.with(t, "resilience.yaml", resilience)
		// The route retries 502 three times: four requests reach the
		// backends for the client's one, and the last answer comes back.
		k.check(t, conformance.Case{Path: "/status/502", Status: http.StatusBadGateway})
		var logs []string
		for _, p := range k.st.Pods {
			if p.Namespace == conformance.MeshNS && strings.HasPrefix(p.Deployment, "echo-") {
				logs = append(logs, p.Log)
			}
		}
		// Each echo logs a request once it answered; the waypoint sent the
		// next attempt only after the previous answer, so all four lines
		// come, the last perhaps just after the client's answer.
		deadline := time.Now().Add(10 * time.Second)
		n := 0
		for n = backendRequests(t, logs, "/status/502"); n < 4 && time.Now().Before(deadline); n = backendRequests(t, logs, "/status/502") {
			time.Sleep(20 * time.Millisecond)
		}
		if n != 4 {
			t.Errorf("%d requests for /status/502 reached the backends, want 4 (1 + 3 retries)", n)
		}
		// The request timeout (500 ms) ends a request the backend delays
		// by 10 s with 504; a prompt one passes.
		start := time.Now()
		status, _, _, body := k.request(t, conformance.Case{Path: "/?delay=10s"})
		if status != http.StatusGatewayTimeout || !strings.Contains(body, "upstream request timeout") {
			t.Errorf("a request delayed past the route's timeout: %d %q, want 504 upstream request timeout", status, body)
		}
		t.Logf("timed out after %v", time.Since(start).Round(time.Millisecond))
		k.check(t, conformance.Case{Path: "/?delay=50ms"})
	})
	// Every pod behind echo is replaced while clients keep sending through
	// the waypoint: no request may fail or hang (each has 10 s), through
	// the removal of the old pods after their grace period — where the
	// waypoint once sent plaintext to a pod that had left the mesh and
	// waited on it.
	t.Run("RolloutUnderLoad", func(t *testing.T) {
		yaml, err := rolledEchoes("1")
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(k.dir, "rolled.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		old := map[string][]string{}
		for _, p := range state(t, k.name).Pods {
			if p.Namespace == conformance.MeshNS && strings.HasPrefix(p.Deployment, "echo-") {
				old[p.Deployment] = append(old[p.Deployment], p.Name)
			}
		}
		ld := startLoad(t, k.clients["client"], "http://"+k.addr(t, "echo", false)+"/", 16)
		out := mustAmbit(t, "apply", "--name", k.name, "-f", file)
		applied := time.Now()
		k.waitRemoved(t, old)
		t.Logf("old pods removed %v after ambit apply returned", time.Since(applied).Round(time.Millisecond))
		counts := ld.Stop()
		t.Logf("%s: answers during the rollout %v", strings.TrimSpace(out), counts)
		if n, first := failures(counts); n > 0 {
			t.Errorf("%d requests failed during the rollout, e.g. %s", n, first)
		}
		if counts["echo-v1"] == 0 || counts["echo-v2"] == 0 {
			t.Errorf("answers %v, want both echo-v1 and echo-v2", counts)
		}
	})
}

// waitRemoved waits until the pods old lists (by Deployment) are removed
// from the cluster: a second after the rollout (their grace) when all goes
// well. The bound covers what removal may take at worst (stopping the
// processes, 2 s; the node agent taking the pod out, 20 s); past it the
// warnings of the cluster's logs say why.
func (k *conformanceCluster) waitRemoved(t *testing.T, old map[string][]string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		left := 0
		for _, p := range state(t, k.name).Pods {
			if p.Namespace == conformance.MeshNS && slices.Contains(old[p.Deployment], p.Name) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			dir := filepath.Join(local.StateDir(k.name), "logs")
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				var warn []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") {
						warn = append(warn, l)
					}
				}
				t.Logf("%s, last warnings:\n%s", e.Name(), strings.Join(warn[max(0, len(warn)-15):], "\n"))
			}
			t.Fatalf("%d old pods still there 40 s after the rollout", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// backendRequests counts the requests for path the echo pods logged.
func backendRequests(t *testing.T, logs []string, path string) int {
	t.Helper()
	n := 0
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(b), `"path":"`+path+`"`)
	}
	return n
}

// istioRouting: a VirtualService on echo sending header x-version: v2 to
// the DestinationRule's v2 subset (with a response header), rewriting
// /old, and everything else to subset v1.
const istioRouting = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-versions, namespace: gateway-conformance-mesh}
spec:
  host: echo.gateway-conformance-mesh.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-versions, namespace: gateway-conformance-mesh}
spec:
  hosts: [echo.gateway-conformance-mesh.svc.cluster.local]
  http:
  - match: [{headers: {x-version: {exact: v2}}}]
    headers: {response: {set: {x-route: canary}}}
    route: [{destination: {host: echo.gateway-conformance-mesh.svc.cluster.local, subset: v2}}]
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new}
    route: [{destination: {host: echo.gateway-conformance-mesh.svc.cluster.local, subset: v1}}]
  - route: [{destination: {host: echo.gateway-conformance-mesh.svc.cluster.local, subset: v1}}]
`

// l7Authz: the waypoint denies /admin to everyone and GET /private to the
// consumer namespace (by the client's identity the waypoint verified).
const l7Authz = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-l7, namespace: gateway-conformance-mesh}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - from: [{source: {namespaces: [gateway-conformance-mesh-consumer]}}]
    to: [{operation: {methods: [GET], paths: ["/private"]}}]
`

// resilience: /status... retried on 502 (3 attempts); everything else
// under a 500 ms request timeout.
const resilience = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: resilience, namespace: gateway-conformance-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /status}}]
    retry: {attempts: 3, codes: [502], backoff: 10ms}
    backendRefs: [{name: echo, port: 80}]
  - timeouts: {request: 500ms}
    backendRefs: [{name: echo, port: 80}]
`
