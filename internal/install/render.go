package install

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/internal/kube"
)

// Options are what an operator chooses; the Helm chart's values mirror them.
type Options struct {
	Namespace            string
	Image                string
	ControlPlaneReplicas int32
	TrustDomain          string
	// CNIBinDir and CNIConfDir are the nodes' CNI directories.
	CNIBinDir, CNIConfDir string
	// CRDs includes the Gateway API and Istio CRDs.
	CRDs bool
}

// DefaultOptions are `ambit install`'s defaults and the chart's values.yaml.
func DefaultOptions() Options {
	return Options{
		Namespace: "ambit-system", Image: "ghcr.io/ambit-mesh/ambit:latest", ControlPlaneReplicas: 1,
		TrustDomain: "cluster.local", CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d", CRDs: true,
	}
}

// Names of the installed objects.
const (
	ControlPlaneName = "ambit-controlplane"
	ZtunnelName      = "ztunnel"
	NodeAgentName    = "ambit-node-agent"
	RootCertConfig   = "ambit-root-cert"
	TokenAudience    = "ambit-controlplane"
	partOf           = "app.kubernetes.io/part-of"
)

// Render returns every object of an installation, in the order to apply
// them: CRDs, namespace, identities and RBAC, control plane, node DaemonSets.
func Render(o Options) ([]*unstructured.Unstructured, error) {
	if o.Namespace == "" || o.Image == "" || o.ControlPlaneReplicas < 1 || o.TrustDomain == "" || o.CNIBinDir == "" || o.CNIConfDir == "" {
		return nil, fmt.Errorf("install: incomplete options %+v", o)
	}
	var out []*unstructured.Unstructured
	if o.CRDs {
		crds, err := CRDs()
		if err != nil {
			return nil, err
		}
		out = append(out, crds...)
	}
	for _, obj := range objects(o) {
		u, err := kube.ToUnstructured(obj)
		if err != nil {
			return nil, err
		}
		// Typed objects marshal empty creationTimestamp and status; the
		// API server and Helm's output have neither.
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(u.Object, "status")
		out = append(out, u)
	}
	return out, nil
}

func labels(app string) map[string]string {
	return map[string]string{"app": app, partOf: "ambit"}
}

func meta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels(name)}
}

func tm(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func tokenVolume() corev1.Volume {
	expiry := int64(3600)
	return corev1.Volume{Name: "ambit-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: TokenAudience, ExpirationSeconds: &expiry, Path: "ambit-token"}}},
	}}}
}

func hostPath(name, path string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
}

