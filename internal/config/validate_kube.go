package config

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func validateNamespace(*corev1.Namespace, *errs) {}

// validateEndpointSlice checks what the mesh reads: the address type and
// that IP addresses are IPs.
func validateEndpointSlice(es *discoveryv1.EndpointSlice, e *errs) {
	checkEnum(newPath("addressType"), string(es.AddressType), []string{"IPv4", "IPv6", "FQDN"}, e)
	if es.AddressType == discoveryv1.AddressTypeFQDN {
		return
	}
	for i, ep := range es.Endpoints {
		for j, a := range ep.Addresses {
			checkIP(newPath("endpoints").at(i).child("addresses").at(j), a, e)
		}
	}
}

func validateServiceAccount(*corev1.ServiceAccount, *errs) {}

func validateNode(n *corev1.Node, e *errs) {
	for i, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			checkIP(newPath("status", "addresses").at(i).child("address"), a.Address, e)
		}
	}
}

func validateService(s *corev1.Service, e *errs) {
	spec := newPath("spec")
	st := s.Spec.Type
	if st != "" {
		checkEnum(spec.child("type"), string(st), []string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}, e)
	}
	headless := s.Spec.ClusterIP == corev1.ClusterIPNone
	switch {
	case st == corev1.ServiceTypeExternalName:
		if s.Spec.ExternalName == "" {
			e.add(spec.child("externalName"), "required for type ExternalName")
		} else if len(s.Spec.ExternalName) > 253 || !dns1123SubdomainRE.MatchString(strings.TrimSuffix(s.Spec.ExternalName, ".")) {
			e.add(spec.child("externalName"), fmt.Sprintf("invalid DNS name %q", s.Spec.ExternalName))
		}
	case len(s.Spec.Ports) == 0 && !headless:
		e.add(spec.child("ports"), "required: a Service needs at least one port (only a headless Service, clusterIP: None, may have none)")
	}
	if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		checkIP(spec.child("clusterIP"), ip, e)
	}
	for i, ip := range s.Spec.ClusterIPs {
		p := spec.child("clusterIPs").at(i)
		if ip == corev1.ClusterIPNone {
			if i > 0 || len(s.Spec.ClusterIPs) > 1 {
				e.add(p, `"None" must be the only entry`)
			}
			continue
		}
		checkIP(p, ip, e)
	}
	if len(s.Spec.ClusterIPs) > 0 && s.Spec.ClusterIP != "" && s.Spec.ClusterIPs[0] != s.Spec.ClusterIP {
		e.add(spec.child("clusterIPs").at(0), fmt.Sprintf("must match spec.clusterIP %q", s.Spec.ClusterIP))
	}
	names := map[string]int{}
	type portKey struct {
		port  int32
		proto corev1.Protocol
	}
	seen := map[portKey]int{}
	for i, port := range s.Spec.Ports {
		p := spec.child("ports").at(i)
		if port.Name == "" {
			if len(s.Spec.Ports) > 1 {
				e.add(p.child("name"), "required when a Service has more than one port")
			}
		} else if msg := checkName(dns1123Label, port.Name); msg != "" {
			e.add(p.child("name"), strings.Replace(msg, "invalid name", "invalid port name", 1))
		} else if j, dup := names[port.Name]; dup {
			e.add(p.child("name"), fmt.Sprintf("duplicate port name %q (also ports[%d])", port.Name, j))
		} else {
			names[port.Name] = i
		}
		checkPort(p.child("port"), port.Port, e)
		proto := port.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		checkEnum(p.child("protocol"), string(proto), []string{"TCP", "UDP", "SCTP"}, e)
		if j, dup := seen[portKey{port.Port, proto}]; dup && port.Port != 0 {
			e.add(p, fmt.Sprintf("duplicate port %d/%s (also ports[%d])", port.Port, proto, j))
		} else {
			seen[portKey{port.Port, proto}] = i
		}
		checkTargetPort(p.child("targetPort"), port.TargetPort, e)
		if port.NodePort != 0 {
			if st != corev1.ServiceTypeNodePort && st != corev1.ServiceTypeLoadBalancer {
				e.add(p.child("nodePort"), "may only be set for type NodePort or LoadBalancer")
			} else {
				checkPort(p.child("nodePort"), port.NodePort, e)
			}
		}
		if port.AppProtocol != nil {
			if msg := checkQualifiedName(*port.AppProtocol); msg != "" {
				e.add(p.child("appProtocol"), "invalid appProtocol "+msg)
			}
		}
	}
	validateLabels(s.Spec.Selector, spec.child("selector"), e)
	if td := s.Spec.TrafficDistribution; td != nil {
		checkEnum(spec.child("trafficDistribution"), *td, []string{"PreferClose", "PreferSameZone", "PreferSameNode"}, e)
	}
	if sa := s.Spec.SessionAffinity; sa != "" {
		checkEnum(spec.child("sessionAffinity"), string(sa), []string{"None", "ClientIP"}, e)
	}
	for i, f := range s.Spec.IPFamilies {
		checkEnum(spec.child("ipFamilies").at(i), string(f), []string{"IPv4", "IPv6"}, e)
	}
	if pol := s.Spec.IPFamilyPolicy; pol != nil {
		checkEnum(spec.child("ipFamilyPolicy"), string(*pol), []string{"SingleStack", "PreferDualStack", "RequireDualStack"}, e)
	}
	if pol := s.Spec.ExternalTrafficPolicy; pol != "" {
		checkEnum(spec.child("externalTrafficPolicy"), string(pol), []string{"Cluster", "Local"}, e)
	}
	if pol := s.Spec.InternalTrafficPolicy; pol != nil {
		checkEnum(spec.child("internalTrafficPolicy"), string(*pol), []string{"Cluster", "Local"}, e)
	}
}

