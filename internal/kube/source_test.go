package kube_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	istiosecurityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/controlplane"
	"github.com/ambit-mesh/ambit/internal/kube"
	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/translate"
	"github.com/ambit-mesh/ambit/test/kube/kubetest"
)

// latest keeps the last snapshot a source delivered.
type latest struct {
	mu   sync.Mutex
	snap *model.Snapshot
	n    int
}

func (l *latest) update(s *model.Snapshot) {
	l.mu.Lock()
	l.snap, l.n = s, l.n+1
	l.mu.Unlock()
}

func (l *latest) get() *model.Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap
}

func runSource(t *testing.T, src controlplane.Source) *latest {
	t.Helper()
	l := &latest{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, l.update) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("source: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("source did not stop")
		}
	})
	return l
}

// exampleObjects returns the objects of the repository's examples, with
// the local cluster planner's Nodes, Service VIPs and Pods (as a kubelet
// and the controllers would make them): the same list goes to both sources.
func exampleObjects(t *testing.T) []any {
	t.Helper()
	objs, err := config.LoadObjects("../../examples/quickstart", "../../examples/inference-canary")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := config.NewSnapshot(objs)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := local.NewPlan(snap)
	if err != nil {
		t.Fatal(err)
	}
	planned := map[model.Key]*corev1.Service{}
	for _, s := range plan.Services {
		planned[model.Key{Namespace: s.Namespace, Name: s.Name}] = s
	}
	var out []any
	for _, o := range objs {
		if s, ok := o.Obj.(*corev1.Service); ok {
			if p := planned[model.Key{Namespace: s.Namespace, Name: s.Name}]; p != nil {
				s = s.DeepCopy()
				s.Spec.ClusterIP, s.Spec.ClusterIPs = p.Spec.ClusterIP, p.Spec.ClusterIPs
				out = append(out, s)
				continue
			}
		}
		if d, ok := o.Obj.(*appsv1.Deployment); ok {
			d = d.DeepCopy()
			setImages(&d.Spec.Template.Spec)
			out = append(out, d)
			continue
		}
		out = append(out, o.Obj)
	}
	for _, n := range plan.Nodes {
		out = append(out, n.Object)
	}
	for _, p := range plan.Pods {
		p = p.DeepCopy()
		// The planner's pods name their ReplicaSet without a uid (there is
		// none); the API server requires one.
		for i := range p.OwnerReferences {
			p.OwnerReferences[i].UID = "00000000-0000-0000-0000-000000000001"
		}
		setImages(&p.Spec)
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		out = append(out, p)
	}
	return out
}

// setImages fills in the container image the examples leave out (the local
// cluster runs commands, not images); the API server requires one.
func setImages(spec *corev1.PodSpec) {
	for i := range spec.Containers {
		if spec.Containers[i].Image == "" {
			spec.Containers[i].Image = "ambit"
		}
	}
}

