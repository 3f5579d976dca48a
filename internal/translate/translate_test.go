package translate

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
)

// parse builds a Snapshot with the real manifest parser.
func parse(t *testing.T, yaml string) *model.Snapshot {
	t.Helper()
	snap, err := config.ParseSnapshot("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("manifests do not parse: %v", err)
	}
	return snap
}

const baseMesh = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/region: local
    topology.kubernetes.io/zone: zone-a
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  selector:
    app: echo
  ports:
  - name: http
    port: 80
    targetPort: web
  - name: grpc-api
    port: 9090
  - name: dns
    port: 53
    protocol: UDP
---
apiVersion: v1
kind: Pod
metadata:
  name: echo-v1-7d9f-abcde
  namespace: shop
  labels:
    app: echo
    version: v1
    pod-template-hash: 7d9f
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: echo-v1-7d9f
    uid: "1"
    controller: true
spec:
  nodeName: node-a
  serviceAccountName: echo
  containers:
  - name: app
    image: echo
    ports:
    - name: web
      containerPort: 8080
status:
  podIP: 10.244.1.5
`

func TestWorkload(t *testing.T) {
	out := Translate(parse(t, baseMesh), model.DefaultMeshConfig())
	want := &meshv1.Workload{
		Uid:               "Kubernetes/Pod/shop/echo-v1-7d9f-abcde",
		Name:              "echo-v1-7d9f-abcde",
		Namespace:         "shop",
		Addresses:         []string{"10.244.1.5"},
		Node:              "node-a",
		ServiceAccount:    "echo",
		TrustDomain:       "cluster.local",
		WorkloadName:      "echo-v1",
		CanonicalName:     "echo",
		CanonicalRevision: "v1",
		ClusterId:         "Kubernetes",
		Locality:          &meshv1.Locality{Region: "local", Zone: "zone-a"},
		TunnelProtocol:    meshv1.TunnelProtocol_HBONE,
		Services: map[string]*meshv1.PortList{
			"shop/echo.shop.svc.cluster.local": {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 9090, TargetPort: 9090}}},
		},
	}
	got := out.Workloads[want.Uid]
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("workload (-want +got):\n%s", diff)
	}
	ids := out.NodeIdentities()
	if !ids["node-a"]["spiffe://cluster.local/ns/shop/sa/echo"] || len(ids) != 1 {
		t.Errorf("NodeIdentities = %v", ids)
	}
}

func TestWorkloadInclusion(t *testing.T) {
	pod := func(extra string) string {
		return `
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: shop
` + extra
	}
	tests := []struct {
		name      string
		pod       string
		want      bool
		wantHBONE bool
	}{
		{"running in ambient namespace", pod("spec:\n  containers: [{name: app, image: app}]\n  nodeName: node-a\nstatus:\n  podIP: 10.244.1.9\n"), true, true},
		{"opted out by label", pod("  labels:\n    istio.io/dataplane-mode: none\nspec:\n  containers: [{name: app, image: app}]\n  nodeName: node-a\nstatus:\n  podIP: 10.244.1.9\n"), true, false},
		{"no IP yet", pod("spec:\n  containers: [{name: app, image: app}]\n  nodeName: node-a\n"), false, false},
		{"host network", pod("spec:\n  containers: [{name: app, image: app}]\n  nodeName: node-a\n  hostNetwork: true\nstatus:\n  podIP: 10.0.0.1\n"), false, false},
		{"finished", pod("spec:\n  containers: [{name: app, image: app}]\n  nodeName: node-a\nstatus:\n  phase: Succeeded\n  podIP: 10.244.1.9\n"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := parse(t, `
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---`+tt.pod)
			w := Translate(snap, model.DefaultMeshConfig()).Workloads["Kubernetes/Pod/shop/p"]
			if (w != nil) != tt.want {
				t.Fatalf("workload present = %v, want %v", w != nil, tt.want)
			}
			if w != nil && (w.TunnelProtocol == meshv1.TunnelProtocol_HBONE) != tt.wantHBONE {
				t.Errorf("tunnel = %v, want HBONE %v", w.TunnelProtocol, tt.wantHBONE)
			}
		})
	}
}

func TestService(t *testing.T) {
	out := Translate(parse(t, baseMesh+`---
apiVersion: v1
kind: Service
metadata:
  name: ext
  namespace: shop
spec:
  type: ExternalName
  externalName: example.com
---
apiVersion: v1
kind: Service
metadata:
  name: headless
  namespace: shop
spec:
  clusterIP: None
  ports:
  - port: 5432
    appProtocol: tcp
    name: http-looks-like-http
