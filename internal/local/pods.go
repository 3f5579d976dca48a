//go:build linux

package local

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/redirect"
)

// podRT is one running pod: its network namespace, its enrolment with its
// node's ztunnel, its container processes.
type podRT struct {
	pod      *corev1.Pod
	state    PodState // without pids (see refreshState)
	ns       *netns.NS
	procs    []*proc
	enrolled bool
	// terminating: the pod is gone from the configuration and serves
	// what was sent to it before until it is removed.
	terminating bool
	removed     sync.Once
	removeErr   error
}

func (c *Cluster) newPodRT(pod *corev1.Pod) *podRT {
	ps := PodState{Namespace: pod.Namespace, Name: pod.Name, Deployment: pod.Labels[labelOwner], Node: pod.Spec.NodeName,
		IP: pod.Status.PodIP, NetNS: podNSName(c.name, pod.Namespace, pod.Name),
		HostsFile: filepath.Join(c.dir, "pods", pod.Namespace+"_"+pod.Name+".hosts"),
		Log:       filepath.Join(c.dir, "logs", pod.Namespace+"_"+pod.Name+".log"), Created: time.Now().UTC(),
		ServiceAccount: serviceAccountOf(pod)}
	if isWaypointPod(pod) {
		ps.Waypoint = pod.Namespace + "/" + pod.Labels[gatewayNameLabel]
	}
	if len(pod.Spec.Containers) > 0 {
		ps.Env = c.containerEnv(pod, &pod.Spec.Containers[0])
	}
	return &podRT{pod: pod, state: ps}
}

// createPodNetwork creates the pod's namespace, attached to the bridge at
// the pod's address with a default route via its node.
func (c *Cluster) createPodNetwork(rt *podRT) error {
	ns, err := netns.NewNamed(rt.state.NetNS)
	if err != nil {
		return err
	}
	rt.ns = ns
	ip := netip.MustParseAddr(rt.pod.Status.PodIP)
	veth := fmt.Sprintf("vp%d", c.vethSeq.Add(1))
	if err := netns.AttachToBridge(c.netNS, bridgeName, ns, "eth0", veth, netip.PrefixFrom(ip, c.prep.Plan.PodCIDR.Bits())); err != nil {
		return fmt.Errorf("pod %s: %w", podKey(rt.pod), err)
	}
	gw := netip.MustParseAddr(rt.pod.Status.HostIP)
	return netns.AddRoute(ns, netip.MustParsePrefix("0.0.0.0/0"), gw, "eth0")
}

func podUID(pod *corev1.Pod) string {
	if pod.UID != "" {
		return string(pod.UID)
	}
	return podKey(pod)
}

// enrol hands the pod's namespace to its node's ztunnel (which opens its
// listeners there), then installs the redirection of the pod's traffic to
// them: in this order no connection is redirected to a port nobody serves.
func (c *Cluster) enrol(rt *podRT) error {
	pod := rt.pod
	ctx, cancel := context.WithTimeout(c.ctx, startTimeout)
	defer cancel()
	err := c.agents[pod.Spec.NodeName].AddPod(ctx, redirect.Pod{UID: podUID(pod), Name: pod.Name, Namespace: pod.Namespace,
		ServiceAccount: serviceAccountOf(pod), IPs: []netip.Addr{netip.MustParseAddr(pod.Status.PodIP)}}, rt.ns.File())
	if err != nil {
		return fmt.Errorf("enrolling pod %s on %s: %w", podKey(pod), pod.Spec.NodeName, err)
	}
	if err := redirect.Install(rt.ns, redirect.Config{}); err != nil {
		return fmt.Errorf("pod %s: %w", podKey(pod), err)
	}
	c.setEnrolled(rt, true)
	return nil
}

