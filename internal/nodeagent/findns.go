//go:build linux

package nodeagent

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// findNamespaces finds the network namespaces of running pods, as Istio's
// node agent does for pods that started before it: every process's
// namespace (under procRoot) is opened once, and the one holding a pod's
// IP is that pod's. The host's namespace is never a pod's. The caller owns
// the returned handles.
func findNamespaces(procRoot string, pods []*corev1.Pod) (map[string]*netns.NS, error) {
	byIP := map[netip.Addr]string{}
	for _, p := range pods {
		for _, s := range p.Status.PodIPs {
			if ip, err := netip.ParseAddr(s.IP); err == nil {
				byIP[ip] = string(p.UID)
			}
		}
		if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			byIP[ip] = string(p.UID)
		}
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	out := map[string]*netns.NS{}
	seen := map[netns.ID]bool{}
	for _, e := range entries {
		if len(out) == len(pods) {
			break
		}
		if strings.Trim(e.Name(), "0123456789") != "" {
			continue // not a pid
		}
		ns, err := netns.Open(filepath.Join(procRoot, e.Name(), "ns", "net"))
		if err != nil {
			continue // the process exited, or is not ours to see
		}
		id, err := ns.ID()
		if err != nil || seen[id] || netns.IsHost(ns) {
			ns.Close()
			continue
		}
		seen[id] = true
		uid := podIn(ns, byIP)
		if uid == "" || out[uid] != nil {
			ns.Close()
			continue
		}
		out[uid] = ns
	}
	return out, nil
}

// podIn returns the uid of the pod whose IP the namespace holds, or "".
func podIn(ns *netns.NS, byIP map[netip.Addr]string) string {
	h, err := netns.Handle(ns)
	if err != nil {
		return ""
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, 0)
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			if uid := byIP[ip.Unmap()]; uid != "" {
				return uid
			}
		}
	}
	return ""
}