`), model.DefaultMeshConfig())
	want := &meshv1.Service{
		Name:      "echo",
		Namespace: "shop",
		Hostname:  "echo.shop.svc.cluster.local",
		Addresses: []string{"10.96.0.10"},
		Ports: []*meshv1.ServicePort{
			{Port: 80, Name: "http", AppProtocol: meshv1.AppProtocol_HTTP},
			{Port: 9090, TargetPort: 9090, Name: "grpc-api", AppProtocol: meshv1.AppProtocol_GRPC},
		},
	}
	if diff := cmp.Diff(want, out.Services["shop/echo.shop.svc.cluster.local"], protocmp.Transform()); diff != "" {
		t.Errorf("service (-want +got):\n%s", diff)
	}
	if _, ok := out.Services["shop/ext.shop.svc.cluster.local"]; ok {
		t.Error("ExternalName service translated; it has no endpoints in the mesh")
	}
	h := out.Services["shop/headless.shop.svc.cluster.local"]
	if h == nil || len(h.Addresses) != 0 || h.Ports[0].AppProtocol != meshv1.AppProtocol_TCP {
		t.Errorf("headless service = %v; want no VIP and appProtocol tcp winning over the port name", h)
	}
}

func TestTrafficDistributionPrecedence(t *testing.T) {
	ns := func(annot string) string {
		s := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
		if annot != "" {
			s += "  annotations:\n    networking.istio.io/traffic-distribution: " + annot + "\n"
		}
		return s
	}
	svc := func(spec, annot string) string {
		s := "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: shop\n"
		if annot != "" {
			s += "  annotations:\n    networking.istio.io/traffic-distribution: " + annot + "\n"
		}
		s += "spec:\n  ports:\n  - port: 80\n"
		if spec != "" {
			s += "  trafficDistribution: " + spec + "\n"
		}
		return s
	}
	zone := []meshv1.LoadBalancing_Scope{meshv1.LoadBalancing_REGION, meshv1.LoadBalancing_ZONE, meshv1.LoadBalancing_SUBZONE}
	node := append(append([]meshv1.LoadBalancing_Scope{}, zone...), meshv1.LoadBalancing_NODE)
	tests := []struct {
		name        string
		yaml        string
		meshDefault string
		want        []meshv1.LoadBalancing_Scope
		wantProblem bool
	}{
		{"none", ns("") + "---\n" + svc("", ""), "", nil, false},
		{"mesh default same zone", ns("") + "---\n" + svc("", ""), "PreferSameZone", zone, false},
		{"mesh default same node", ns("") + "---\n" + svc("", ""), "PreferSameNode", node, false},
		{"namespace annotation beats mesh default", ns("PreferSameNode") + "---\n" + svc("", ""), "PreferSameZone", node, false},
		{"service annotation beats namespace", ns("PreferSameNode") + "---\n" + svc("", "PreferClose"), "", zone, false},
		{"spec beats annotations", ns("PreferClose") + "---\n" + svc("PreferSameNode", "PreferClose"), "", node, false},
		{"spec beats mesh default", ns("") + "---\n" + svc("PreferSameNode", ""), "PreferClose", node, false},
		{"spec PreferSameZone", ns("") + "---\n" + svc("PreferSameZone", ""), "", zone, false},
		{"unknown value reported", ns("") + "---\n" + svc("", "Nearest"), "", nil, true},
		{"unknown value reported, mesh default applies", ns("") + "---\n" + svc("", "Nearest"), "PreferSameZone", zone, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mesh := model.DefaultMeshConfig()
			mesh.DefaultTrafficDistribution = tt.meshDefault
			out := Translate(parse(t, tt.yaml), mesh)
			lb := out.Services["shop/s.shop.svc.cluster.local"].GetLoadBalancing()
			if diff := cmp.Diff(tt.want, lb.GetRoutingPreference()); diff != "" {
				t.Errorf("routing preference (-want +got):\n%s", diff)
			}
			if tt.want != nil && lb.GetMode() != meshv1.LoadBalancing_FAILOVER {
				t.Errorf("mode = %v, want FAILOVER", lb.GetMode())
			}
			if got := len(out.Problems) > 0; got != tt.wantProblem {
				t.Errorf("problems = %v, want some: %v", out.Problems, tt.wantProblem)
			}
		})
	}
}

const waypointGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
  labels:
    istio.io/waypoint-for: %s
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`

