//go:build linux

package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

// serveControl listens on the control socket (see control.go).
func (c *Cluster) serveControl() error {
	sock := ControlSocket(c.name)
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		l.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /"+OpApply, c.handleChange(func(p *Prepared, r ControlRequest) (*Prepared, []string, error) {
		return p.withApplied(r.Files)
	}))
	mux.HandleFunc("POST /"+OpDelete, c.handleChange(func(p *Prepared, r ControlRequest) (*Prepared, []string, error) {
		return p.withDeleted(r.Refs)
	}))
	mux.HandleFunc("POST /"+OpLabel, c.handleChange(func(p *Prepared, r ControlRequest) (*Prepared, []string, error) {
		if r.Label == nil {
			return nil, nil, errors.New("no label change")
		}
		return p.withLabels(*r.Label)
	}))
	c.control = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go c.control.Serve(l)
	return nil
}

// maxChange bounds a change's body (manifests).
const maxChange = 64 << 20

func (c *Cluster) handleChange(change func(*Prepared, ControlRequest) (*Prepared, []string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var resp controlResponse
		status := http.StatusOK
		var req ControlRequest
		err := json.NewDecoder(io.LimitReader(r.Body, maxChange)).Decode(&req)
		if err == nil {
			c.reconf.Lock()
			var next *Prepared
			next, resp.Lines, err = change(c.current(), req)
			if err == nil {
				start := time.Now()
				err = c.reconfigure(next)
				c.log.Info("configuration changed", "op", r.URL.Path, "changes", resp.Lines, "took", time.Since(start), "err", err)
			}
			c.reconf.Unlock()
		}
		if err != nil {
			resp.Error = err.Error()
			status = http.StatusUnprocessableEntity
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(resp)
	}
}

func (c *Cluster) current() *Prepared {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.prep
}

// reconfigure moves the running cluster to next, touching only what
// differs: pods whose spec changed or that are new start (new namespace,
// enrolment, processes), pods gone or changed stop, pods whose enrolment
// changed are enrolled or un-enrolled in place, every pod's hosts file is
// rewritten when Services changed, and the control plane gets the new
// configuration. Processes of the other pods keep running.
func (c *Cluster) reconfigure(next *Prepared) error {
	if c.opts.WaypointBin == "" && next.Plan.NeedsWaypoint() {
		return errors.New("a waypoint Gateway needs the waypoint binary, and there is none next to ambit nor in $PATH: build it with 'make build'")
	}
	prev := c.current()
	c.stateMu.Lock()
	running := make(map[string]*podRT, len(c.pods))
	terminating := map[string]*podRT{} // by name and by address
	for k, rt := range c.pods {
		if rt.terminating {
			terminating[k] = rt
			terminating[rt.pod.Status.PodIP] = rt
			continue
		}
		running[k] = rt
	}
	c.stateMu.Unlock()

	type keptPod struct {
		rt  *podRT
		pod *corev1.Pod
	}
	var kept []keptPod
	// replaced pods keep their name (a bare Pod whose spec changed): they
	// go before their successor starts. Retired pods (gone from the
	// configuration, or Deployment pods of an older template) serve until
	// their successors are ready, as in a rolling update.
	var added, replaced, retired []*podRT
	inNext := map[string]bool{}
	for _, pod := range next.Plan.Pods {
		k := podKey(pod)
		inNext[k] = true
		mk := model.Key{Namespace: pod.Namespace, Name: pod.Name}
		rt := running[k]
		if rt != nil && prev.Plan.specs[mk] == next.Plan.specs[mk] && rt.pod.Status.PodIP == pod.Status.PodIP {
			kept = append(kept, keptPod{rt, pod})
			continue
		}
		if rt != nil {
			replaced = append(replaced, rt)
		}
		added = append(added, c.newPodRT(pod))
	}
	for k, rt := range running {
		if !inNext[k] {
			retired = append(retired, rt)
		}
	}
	var enrol, unenrol []*podRT
	for _, kp := range kept {
		switch want := inAmbient(next.Snapshot, kp.pod); {
		case want && !kp.rt.enrolled:
			enrol = append(enrol, kp.rt)
		case !want && kp.rt.enrolled:
			unenrol = append(unenrol, kp.rt)
		}
	}
	var errs []error
	// Pods joining the mesh listen through their ztunnel before anyone is
	// told to send them HBONE.
	errs = append(errs, parallel(len(enrol), func(i int) error { return c.enrol(enrol[i]) }))

	// The control plane learns of new pods (not ready: no traffic to them
	// yet, but their identities may be issued); retired pods still serve.
	pending := map[string]bool{}
	for _, rt := range added {
		pending[podKey(rt.pod)] = true
	}
	var serving []*corev1.Pod
	for _, rt := range retired {
		serving = append(serving, rt.pod)
	}
	c.source.Set(next.Plan.apply(next.Snapshot, pending, serving))
	errs = append(errs, c.syncServiceProxy(next.Plan, serving))
	// Now that nobody is sent to them through a ztunnel, pods leave the mesh.
	errs = append(errs, parallel(len(unenrol), func(i int) error { return c.unenrol(unenrol[i]) }))
	// A pod still terminating goes now if a new one takes its name or address.
	for _, rt := range added {
		for _, k := range []string{podKey(rt.pod), rt.pod.Status.PodIP} {
			if old := terminating[k]; old != nil {
				replaced = append(replaced, old)
			}
		}
	}
	errs = append(errs, parallel(len(replaced), func(i int) error { return c.removePod(replaced[i]) }))

	c.stateMu.Lock()
	for _, kp := range kept {
		kp.rt.pod = kp.pod
	}
	for _, rt := range added {
		c.pods[podKey(rt.pod)] = rt
	}
	c.prep = next
	c.stateMu.Unlock()

	errs = append(errs, parallel(len(added), func(i int) error {
		rt := added[i]
		if err := c.createPodNetwork(rt); err != nil {
			return err
		}
		if inAmbient(next.Snapshot, rt.pod) {
			if err := c.enrol(rt); err != nil {
				return err
			}
		}
		return c.startProcs(rt, next.Plan.Services)
	}))
	if !sameServices(prev.Plan.Services, next.Plan.Services) {
		for _, kp := range kept {
			// Written in place: the pod's /etc/hosts is a bind mount of this file.
			if err := os.WriteFile(kp.rt.state.HostsFile, []byte(hostsFile(next.Plan.Services, kp.pod)), 0o644); err != nil {
				errs = append(errs, err)
			}
		}
	}
	c.waitListening(added)
	errs = append(errs, c.waitWaypointPods(added))

	// The new pods are ready: traffic moves to them, then retired pods go.
	if len(added) > 0 || len(retired) > 0 {
		c.source.Set(next.Plan.Apply(next.Snapshot))
		errs = append(errs, c.syncServiceProxy(next.Plan, nil))
		if len(retired) > 0 {
			c.waitProxiesApplied(time.Second)
		}
	}
	c.retire(retired)
	errs = append(errs, c.saveState())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("the configuration is applied, but: %w", err)
	}
	return nil
}

// waitProxiesApplied waits (at most timeout) until every connected proxy
// has applied the control plane's current configuration, so that no proxy
// still sends to a pod about to stop.
func (c *Cluster) waitProxiesApplied(timeout time.Duration) {
	v := c.cp.Push().Version()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		behind := false
		for _, p := range c.cp.Push().Status() {
			behind = behind || p.AckedVersion < v
		}
		if !behind {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.log.Warn("proxies did not apply the configuration in time; stopping retired pods anyway", "version", v)
}

// sameServices reports whether a and b hold the same Service names and VIPs.
func sameServices(a, b []*corev1.Service) bool {
	key := func(s *corev1.Service) string { return s.Namespace + "/" + s.Name + "=" + s.Spec.ClusterIP }
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i, s := range a {
		ka[i] = key(s)
	}
	for i, s := range b {
		kb[i] = key(s)
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}
