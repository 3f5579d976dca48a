package local

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pods outside the mesh reach Service VIPs as on Kubernetes through
// kube-proxy: each node's namespace DNATs a VIP:port it receives (the pods'
// default route) to one of the Service's endpoints at random, and
// masquerades what it DNATed so replies come back through it. Pods in the
// mesh never get there: their ztunnel resolves VIPs itself.

// serviceRules is the nat table, in iptables-restore form, that every node
// namespace holds for services and their endpoints among pods.
func serviceRules(services []*corev1.Service, pods []*corev1.Pod) string {
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:AMBIT-SERVICES - [0:0]\n")
	var rules []string
	chains := 0
	svcs := append([]*corev1.Service(nil), services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Namespace+"/"+svcs[i].Name < svcs[j].Namespace+"/"+svcs[j].Name })
	for _, s := range svcs {
		vip := s.Spec.ClusterIP
		if vip == "" || vip == corev1.ClusterIPNone || len(s.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var members []*corev1.Pod
		for _, p := range pods {
			if p.Namespace == s.Namespace && p.Status.PodIP != "" && sel.Matches(labels.Set(p.Labels)) {
				members = append(members, p)
			}
		}
		for _, port := range s.Spec.Ports {
			var dests []string
			for _, p := range members {
				if tp := targetPort(port, p); tp > 0 {
					dests = append(dests, p.Status.PodIP+":"+strconv.Itoa(tp))
				}
			}
			if len(dests) == 0 {
				continue
			}
			chains++
			chain := fmt.Sprintf("AMBIT-SVC-%d", chains)
			proto := strings.ToLower(orDefault(string(port.Protocol), "TCP"))
			fmt.Fprintf(&b, ":%s - [0:0]\n", chain)
			rules = append(rules, fmt.Sprintf("-A AMBIT-SERVICES -d %s/32 -p %s -m %s --dport %d -j %s", vip, proto, proto, port.Port, chain))
			for i, d := range dests {
				if left := len(dests) - i; left > 1 {
					rules = append(rules, fmt.Sprintf("-A %s -p %s -m statistic --mode random --probability %.5f -j DNAT --to-destination %s", chain, proto, 1/float64(left), d))
				} else {
					rules = append(rules, fmt.Sprintf("-A %s -p %s -j DNAT --to-destination %s", chain, proto, d))
				}
			}
		}
	}
	b.WriteString("-A PREROUTING -j AMBIT-SERVICES\n-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\n")
	for _, r := range rules {
		b.WriteString(r + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// targetPort is the pod port a Service port sends to: a number, a container
// port name of pod (0 if pod has none of that name), or the port itself.
func targetPort(port corev1.ServicePort, pod *corev1.Pod) int {
	switch {
	case port.TargetPort.Type == intstr.String && port.TargetPort.StrVal != "":
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == port.TargetPort.StrVal {
					return int(cp.ContainerPort)
				}
			}
		}
		return 0
	case port.TargetPort.IntValue() > 0:
		return port.TargetPort.IntValue()
	}
	return int(port.Port)
}