func TestWaypointBinding(t *testing.T) {
	bound := &meshv1.WaypointRef{Service: "shop/waypoint.shop.svc.cluster.local", HbonePort: 15008}
	tests := []struct {
		name                        string
		waypointFor                 string
		nsLabel, svcLabel, podLabel string
		wantService, wantPod        bool
		wantProblem                 bool
	}{
		{name: "namespace label, service waypoint", waypointFor: "service", nsLabel: "waypoint", wantService: true},
		{name: "namespace label, workload waypoint", waypointFor: "workload", nsLabel: "waypoint", wantPod: true},
		{name: "namespace label, all", waypointFor: "all", nsLabel: "waypoint", wantService: true, wantPod: true},
		{name: "waypoint for none", waypointFor: "none", nsLabel: "waypoint"},
		{name: "service opts out", waypointFor: "all", nsLabel: "waypoint", svcLabel: "none", wantPod: true},
		{name: "service label only", waypointFor: "service", svcLabel: "waypoint", wantService: true},
		{name: "missing waypoint reported", waypointFor: "service", svcLabel: "nope", wantProblem: true},
	}
	label := func(v string) string {
		if v == "" {
			return ""
		}
		return "    istio.io/use-waypoint: " + v + "\n"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := strings.Replace(baseMesh, "    istio.io/dataplane-mode: ambient\n", "    istio.io/dataplane-mode: ambient\n"+label(tt.nsLabel), 1)
			yaml = strings.Replace(yaml, "  name: echo\n  namespace: shop\n", "  name: echo\n  namespace: shop\n  labels:\n"+label(tt.svcLabel)+"    tier: web\n", 1)
			yaml += "---" + strings.Replace(waypointGateway, "%s", tt.waypointFor, 1)
			out := Translate(parse(t, yaml), model.DefaultMeshConfig())
			svc := out.Services["shop/echo.shop.svc.cluster.local"]
			if got := svc.Waypoint != nil; got != tt.wantService {
				t.Errorf("service bound = %v, want %v", got, tt.wantService)
			} else if got && !proto.Equal(svc.Waypoint, bound) {
				t.Errorf("service waypoint = %v", svc.Waypoint)
			}
			w := out.Workloads["Kubernetes/Pod/shop/echo-v1-7d9f-abcde"]
			if got := w.Waypoint != nil; got != tt.wantPod {
				t.Errorf("pod bound = %v, want %v", got, tt.wantPod)
			}
			if got := len(out.Problems) > 0; got != tt.wantProblem {
				t.Errorf("problems = %v, want some: %v", out.Problems, tt.wantProblem)
			}
			wc := out.Waypoints["shop/waypoint"]
			if wc == nil {
				t.Fatal("no WaypointConfig for the waypoint Gateway")
			}
			if got := len(wc.Services) == 1; got != tt.wantService {
				t.Errorf("waypoint serves %d services, want bound=%v", len(wc.Services), tt.wantService)
			}
		})
	}
}

