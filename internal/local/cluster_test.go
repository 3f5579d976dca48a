//go:build linux

package local

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{"10.244.0.0/16": "10.244.255.255", "10.1.2.0/24": "10.1.2.255", "10.0.0.0/8": "10.255.255.255"} {
		if got := broadcast(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestCheckNameAndNamespaces(t *testing.T) {
	for _, ok := range []string{"ambit", "a", "e2e123", "my-mesh"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "-a", "a-", "a/b", "a_b", strings.Repeat("a", 33)} {
		if CheckName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if !isClusterNS("x", "ambit-x-net") || !isClusterNS("x", "ambit-x-pod-demo-p") || !isClusterNS("x", "ambit-x-node-a") {
		t.Error("own namespaces not recognised")
	}
	if isClusterNS("x", "ambit-xy-net") || isClusterNS("x", "ambit-x-other") || isClusterNS("x", "foo") {
		t.Error("foreign namespace recognised")
	}
}

func TestPrepareKeepsBarePodCommands(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, command: [sleep, '1'], env: [{name: A, value: b}]}]\n"), 0o644)
	p, err := Prepare("t", []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Plan.Pods[0].Spec.Containers[0]
	if strings.Join(c.Command, " ") != "sleep 1" {
		t.Errorf("command %q", c.Command)
	}
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	if !strings.Contains(strings.Join(env, " "), "A=b") || !strings.Contains(strings.Join(env, " "), "POD_IP=10.244.") {
		t.Errorf("env %v", env)
	}
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, image: nginx}]\n"), 0o644)
	if _, err := Prepare("t", []string{dir}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("container without command: %v", err)
	}
}

func TestHostsFileAndState(t *testing.T) {
	p := prepareQuickstart(t)
	c := &Cluster{name: "t", dir: StateDir("t"), prep: p, opts: Options{Supervisor: 1}, pods: map[string]*podRT{}, svcCreated: map[string]time.Time{}}
	c.initState()
	if c.state.ControlPlane != "10.244.255.254:15012" {
		t.Errorf("control plane at %s", c.state.ControlPlane)
	}
	hosts := hostsFile(p.Plan.Services, p.Plan.Pods[0])
	for _, want := range []string{"127.0.0.1\tlocalhost", "echo.demo.svc.cluster.local echo.demo.svc echo.demo echo\n"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, hosts)
		}
	}
	for _, p := range c.state.Pods {
		if p.Node == "" || p.IP == "" || len(p.Containers) != 1 {
			t.Errorf("pod %+v", p)
		}
	}
	if pod, err := c.state.FindPod("demo", "deploy/client"); err != nil || pod.Deployment != "client" {
		t.Errorf("deploy/client: %v %v", pod, err)
	}
	if _, err := c.state.FindPod("", "deploy/echo-v1"); err != nil {
		t.Error(err)
	}
	if _, err := c.state.FindPod("other", "deploy/client"); err == nil {
		t.Error("found a pod in the wrong namespace")
	}
}

func TestVerifiedPeers(t *testing.T) {
	metrics := `# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="destination",source_principal="spiffe://td/ns/a/sa/c",destination_principal="spiffe://td/ns/a/sa/e",connection_security_policy="mutual_tls"} 2
istio_tcp_connections_opened_total{reporter="destination",source_principal="spiffe://td/ns/a/sa/c",destination_principal="spiffe://td/ns/a/sa/e",connection_security_policy="mutual_tls",response_flags="x"} 3
istio_tcp_connections_opened_total{reporter="source",source_principal="spiffe://td/ns/a/sa/c",destination_principal="spiffe://td/ns/a/sa/e",connection_security_policy="mutual_tls"} 9
istio_tcp_connections_opened_total{reporter="destination",source_principal="unknown",destination_principal="spiffe://td/ns/a/sa/e",connection_security_policy="none"} 4
`
	got := verifiedPeers(metrics)
	if len(got) != 1 || got[0] != "spiffe://td/ns/a/sa/c → spiffe://td/ns/a/sa/e (mTLS, 5 connections)" {
		t.Errorf("verifiedPeers: %q", got)
	}
}
