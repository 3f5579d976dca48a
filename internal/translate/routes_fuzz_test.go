package translate

import (
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/ambit-mesh/ambit/internal/model"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

// FuzzBuildRoutes feeds arbitrary route, VirtualService and DestinationRule
// specs to translation: it must never panic, whatever users write.
func FuzzBuildRoutes(f *testing.F) {
	base := snapshotFromYAML(f, vsBase)
	f.Add(`{"parentRefs":[{"group":"","kind":"Service","name":"reviews","port":9080}],"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"(["}}],"backendRefs":[{"name":"ratings","port":8080,"weight":0}]}]}`,
		`{"hosts":["reviews"],"http":[{"match":[{"uri":{"prefix":"/"}}],"rewrite":{"uri":"/x"},"route":[{"destination":{"host":"reviews","subset":"nope"}}]}]}`,
		`{"host":"reviews","subsets":[{"name":"v1"},{"name":"v1"}],"trafficPolicy":{"outlierDetection":{}}}`)
	f.Add(`{"parentRefs":[{"group":"","kind":"Service","name":"reviews","sectionName":"http"}],"rules":[{"filters":[{"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplacePrefixMatch"}}}]}]}`,
		`{"hosts":["*"],"http":[{"redirect":{},"fault":{"abort":{"grpcStatus":"x"}},"mirrors":[{}]}]}`,
		`{"host":"*.shop.svc.cluster.local","exportTo":["."],"trafficPolicy":{"loadBalancer":{"consistentHash":{"httpCookie":{}}}}}`)
	f.Fuzz(func(t *testing.T, route, vs, dr string) {
		snap := base.Clone()
		hr := &gatewayv1.HTTPRoute{}
		if yaml.Unmarshal([]byte(route), &hr.Spec) == nil {
			hr.Name, hr.Namespace = "r", "shop"
			_ = snap.Put(hr, model.Origin{})
		}
		gr := &gatewayv1.GRPCRoute{}
		if yaml.Unmarshal([]byte(route), &gr.Spec) == nil {
			gr.Name, gr.Namespace = "g", "shop"
			_ = snap.Put(gr, model.Origin{})
		}
		v := &networkingv1.VirtualService{}
		if yaml.Unmarshal([]byte(vs), &v.Spec) == nil {
			v.Name, v.Namespace = "v", "shop"
			_ = snap.Put(v, model.Origin{})
		}
		d := &networkingv1.DestinationRule{}
		if yaml.Unmarshal([]byte(dr), &d.Spec) == nil {
			d.Name, d.Namespace = "d", "shop"
			_ = snap.Put(d, model.Origin{})
		}
		ix := BuildRoutes(snap, model.DefaultMeshConfig())
		for k := range snap.Services {
			for _, pr := range ix.ServiceRoutes(k).GetPorts() {
				if len(pr.GetRules()) == 0 {
					t.Fatalf("%s port %d: no rules", k, pr.GetPort())
				}
				for _, r := range pr.GetRules() {
					if len(r.GetBackends()) == 0 && r.GetRedirect() == nil && r.GetDirectStatus() == 0 {
						t.Fatalf("%s: rule %s does nothing", k, r.GetOrigin())
					}
				}
				_, _ = routematch.SelectRule(pr, "GET", "/x", nil, nil)
			}
			_ = ix.DestinationPolicy(k)
		}
		_ = ix.Problems()
	})
}
