package local

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
)

// Waypoints in the local cluster are what the waypoint controller creates
// on Kubernetes (internal/waypointctl): for each Gateway of class
// istio-waypoint a Deployment named like the Gateway, whose pods run the
// waypoint binary under the Gateway's service account and are not enrolled
// in ambient (they terminate HBONE themselves), and a Service named like the
// Gateway selecting them on port 15008 — the Service translation resolves
// istio.io/use-waypoint to.
const (
	gatewayNameLabel = "gateway.networking.k8s.io/gateway-name"
	// replicasAnnotation on a waypoint Gateway (or in its
	// spec.infrastructure.annotations) sets how many instances run: a
	// number, or "zones" for one per zone of the cluster.
	replicasAnnotation = "ambit.dev/replicas"
	waypointHBONEPort  = 15008
	// waypointOrigin marks synthesized objects in the snapshot.
	waypointOrigin = "local cluster (waypoint of Gateway %s)"
)

// isWaypointPod reports whether pod is an instance of a waypoint.
func isWaypointPod(pod *corev1.Pod) bool {
	return pod.Labels[gatewayNameLabel] != "" && pod.Labels[labelSynthesized] == "waypoint"
}

// labelSynthesized marks pods of objects the local cluster made itself.
const labelSynthesized = "ambit.dev/synthesized"

// addWaypoints puts the Deployment and Service of every waypoint Gateway of
// snap into snap (a Service the manifests define under the Gateway's name
// is kept). dir is the cluster's state directory, where the waypoints find
// their node's credential and the root certificate; cp is the control
// plane's gRPC address.
func addWaypoints(snap *model.Snapshot, dir string, cp netip.AddrPort, zones int) error {
	for _, k := range model.SortedKeys(snap.Gateways) {
		gw := snap.Gateways[k]
		if string(gw.Spec.GatewayClassName) != translate.WaypointClass {
			continue
		}
		origin := model.Origin{File: fmt.Sprintf(waypointOrigin, k)}
		replicas, err := waypointReplicas(gw.Annotations, gw.Spec.Infrastructure, zones)
		if err != nil {
			return fmt.Errorf("Gateway %s: %w", k, err)
		}
		if d, ok := snap.Deployments[k]; ok && d.Labels[labelSynthesized] != "waypoint" {
			return fmt.Errorf("Gateway %s: the waypoint's Deployment %s would replace the Deployment of the same name from %s", k, k,
				snap.Origins[model.Ref{Kind: model.KindDeployment, Namespace: k.Namespace, Name: k.Name}])
		}
		podLabels := map[string]string{gatewayNameLabel: k.Name, "istio.io/dataplane-mode": "none", labelSynthesized: "waypoint"}
		podAnnotations := map[string]string{}
		if inf := gw.Spec.Infrastructure; inf != nil {
			for l, v := range inf.Labels {
				if _, ours := podLabels[string(l)]; !ours {
					podLabels[string(l)] = string(v)
				}
			}
			for a, v := range inf.Annotations {
				podAnnotations[string(a)] = string(v)
			}
		}
		meta := metav1.ObjectMeta{Name: k.Name, Namespace: k.Namespace,
			Labels: map[string]string{gatewayNameLabel: k.Name, labelSynthesized: "waypoint"}}
		token := filepath.Join(dir, "nodes", "$(NODE_NAME)", "token")
		dep := &appsv1.Deployment{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: meta,
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{gatewayNameLabel: k.Name}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
					Spec: corev1.PodSpec{
						ServiceAccountName: k.Name,
						Containers: []corev1.Container{{
							Name: "waypoint",
							Command: []string{"waypoint", "--node", "$(NODE_NAME)", "--control-plane", cp.String(),
								"--token-file", token, "--root-cert", filepath.Join(dir, "root-cert.pem"), "--trust-domain", TrustDomain,
								"--admin-addr", "127.0.0.1:15000", "--metrics-addr", fmt.Sprintf(":%d", metricsPort),
								"--ready-addr", fmt.Sprintf(":%d", readyPort), "--drain-timeout", "1s"},
							Env: []corev1.EnvVar{{Name: "GATEWAY_NAME", Value: k.Name}, {Name: "SERVICE_ACCOUNT", Value: k.Name}},
							Ports: []corev1.ContainerPort{{Name: "hbone", ContainerPort: waypointHBONEPort},
								{Name: "status", ContainerPort: readyPort}, {Name: "metrics", ContainerPort: metricsPort}},
						}},
					},
				},
			},
		}
		if err := snap.Put(dep, origin); err != nil {
			return err
		}
		if _, ok := snap.Services[k]; ok {
			continue
		}
		svc := &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: meta,
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{gatewayNameLabel: k.Name},
				Ports: []corev1.ServicePort{{Name: "mesh", Port: waypointHBONEPort, TargetPort: intstr.FromInt32(waypointHBONEPort),
					Protocol: corev1.ProtocolTCP}},
			},
		}
		if err := snap.Put(svc, origin); err != nil {
			return err
		}
	}
	return nil
}

// waypointReplicas reads the replicas annotation of a waypoint Gateway (its
// own, else spec.infrastructure's): default 1.
func waypointReplicas(annotations map[string]string, inf *gatewayv1.GatewayInfrastructure, zones int) (int32, error) {
	v := annotations[replicasAnnotation]
	if v == "" && inf != nil {
		v = string(inf.Annotations[replicasAnnotation])
	}
	switch v {
	case "":
		return 1, nil
	case "zones":
		return int32(max(zones, 1)), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 64 {
		return 0, fmt.Errorf("annotation %s: %q is not a number of replicas from 1 to 64, nor \"zones\"", replicasAnnotation, v)
	}
	return int32(n), nil
}