func checkTargetPort(p *fieldPath, tp intstr.IntOrString, e *errs) {
	switch {
	case tp.Type == intstr.String && tp.StrVal != "":
		checkPortName(p, tp.StrVal, e)
	case tp.Type == intstr.Int && tp.IntVal != 0:
		checkPort(p, tp.IntVal, e)
	}
}

func validatePod(pod *corev1.Pod, e *errs) {
	validatePodSpec(&pod.Spec, newPath("spec"), e)
	if ip := pod.Status.PodIP; ip != "" {
		checkIP(newPath("status", "podIP"), ip, e)
	}
	for i, ip := range pod.Status.PodIPs {
		checkIP(newPath("status", "podIPs").at(i).child("ip"), ip.IP, e)
	}
}

func validatePodSpec(s *corev1.PodSpec, spec *fieldPath, e *errs) {
	if len(s.Containers) == 0 {
		e.add(spec.child("containers"), "required: a pod needs at least one container")
	}
	names := map[string]string{}
	portNames := map[string]string{}
	checkContainers := func(field string, cs []corev1.Container) {
		for i := range cs {
			c := &cs[i]
			p := spec.child(field).at(i)
			if c.Name == "" {
				e.add(p.child("name"), "required")
			} else if msg := checkName(dns1123Label, c.Name); msg != "" {
				e.add(p.child("name"), strings.Replace(msg, "invalid name", "invalid container name", 1))
			} else if other, dup := names[c.Name]; dup {
				e.add(p.child("name"), fmt.Sprintf("duplicate container name %q (also %s)", c.Name, other))
			} else {
				names[c.Name] = fmt.Sprintf("%s[%d]", field, i)
			}
			// An image is not required: ambit's local mode runs a container's
			// command as a process and needs none.
			for j, port := range c.Ports {
				pp := p.child("ports").at(j)
				checkPort(pp.child("containerPort"), port.ContainerPort, e)
				if port.HostPort != 0 {
					checkPort(pp.child("hostPort"), port.HostPort, e)
				}
				if port.Protocol != "" {
					checkEnum(pp.child("protocol"), string(port.Protocol), []string{"TCP", "UDP", "SCTP"}, e)
				}
				if port.Name != "" {
					checkPortName(pp.child("name"), port.Name, e)
					if other, dup := portNames[port.Name]; dup {
						e.add(pp.child("name"), fmt.Sprintf("duplicate port name %q (also %s)", port.Name, other))
					} else {
						portNames[port.Name] = pp.String()
					}
				}
			}
			for j, env := range c.Env {
				if env.Name == "" {
					e.add(p.child("env").at(j).child("name"), "required")
				}
			}
			for res, req := range c.Resources.Requests {
				if lim, ok := c.Resources.Limits[res]; ok && req.Cmp(lim) > 0 {
					e.add(p.child("resources", "requests").key(string(res)),
						fmt.Sprintf("request %s is more than the limit %s", req.String(), lim.String()))
				}
			}
		}
	}
	checkContainers("initContainers", s.InitContainers)
	checkContainers("containers", s.Containers)
	if s.RestartPolicy != "" {
		checkEnum(spec.child("restartPolicy"), string(s.RestartPolicy), []string{"Always", "OnFailure", "Never"}, e)
	}
	if sa := s.ServiceAccountName; sa != "" {
		if msg := checkName(dns1123Subdomain, sa); msg != "" {
			e.add(spec.child("serviceAccountName"), strings.Replace(msg, "invalid name", "invalid service account name", 1))
		}
	}
	if n := s.NodeName; n != "" {
		if msg := checkName(dns1123Subdomain, n); msg != "" {
			e.add(spec.child("nodeName"), strings.Replace(msg, "invalid name", "invalid node name", 1))
		}
	}
}