// writeManifests writes objs as one multi-document YAML file in a new directory.
func writeManifests(t *testing.T, objs []any) string {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "all.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// diffOutputs describes how two translations differ, resource by resource.
func diffOutputs(a, b *translate.Output) string {
	var d strings.Builder
	ra, rb := a.Resources(), b.Resources()
	for typ, ma := range ra {
		mb := rb[typ]
		for name, m := range ma {
			if o, ok := mb[name]; !ok {
				fmt.Fprintf(&d, "%s %s: only from files\n", typ, name)
			} else if !proto.Equal(m, o) {
				fmt.Fprintf(&d, "%s %s:\n files: %s\n  kube: %s\n", typ, name, prototext.Format(m), prototext.Format(o))
			}
		}
		for name := range mb {
			// The API server's own Service exists only there.
			if _, ok := ma[name]; !ok && name != "default/kubernetes.default.svc.cluster.local" {
				fmt.Fprintf(&d, "%s %s: only from the API\n", typ, name)
			}
		}
	}
	return d.String()
}

// The same manifests through the file source and through the API server
// give the same translated configuration, and later changes made with the
// API reach the snapshot.
func TestSourceMatchesFileSource(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallCRDs(t)
	cl := c.Clients(t)
	objs := exampleObjects(t)
	// A Service without a selector whose EndpointSlice names a pod.
	var member *corev1.Pod
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Namespace == "demo" {
			member = p
			break
		}
	}
	http, port := "http", int32(8080)
	objs = append(objs,
		&corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "legacy"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.200.1", ClusterIPs: []string{"10.96.200.1"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}}},
		&discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
			ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: "legacy-1", Labels: map[string]string{discoveryv1.LabelServiceName: "legacy"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &http, Port: &port}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{member.Status.PodIP}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: member.Name}}}})
	kubetest.Apply(t, cl, objs...)
	// A slice of the EndpointSlice controller (of a Service with a
	// selector) only through the API: the source never fetches those.
	kubetest.Apply(t, cl, &discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "managed-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: "legacy", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.1.1"}}}})

	mesh := model.DefaultMeshConfig()
	files := runSource(t, &controlplane.FileSource{Paths: []string{writeManifests(t, objs)}})
	api := runSource(t, &kube.Source{Clients: cl, Debounce: 10 * time.Millisecond})

	var fromFiles, fromAPI *translate.Output
	diff := "no snapshots"
	for deadline := time.Now().Add(time.Minute); diff != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the sources translate differently:\n%s", diff)
		}
		fs, as := files.get(), api.get()
		if fs == nil || as == nil {
			continue
		}
		fromFiles, fromAPI = translate.Translate(fs, mesh), translate.Translate(as, mesh)
		diff = diffOutputs(fromFiles, fromAPI)
	}
	if len(fromAPI.Workloads) < 5 || len(fromAPI.Services) < 3 || len(fromAPI.Waypoints) < 1 {
		t.Fatalf("translation too small to prove anything: %d workloads, %d services, %d waypoints",
			len(fromAPI.Workloads), len(fromAPI.Services), len(fromAPI.Waypoints))
	}
	legacy := fromAPI.Workloads[translate.WorkloadUID(mesh, member.Namespace, member.Name)].GetServices()["demo/legacy.demo.svc.cluster.local"]
	if len(legacy.GetPorts()) != 1 || legacy.GetPorts()[0].GetTargetPort() != 8080 {
		t.Errorf("the EndpointSlice's pod is not a member of the selectorless Service: %v", legacy)
	}
	if p := fromAPI.Problems; len(p) != len(fromFiles.Problems) {
		t.Errorf("problems differ: files %v, API %v", fromFiles.Problems, p)
	}

	if es := api.get().EndpointSlices; es[model.Key{Namespace: "demo", Name: "legacy-1"}] == nil || es[model.Key{Namespace: "demo", Name: "managed-1"}] != nil {
		t.Errorf("EndpointSlices watched: %v; want the user's, not the controller's", slices.Collect(maps.Keys(es)))
	}

	// Slimmed: what the source stored keeps no managed fields.
	for k, p := range api.get().Pods {
		if len(p.ManagedFields) != 0 || len(p.Spec.Volumes) != 0 {
			t.Errorf("pod %s stored unslimmed", k)
		}
	}

	// A policy applied with the API (as v1beta1, as many users still write
	// it) shows up; deleting a pod removes its workload.
	ap := &istiosecurityv1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "deny-all", Namespace: "demo"},
		Spec:       securityv1beta1.AuthorizationPolicy{},
	}
	kubetest.Apply(t, cl, ap)
	kubetest.Eventually(t, 30*time.Second, "the AuthorizationPolicy in the snapshot", func() bool {
		return api.get().AuthorizationPolicies[model.Key{Namespace: "demo", Name: "deny-all"}] != nil
	})
	var victim *corev1.Pod
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Namespace == "demo" {
			victim = p
			break
		}
	}
	ctx := context.Background()
	if err := cl.Kube.CoreV1().Pods(victim.Namespace).Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	uid := translate.WorkloadUID(mesh, victim.Namespace, victim.Name)
	kubetest.Eventually(t, 30*time.Second, "the deleted pod's workload to go", func() bool {
		_, ok := translate.Translate(api.get(), mesh).Workloads[uid]
		return !ok
	})
}

// Without Istio and Gateway API CRDs the source still delivers (Services,
// Pods...); once the CRDs are installed their objects are watched, no
// restart needed.
func TestSourceWatchesCRDsInstalledLater(t *testing.T) {
	c := kubetest.Start(t)
	cl := c.Clients(t)
	api := runSource(t, &kube.Source{Clients: cl, Debounce: 10 * time.Millisecond, Rediscover: 200 * time.Millisecond})
	kubetest.Eventually(t, time.Minute, "a snapshot without CRDs", func() bool {
		s := api.get()
		return s != nil && s.Namespaces["default"] != nil
	})
	c.InstallCRDs(t)
	kubetest.Apply(t, cl, &istiosecurityv1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "deny-all", Namespace: "default"},
	})
	kubetest.Eventually(t, time.Minute, "the policy of a CRD installed after start", func() bool {
		return api.get().AuthorizationPolicies[model.Key{Namespace: "default", Name: "deny-all"}] != nil
	})
}