func TestAuthorization(t *testing.T) {
	yaml := baseMesh + `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: mesh-deny
  namespace: istio-system
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["untrusted*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ns-allow
  namespace: shop
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/client", "*/sa/admin"]
        notIpBlocks: ["10.0.0.0/8"]
    to:
    - operation:
        ports: ["8080"]
  - when:
    - key: request.headers[x-token]
      values: ["*"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: echo-only
  namespace: shop
spec:
  selector:
    matchLabels:
      app: echo
  action: ALLOW
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: root-selector
  namespace: istio-system
spec:
  selector:
    matchLabels:
      version: v1
  action: DENY
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: not-for-ztunnel
  namespace: shop
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: echo
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
`
	out := Translate(parse(t, yaml), model.DefaultMeshConfig())
	scopes := map[string]meshv1.Authorization_Scope{
		"istio-system/mesh-deny":     meshv1.Authorization_GLOBAL,
		"shop/ns-allow":              meshv1.Authorization_NAMESPACE,
		"shop/echo-only":             meshv1.Authorization_WORKLOAD_SELECTOR,
		"istio-system/root-selector": meshv1.Authorization_WORKLOAD_SELECTOR,
	}
	if len(out.Authorizations) != len(scopes) {
		t.Errorf("got %d L4 policies, want %d (targetRefs policies belong to waypoints)", len(out.Authorizations), len(scopes))
	}
	for k, scope := range scopes {
		if a := out.Authorizations[k]; a == nil || a.Scope != scope {
			t.Errorf("%s: got %v, want scope %v", k, a, scope)
		}
	}
	w := out.Workloads["Kubernetes/Pod/shop/echo-v1-7d9f-abcde"]
	if diff := cmp.Diff([]string{"istio-system/root-selector", "shop/echo-only"}, w.AuthorizationPolicies); diff != "" {
		t.Errorf("selected policies (-want +got):\n%s", diff)
	}
	if rules := out.Authorizations["shop/echo-only"].Rules; len(rules) != 0 {
		t.Errorf("ALLOW with no rules must match nothing, got %v", rules)
	}
	got := out.Authorizations["shop/ns-allow"].Rules[0]
	wantFrom := &meshv1.Source{
		Principals: []*meshv1.StringMatch{
			{Kind: &meshv1.StringMatch_Exact{Exact: "cluster.local/ns/shop/sa/client"}},
			{Kind: &meshv1.StringMatch_Suffix{Suffix: "/sa/admin"}},
		},
		NotIpBlocks: []string{"10.0.0.0/8"},
	}
	if diff := cmp.Diff(wantFrom, got.From[0], protocmp.Transform()); diff != "" {
		t.Errorf("from (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint32{8080}, got.To[0].Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if ns := out.Authorizations["istio-system/mesh-deny"].Rules[0].From[0].Namespaces[0]; ns.GetPrefix() != "untrusted" {
		t.Errorf("namespace match = %v, want prefix untrusted", ns)
	}
}

func TestL7PolicyAttachment(t *testing.T) {
	yaml := strings.Replace(baseMesh, "    istio.io/dataplane-mode: ambient\n", "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n", 1) +
		"---" + strings.Replace(waypointGateway, "%s", "service", 1) + `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: on-gateway
  namespace: shop
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: on-service
  namespace: shop
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: echo
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: on-missing
  namespace: shop
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: nope
`
	out := Translate(parse(t, yaml), model.DefaultMeshConfig())
	wc := out.Waypoints["shop/waypoint"]
	var names []string
	for _, p := range wc.Policies {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	if diff := cmp.Diff([]string{"shop/on-gateway", "shop/on-service"}, names); diff != "" {
		t.Errorf("waypoint policies (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]*meshv1.ServiceList{"shop/on-service": {Services: []string{"shop/echo.shop.svc.cluster.local"}}}, wc.PolicyServices, protocmp.Transform()); diff != "" {
		t.Errorf("policy services (-want +got):\n%s", diff)
	}
	found := false
	for _, p := range out.Problems {
		found = found || (p.Ref.Name == "on-missing" && strings.Contains(p.Message, "not found"))
	}
	if !found {
		t.Errorf("a policy targeting a missing Service must be reported; problems: %v", out.Problems)
	}
}

func TestPeerAuthentication(t *testing.T) {
	out := Translate(parse(t, baseMesh+`---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: legacy
  namespace: shop
spec:
  selector:
    matchLabels:
      app: echo
  mtls:
    mode: PERMISSIVE
  portLevelMtls:
    9090:
      mode: DISABLE
`), model.DefaultMeshConfig())
	want := map[string]*meshv1.PeerAuthentication{
		"istio-system/default": {Name: "default", Namespace: "istio-system", Scope: meshv1.Authorization_GLOBAL, Mode: meshv1.PeerAuthentication_STRICT},
		"shop/legacy": {Name: "legacy", Namespace: "shop", Scope: meshv1.Authorization_WORKLOAD_SELECTOR, Mode: meshv1.PeerAuthentication_PERMISSIVE,
			PortModes: map[uint32]meshv1.PeerAuthentication_Mode{9090: meshv1.PeerAuthentication_DISABLE},
			Workloads: []string{"Kubernetes/Pod/shop/echo-v1-7d9f-abcde"}},
	}
	if diff := cmp.Diff(want, out.PeerAuthentications, protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Translation must be deterministic: the push server compares encodings to
// find what changed, so a reordered but equal output would cause spurious pushes.
func TestTranslateDeterministic(t *testing.T) {
	snap := parse(t, baseMesh+"---"+strings.Replace(waypointGateway, "%s", "all", 1))
	a, b := Translate(snap, model.DefaultMeshConfig()), Translate(snap, model.DefaultMeshConfig())
	for typ, resA := range a.Resources() {
		resB := b.Resources()[typ]
		for name, m := range resA {
			ea, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			eb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(resB[name])
			if string(ea) != string(eb) {
				t.Errorf("%s %s differs between two translations", typ, name)
			}
		}
	}
}

// serviceAccounts and trustDomains are identity fields too: dropping them
// would turn "allow only these" into "allow everyone".
func TestIdentityFieldsNeverWiden(t *testing.T) {
	policy := func(source string) string {
		return baseMesh + `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: shop
spec:
  rules:
  - from:
    - source:
` + source
	}
	suffix := func(s string) *meshv1.StringMatch {
		return &meshv1.StringMatch{Kind: &meshv1.StringMatch_Suffix{Suffix: s}}
	}
	prefix := func(s string) *meshv1.StringMatch {
		return &meshv1.StringMatch{Kind: &meshv1.StringMatch_Prefix{Prefix: s}}
	}
	tests := []struct {
		name          string
		source        string
		principals    []*meshv1.StringMatch
		notPrincipals []*meshv1.StringMatch
		dropped       bool
	}{
		{"service accounts", "        serviceAccounts: [client, other/admin]\n", []*meshv1.StringMatch{suffix("/ns/shop/sa/client"), suffix("/ns/other/sa/admin")}, nil, false},
		{"not service accounts", "        notServiceAccounts: [bad]\n", nil, []*meshv1.StringMatch{suffix("/ns/shop/sa/bad")}, false},
		{"not trust domains merge", "        notTrustDomains: [evil.corp]\n        notServiceAccounts: [bad]\n", nil,
			[]*meshv1.StringMatch{suffix("/ns/shop/sa/bad"), prefix("evil.corp/")}, false},
		{"trust domains", "        trustDomains: [cluster.local, \"corp*\"]\n", []*meshv1.StringMatch{prefix("cluster.local/"), prefix("corp")}, nil, false},
		{"trust domain suffix is refused", "        trustDomains: [\"*.corp\"]\n", nil, nil, true},
		{"combination is refused", "        serviceAccounts: [client]\n        trustDomains: [cluster.local]\n", nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Translate(parse(t, policy(tt.source)), model.DefaultMeshConfig())
			a := out.Authorizations["shop/p"]
			if tt.dropped {
				if len(a.Rules) != 0 || len(out.Problems) == 0 {
					t.Fatalf("rules %v problems %v: an ALLOW rule that cannot be represented must allow nothing, and be reported", a.Rules, out.Problems)
				}
				return
			}
			src := a.Rules[0].From[0]
			if diff := cmp.Diff(tt.principals, src.Principals, protocmp.Transform()); diff != "" {
				t.Errorf("principals (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.notPrincipals, src.NotPrincipals, protocmp.Transform()); diff != "" {
				t.Errorf("notPrincipals (-want +got):\n%s", diff)
			}
		})
	}
}

// The waypoint receives the DestinationRule of every Service its routes send
// to, not only of the Services bound to it, with each subset's workloads
// resolved (proxies see no pod labels).
func TestWaypointDestinationPolicies(t *testing.T) {
	yaml := baseMesh + "---" + strings.Replace(waypointGateway, "%s", "service", 1) + `---
apiVersion: v1
kind: Pod
metadata: {name: echo-v2-1, namespace: shop, labels: {app: echo, version: v2}}
spec: {nodeName: node-a, serviceAccountName: echo, containers: [{name: app, ports: [{name: web, containerPort: 8080}]}]}
status: {podIP: 10.244.1.6}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 10.96.0.11, selector: {app: front}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: shop}
spec:
  hosts: [front]
  http:
  - route:
    - destination: {host: echo, subset: v2, port: {number: 80}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: shop}
spec:
  host: echo
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: apps, labels: {app: echo}}
`
	out := Translate(parse(t, yaml), model.DefaultMeshConfig())
	wc := out.Waypoints["shop/waypoint"]
	if wc == nil {
		t.Fatalf("no WaypointConfig; problems: %v", out.Problems)
	}
	var echo *meshv1.DestinationPolicy
	for _, dp := range wc.DestinationPolicies {
		if dp.Service == "shop/echo.shop.svc.cluster.local" {
			echo = dp
		}
	}
	if echo == nil {
		t.Fatalf("the DestinationRule of the backend echo is missing: %v", wc.DestinationPolicies)
	}
	got := map[string][]string{}
	for _, s := range echo.Subsets {
		got[s.Name] = s.Workloads
	}
	want := map[string][]string{
		"v1":   {"Kubernetes/Pod/shop/echo-v1-7d9f-abcde"},
		"v2":   {"Kubernetes/Pod/shop/echo-v2-1"},
		"apps": {"Kubernetes/Pod/shop/echo-v1-7d9f-abcde", "Kubernetes/Pod/shop/echo-v2-1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("subset workloads (-want +got):\n%s", diff)
	}
	// The route index's shared message is not modified.
	ix := BuildRoutes(parse(t, yaml), model.DefaultMeshConfig())
	for _, s := range ix.DestinationPolicy(model.Key{Namespace: "shop", Name: "echo"}).GetSubsets() {
		if len(s.Workloads) != 0 {
			t.Errorf("route index subset %s has workloads %v", s.Name, s.Workloads)
		}
	}
}
