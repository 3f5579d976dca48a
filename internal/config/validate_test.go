package config

import (
	"strings"
	"testing"
)

type validationCase struct {
	name string
	spec string   // the object's body after its metadata (usually "spec:\n...")
	want []string // "field: message" for each error, in order; nil if valid
}

// runValidation parses header+spec for each case and compares the errors,
// without file, document, line and object, which other tests cover.
func runValidation(t *testing.T, header string, cases []validationCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(header+tc.spec))
			var got []string
			for _, e := range Errors(err) {
				if e.Field != "" {
					got = append(got, e.Field+": "+e.Message)
				} else {
					got = append(got, e.Message)
				}
			}
			if err != nil && got == nil {
				t.Fatalf("not an ErrorList: %v", err)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestValidateNames(t *testing.T) {
	runValidation(t, "apiVersion: v1\n", []validationCase{
		{"namespace ok", "kind: Namespace\nmetadata:\n  name: shop-1\n", nil},
		{"namespace with dot", "kind: Namespace\nmetadata:\n  name: shop.eu\n", []string{
			`metadata.name: invalid name "shop.eu": must be an RFC 1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)`}},
		{"node subdomain", "kind: Node\nmetadata:\n  name: node-1.zone-a\n", nil},
		{"service must start with a letter", "kind: Service\nmetadata:\n  name: 9web\nspec:\n  ports: [{port: 80}]\n", []string{
			`metadata.name: invalid name "9web": must be an RFC 1035 label (at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)`}},
		{"service account upper case", "kind: ServiceAccount\nmetadata:\n  name: Reviews\n", []string{
			`metadata.name: invalid name "Reviews": must be an RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)`}},
		{"long name", "kind: ServiceAccount\nmetadata:\n  name: " + strings.Repeat("a", 254) + "\n", []string{
			`metadata.name: invalid name "` + strings.Repeat("a", 254) + `": must be an RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)`}},
		{"labels and annotations", "kind: ServiceAccount\nmetadata:\n  name: a\n  labels:\n    app.kubernetes.io/name: reviews\n    bad key: x\n  annotations:\n    example.com/any: \"anything: at all\"\n    /x: z\n", []string{
			`metadata.labels[bad key]: invalid label key "bad key": the name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit`,
			`metadata.annotations[/x]: invalid annotation key: "/x": the prefix before '/' must be a lowercase DNS subdomain`}},
		{"namespace ignored on cluster-scoped kinds", "kind: Node\nmetadata:\n  name: node1\n  namespace: Not_Valid\n", nil},
	})
}

func TestValidateService(t *testing.T) {
	header := "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
	runValidation(t, header, []validationCase{
		{"ok", "spec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n  - name: dns\n    port: 53\n    protocol: UDP\n    targetPort: 5353\n  clusterIP: 10.96.0.10\n", nil},
		{"headless without ports", "spec:\n  clusterIP: None\n  selector: {app: web}\n", nil},
		{"IPv6 cluster IP", "spec:\n  clusterIP: fd00::10\n  clusterIPs: [fd00::10]\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n", nil},
		{"external name", "spec:\n  type: ExternalName\n  externalName: db.example.com\n", nil},
		{"external name missing", "spec:\n  type: ExternalName\n", []string{"spec.externalName: required for type ExternalName"}},
		{"no ports", "spec:\n  selector: {app: web}\n", []string{"spec.ports: required: a Service needs at least one port (only a headless Service, clusterIP: None, may have none)"}},
		{"port range", "spec:\n  ports:\n  - port: 65536\n", []string{"spec.ports[0].port: must be between 1 and 65535, got 65536"}},
		{"port as string", "spec:\n  ports:\n  - port: \"80\"\n", []string{`spec.ports[0].port: expected integer, got string "80" (remove the quotes)`}},
		{"protocol", "spec:\n  ports:\n  - port: 80\n    protocol: HTTP\n", []string{`spec.ports[0].protocol: invalid value "HTTP": must be one of TCP, UDP, SCTP`}},
		{"cluster IP", "spec:\n  clusterIP: none\n  ports: [{port: 80}]\n", []string{`spec.clusterIP: invalid IP address "none"`}},
		{"cluster IPs disagree", "spec:\n  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.2]\n  ports: [{port: 80}]\n", []string{`spec.clusterIPs[0]: must match spec.clusterIP "10.0.0.1"`}},
		{"names needed with several ports", "spec:\n  ports:\n  - port: 80\n  - port: 443\n", []string{
			"spec.ports[0].name: required when a Service has more than one port",
			"spec.ports[1].name: required when a Service has more than one port"}},
		{"duplicate port", "spec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80}\n", []string{"spec.ports[1]: duplicate port 80/TCP (also ports[0])"}},
		{"target port out of range", "spec:\n  ports:\n  - port: 80\n    targetPort: 70000\n", []string{"spec.ports[0].targetPort: must be between 1 and 65535, got 70000"}},
		{"target port name", "spec:\n  ports:\n  - port: 80\n    targetPort: http--alt\n", []string{
			`spec.ports[0].targetPort: invalid port name "http--alt": must be at most 15 lowercase letters, digits and '-', with at least one letter, no '--', starting and ending with a letter or digit`}},
		{"type", "spec:\n  type: Internal\n  ports: [{port: 80}]\n", []string{`spec.type: invalid value "Internal": must be one of ClusterIP, NodePort, LoadBalancer, ExternalName`}},
		{"selector value", "spec:\n  selector: {app: \"a b\"}\n  ports: [{port: 80}]\n", []string{
			`spec.selector[app]: invalid label value "a b": must be empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit`}},
		{"unknown field", "spec:\n  port: 80\n", []string{`spec.port: unknown field "port" (did you mean "ports"?)`}},
	})
}

func TestValidateDeployment(t *testing.T) {
	header := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
	const tmpl = "  template:\n    metadata:\n      labels: {app: web, tier: front}\n    spec:\n      containers:\n      - name: web\n        image: web:1\n"
	runValidation(t, header, []validationCase{
		{"ok", "spec:\n  replicas: 0\n  selector:\n    matchLabels: {app: web}\n" + tmpl, nil},
		{"match expressions", "spec:\n  selector:\n    matchExpressions:\n    - {key: tier, operator: In, values: [front, back]}\n" + tmpl, nil},
		{"negative replicas", "spec:\n  replicas: -2\n  selector:\n    matchLabels: {app: web}\n" + tmpl, []string{"spec.replicas: must be >= 0, got -2"}},
		{"selector does not match", "spec:\n  selector:\n    matchLabels: {app: api}\n" + tmpl, []string{
			"spec.template.metadata.labels: do not match spec.selector (app=api): the Deployment would not own its own pods"}},
		{"selector missing", "spec:\n" + tmpl, []string{"spec.selector: required"}},
		{"empty selector", "spec:\n  selector: {}\n" + tmpl, []string{"spec.selector: empty selector: it would select every pod in the namespace; set matchLabels"}},
		{"bad operator", "spec:\n  selector:\n    matchExpressions:\n    - {key: tier, operator: Equals, values: [front]}\n" + tmpl, []string{
			`spec.selector.matchExpressions[0].operator: invalid operator "Equals": must be one of In, NotIn, Exists, DoesNotExist`}},
		{"no containers", "spec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers: []\n", []string{
			"spec.template.spec.containers: required: a pod needs at least one container"}},
		{"rolling update", "spec:\n  selector:\n    matchLabels: {app: web}\n  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: \"0%\"}\n" + tmpl, []string{
			"spec.strategy.rollingUpdate.maxUnavailable: may not be 0 when maxSurge is 0: the rollout could never progress"}},
		{"bad percentage", "spec:\n  selector:\n    matchLabels: {app: web}\n  strategy:\n    rollingUpdate: {maxSurge: 25pct}\n" + tmpl, []string{
			`spec.strategy.rollingUpdate.maxSurge: invalid value "25pct": must be an integer or a percentage like "25%"`}},
	})
}

func TestValidatePod(t *testing.T) {
	header := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n"
	runValidation(t, header, []validationCase{
		{"ok without image", "spec:\n  containers:\n  - name: web\n    command: [sleep, infinity]\n    ports:\n    - {containerPort: 8080, name: http}\n    - {containerPort: 9090, protocol: UDP}\n", nil},
		{"ports", "spec:\n  containers:\n  - name: web\n    ports:\n    - {containerPort: 0}\n    - {containerPort: 80, protocol: ICMP}\n", []string{
			"spec.containers[0].ports[0].containerPort: must be between 1 and 65535, got 0",
			`spec.containers[0].ports[1].protocol: invalid value "ICMP": must be one of TCP, UDP, SCTP`}},
		{"container name", "spec:\n  containers:\n  - name: \"\"\n", []string{"spec.containers[0].name: required"}},
		{"init container name clash", "spec:\n  initContainers:\n  - name: web\n  containers:\n  - name: web\n", []string{
			`spec.containers[0].name: duplicate container name "web" (also initContainers[0])`}},
		{"restart policy", "spec:\n  restartPolicy: Sometimes\n  containers:\n  - name: web\n", []string{
			`spec.restartPolicy: invalid value "Sometimes": must be one of Always, OnFailure, Never`}},
		{"quantity", "spec:\n  containers:\n  - name: web\n    resources:\n      limits: {memory: 1Gb}\n", []string{
			`spec.containers[0].resources.limits[memory]: invalid quantity "1Gb": want a number with an optional suffix, e.g. "500m", "128Mi", "2"`}},
		{"pod IP", "spec:\n  containers: [{name: web}]\nstatus:\n  podIPs: [{ip: 10.0.0.1}, {ip: \"10.0.0\"}]\n", []string{`status.podIPs[1].ip: invalid IP address "10.0.0"`}},
	})
}

func TestValidateHTTPRoute(t *testing.T) {
	header := "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n"
	parent := "spec:\n  parentRefs:\n  - {group: \"\", kind: Service, name: web, port: 80}\n"
	rule := func(s string) string { return parent + "  rules:\n" + s }
	runValidation(t, header, []validationCase{
		{"weights and matches", rule(`  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-user, value: a}, {name: x-env, type: RegularExpression, value: "^prod-[0-9]+$"}]
      queryParams: [{name: q, value: "1"}]
      method: GET
    - path: {type: RegularExpression, value: "^/v[0-9]+/.*$"}
    backendRefs:
    - {name: web-v1, port: 80, weight: 0}
    - {name: web-v2, port: 80, weight: 1000000}
`), nil},
		{"weight below 0", rule("  - backendRefs:\n    - {name: a, port: 80, weight: 1}\n    - {name: b, port: 80, weight: -1}\n"), []string{"spec.rules[0].backendRefs[1].weight: must be >= 0, got -1"}},
		{"weight above max", rule("  - backendRefs:\n    - {name: a, port: 80, weight: 1000001}\n"), []string{"spec.rules[0].backendRefs[0].weight: must be <= 1000000, got 1000001"}},
		{"backend port", rule("  - backendRefs:\n    - {name: a, port: 0}\n    - {name: b}\n    - {name: c, group: example.com, kind: Bucket}\n"), []string{
			"spec.rules[0].backendRefs[0].port: must be between 1 and 65535, got 0",
			"spec.rules[0].backendRefs[1].port: required when referring to a Service"}},
		{"parent port", "spec:\n  parentRefs:\n  - {name: web, kind: Service, group: \"\", port: 65536}\n", []string{"spec.parentRefs[0].port: must be between 1 and 65535, got 65536"}},
		{"prefix must start with slash", rule("  - matches:\n    - path: {type: PathPrefix, value: api}\n"), []string{
			`spec.rules[0].matches[0].path.value: invalid path "api" for a PathPrefix match: must start with '/'`}},
		{"exact path dot segment", rule("  - matches:\n    - path: {type: Exact, value: /a/../b}\n"), []string{
			`spec.rules[0].matches[0].path.value: invalid path "/a/../b" for a Exact match: must not contain a '..' segment`}},
		{"regex must compile", rule("  - matches:\n    - path: {type: RegularExpression, value: \"/(a\"}\n"), []string{
			"spec.rules[0].matches[0].path.value: invalid regular expression \"/(a\": missing closing ): `/(a`"}},
		{"path type", rule("  - matches:\n    - path: {type: Prefix, value: /}\n"), []string{
			`spec.rules[0].matches[0].path.type: invalid value "Prefix": must be one of Exact, PathPrefix, RegularExpression`}},
		{"header regex", rule("  - matches:\n    - headers: [{name: x, type: RegularExpression, value: \"*\"}]\n"), []string{
			"spec.rules[0].matches[0].headers[0].value: invalid regular expression \"*\": missing argument to repetition operator: `*`"}},
		{"header name", rule("  - matches:\n    - headers: [{name: \"x user\", value: a}]\n"), []string{
			"spec.rules[0].matches[0].headers[0].name: invalid value \"x user\": must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"}},
		{"redirect status", rule("  - filters:\n    - type: RequestRedirect\n      requestRedirect: {statusCode: 300}\n"), []string{
			"spec.rules[0].filters[0].requestRedirect.statusCode: invalid redirect status code 300: must be one of 301, 302, 303, 307, 308"}},
		{"redirect ok", rule("  - filters:\n    - type: RequestRedirect\n      requestRedirect: {scheme: https, statusCode: 301, port: 443, hostname: example.com}\n"), nil},
		{"filter without its config", rule("  - filters:\n    - type: URLRewrite\n"), []string{
			"spec.rules[0].filters[0].urlRewrite: required for a filter of type URLRewrite"}},
		{"filter with another type's config", rule("  - filters:\n    - type: RequestMirror\n      requestMirror:\n        backendRef: {name: shadow, port: 80}\n      urlRewrite: {hostname: x}\n"), []string{
			"spec.rules[0].filters[0].urlRewrite: must not be set for a filter of type RequestMirror (set type: URLRewrite to use it)"}},
		{"redirect and rewrite", rule("  - filters:\n    - {type: RequestRedirect, requestRedirect: {scheme: https}}\n    - {type: URLRewrite, urlRewrite: {hostname: x}}\n"), []string{
			"spec.rules[0].filters: RequestRedirect and URLRewrite filters cannot be used together"}},
		{"repeated filter", rule("  - filters:\n    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}\n    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}\n"), []string{
			"spec.rules[0].filters[1].type: RequestHeaderModifier filter cannot be repeated"}},
		{"replace prefix with default match", rule("  - filters:\n    - type: URLRewrite\n      urlRewrite:\n        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}\n"), nil},
		{"replace prefix with exact match", rule("  - matches:\n    - path: {type: Exact, value: /v1}\n    filters:\n    - type: URLRewrite\n      urlRewrite:\n        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}\n"), []string{
			"spec.rules[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix: it replaces the matched prefix"}},
		{"path modifier fields", rule("  - filters:\n    - type: URLRewrite\n      urlRewrite:\n        path: {type: ReplaceFullPath, replacePrefixMatch: /v2}\n"), []string{
			"spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: required when type is ReplaceFullPath",
			"spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: must not be set when type is ReplaceFullPath"}},
		{"mirror fraction", rule("  - filters:\n    - type: RequestMirror\n      requestMirror:\n        backendRef: {name: shadow, port: 80}\n        fraction: {numerator: 5, denominator: 4}\n"), []string{
			"spec.rules[0].filters[0].requestMirror.fraction.numerator: must be <= denominator (4), got 5"}},
		{"header modifier duplicates", rule("  - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{name: X-A, value: \"1\"}, {name: x-a, value: \"2\"}]\n"), []string{
			`spec.rules[0].filters[0].requestHeaderModifier.set[1].name: duplicate header "x-a" (also set[0]); header names are case-insensitive`}},
		{"timeouts", rule("  - timeouts: {request: 1s, backendRequest: 2s}\n  - timeouts: {request: 10 seconds}\n"), []string{
			"spec.rules[0].timeouts.backendRequest: must not be longer than the request timeout (1s), got 2s",
			`spec.rules[1].timeouts.request: invalid value "10 seconds": must be a Gateway API duration such as "10s", "500ms" or "1h30m" (units h, m, s, ms)`}},
		{"hostname", "spec:\n  hostnames: [\"*.example.com\", \"10.0.0.1\", \"a_b.example.com\"]\n", []string{
			`spec.hostnames[2]: invalid value "a_b.example.com": must be a lowercase DNS name, optionally prefixed with "*." (IP addresses are not allowed)`}},
		{"too many rules", parent + "  rules:\n" + strings.Repeat("  - backendRefs: [{name: a, port: 80}]\n", 17), []string{
			"spec.rules: too many items: 17, at most 16 allowed"}},
		{"required name", rule("  - backendRefs:\n    - {port: 80}\n"), []string{"spec.rules[0].backendRefs[0].name: required"}},
	})
}

func TestValidateGRPCRoute(t *testing.T) {
	header := "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: r\nspec:\n  parentRefs:\n  - {group: \"\", kind: Service, name: web}\n  rules:\n"
	runValidation(t, header, []validationCase{
		{"ok", "  - matches:\n    - method: {service: helloworld.Greeter, method: SayHello}\n    - method: {type: RegularExpression, service: \"helloworld\\\\..*\"}\n    backendRefs:\n    - {name: a, port: 7070, weight: 3}\n", nil},
		{"neither service nor method", "  - matches:\n    - method: {type: Exact}\n", []string{"spec.rules[0].matches[0].method: one or both of service and method must be set"}},
		{"bad names", "  - matches:\n    - method: {service: \"a/b\", method: \"x.y\"}\n", []string{
			`spec.rules[0].matches[0].method.service: invalid gRPC service name "a/b": want a dotted name such as helloworld.Greeter`,
			`spec.rules[0].matches[0].method.method: invalid gRPC method name "x.y": want an identifier such as SayHello`}},
		{"weight", "  - backendRefs:\n    - {name: a, port: 7070, weight: -3}\n", []string{"spec.rules[0].backendRefs[0].weight: must be >= 0, got -3"}},
		{"filter type", "  - filters:\n    - type: URLRewrite\n", []string{
			`spec.rules[0].filters[0].type: invalid value "URLRewrite": must be one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef`}},
	})
}

func TestValidateGateway(t *testing.T) {
	header := "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\nspec:\n  gatewayClassName: istio-waypoint\n"
	runValidation(t, header, []validationCase{
		{"waypoint", "  listeners:\n  - {name: mesh, port: 15008, protocol: HBONE}\n", nil},
		{"no listeners", "  listeners: []\n", []string{"spec.listeners: required: a Gateway needs at least one listener"}},
		{"duplicates and ports", "  listeners:\n  - {name: a, port: 80, protocol: HTTP}\n  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 0, protocol: HTTP}\n", []string{
			`spec.listeners[1].name: duplicate listener name "a" (also listeners[0])`,
			"spec.listeners[1]: same port, protocol and hostname as listeners[0]",
			"spec.listeners[2].port: must be between 1 and 65535, got 0"}},
		{"tls needs mode", "  listeners:\n  - {name: a, port: 443, protocol: TLS}\n", []string{"spec.listeners[0].tls.mode: required for protocol TLS"}},
		{"protocol required", "  listeners:\n  - {name: a, port: 443}\n", []string{"spec.listeners[0].protocol: required"}},
	})
}

func TestValidateVirtualService(t *testing.T) {
	header := "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n"
	cases := []validationCase{
		{"split that does not add up to 100 is fine", "  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 1\n    - destination: {host: reviews, subset: v2}\n      weight: 1\n", nil},
		{"single destination without weight", "  http:\n  - route:\n    - destination: {host: reviews.shop.svc.cluster.local, port: {number: 9080}}\n", nil},
		{"negative weight", "  http:\n  - route:\n    - destination: {host: a}\n      weight: 110\n    - destination: {host: b}\n      weight: -10\n", []string{
			"spec.http[0].route[1].weight: must be >= 0, got -10"}},
		{"all weights zero", "  http:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n", []string{
			"spec.http[0].route: total weight of the 2 destinations is 0: give at least one a positive weight"}},
		{"destination host empty", "  http:\n  - route:\n    - destination: {subset: v1}\n", []string{"spec.http[0].route[0].destination.host: required"}},
		{"no destination", "  http:\n  - route:\n    - weight: 100\n", []string{"spec.http[0].route[0].destination: required"}},
		{"nothing to do", "  http:\n  - match: [{uri: {prefix: /}}]\n", []string{"spec.http[0]: one of route, redirect, directResponse or delegate is required"}},
		{"empty string match", "  http:\n  - match: [{uri: {}}]\n    route: [{destination: {host: a}}]\n", []string{"spec.http[0].match[0].uri: one of exact, prefix or regex is required"}},
		{"regex", "  http:\n  - match: [{headers: {x-user: {regex: \"(\"}}}]\n    route: [{destination: {host: a}}]\n", []string{
			"spec.http[0].match[0].headers[x-user].regex: invalid regular expression \"(\": missing closing ): `(`"}},
		{"wildcard and FQDN hosts", "  hosts: [\"*.example.com\", reviews.shop.svc.cluster.local]\n  http:\n  - route: [{destination: {host: a}}]\n", nil},
		{"no hosts", "  hosts: []\n  http:\n  - route: [{destination: {host: a}}]\n", []string{"spec.hosts: required: a VirtualService needs at least one host"}},
		{"enum by number and quoted ints", "  http:\n  - route: [{destination: {host: a, port: {number: \"9080\"}}}]\n    corsPolicy: {unmatchedPreflights: 1}\n", nil},
		{"duration too fine", "  http:\n  - route: [{destination: {host: a}}]\n    timeout: 500us\n", []string{"spec.http[0].timeout: must be at least 1ms, got 500µs"}},
		{"snake case field names", "  http:\n  - route: [{destination: {host: a}}]\n    mirror_percentage: {value: 50}\n", nil},
		{"tcp", "  tcp:\n  - match: [{port: 70000, destinationSubnets: [10.0.0.0/40]}]\n    route: [{destination: {host: a}}]\n", []string{
			"spec.tcp[0].match[0].destinationSubnets[0]: invalid CIDR \"10.0.0.0/40\"",
			"spec.tcp[0].match[0].port: must be between 1 and 65535, got 70000"}},
		{"int32 overflow", "  http:\n  - route: [{destination: {host: a}, weight: 3000000000}]\n", []string{
			"spec.http[0].route[0].weight: 3000000000 is out of range for a 32-bit integer"}},
	}
	for i := range cases {
		if !strings.Contains(cases[i].spec, "hosts:") {
			cases[i].spec = "  hosts: [reviews]\n" + cases[i].spec
		}
	}
	runValidation(t, header, cases)
}

func TestValidateDestinationRule(t *testing.T) {
	header := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n"
	runValidation(t, header, []validationCase{
		{"ok", "  host: reviews\n  trafficPolicy:\n    connectionPool:\n      http: {http2MaxRequests: 100}\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n", nil},
		{"host required", "  subsets: [{name: v1, labels: {version: v1}}]\n", []string{"spec.host: required"}},
		{"subset without name or labels", "  host: reviews\n  subsets:\n  - labels: {version: v1}\n  - name: v2\n", []string{
			"spec.subsets[0].name: required",
			"spec.subsets[1].labels: required: a subset selects endpoints by labels; without them it is the whole service"}},
		{"duplicate subsets", "  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n", []string{
			`spec.subsets[1].name: duplicate subset name "v1" (also subsets[0])`}},
		{"lb policy enum", "  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n", []string{
			`spec.trafficPolicy.loadBalancer.simple: invalid value "FASTEST": must be one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST`}},
		{"simple and consistent hash", "  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n", []string{
			`spec.trafficPolicy.loadBalancer.simple: only one of simple, consistentHash may be set, found "consistentHash" and "simple"`}},
		{"negative limits", "  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: -1}\n", []string{
			"spec.trafficPolicy.connectionPool.tcp.maxConnections: must be >= 0, got -1"}},
		{"tls mutual", "  host: reviews\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n", []string{
			"spec.trafficPolicy.tls.clientCertificate: required for mode MUTUAL unless credentialName is set",
			"spec.trafficPolicy.tls.privateKey: required for mode MUTUAL unless credentialName is set"}},
		{"uint32 wrapper negative", "  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: -1}\n", []string{
			"spec.trafficPolicy.outlierDetection.consecutive5xxErrors: must not be negative, got -1"}},
	})
}

func TestValidateAuthorizationPolicy(t *testing.T) {
	header := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\nspec:\n"
	runValidation(t, header, []validationCase{
		{"allow nothing", "  {}\n", nil},
		{"ok", "  targetRefs: [{kind: Service, group: \"\", name: reviews}]\n  action: DENY\n  rules:\n  - from: [{source: {notNamespaces: [prod], remoteIpBlocks: [\"192.168.1.1\"]}}]\n    to: [{operation: {notPaths: [\"/admin*\"], ports: [\"8080\"]}}]\n    when: [{key: \"request.auth.claims[iss]\", values: [\"https://example.com\"]}]\n", nil},
		{"custom needs provider", "  action: CUSTOM\n", []string{"spec.provider.name: required for action CUSTOM"}},
		{"action", "  action: allow\n", []string{`spec.action: invalid value "allow": must be one of ALLOW, DENY, AUDIT, CUSTOM`}},
		{"selector and targetRefs", "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n", []string{
			"spec.selector: only one of selector and targetRefs may be set"}},
		{"target group", "  targetRefs: [{kind: Gateway, name: waypoint, namespace: other}]\n", []string{
			"spec.targetRefs[0].namespace: cross-namespace references are not supported; leave it empty",
			`spec.targetRefs[0].group: must be "gateway.networking.k8s.io" for kind Gateway, got ""`}},
		{"principals must be strings", "  rules:\n  - from: [{source: {principals: [1]}}]\n", []string{
			"spec.rules[0].from[0].source.principals[0]: expected string, got number 1 (quote the value to make it a string)"}},
		{"ports must be numbers", "  rules:\n  - to: [{operation: {ports: [\"80\", \"https\", \"0\"]}}]\n", []string{
			`spec.rules[0].to[0].operation.ports[1]: invalid port "https": must be a number`,
			"spec.rules[0].to[0].operation.ports[2]: must be between 1 and 65535, got 0"}},
		{"ip blocks", "  rules:\n  - from: [{source: {ipBlocks: [\"10.0.0.0/8\", \"2001:db8::/32\", \"10.0.0.256\"]}}]\n", []string{
			`spec.rules[0].from[0].source.ipBlocks[2]: invalid IP address or CIDR "10.0.0.256"`}},
		{"empty source", "  rules:\n  - from: [{source: {}}]\n", []string{
			"spec.rules[0].from[0].source: must not be empty: set at least one of principals, namespaces, serviceAccounts, ipBlocks..."}},
		{"when key", "  rules:\n  - when: [{key: source.ip, values: [\"10.0.0.0/33\"]}]\n", []string{
			`spec.rules[0].when[0].values[0]: invalid CIDR "10.0.0.0/33"`}},
		{"service accounts with principals", "  rules:\n  - from: [{source: {serviceAccounts: [shop/reviews], principals: [a]}}]\n", []string{
			"spec.rules[0].from[0].source.serviceAccounts: cannot be combined with principals or namespaces"}},
	})
}

func TestValidatePeerAuthentication(t *testing.T) {
	header := "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: p\nspec:\n"
	runValidation(t, header, []validationCase{
		{"strict", "  mtls: {mode: STRICT}\n", nil},
		{"port level", "  selector: {matchLabels: {app: a}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: PERMISSIVE}\n", nil},
		{"mode", "  mtls: {mode: strict}\n", []string{`spec.mtls.mode: invalid value "strict": must be one of UNSET, DISABLE, PERMISSIVE, STRICT`}},
		{"port level needs selector", "  portLevelMtls:\n    8080: {mode: DISABLE}\n", []string{
			"spec.portLevelMtls: requires a workload selector: port-level settings apply to the selected workloads' ports"}},
		{"port range", "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    70000: {mode: DISABLE}\n", []string{
			"spec.portLevelMtls[70000]: must be between 1 and 65535, got 70000"}},
		{"wildcard selector", "  selector: {matchLabels: {\"app*\": a}}\n", []string{
			"spec.selector.matchLabels[app*]: wildcards are not allowed in label keys",
			`spec.selector.matchLabels[app*]: invalid label key "app*": the name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit`}},
	})
}

func TestValidateWasmPlugin(t *testing.T) {
	header := "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: w\nspec:\n"
	runValidation(t, header, []validationCase{
		{"oci image without scheme", "  url: ghcr.io/example/plugin:v1\n  sha256: " + strings.Repeat("ab", 32) + "\n", nil},
		{"url required", "  phase: AUTHN\n", []string{"spec.url: required"}},
		{"phase", "  url: oci://x/y\n  phase: EARLY\n", []string{`spec.phase: invalid value "EARLY": must be one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS`}},
		{"env", "  url: oci://x/y\n  vmConfig:\n    env:\n    - {name: A, valueFrom: HOST, value: x}\n    - {name: A}\n", []string{
			"spec.vmConfig.env[0].value: may only be set when valueFrom is INLINE",
			`spec.vmConfig.env[1].name: duplicate variable "A" (also env[0])`}},
		{"plugin config is free-form", "  url: oci://x/y\n  pluginConfig:\n    nested: {list: [1, true, null], n: 1.5}\n", nil},
		{"plugin config must be an object", "  url: oci://x/y\n  pluginConfig: [1, 2]\n", []string{
			`spec.pluginConfig: expected object, got list (remove the leading "- ")`}},
	})
}
