// Package kubetest runs a real Kubernetes API server for tests: etcd from
// the machine (Debian's etcd-server) and kube-apiserver built from the Go
// module proxy by the separate module in test/kube/apiserver, cached
// between runs. Tests play the kubelet's and the controllers' parts
// themselves (create Nodes, Pods, pod status).
//
// Used by the tests of internal/kube, internal/waypointctl, internal/install,
// internal/nodeagent and test/kube. Everything listens on 127.0.0.1 only.
package kubetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubernetesVersion is the kube-apiserver the harness builds (test/kube/apiserver/go.mod).
const KubernetesVersion = "v1.36.1"

// ServiceCIDR is the API server's Service range: the local cluster
// planner's default, so planned Services keep their VIPs.
const ServiceCIDR = "10.96.0.0/16"

// APIAudience is the audience of the service account tokens the API
// server issues by default, besides the audiences a TokenRequest names.
const APIAudience = "https://kubernetes.default.svc.cluster.local"

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// Config connects as a cluster administrator (system:masters).
	Config *rest.Config
	// Kubeconfig is a file holding Config, for binaries under test.
	Kubeconfig string
	// URL of the API server.
	URL string
	Dir string
}

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") != "" }

// Start runs an API server for the test (stopped at cleanup). Without
// etcd on the machine it skips, except in CI, where it fails.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 && !InCI() {
		// Not needed by the API server itself, but every caller also builds
		// network namespaces or runs proxies that need root.
		t.Log("note: not root")
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		if InCI() {
			t.Fatalf("etcd not installed (apt-get install etcd-server): %v", err)
		}
		t.Skipf("etcd not installed (apt-get install etcd-server); skipping the API server tests outside CI")
	}
	apiserver, err := APIServerBinary()
	if err != nil {
		t.Fatalf("kube-apiserver: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{Dir: dir}
	var procs []*exec.Cmd
	t.Cleanup(func() {
		cancel()
		for i := len(procs) - 1; i >= 0; i-- {
			stop(procs[i])
		}
	})

	etcdURL, etcdCmd, err := startEtcd(ctx, etcd, dir)
	if err != nil {
		t.Fatal(err)
	}
	procs = append(procs, etcdCmd)
	url, cmd, token, err := startAPIServer(ctx, apiserver, dir, etcdURL)
	if cmd != nil {
		procs = append(procs, cmd)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.URL = url
	c.Config = &rest.Config{Host: url, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, url, token); err != nil {
		t.Fatal(err)
	}
	return c
}

// stop ends a process started by the harness and waits for it, bounded.
func stop(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd runs a single-member etcd on two free loopback ports.
func startEtcd(ctx context.Context, bin, dir string) (string, *exec.Cmd, error) {
	client, err1 := freePort()
	peer, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return "", nil, err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	cmd := exec.CommandContext(ctx, bin,
		"--name", "test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test="+peerURL, "--log-level", "warn", "--logger", "zap")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return "", nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("etcd: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(clientURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return clientURL, cmd, nil
			}
		}
		if time.Now().After(deadline) {
			stop(cmd)
			log, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			return "", nil, fmt.Errorf("etcd not healthy after 60s: %v\n%s", err, tail(log))
		}
		time.Sleep(100 * time.Millisecond) // polling a process we do not control
	}
}

func startAPIServer(ctx context.Context, bin, dir, etcdURL string) (url string, cmd *exec.Cmd, token string, err error) {
	port, err := freePort()
	if err != nil {
		return "", nil, "", err
	}
	token = randomHex(16)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return "", nil, "", err
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := writeECKey(saKey); err != nil {
		return "", nil, "", err
	}
	url = fmt.Sprintf("https://127.0.0.1:%d", port)
	cmd = exec.CommandContext(ctx, bin,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
		"--cert-dir", filepath.Join(dir, "pki"),
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", APIAudience,
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--api-audiences", APIAudience,
		"--service-cluster-ip-range", ServiceCIDR,
		// The harness plays the kubelet: nothing mounts tokens into pods.
		"--disable-admission-plugins", "ServiceAccount",
		// As kubeadm and every managed cluster: node agents run privileged.
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false", "-v", "1")
	logf, err := os.Create(filepath.Join(dir, "apiserver.log"))
	if err != nil {
		return "", nil, "", err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", nil, "", fmt.Errorf("kube-apiserver: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Process.Wait(); close(exited) }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	// A loaded 2-core machine takes tens of seconds to start the API
	// server; the bound is only for failure.
	deadline := time.Now().Add(180 * time.Second)
	var last string
	for {
		req, _ := http.NewRequest("GET", url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err == nil {
			body := make([]byte, 2048)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url, cmd, token, nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
			return "", nil, "", fmt.Errorf("kube-apiserver exited during startup:\n%s", tail(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
			return "", cmd, "", fmt.Errorf("kube-apiserver not ready after 180s (last: %s):\n%s", last, tail(log))
		}
		time.Sleep(200 * time.Millisecond) // polling a process we do not control
	}
}

func tail(b []byte) string {
	const n = 4000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func writeECKey(path string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// KubeconfigFor writes a kubeconfig that acts as service account
// namespace/name (a token from the TokenRequest API, as a pod of that
// account gets), so a component under test has exactly the permissions its
// RBAC grants.
func (c *Cluster) KubeconfigFor(t testing.TB, namespace, name string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for service account %s/%s: %v", namespace, name, err)
	}
	path := filepath.Join(c.Dir, "kubeconfig-"+namespace+"-"+name)
	if err := writeKubeconfig(path, c.URL, tr.Status.Token); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKubeconfig(path, url, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: url, InsecureSkipTLSVerify: true}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	cfg.CurrentContext = "test"
	return clientcmd.WriteToFile(*cfg, path)
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// APIServerBinary returns the path of kube-apiserver, building it on first
// use: about 9.5 CPU-minutes from an empty build cache (measured 13m20s
// wall on 2 busy cores, 12m in a CI run), nothing once cached. See
// ToolBinary.
func APIServerBinary() (string, error) {
	return ToolBinary("apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", apiserverLdflags)
}

// HelmBinary returns the path of the helm CLI built from test/kube/helm.
func HelmBinary() (string, error) {
	return ToolBinary("helm", "helm.sh/helm/v3/cmd/helm", "-s -w")
}

// ToolBinary builds pkg from the tools module test/kube/<module> and
// returns the binary's path. Binaries are cached in the user's cache
// directory under a key of the module's go.mod, go.sum, the Go version and
// ldflags, so a checkout builds each once and every later run, and every
// test package, reuses it. Concurrent test processes take turns on a file
// lock; the second finds the first one's binary.
func ToolBinary(module, pkg, ldflags string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildCache[pkg]; ok {
		return p, nil
	}
	p, err := buildTool(module, pkg, ldflags)
	if err == nil {
		buildCache[pkg] = p
	}
	return p, err
}

func moduleDir(module string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate test/kube/" + module)
	}
	dir := filepath.Join(filepath.Dir(file), "..", module)
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("test/kube/%s: %w", module, err)
	}
	return dir, nil
}

// apiserverLdflags stamp the version (what discovery reports) and drop debug info.
const apiserverLdflags = "-s -w -X k8s.io/component-base/version.gitVersion=" + KubernetesVersion +
	" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36" +
	" -X k8s.io/component-base/version.gitTreeState=clean"

func buildTool(module, pkg, ldflags string) (string, error) {
	mod, err := moduleDir(module)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(mod, f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	h.Write(goVersion)
	h.Write([]byte(ldflags))
	cacheRoot, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	h.Write([]byte(pkg))
	name := filepath.Base(pkg)
	dir := filepath.Join(cacheRoot, "ambit", name+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	bin := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	start := time.Now()
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-ldflags="+ldflags, "-o", tmp, pkg)
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building %s in %s: %v\n%s", pkg, mod, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "kubetest: built %s in %s (cached in %s)\n", pkg, time.Since(start).Round(time.Second), dir)
	return bin, nil
}
