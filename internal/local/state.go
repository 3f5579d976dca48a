package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// StateRoot holds one directory per cluster: StateRoot/<name>.
const StateRoot = "/run/ambit"

var validClusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// CheckName reports whether name can name a cluster (it prefixes namespaces).
func CheckName(name string) error {
	if !validClusterName.MatchString(name) {
		return fmt.Errorf("cluster name %q: use 1-32 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// StateDir is the state directory of cluster name.
func StateDir(name string) string { return filepath.Join(StateRoot, name) }

// Namespace names of cluster name.
func netNSName(name string) string          { return "ambit-" + name + "-net" }
func nodeNSName(name, node string) string   { return "ambit-" + name + "-node-" + node }
func podNSName(name, ns, pod string) string { return "ambit-" + name + "-pod-" + ns + "-" + pod }
func isClusterNS(name, nsName string) bool {
	p := "ambit-" + name + "-"
	return nsName == p+"net" || strings.HasPrefix(nsName, p+"node-") || strings.HasPrefix(nsName, p+"pod-")
}

// State describes a running cluster; `ambit up` writes it to
// StateDir(name)/state.json and the other commands read it.
type State struct {
	Name string `json:"name"`
	// Supervisor is the pid of the process running the cluster (control
	// plane, node agents, process supervision).
	Supervisor int       `json:"supervisor"`
	Ready      bool      `json:"ready"`
	StartedAt  time.Time `json:"startedAt"`
	// ControlPlane is the gRPC (push, CA) address; ControlPlaneHTTP serves
	// /metrics and /debug/*. Both live in the cluster network namespace.
	ControlPlane     string         `json:"controlPlane"`
	ControlPlaneHTTP string         `json:"controlPlaneHTTP"`
	NetNS            string         `json:"netns"`
	Nodes            []NodeState    `json:"nodes"`
	Pods             []PodState     `json:"pods"`
	Services         []ServiceState `json:"services"`
}

// NodeState is one node: its namespace (attached to the bridge at IP) runs
// the node's ztunnel.
type NodeState struct {
	Name       string `json:"name"`
	Zone       string `json:"zone,omitempty"`
	Region     string `json:"region,omitempty"`
	NetNS      string `json:"netns"`
	IP         string `json:"ip"`
	PodCIDR    string `json:"podCIDR"`
	ZtunnelPID int    `json:"ztunnelPid,omitempty"`
	Restarts   int    `json:"ztunnelRestarts"`
	Metrics    string `json:"metrics"`
	Log        string `json:"log"`
}

// PodState is one pod.
type PodState struct {
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Deployment string `json:"deployment,omitempty"`
	// ServiceAccount names the pod's identity (spiffe://TD/ns/NS/sa/SA).
	ServiceAccount string `json:"serviceAccount"`
	// Waypoint is the Gateway (ns/name) this pod is an instance of.
	Waypoint  string `json:"waypoint,omitempty"`
	Node      string `json:"node"`
	IP        string `json:"ip"`
	NetNS     string `json:"netns"`
	HostsFile string `json:"hostsFile"`
	Enrolled  bool   `json:"enrolled"`
	// Terminating pods are gone from the configuration and finish what
	// was sent to them before they are removed.
	Terminating bool             `json:"terminating,omitempty"`
	Log         string           `json:"log"`
	Env         []string         `json:"env,omitempty"`
	Containers  []ContainerState `json:"containers"`
	Created     time.Time        `json:"created"`
}

// ContainerState is one container's process.
type ContainerState struct {
	Name     string `json:"name"`
	PID      int    `json:"pid,omitempty"`
	Restarts int    `json:"restarts"`
}

// ServiceState is one Service.
type ServiceState struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	ClusterIP string    `json:"clusterIP"`
	Ports     []string  `json:"ports"`
	Created   time.Time `json:"created"`
}

// ProcessIDs lists the processes the state names: ztunnels and every
// container's (not the supervisor).
func (s *State) ProcessIDs() []int {
	var pids []int
	for _, n := range s.Nodes {
		pids = append(pids, n.ZtunnelPID)
	}
	for _, p := range s.Pods {
		for _, c := range p.Containers {
			pids = append(pids, c.PID)
		}
	}
	return pids
}

// ErrNotRunning is returned by LoadState when the cluster has no state.
var ErrNotRunning = errors.New("not running")

// LoadState reads the state of cluster name.
func LoadState(name string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(StateDir(name), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cluster %q is %w (start it with 'ambit up')", name, ErrNotRunning)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(StateDir(name), "state.json"), err)
	}
	return &s, nil
}

func writeState(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(StateDir(s.Name), "state.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// FindPod finds a pod by name or "deploy/NAME" in namespace ns ("" means
// any namespace, if the name is unambiguous).
func (s *State) FindPod(ns, ref string) (*PodState, error) {
	deploy, isDeploy := strings.CutPrefix(ref, "deploy/")
	if !isDeploy {
		deploy, isDeploy = strings.CutPrefix(ref, "deployment/")
	}
	ref = strings.TrimPrefix(strings.TrimPrefix(ref, "pod/"), "pods/")
	var found []*PodState
	for i := range s.Pods {
		p := &s.Pods[i]
		if ns != "" && p.Namespace != ns {
			continue
		}
		if (isDeploy && p.Deployment == deploy) || (!isDeploy && p.Name == ref) {
			found = append(found, p)
		}
	}
	where := "in any namespace"
	if ns != "" {
		where = "in namespace " + ns
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("no pod %s %s of cluster %s (see 'ambit get pods -A --name %s')", ref, where, s.Name, s.Name)
	case isDeploy:
		return found[0], nil // like kubectl: the first pod of the deployment
	case len(found) > 1:
		return nil, fmt.Errorf("pod %s exists in several namespaces: use -n", ref)
	}
	return found[0], nil
}