func validateDeployment(d *appsv1.Deployment, e *errs) {
	spec := newPath("spec")
	if r := d.Spec.Replicas; r != nil {
		checkMin(spec.child("replicas"), *r, 0, e)
	}
	tmplLabels := spec.child("template", "metadata", "labels")
	validateLabels(d.Spec.Template.Labels, tmplLabels, e)
	sel := d.Spec.Selector
	switch {
	case sel == nil:
		e.add(spec.child("selector"), "required")
	case len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0:
		e.add(spec.child("selector"), "empty selector: it would select every pod in the namespace; set matchLabels")
	default:
		var se errs
		validateLabelSelector(sel, spec.child("selector"), &se)
		*e = append(*e, se...)
		if len(se) == 0 {
			s, err := metav1.LabelSelectorAsSelector(sel)
			if err != nil {
				e.add(spec.child("selector"), err.Error())
			} else if !s.Matches(labels.Set(d.Spec.Template.Labels)) {
				e.add(tmplLabels, fmt.Sprintf("do not match spec.selector (%s): the Deployment would not own its own pods", selectorString(sel)))
			}
		}
	}
	podSpec := spec.child("template", "spec")
	validatePodSpec(&d.Spec.Template.Spec, podSpec, e)
	if rp := d.Spec.Template.Spec.RestartPolicy; rp != "" && rp != corev1.RestartPolicyAlways {
		e.add(podSpec.child("restartPolicy"), fmt.Sprintf("must be Always for a Deployment, got %s", rp))
	}
	strat := d.Spec.Strategy
	if strat.Type != "" {
		checkEnum(spec.child("strategy", "type"), string(strat.Type), []string{"RollingUpdate", "Recreate"}, e)
	}
	if ru := strat.RollingUpdate; ru != nil {
		if strat.Type == appsv1.RecreateDeploymentStrategyType {
			e.add(spec.child("strategy", "rollingUpdate"), "may not be set when strategy type is Recreate")
		}
		rp := spec.child("strategy", "rollingUpdate")
		unavail := checkIntOrPercent(rp.child("maxUnavailable"), ru.MaxUnavailable, e)
		surge := checkIntOrPercent(rp.child("maxSurge"), ru.MaxSurge, e)
		if unavail == 0 && surge == 0 && ru.MaxUnavailable != nil && ru.MaxSurge != nil {
			e.add(rp.child("maxUnavailable"), "may not be 0 when maxSurge is 0: the rollout could never progress")
		}
	}
	checkMin(spec.child("minReadySeconds"), d.Spec.MinReadySeconds, 0, e)
	if r := d.Spec.RevisionHistoryLimit; r != nil {
		checkMin(spec.child("revisionHistoryLimit"), *r, 0, e)
	}
	if p := d.Spec.ProgressDeadlineSeconds; p != nil && *p <= d.Spec.MinReadySeconds {
		e.add(spec.child("progressDeadlineSeconds"), fmt.Sprintf("must be greater than minReadySeconds (%d), got %d", d.Spec.MinReadySeconds, *p))
	}
}

// checkIntOrPercent validates maxSurge-style values and returns the value
// (-1 if unset or invalid) so callers can compare them.
func checkIntOrPercent(p *fieldPath, v *intstr.IntOrString, e *errs) int {
	if v == nil {
		return -1
	}
	if v.Type == intstr.Int {
		checkMin(p, v.IntVal, 0, e)
		return int(v.IntVal)
	}
	var n int
	if _, err := fmt.Sscanf(v.StrVal, "%d%%", &n); err != nil || fmt.Sprintf("%d%%", n) != v.StrVal {
		e.add(p, fmt.Sprintf("invalid value %q: must be an integer or a percentage like \"25%%\"", v.StrVal))
		return -1
	}
	if n < 0 || n > 100 {
		e.add(p, fmt.Sprintf("must be between 0%% and 100%%, got %s", v.StrVal))
	}
	return n
}

func selectorString(s *metav1.LabelSelector) string {
	parts := make([]string, 0, len(s.MatchLabels)+len(s.MatchExpressions))
	for _, k := range sortedMapKeys(s.MatchLabels) {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	var exprs []string
	for _, r := range s.MatchExpressions {
		exprs = append(exprs, fmt.Sprintf("%s %s (%s)", r.Key, r.Operator, strings.Join(r.Values, ",")))
	}
	sort.Strings(exprs)
	return strings.Join(append(parts, exprs...), ",")
}
