//go:build linux

package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/ambit-mesh/ambit/internal/cni"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/redirect"
)

// Default sockets, in a host directory the ztunnel and the CNI plugin share.
const DefaultZtunnelSocket = "/var/run/ambit/ztunnel.sock"

// Agent is one node's agent. Set the fields and Run it.
type Agent struct {
	Clients  *kube.Clients
	NodeName string
	// ZtunnelSocket and CNISocket are where the ztunnel and the CNI plugin
	// connect (defaults DefaultZtunnelSocket, cni.DefaultSocket).
	ZtunnelSocket, CNISocket string
	// Redirect configures the in-pod rules.
	Redirect redirect.Config
	// ProcRoot is where running pods' namespaces are looked for (default /proc).
	ProcRoot string
	// AckTimeout bounds each enrolment, the ztunnel's acknowledgement included (default 10s).
	AckTimeout time.Duration
	Log        *slog.Logger

	ra         *redirect.Agent
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister

	mu       sync.Mutex // serialises enrolments and guards enrolled
	enrolled map[string]*enrolment
	wake     chan struct{}
	ready    chan struct{}
	initOnce sync.Once
}

type enrolment struct {
	key string // namespace/name
	ns  *netns.NS
}

// Ready is closed once the agent serves both sockets with a synced view.
func (a *Agent) Ready() <-chan struct{} {
	a.init()
	return a.ready
}

func (a *Agent) init() { a.initOnce.Do(func() { a.ready = make(chan struct{}) }) }

// Run serves until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.init()
	if a.Clients == nil || a.NodeName == "" {
		return errors.New("node agent: API clients and node name are required")
	}
	if a.Log == nil {
		a.Log = slog.Default()
	}
	if a.ZtunnelSocket == "" {
		a.ZtunnelSocket = DefaultZtunnelSocket
	}
	if a.CNISocket == "" {
		a.CNISocket = cni.DefaultSocket
	}
	if a.ProcRoot == "" {
		a.ProcRoot = "/proc"
	}
	if a.AckTimeout <= 0 {
		a.AckTimeout = 10 * time.Second
	}
	a.enrolled = map[string]*enrolment{}
	a.wake = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	podFactory := informers.NewSharedInformerFactoryWithOptions(a.Clients.Kube, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.NodeName).String()
		}))
	nsFactory := informers.NewSharedInformerFactory(a.Clients.Kube, 10*time.Minute)
	a.pods = podFactory.Core().V1().Pods().Lister()
	a.namespaces = nsFactory.Core().V1().Namespaces().Lister()
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.poke() },
		UpdateFunc: func(any, any) { a.poke() },
		DeleteFunc: func(any) { a.poke() },
	}
	if _, err := podFactory.Core().V1().Pods().Informer().AddEventHandler(poke); err != nil {
		return err
	}
	if _, err := nsFactory.Core().V1().Namespaces().Informer().AddEventHandler(poke); err != nil {
		return err
	}
	podFactory.Start(ctx.Done())
	nsFactory.Start(ctx.Done())
	defer podFactory.Shutdown()
	defer nsFactory.Shutdown()
	podFactory.WaitForCacheSync(ctx.Done())
	nsFactory.WaitForCacheSync(ctx.Done())
	if ctx.Err() != nil {
		return nil
	}

	a.ra = redirect.NewAgent(redirect.AgentConfig{AckTimeout: a.AckTimeout, Logf: func(f string, args ...any) {
		a.Log.Info(fmt.Sprintf(f, args...), "component", "ztunnel-link")
	}})
	errc := make(chan error, 2)
	ztLis, err := listenUnix(a.ZtunnelSocket, "unixpacket")
	if err != nil {
		return err
	}
	go func() { errc <- a.ra.Serve(ctx, ztLis.(*net.UnixListener)) }()
	cniLis, err := listenUnix(a.CNISocket, "unix")
	if err != nil {
		return err
	}
	go func() { errc <- cni.Serve(ctx, cniLis, a) }()
	close(a.ready)
	a.Log.Info("node agent serving", "node", a.NodeName, "ztunnel", a.ZtunnelSocket, "cni", a.CNISocket)

	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if err := a.reconcile(ctx); err != nil && ctx.Err() == nil {
			a.Log.Warn("enrolling running pods; retrying", "error", err)
			retry.Reset(2 * time.Second)
		}
		select {
		case <-ctx.Done():
			a.release()
			return nil
		case err := <-errc:
			if err != nil && ctx.Err() == nil {
				return err
			}
		case <-a.wake:
		case <-retry.C:
		}
	}
}

