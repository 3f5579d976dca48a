package translate

import (
	"fmt"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

// benchSnapshot builds n Services in n/100 namespaces; even ones carry an
// HTTPRoute with three rules, odd ones a VirtualService and a DestinationRule.
func benchSnapshot(n int) *model.Snapshot {
	snap := model.NewSnapshot()
	core, svcKind := gatewayv1.Group(""), gatewayv1.Kind("Service")
	prefix := gatewayv1.PathMatchPathPrefix
	for i := 0; i < n; i++ {
		ns, name := fmt.Sprintf("ns-%d", i/100), fmt.Sprintf("svc-%d", i)
		meta := metav1.ObjectMeta{Namespace: ns, Name: name}
		_ = snap.Add(&corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}, {Name: "tcp", Port: 5432},
		}}}, model.Origin{})
		if i%2 == 0 {
			port := gatewayv1.PortNumber(80)
			var rules []gatewayv1.HTTPRouteRule
			for r := 0; r < 3; r++ {
				p := fmt.Sprintf("/r%d", r)
				rules = append(rules, gatewayv1.HTTPRouteRule{
					Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &prefix, Value: &p}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(fmt.Sprintf("svc-%d", i+1)), Port: &port}}}},
				})
			}
			_ = snap.Add(&gatewayv1.HTTPRoute{ObjectMeta: meta, Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: &core, Kind: &svcKind, Name: gatewayv1.ObjectName(name)}}},
				Rules:           rules,
			}}, model.Origin{})
			continue
		}
		vs := &networkingv1.VirtualService{ObjectMeta: meta}
		vs.Spec.Hosts = []string{name}
		vs.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{
			{Destination: &networkingapi.Destination{Host: name, Subset: "v1"}, Weight: 90},
			{Destination: &networkingapi.Destination{Host: name, Subset: "v2"}, Weight: 10},
		}}}
		_ = snap.Add(vs, model.Origin{})
		dr := &networkingv1.DestinationRule{ObjectMeta: meta}
		dr.Spec.Host = name
		dr.Spec.Subsets = []*networkingapi.Subset{{Name: "v1", Labels: map[string]string{"v": "1"}}, {Name: "v2", Labels: map[string]string{"v": "2"}}}
		_ = snap.Add(dr, model.Origin{})
	}
	return snap
}

func BenchmarkBuildRoutes10k(b *testing.B) {
	snap := benchSnapshot(10_000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ix := BuildRoutes(snap, model.DefaultMeshConfig())
		if len(ix.Problems()) != 0 {
			b.Fatal(problemsText(ix.Problems()))
		}
	}
}
