package local

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Prepared is a validated cluster, ready to start: nothing has been
// created yet.
type Prepared struct {
	Name     string
	Files    []string
	Snapshot *model.Snapshot
	Plan     *Plan
}

// Prepare loads and checks the manifests and plans the cluster, without
// touching the system: bad manifests fail here, before anything exists.
func Prepare(name string, files []string) (*Prepared, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	snap, err := config.Load(files...)
	if err != nil {
		return nil, err
	}
	// The snapshot keeps slim Pods (no commands or env): plan from the
	// Pods as written.
	objs, err := config.LoadObjects(files...)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if pod, ok := o.Obj.(*corev1.Pod); ok {
			if _, ok := snap.Pods[model.Key{Namespace: o.Ref.Namespace, Name: o.Ref.Name}]; ok {
				full := pod.DeepCopy()
				full.Namespace = o.Ref.Namespace
				snap.Pods[model.Key{Namespace: o.Ref.Namespace, Name: o.Ref.Name}] = full
			}
		}
	}
	plan, err := NewPlan(snap)
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
	return &Prepared{Name: name, Files: files, Snapshot: snap, Plan: plan}, nil
}

// Options start a cluster.
type Options struct {
	// AmbitBin and ZtunnelBin are the binaries to run in pods (as "ambit")
	// and on nodes. Default: this executable, and "ztunnel" next to it.
	AmbitBin, ZtunnelBin string
	// Progress receives one line per step; nil discards.
	Progress func(format string, args ...any)
	// Supervisor is the pid recorded as the cluster's owner (default: ours).
	Supervisor int
}

// Binaries finds the ambit and ztunnel binaries (ztunnel next to ambit,
// else in $PATH).
func Binaries() (ambit, ztunnel string, err error) {
	ambit, err = os.Executable()
	if err != nil {
		return "", "", err
	}
	ztunnel = filepath.Join(filepath.Dir(ambit), "ztunnel")
	if _, err := os.Stat(ztunnel); err != nil {
		if ztunnel, err = exec.LookPath("ztunnel"); err != nil {
			return "", "", fmt.Errorf("no ztunnel binary next to %s nor in $PATH: build it with 'make build'", ambit)
		}
	}
	return ambit, ztunnel, nil
}
