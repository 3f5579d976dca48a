package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	extensionsv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/internal/model"
)

var update = flag.Bool("update", false, "rewrite the .golden files in testdata/errors")

func TestSplitDocuments(t *testing.T) {
	type doc struct{ index, start, first int }
	tests := []struct {
		name string
		in   string
		want []doc
	}{
		{"empty", "", nil},
		{"only comments and blanks", "# a\n\n  # b\n---\n---\n# c\n", nil},
		{"single without marker", "a: 1\nb: 2\n", []doc{{1, 1, 1}}},
		{"leading marker", "---\na: 1\n", []doc{{1, 2, 2}}},
		{"empty documents are not counted", "a: 1\n---\n---\n# just a comment\n---\nb: 2\n", []doc{{1, 1, 1}, {2, 6, 6}}},
		{"comment before content", "---\n# title\n\nkind: x\n", []doc{{1, 2, 4}}},
		{"marker with comment", "a: 1\n--- # next\nb: 2\n", []doc{{1, 1, 1}, {2, 3, 3}}},
		{"not a marker", "a: |\n  ---x\n---x: 1\n", []doc{{1, 1, 1}}},
		{"document end marker", "a: 1\n...\nb: 2\n", []doc{{1, 1, 1}, {2, 3, 3}}},
		{"CRLF", "a: 1\r\n---\r\nb: 2\r\n", []doc{{1, 1, 1}, {2, 3, 3}}},
		{"BOM", "\xef\xbb\xbfa: 1\n", []doc{{1, 1, 1}}},
		{"directive", "%YAML 1.1\n---\na: 1\n", []doc{{1, 3, 3}}},
		{"content on the marker line", "a: 1\n--- {b: 2}\n", []doc{{1, 1, 1}, {2, 2, 2}}},
		{"no trailing newline", "a: 1\n---\nb: 2", []doc{{1, 1, 1}, {2, 3, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []doc
			for _, d := range splitDocuments([]byte(tt.in)) {
				got = append(got, doc{d.index, d.startLine, d.firstLine})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSplitKeepsContentOfMarkerLine(t *testing.T) {
	objs, err := Parse("x.yaml", []byte("--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n"))
	if err != nil || len(objs) != 1 || objs[0].Ref.Name != "a" {
		t.Fatalf("got %v, %v", objs, err)
	}
}

// allKinds is one valid object of every supported kind, in every version
// the parser accepts for Istio and Gateway API.
const allKinds = `# every kind
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  namespace: ignored
  labels:
    topology.kubernetes.io/zone: zone-a
status:
  addresses:
  - type: InternalIP
    address: 10.0.0.1
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reviews
  namespace: shop
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: shop
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
    appProtocol: http
  trafficDistribution: PreferClose
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-1
  namespace: shop
  labels:
    app: reviews
spec:
  nodeName: node-a
  serviceAccountName: reviews
  containers:
  - name: app
    command: ["reviews", "--port=9080"]
    ports:
    - containerPort: 9080
      name: http
status:
  podIP: 10.1.0.5
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels:
      app: reviews
  template:
    metadata:
      labels:
        app: reviews
    spec:
      containers:
      - name: app
        image: example/reviews:v1
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: shop
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - backendRefs:
    - name: reviews-v1
      port: 9080
      weight: 90
    - name: reviews-v2
      port: 9080
      weight: 10
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: ratings
  namespace: shop
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: ratings
  rules:
  - matches:
    - method:
        service: ratings.Ratings
        method: Get
    backendRefs:
    - name: ratings
      port: 7070
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
    timeout: 1m
    retries:
      attempts: 3
      perTryTimeout: 500ms
      retryOn: 5xx,reset,503
  - route:
    - destination:
        host: reviews
        subset: v1
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting:
        enabled: true
        failover:
        - from: us-east-1
          to: us-west-2
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 1m
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: shop
spec:
  selector:
    matchLabels:
      app: reviews
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/productpage"]
        ipBlocks: ["10.0.0.0/8"]
    to:
    - operation:
        methods: ["GET"]
        ports: ["9080"]
    when:
    - key: request.headers[x-user]
      values: ["*"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: shop
spec:
  mtls:
    mode: STRICT
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: zonal
  namespace: shop
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  url: oci://example.com/zonal:v1
  phase: AUTHZ
  pluginConfig:
    anything: [1, "two", {three: 3}]
`

func TestParseEveryKind(t *testing.T) {
	objs, err := Parse("all.yaml", []byte(allKinds))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []struct {
		ref        model.Ref
		typ        any
		apiVersion string
		line       int
	}{
		{model.Ref{Kind: model.KindNamespace, Name: "shop"}, &corev1.Namespace{}, "v1", 2},
		{model.Ref{Kind: model.KindNode, Name: "node-a"}, &corev1.Node{}, "v1", 9},
		{model.Ref{Kind: model.KindServiceAccount, Namespace: "shop", Name: "reviews"}, &corev1.ServiceAccount{}, "v1", 0},
		{model.Ref{Kind: model.KindService, Namespace: "shop", Name: "reviews"}, &corev1.Service{}, "v1", 0},
		{model.Ref{Kind: model.KindPod, Namespace: "shop", Name: "reviews-1"}, &corev1.Pod{}, "v1", 0},
		{model.Ref{Kind: model.KindDeployment, Namespace: "shop", Name: "reviews-v1"}, &appsv1.Deployment{}, "apps/v1", 0},
		{model.Ref{Kind: model.KindGateway, Namespace: "shop", Name: "waypoint"}, &gatewayv1.Gateway{}, "gateway.networking.k8s.io/v1", 0},
		{model.Ref{Kind: model.KindHTTPRoute, Namespace: "shop", Name: "reviews"}, &gatewayv1.HTTPRoute{}, "gateway.networking.k8s.io/v1beta1", 0},
		{model.Ref{Kind: model.KindGRPCRoute, Namespace: "shop", Name: "ratings"}, &gatewayv1.GRPCRoute{}, "gateway.networking.k8s.io/v1", 0},
		{model.Ref{Kind: model.KindVirtualService, Namespace: "shop", Name: "reviews"}, &networkingv1.VirtualService{}, "networking.istio.io/v1alpha3", 0},
		{model.Ref{Kind: model.KindDestinationRule, Namespace: "shop", Name: "reviews"}, &networkingv1.DestinationRule{}, "networking.istio.io/v1beta1", 0},
		{model.Ref{Kind: model.KindAuthorizationPolicy, Namespace: "shop", Name: "reviews"}, &securityv1.AuthorizationPolicy{}, "security.istio.io/v1beta1", 0},
		{model.Ref{Kind: model.KindPeerAuthentication, Namespace: "shop", Name: "default"}, &securityv1.PeerAuthentication{}, "security.istio.io/v1", 0},
		{model.Ref{Kind: model.KindWasmPlugin, Namespace: "shop", Name: "zonal"}, &extensionsv1alpha1.WasmPlugin{}, "extensions.istio.io/v1alpha1", 0},
	}
	if len(objs) != len(want) {
		t.Fatalf("got %d objects, want %d", len(objs), len(want))
	}
	for i, w := range want {
		o := objs[i]
		if o.Ref != w.ref {
			t.Errorf("object %d: Ref = %v, want %v", i, o.Ref, w.ref)
		}
		if reflect.TypeOf(o.Obj) != reflect.TypeOf(w.typ) {
			t.Errorf("object %d: type %T, want %T", i, o.Obj, w.typ)
		}
		if o.Origin != (model.Origin{File: "all.yaml", Document: i + 1}) {
			t.Errorf("object %d: Origin = %v", i, o.Origin)
		}
		if w.line != 0 && o.Line != w.line {
			t.Errorf("object %d: Line = %d, want %d", i, o.Line, w.line)
		}
		if got := apiVersionOf(o.Obj); got != w.apiVersion {
			t.Errorf("object %d: apiVersion %q, want %q (as written)", i, got, w.apiVersion)
		}
		if ref, err := model.RefOf(o.Obj); err != nil || ref != o.Ref {
			t.Errorf("object %d: model.RefOf = %v, %v; want %v", i, ref, err, o.Ref)
		}
	}

	// Spot checks that values made it through, including Istio's lenient
	// duration syntax ("1m") and protobuf wrappers.
	vs := objs[9].Obj.(*networkingv1.VirtualService)
	if d := vs.Spec.Http[0].Timeout.AsDuration().String(); d != "1m0s" {
		t.Errorf("VirtualService timeout = %s, want 1m0s", d)
	}
	dr := objs[10].Obj.(*networkingv1.DestinationRule)
	if n := dr.Spec.TrafficPolicy.OutlierDetection.Consecutive_5XxErrors.GetValue(); n != 5 {
		t.Errorf("consecutive5xxErrors = %d, want 5", n)
	}
	if w := objs[7].Obj.(*gatewayv1.HTTPRoute).Spec.Rules[0].BackendRefs[1].Weight; w == nil || *w != 10 {
		t.Errorf("HTTPRoute weight = %v, want 10", w)
	}
	if ns := objs[1].Obj.(*corev1.Node).Namespace; ns != "" {
		t.Errorf("Node kept namespace %q; cluster-scoped objects have none", ns)
	}
}

func apiVersionOf(obj any) string {
	v := reflect.ValueOf(obj).Elem().FieldByName("TypeMeta")
	return v.FieldByName("APIVersion").String()
}

func TestNamespaceDefaults(t *testing.T) {
	objs, err := Parse("x.yaml", []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := objs[0].Obj.(*corev1.ServiceAccount).Namespace; got != "default" || objs[0].Ref.Namespace != "default" {
		t.Errorf("namespace = %q (Ref %v), want default", got, objs[0].Ref)
	}
}

func TestParseList(t *testing.T) {
	in := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: a
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: B
- apiVersion: v1
  kind: List
  items: []
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: c
`
	objs, err := Parse("list.yaml", []byte(in))
	want := []string{
		"list.yaml: document 1: line 11: ServiceAccount default/B: items[1].metadata.name: invalid name \"B\": must be an RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)",
		"list.yaml: document 1: line 13: items[2].kind: a List may not contain another List",
	}
	checkErrors(t, err, want)
	if len(objs) != 2 || objs[0].Ref.Name != "a" || objs[1].Ref.Name != "c" {
		t.Fatalf("got objects %v, want a and c", objs)
	}
	if objs[0].Line != 4 || objs[1].Line != 15 {
		t.Errorf("item lines = %d, %d; want 4, 15", objs[0].Line, objs[1].Line)
	}
}

func checkErrors(t *testing.T, err error, want []string) {
	t.Helper()
	var got []string
	for _, e := range Errors(err) {
		got = append(got, e.Error())
	}
	if err != nil && len(got) == 0 {
		t.Fatalf("error is not an ErrorList: %v", err)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "routes.yaml", Document: 3, Ref: model.Ref{Kind: model.KindHTTPRoute, Namespace: "default", Name: "reviews"}, Field: "spec.rules[0].backendRefs[1].weight", Message: "must be >= 0"},
			"routes.yaml: document 3: HTTPRoute default/reviews: spec.rules[0].backendRefs[1].weight: must be >= 0"},
		{Error{File: "a.yaml", Document: 1, Line: 7, Ref: model.Ref{Kind: model.KindNode, Name: "n"}, Message: "m"}, "a.yaml: document 1: line 7: Node n: m"},
		{Error{File: "a.yaml", Document: 2, Line: 1, Ref: model.Ref{Kind: model.KindService}, Field: "metadata.name", Message: "required"}, "a.yaml: document 2: line 1: Service: metadata.name: required"},
		{Error{File: "a.yaml", Message: "cannot read: permission denied"}, "a.yaml: cannot read: permission denied"},
		{Error{Document: 2, Message: "m"}, "document 2: m"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
	l := ErrorList{&tests[0].e, &tests[1].e}
	if got := l.Error(); got != tests[0].want+"\n"+tests[1].want {
		t.Errorf("ErrorList.Error() = %q", got)
	}
	var e *Error
	if !errors.As(error(l), &e) || e != &tests[0].e {
		t.Errorf("errors.As did not find the first *Error")
	}
	if ErrorList(nil).err() != nil {
		t.Errorf("empty ErrorList must be a nil error")
	}
}

func TestParseValidReturnsNilError(t *testing.T) {
	objs, err := Parse("x.yaml", []byte("# nothing here\n---\n"))
	if err != nil || len(objs) != 0 {
		t.Fatalf("got %v, %v; want nothing, nil", objs, err)
	}
}

// TestGolden checks the complete error output for the files in
// testdata/errors against their .golden files (go test -update rewrites
// them; review the diff).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/errors/*.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, perr := Parse(f, data)
			got := ""
			if perr != nil {
				got = perr.Error() + "\n"
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("errors for %s:\n%s\nwant (%s):\n%s", f, got, golden, want)
			}
		})
	}
}

func TestSupportedKinds(t *testing.T) {
	got := SupportedKinds()
	if len(got) != 16 {
		t.Fatalf("got %d kinds: %v", len(got), got)
	}
	want := "VirtualService (networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3)"
	if !slices.Contains(got, want) {
		t.Errorf("%q missing from %v", want, got)
	}
}