// unenrol removes the redirection, then the pod from its ztunnel: its
// traffic flows directly again.
func (c *Cluster) unenrol(rt *podRT) error {
	if err := redirect.Remove(rt.ns, redirect.Config{}); err != nil {
		return fmt.Errorf("pod %s: %w", podKey(rt.pod), err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, startTimeout)
	defer cancel()
	if err := c.agents[rt.pod.Spec.NodeName].DelPod(ctx, podUID(rt.pod)); err != nil {
		return fmt.Errorf("removing pod %s from the ztunnel on %s: %w", podKey(rt.pod), rt.pod.Spec.NodeName, err)
	}
	c.setEnrolled(rt, false)
	return nil
}

func (c *Cluster) setEnrolled(rt *podRT, on bool) {
	c.stateMu.Lock()
	rt.enrolled = on
	c.stateMu.Unlock()
}

func serviceAccountOf(pod *corev1.Pod) string {
	if sa := pod.Spec.ServiceAccountName; sa != "" {
		return sa
	}
	return "default"
}

// startProcs writes the pod's hosts file and starts its containers.
func (c *Cluster) startProcs(rt *podRT, services []*corev1.Service) error {
	hosts := rt.state.HostsFile
	if err := os.WriteFile(hosts, []byte(hostsFile(services, rt.pod)), 0o644); err != nil {
		return err
	}
	pod := rt.pod
	var procs []*proc
	for j := range pod.Spec.Containers {
		ct := &pod.Spec.Containers[j]
		argv := append(append([]string{}, ct.Command...), ct.Args...)
		env := c.containerEnv(pod, ct)
		dir := orDefault(ct.WorkingDir, "/")
		procs = append(procs, newProc(fmt.Sprintf("pod %s container %s", podKey(pod), ct.Name), rt.ns, rt.state.Log, func() *exec.Cmd {
			cmd := exec.Command(c.opts.AmbitBin, append([]string{"internal", "pod-exec", "--hosts", hosts, "--"}, argv...)...)
			cmd.Env, cmd.Dir = env, dir
			return cmd
		}, func() {}))
	}
	c.stateMu.Lock()
	rt.procs = procs
	c.stateMu.Unlock()
	for _, p := range procs {
		p.changed = c.changed
		if err := p.start(); err != nil {
			return err
		}
	}
	return nil
}

// portWait bounds how long a pod's declared ports may take to listen.
const portWait = 5 * time.Second

// waitListening waits until every TCP containerPort the pods declare
// accepts connections on the pod's loopback, as a kubelet's TCP readiness
// probe would, so that a pod gets traffic once it can serve it. A port
// still closed after portWait is logged, not an error: the process may
// listen on the pod's address only, or later.
func (c *Cluster) waitListening(pods []*podRT) {
	parallel(len(pods), func(i int) error {
		rt := pods[i]
		deadline := time.Now().Add(portWait)
		for _, ct := range rt.pod.Spec.Containers {
			for _, p := range ct.Ports {
				if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
					continue
				}
				addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.ContainerPort))
				for {
					ctx, cancel := context.WithTimeout(c.ctx, 500*time.Millisecond)
					conn, err := netns.DialTCP(ctx, rt.ns, addr, netns.SocketOptions{})
					cancel()
					if err == nil {
						conn.Close()
						break
					}
					if time.Now().After(deadline) || c.ctx.Err() != nil {
						c.log.Warn("port not listening; the pod gets traffic anyway", "pod", podKey(rt.pod), "port", p.ContainerPort, "err", err)
						return nil
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}
		return nil
	})
}

// removePod stops the pod's processes, takes it out of its ztunnel and
// deletes its namespace and files, once however often it is called.
func (c *Cluster) removePod(rt *podRT) error {
	rt.removed.Do(func() { rt.removeErr = c.removeNow(rt) })
	return rt.removeErr
}

func (c *Cluster) removeNow(rt *podRT) error {
	stopAll(rt.procs)
	var err error
	if rt.enrolled {
		ctx, cancel := context.WithTimeout(c.ctx, startTimeout)
		err = c.agents[rt.pod.Spec.NodeName].DelPod(ctx, podUID(rt.pod))
		cancel()
	}
	if rt.ns != nil {
		rt.ns.Close()
	}
	if err1 := netns.DeleteNamed(rt.state.NetNS); err1 != nil && err == nil {
		err = err1
	}
	os.Remove(rt.state.HostsFile)
	c.stateMu.Lock()
	if c.pods[podKey(rt.pod)] == rt {
		delete(c.pods, podKey(rt.pod))
	}
	c.stateMu.Unlock()
	return err
}

// retireGrace is how long a pod gone from the configuration keeps running
// after every proxy stopped sending it new requests: what they sent just
// before completes (Kubernetes gives terminating pods a grace period, and
// endpoint changes propagate meanwhile, for the same reason).
const retireGrace = time.Second

// retire marks pods terminating and removes them after retireGrace, in
// the background: the change that retired them does not wait.
func (c *Cluster) retire(rts []*podRT) {
	if len(rts) == 0 {
		return
	}
	c.stateMu.Lock()
	for _, rt := range rts {
		rt.terminating = true
	}
	c.stateMu.Unlock()
	c.retiring.Add(1)
	go func() {
		defer c.retiring.Done()
		select {
		case <-time.After(retireGrace):
		case <-c.ctx.Done():
			return // Close removes everything
		}
		if err := parallel(len(rts), func(i int) error { return c.removePod(rts[i]) }); err != nil {
			c.log.Warn("removing terminated pods", "err", err)
		}
		c.changed()
	}()
}

// hostsFile is /etc/hosts as seen in pod: localhost, the pod itself, and
// every Service (svc.ns.svc.cluster.local, svc.ns.svc, svc.ns, and svc for
// the pod's own namespace).
func hostsFile(services []*corev1.Service, pod *corev1.Pod) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&b, "%s\t%s\n", pod.Status.PodIP, pod.Name)
	svcs := append([]*corev1.Service(nil), services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Namespace+"/"+svcs[i].Name < svcs[j].Namespace+"/"+svcs[j].Name })
	for _, s := range svcs {
		ip := s.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone {
			continue
		}
		names := []string{fmt.Sprintf("%s.%s.svc.cluster.local", s.Name, s.Namespace), s.Name + "." + s.Namespace + ".svc", s.Name + "." + s.Namespace}
		if s.Namespace == pod.Namespace {
			names = append(names, s.Name)
		}
		fmt.Fprintf(&b, "%s\t%s\n", ip, strings.Join(names, " "))
	}
	return b.String()
}