func objects(o Options) []any {
	ns := o.Namespace
	cpAddr := ControlPlaneName + "." + ns + ".svc:15012"
	readOnly := []string{"get", "list", "watch"}
	trueVal, falseVal := true, false
	root := int64(0)
	everywhere := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	maxUnavailable := intstr.FromString("10%")

	cpRole := &rbacv1.ClusterRole{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: meta(ControlPlaneName, ""), Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces", "nodes", "pods", "services", "serviceaccounts"}, Verbs: readOnly},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: readOnly},
		{APIGroups: []string{"security.istio.io", "networking.istio.io", "extensions.istio.io"}, Resources: []string{"*"}, Verbs: readOnly},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gateways", "gatewayclasses", "httproutes", "grpcroutes", "referencegrants"}, Verbs: readOnly},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gateways/status", "gatewayclasses/status", "httproutes/status", "grpcroutes/status"}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses"}, Verbs: []string{"create"}},
		// Waypoints: the controller creates each waypoint's objects.
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts", "services", "configmaps"}, Verbs: []string{"create", "update", "patch", "delete"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	}}
	cpNSRole := &rbacv1.Role{TypeMeta: tm("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(ControlPlaneName, ns), Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create", "update", "patch"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
	}}
	agentRole := &rbacv1.ClusterRole{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: meta(NodeAgentName, ""), Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: readOnly},
	}}
	binding := func(kind, name, namespace string) any {
		subj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}
		ref := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: kind, Name: name}
		if kind == "Role" {
			return &rbacv1.RoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(name, namespace), Subjects: subj, RoleRef: ref}
		}
		return &rbacv1.ClusterRoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: meta(name, ""), Subjects: subj, RoleRef: ref}
	}

	replicas := o.ControlPlaneReplicas
	controlPlane := &appsv1.Deployment{TypeMeta: tm("apps/v1", "Deployment"), ObjectMeta: meta(ControlPlaneName, ns), Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": ControlPlaneName}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels(ControlPlaneName)},
			Spec: corev1.PodSpec{
				ServiceAccountName: ControlPlaneName,
				Containers: []corev1.Container{{
					Name: "controlplane", Image: o.Image, Command: []string{"/ambit"}, Resources: requests("100m", "256Mi"),
					Args: []string{"controlplane", "--source", "kube", "--namespace", ns, "--trust-domain", o.TrustDomain,
						"--ca-dir", "/var/lib/ambit/ca", "--node-service-accounts", ns + "/" + ZtunnelName, "--waypoint-image", o.Image},
					Env:   []corev1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace")},
					Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 15012}, {Name: "http-monitoring", ContainerPort: 15014}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(15014)}},
						PeriodSeconds: 2},
					VolumeMounts: []corev1.VolumeMount{{Name: "ca", MountPath: "/var/lib/ambit/ca"}},
					SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &trueVal, RunAsUser: ptr(int64(1337)), AllowPrivilegeEscalation: &falseVal,
						ReadOnlyRootFilesystem: &trueVal, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				}},
				// The root arrives from the CA Secret; the scratch copy lives in memory.
				Volumes: []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}},
			},
		},
	}}
	service := &corev1.Service{TypeMeta: tm("v1", "Service"), ObjectMeta: meta(ControlPlaneName, ns), Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": ControlPlaneName},
		Ports: []corev1.ServicePort{
			{Name: "grpc", Port: 15012, TargetPort: intstr.FromInt32(15012)},
			{Name: "http-monitoring", Port: 15014, TargetPort: intstr.FromInt32(15014)},
		},
	}}

	ztunnel := &appsv1.DaemonSet{TypeMeta: tm("apps/v1", "DaemonSet"), ObjectMeta: meta(ZtunnelName, ns), Spec: appsv1.DaemonSetSpec{
		Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": ZtunnelName}},
		UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &maxUnavailable}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels(ZtunnelName)},
			Spec: corev1.PodSpec{
				ServiceAccountName: ZtunnelName,
				PriorityClassName:  "system-node-critical",
				Tolerations:        everywhere,
				Containers: []corev1.Container{{
					Name: "ztunnel", Image: o.Image, Command: []string{"/ztunnel"}, Resources: requests("100m", "128Mi"),
					Args: []string{"--control-plane", cpAddr, "--trust-domain", o.TrustDomain,
						"--token-file", "/var/run/secrets/tokens/ambit-token", "--root-cert", "/var/run/ambit-root/root-cert.pem",
						"--agent-socket", "/var/run/ambit/ztunnel.sock"},
					Env:            []corev1.EnvVar{fieldEnv("NODE_NAME", "spec.nodeName")},
					Ports:          []corev1.ContainerPort{{Name: "metrics", ContainerPort: 15020}, {Name: "status", ContainerPort: 15021}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(15021)}}, PeriodSeconds: 2},
					// Listening inside pods' namespaces takes setns (SYS_ADMIN)
					// and transparent sockets (NET_ADMIN, NET_RAW).
					SecurityContext: &corev1.SecurityContext{RunAsUser: &root, Privileged: &falseVal, AllowPrivilegeEscalation: &falseVal, ReadOnlyRootFilesystem: &trueVal,
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}}},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "ambit-token", MountPath: "/var/run/secrets/tokens", ReadOnly: true},
						{Name: "root-cert", MountPath: "/var/run/ambit-root", ReadOnly: true},
						{Name: "ambit-run", MountPath: "/var/run/ambit"},
					},
				}},
				Volumes: []corev1.Volume{tokenVolume(),
					{Name: "root-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: RootCertConfig}}}},
					hostPath("ambit-run", "/var/run/ambit", corev1.HostPathDirectoryOrCreate)},
			},
		},
	}}

	hostToContainer := corev1.MountPropagationHostToContainer
	agent := &appsv1.DaemonSet{TypeMeta: tm("apps/v1", "DaemonSet"), ObjectMeta: meta(NodeAgentName, ns), Spec: appsv1.DaemonSetSpec{
		Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": NodeAgentName}},
		UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &maxUnavailable}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels(NodeAgentName)},
			Spec: corev1.PodSpec{
				ServiceAccountName: NodeAgentName,
				PriorityClassName:  "system-node-critical",
				Tolerations:        everywhere,
				// The pods' namespaces are found through their processes.
				HostPID:     true,
				HostNetwork: true,
				DNSPolicy:   corev1.DNSClusterFirstWithHostNet,
				Containers: []corev1.Container{{
					Name: "node-agent", Image: o.Image, Command: []string{"/ambit"}, Resources: requests("20m", "64Mi"),
					Args: []string{"nodeagent", "--cni-bin-dir", "/host/opt/cni/bin", "--cni-conf-dir", "/host/etc/cni/net.d",
						"--ztunnel-socket", "/var/run/ambit/ztunnel.sock", "--cni-socket", "/var/run/ambit/cni.sock"},
					Env: []corev1.EnvVar{fieldEnv("NODE_NAME", "spec.nodeName")},
					// Rules in pods' namespaces: iptables, setns.
					SecurityContext: &corev1.SecurityContext{RunAsUser: &root, Privileged: &trueVal},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "cni-bin", MountPath: "/host/opt/cni/bin"},
						{Name: "cni-conf", MountPath: "/host/etc/cni/net.d"},
						{Name: "ambit-run", MountPath: "/var/run/ambit"},
						{Name: "netns", MountPath: "/var/run/netns", MountPropagation: &hostToContainer},
					},
				}},
				Volumes: []corev1.Volume{
					hostPath("cni-bin", o.CNIBinDir, corev1.HostPathDirectory),
					hostPath("cni-conf", o.CNIConfDir, corev1.HostPathDirectory),
					hostPath("ambit-run", "/var/run/ambit", corev1.HostPathDirectoryOrCreate),
					hostPath("netns", "/var/run/netns", corev1.HostPathDirectoryOrCreate),
				},
			},
		},
	}}

	return []any{
		&corev1.Namespace{TypeMeta: tm("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{partOf: "ambit"}}},
		&corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(ControlPlaneName, ns)},
		&corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(ZtunnelName, ns)},
		&corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(NodeAgentName, ns)},
		cpRole, binding("ClusterRole", ControlPlaneName, ""),
		cpNSRole, binding("Role", ControlPlaneName, ns),
		agentRole, binding("ClusterRole", NodeAgentName, ""),
		service, controlPlane, ztunnel, agent,
	}
}

func ptr[T any](v T) *T { return &v }

// requests reserves what a component needs to be scheduled where it can
// run; no limits: a proxy throttled or killed under load fails the
// traffic of every pod it serves (the ztunnel sizes its memory use to a
// limit an operator sets, see --memory-limit).
func requests(cpu, memory string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}}
}