func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// listenUnix listens on a socket only root may use (the runtime running
// the plugin; the ztunnel), replacing a stale one.
func listenUnix(path, network string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen(network, path)
	if err != nil {
		return nil, fmt.Errorf("node agent: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// release closes the agent's namespace handles; the pods stay enrolled
// (rules in place) for the next agent to take over through the ztunnel's
// own state and its reconcile.
func (a *Agent) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, e := range a.enrolled {
		e.ns.Close()
		delete(a.enrolled, uid)
	}
}

// lookup finds a pod and its namespace, from the cache or, for a pod the
// watch has not delivered yet (a CNI ADD races the informer), the API.
func (a *Agent) lookup(ctx context.Context, namespace, name string) (*corev1.Pod, *corev1.Namespace, error) {
	pod, err := a.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		pod, err = a.Clients.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	ns, err := a.namespaces.Get(namespace)
	if apierrors.IsNotFound(err) {
		ns, err = a.Clients.Kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	return pod, ns, nil
}

// HandleCNI implements cni.Handler.
func (a *Agent) HandleCNI(ctx context.Context, req cni.Request) (cni.Response, error) {
	switch req.Command {
	case cni.CmdAdd:
		pod, ns, err := a.lookup(ctx, req.PodNamespace, req.PodName)
		if err != nil {
			return cni.Response{}, err
		}
		if req.PodUID != "" && string(pod.UID) != req.PodUID {
			return cni.Response{}, fmt.Errorf("pod %s/%s has uid %s, the runtime asked for %s (recreated?)", req.PodNamespace, req.PodName, pod.UID, req.PodUID)
		}
		if !Ambient(pod, ns) {
			return cni.Response{Message: "not in the ambient mesh"}, nil
		}
		nsh, err := netns.Open(req.Netns)
		if err != nil {
			return cni.Response{}, fmt.Errorf("pod %s/%s: network namespace %s: %w", req.PodNamespace, req.PodName, req.Netns, err)
		}
		var ips []netip.Addr
		for _, s := range req.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, ip)
			}
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.enrol(ctx, pod, nsh, ips); err != nil {
			return cni.Response{}, err
		}
		return cni.Response{Enrolled: true}, nil
	case cni.CmdDel:
		a.mu.Lock()
		defer a.mu.Unlock()
		uid := req.PodUID
		if uid == "" {
			uid = a.uidOf(req.PodNamespace + "/" + req.PodName)
		}
		if uid == "" {
			return cni.Response{}, nil
		}
		return cni.Response{}, a.unenrol(ctx, uid)
	case cni.CmdCheck:
		pod, ns, err := a.lookup(ctx, req.PodNamespace, req.PodName)
		if err != nil {
			return cni.Response{}, err
		}
		a.mu.Lock()
		_, enrolled := a.enrolled[string(pod.UID)]
		a.mu.Unlock()
		if Ambient(pod, ns) && !enrolled {
			return cni.Response{}, fmt.Errorf("pod %s/%s is in the ambient mesh but not enrolled on this node", req.PodNamespace, req.PodName)
		}
		return cni.Response{Enrolled: enrolled}, nil
	}
	return cni.Response{}, fmt.Errorf("unknown command %q", req.Command)
}

func (a *Agent) uidOf(key string) string {
	for uid, e := range a.enrolled {
		if e.key == key {
			return uid
		}
	}
	return ""
}

// enrol installs the rules in the pod's namespace and hands it to the
// ztunnel, returning once the ztunnel acknowledged. a.mu is held. On
// failure nothing stays behind. enrol owns nsh.
func (a *Agent) enrol(ctx context.Context, pod *corev1.Pod, nsh *netns.NS, ips []netip.Addr) error {
	uid := string(pod.UID)
	key := pod.Namespace + "/" + pod.Name
	if len(ips) == 0 {
		for _, p := range pod.Status.PodIPs {
			if ip, err := netip.ParseAddr(p.IP); err == nil {
				ips = append(ips, ip)
			}
		}
	}
	if old := a.enrolled[uid]; old != nil {
		old.ns.Close()
		delete(a.enrolled, uid)
	}
	if err := redirect.Install(nsh, a.Redirect); err != nil {
		nsh.Close()
		return fmt.Errorf("pod %s: redirection rules: %w", key, err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.AckTimeout)
	defer cancel()
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	err := a.ra.AddPod(ctx, redirect.Pod{UID: uid, Name: pod.Name, Namespace: pod.Namespace, ServiceAccount: sa, IPs: ips}, nsh.File())
	if err != nil {
		redirect.Remove(nsh, a.Redirect)
		nsh.Close()
		return fmt.Errorf("pod %s: ztunnel: %w", key, err)
	}
	a.enrolled[uid] = &enrolment{key: key, ns: nsh}
	a.Log.Info("pod enrolled", "pod", key, "uid", uid)
	return nil
}

// unenrol takes a pod out of the mesh: the ztunnel closes its listeners,
// then the rules go (if the namespace still exists). a.mu is held.
func (a *Agent) unenrol(ctx context.Context, uid string) error {
	e := a.enrolled[uid]
	ctx, cancel := context.WithTimeout(ctx, a.AckTimeout)
	defer cancel()
	err := a.ra.DelPod(ctx, uid)
	if e != nil {
		// The namespace may be on its way out (CNI DEL): rules go with it.
		if rerr := redirect.Remove(e.ns, a.Redirect); rerr != nil {
			a.Log.Warn("removing redirection rules", "pod", e.key, "error", rerr)
		}
		e.ns.Close()
		delete(a.enrolled, uid)
		a.Log.Info("pod released", "pod", e.key, "uid", uid)
	}
	return err
}

// reconcile enrols running pods that belong in the mesh and releases
// those that no longer do.
func (a *Agent) reconcile(ctx context.Context) error {
	pods, err := a.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// keep: pods that belong in the mesh (a pod the CNI plugin just
	// enrolled is still Pending); missing: running ones not enrolled yet.
	keep := map[string]bool{}
	var missing []*corev1.Pod
	for _, p := range pods {
		ns, _ := a.namespaces.Get(p.Namespace)
		if !Ambient(p, ns) || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		keep[string(p.UID)] = true
		if a.enrolled[string(p.UID)] == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			missing = append(missing, p)
		}
	}
	var errs []error
	for uid := range a.enrolled {
		if !keep[uid] {
			errs = append(errs, a.unenrol(ctx, uid))
		}
	}
	if len(missing) == 0 {
		return errors.Join(errs...)
	}
	found, err := findNamespaces(a.ProcRoot, missing)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, p := range missing {
		nsh := found[string(p.UID)]
		if nsh == nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: no network namespace on this node holds %s", p.Namespace, p.Name, p.Status.PodIP))
			continue
		}
		errs = append(errs, a.enrol(ctx, p, nsh, nil))
	}
	return errors.Join(errs...)
}
