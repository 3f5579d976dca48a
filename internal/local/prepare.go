package local

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Prepared is a validated cluster, ready to start (nothing has been
// created yet), or the next configuration of a running one.
type Prepared struct {
	Name string
	// Objects are the manifests' objects, in the order first applied: the
	// cluster's desired configuration (what apply and delete change).
	Objects []config.Object
	// PodLabels are labels set (value) or removed (nil) on running pods
	// with 'ambit label pod', over what their manifests say.
	PodLabels map[model.Key]map[string]*string
	Snapshot  *model.Snapshot
	Plan      *Plan
}

// Prepare loads and checks the manifests and plans the cluster, without
// touching the system: bad manifests fail here, before anything exists.
func Prepare(name string, files []string) (*Prepared, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	objs, err := config.LoadObjects(files...)
	if err != nil {
		return nil, err
	}
	return prepare(name, objs, nil, nil)
}

// prepare plans the cluster of objs. With prev (the running cluster's
// plan), what prev placed stays where it is: pods keep their node and
// address, Services their VIP.
func prepare(name string, objs []config.Object, podLabels map[model.Key]map[string]*string, prev *Plan) (*Prepared, error) {
	snap, err := config.NewSnapshot(objs)
	if err != nil {
		return nil, err
	}
	// The snapshot keeps slim Pods (no commands or env): plan from the
	// Pods as written.
	for _, o := range objs {
		if pod, ok := o.Obj.(*corev1.Pod); ok {
			full := pod.DeepCopy()
			full.Namespace = o.Ref.Namespace
			snap.Pods[model.Key{Namespace: o.Ref.Namespace, Name: o.Ref.Name}] = full
		}
	}
	spec, err := localClusterSpec(snap)
	if err != nil {
		return nil, err
	}
	zones := map[string]bool{}
	for _, n := range nodesOf(spec) {
		zones[n.Zone] = true
	}
	if err := addWaypoints(snap, StateDir(name), netip.AddrPortFrom(controlPlaneAddr(podCIDROf(spec)), cpGRPCPort), len(zones)); err != nil {
		return nil, err
	}
	plan, err := newPlan(snap, podLabels, prev)
	if err != nil {
		return nil, err
	}
	for _, pod := range plan.Pods {
		for _, c := range pod.Spec.Containers {
			if len(c.Command) == 0 && len(c.Args) == 0 {
				return nil, fmt.Errorf("Pod %s/%s: container %q has no command: the local cluster runs commands (e.g. [\"ambit\", \"app\", \"echo\"]), not images",
					pod.Namespace, pod.Name, c.Name)
			}
		}
	}
	if len(plan.Pods) > 250*len(plan.Nodes) {
		return nil, fmt.Errorf("%d pods: too many for %d nodes", len(plan.Pods), len(plan.Nodes))
	}
	return &Prepared{Name: name, Objects: objs, PodLabels: podLabels, Snapshot: snap, Plan: plan}, nil
}

// Options start a cluster.
type Options struct {
	// AmbitBin, ZtunnelBin and WaypointBin are the binaries to run in pods
	// (as "ambit"), on nodes, and in waypoint pods (as "waypoint").
	// Default: this executable, and the others next to it (see Binaries).
	AmbitBin, ZtunnelBin, WaypointBin string
	// Progress receives one line per step; nil discards.
	Progress func(format string, args ...any)
	// Supervisor is the pid recorded as the cluster's owner (default: ours).
	Supervisor int
}

// Binaries finds the ambit, ztunnel and waypoint binaries: ambit is this
// executable, the others are next to it, else in $PATH. A missing waypoint
// is not an error here (only clusters with waypoints need it): it is "".
func Binaries() (ambit, ztunnel, waypoint string, err error) {
	ambit, err = os.Executable()
	if err != nil {
		return "", "", "", err
	}
	find := func(name string) string {
		p := filepath.Join(filepath.Dir(ambit), name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		return ""
	}
	if ztunnel = find("ztunnel"); ztunnel == "" {
		return "", "", "", fmt.Errorf("no ztunnel binary next to %s nor in $PATH: build it with 'make build'", ambit)
	}
	return ambit, ztunnel, find("waypoint"), nil
}

// NeedsWaypoint reports whether the plan runs waypoint instances.
func (p *Plan) NeedsWaypoint() bool {
	for _, pod := range p.Pods {
		if isWaypointPod(pod) {
			return true
		}
	}
	return false
}
