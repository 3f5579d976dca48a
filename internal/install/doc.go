// Package install renders and applies what runs Ambit on a Kubernetes
// cluster: the CRDs (Gateway API and Istio, embedded from the pinned
// modules), the namespace, RBAC, the control plane Deployment and the node
// DaemonSet (ztunnel, node agent, CNI installer). `ambit install` and
// `ambit uninstall` use it, and the Helm chart in deploy/helm/ambit is
// tested to render the same objects.
package install
