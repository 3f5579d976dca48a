package authz

import (
	"net/netip"
	"strings"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// sm converts Istio's string form as internal/translate does.
func sm(vals ...string) []*meshv1.StringMatch {
	var out []*meshv1.StringMatch
	for _, s := range vals {
		switch {
		case s == "*":
			out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Any{Any: true}})
		case strings.HasSuffix(s, "*"):
			out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Prefix{Prefix: strings.TrimSuffix(s, "*")}})
		case strings.HasPrefix(s, "*"):
			out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Suffix{Suffix: strings.TrimPrefix(s, "*")}})
		default:
			out = append(out, &meshv1.StringMatch{Kind: &meshv1.StringMatch_Exact{Exact: s}})
		}
	}
	return out
}

const (
	allow = meshv1.Authorization_ALLOW
	deny  = meshv1.Authorization_DENY
	audit = meshv1.Authorization_AUDIT
)

func pol(t testing.TB, name string, action meshv1.Authorization_Action, rules ...*meshv1.Rule) *Policy {
	t.Helper()
	p, err := Compile(&meshv1.Authorization{Name: name, Namespace: "ns", Scope: meshv1.Authorization_NAMESPACE, Action: action, Rules: rules})
	if err != nil {
		t.Fatalf("Compile(%s): %v", name, err)
	}
	return p
}

func from(s *meshv1.Source) *meshv1.Rule       { return &meshv1.Rule{From: []*meshv1.Source{s}} }
func to(o *meshv1.Operation) *meshv1.Rule      { return &meshv1.Rule{To: []*meshv1.Operation{o}} }
func when(c ...*meshv1.Condition) *meshv1.Rule { return &meshv1.Rule{When: c} }
func cond(key string, vals ...string) *meshv1.Condition {
	return &meshv1.Condition{Key: key, Values: sm(vals...)}
}
func notCond(key string, vals ...string) *meshv1.Condition {
	return &meshv1.Condition{Key: key, NotValues: sm(vals...)}
}

var (
	curl = spiffe.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "curl"}
	prod = spiffe.ID{TrustDomain: "cluster.local", Namespace: "prod", ServiceAccount: "frontend"}
)

// mtls is a connection from curl (10.0.0.5) to 10.0.1.7:8080.
func mtls() Conn {
	return Conn{
		Source:          curl,
		SourceIP:        netip.MustParseAddr("10.0.0.5"),
		DestinationIP:   netip.MustParseAddr("10.0.1.7"),
		DestinationPort: 8080,
	}
}

func plaintext() Conn {
	c := mtls()
	c.Source = spiffe.ID{}
	return c
}

func with(c Conn, f func(*Conn)) Conn { f(&c); return c }

func TestEvaluate(t *testing.T) {
	type tc struct {
		name       string
		policies   []*Policy
		conn       Conn
		wantAllow  bool
		wantReason Reason
		wantPolicy string
	}
	P := func(name string, a meshv1.Authorization_Action, rules ...*meshv1.Rule) *Policy {
		return pol(t, name, a, rules...)
	}
	v6 := func(c *Conn) {
		c.SourceIP = netip.MustParseAddr("2001:db8:1::5")
		c.DestinationIP = netip.MustParseAddr("2001:db8:2::7")
	}
	tests := []tc{
		// Basics.
		{"no policies allow", nil, mtls(), true, ReasonNoPolicy, ""},
		{"allow without rules denies everything", []*Policy{P("allow-nothing", allow)}, mtls(), false, ReasonNotAllowed, "ns/allow-nothing"},
		{"allow with empty rule allows everything", []*Policy{P("allow-all", allow, &meshv1.Rule{})}, plaintext(), true, ReasonAllowed, "ns/allow-all"},
		{"deny without rules denies nothing", []*Policy{P("deny-nothing", deny)}, mtls(), true, ReasonNoPolicy, ""},
		{"deny with empty rule denies everything", []*Policy{P("deny-all", deny, &meshv1.Rule{})}, mtls(), false, ReasonDenied, "ns/deny-all"},
		{"deny before allow", []*Policy{P("allow-all", allow, &meshv1.Rule{}), P("deny-all", deny, &meshv1.Rule{})}, mtls(), false, ReasonDenied, "ns/deny-all"},
		{"non-matching deny then matching allow", []*Policy{
			P("deny-prod", deny, from(&meshv1.Source{Namespaces: sm("prod")})),
			P("allow-demo", allow, from(&meshv1.Source{Namespaces: sm("demo")})),
		}, mtls(), true, ReasonAllowed, "ns/allow-demo"},
		{"one of several allows matches", []*Policy{
			P("a", allow, from(&meshv1.Source{Namespaces: sm("prod")})),
			P("b", allow, from(&meshv1.Source{Namespaces: sm("demo")})),
		}, mtls(), true, ReasonAllowed, "ns/b"},
		{"no allow matches", []*Policy{
			P("a", allow, from(&meshv1.Source{Namespaces: sm("prod")})),
			P("b", allow, from(&meshv1.Source{Namespaces: sm("other")})),
		}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"any rule of a policy", []*Policy{P("a", allow,
			from(&meshv1.Source{Namespaces: sm("prod")}),
			to(&meshv1.Operation{Ports: []uint32{8080}}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"from and to both required", []*Policy{P("a", allow, &meshv1.Rule{
			From: []*meshv1.Source{{Namespaces: sm("demo")}},
			To:   []*meshv1.Operation{{Ports: []uint32{9090}}}})}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"any from entry", []*Policy{P("a", allow, &meshv1.Rule{
			From: []*meshv1.Source{{Namespaces: sm("prod")}, {Principals: sm("cluster.local/ns/demo/sa/curl")}}})}, mtls(), true, ReasonAllowed, "ns/a"},
		{"all fields of a source", []*Policy{P("a", allow, from(&meshv1.Source{
			Namespaces: sm("demo"), IpBlocks: []string{"192.168.0.0/16"}}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"empty source matches all", []*Policy{P("a", allow, from(&meshv1.Source{}))}, plaintext(), true, ReasonAllowed, "ns/a"},

		// Principals.
		{"principal exact", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("cluster.local/ns/demo/sa/curl")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"principal exact other", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("cluster.local/ns/demo/sa/other")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"principal with spiffe scheme never matches", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("spiffe://cluster.local/ns/demo/sa/curl")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"principal prefix", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("cluster.local/ns/demo/*")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"principal prefix crossing parts", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("cluster.local/ns/de*")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"principal prefix mismatch", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("cluster.local/ns/prod/*")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"principal suffix", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("*/sa/curl")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"principal suffix mismatch", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("*/sa/curly")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"principal any with mTLS", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("*")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"principal any needs mTLS", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("*")}))}, plaintext(), false, ReasonNotAllowed, "ns/a"},
		{"principal prefix never matches plaintext", []*Policy{P("a", allow, from(&meshv1.Source{Principals: sm("*", "cluster.local/*", "*/sa/curl")}))}, plaintext(), false, ReasonNotAllowed, "ns/a"},
		{"notPrincipals excludes", []*Policy{P("a", allow, from(&meshv1.Source{NotPrincipals: sm("cluster.local/ns/demo/sa/curl")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"notPrincipals other", []*Policy{P("a", allow, from(&meshv1.Source{NotPrincipals: sm("cluster.local/ns/demo/sa/x")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"notPrincipals does not exclude plaintext", []*Policy{P("a", allow, from(&meshv1.Source{NotPrincipals: sm("cluster.local/*")}))}, plaintext(), true, ReasonAllowed, "ns/a"},
		{"deny notPrincipals any denies plaintext (STRICT)", []*Policy{P("strict", deny, from(&meshv1.Source{NotPrincipals: sm("*")}))}, plaintext(), false, ReasonDenied, "ns/strict"},
		{"deny notPrincipals any lets mTLS through", []*Policy{P("strict", deny, from(&meshv1.Source{NotPrincipals: sm("*")}))}, mtls(), true, ReasonNoPolicy, ""},

		// Namespaces.
		{"namespace exact", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("demo")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"namespace prefix", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("de*")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"namespace suffix", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("*mo")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"namespace suffix mismatch", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("*od")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"namespace any needs identity", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("*")}))}, plaintext(), false, ReasonNotAllowed, "ns/a"},
		{"namespace any", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("*")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"notNamespaces excludes", []*Policy{P("a", deny, from(&meshv1.Source{NotNamespaces: sm("demo")}))}, mtls(), true, ReasonNoPolicy, ""},
		{"notNamespaces other", []*Policy{P("a", deny, from(&meshv1.Source{NotNamespaces: sm("prod")}))}, mtls(), false, ReasonDenied, "ns/a"},
		{"notNamespaces plaintext", []*Policy{P("a", deny, from(&meshv1.Source{NotNamespaces: sm("prod")}))}, plaintext(), false, ReasonDenied, "ns/a"},
		{"namespaces plaintext", []*Policy{P("a", deny, from(&meshv1.Source{Namespaces: sm("demo")}))}, plaintext(), true, ReasonNoPolicy, ""},

		// IP blocks.
		{"ipBlocks cidr", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.0.0/24"}}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"ipBlocks single", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.0.5"}}))}, plaintext(), true, ReasonAllowed, "ns/a"},
		{"ipBlocks unmasked cidr", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.0.77/24"}}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"ipBlocks miss", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.1.0/24", "10.0.0.6"}}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"ipBlocks v4-mapped source", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.0.0/24"}}))},
			with(mtls(), func(c *Conn) { c.SourceIP = netip.MustParseAddr("::ffff:10.0.0.5") }), true, ReasonAllowed, "ns/a"},
		{"ipBlocks v4 does not match v6", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"0.0.0.0/0"}}))}, with(mtls(), v6), false, ReasonNotAllowed, "ns/a"},
		{"ipBlocks v6 cidr", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"2001:db8:1::/48"}}))}, with(mtls(), v6), true, ReasonAllowed, "ns/a"},
		{"ipBlocks v6 single", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"2001:db8:1::5"}}))}, with(mtls(), v6), true, ReasonAllowed, "ns/a"},
		{"ipBlocks v6 miss", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"2001:db8:2::/48"}}))}, with(mtls(), v6), false, ReasonNotAllowed, "ns/a"},
		{"notIpBlocks", []*Policy{P("a", allow, from(&meshv1.Source{NotIpBlocks: []string{"10.0.0.0/8"}}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"notIpBlocks v6", []*Policy{P("a", deny, from(&meshv1.Source{NotIpBlocks: []string{"2001:db8::/32"}}))}, with(mtls(), v6), true, ReasonNoPolicy, ""},
		{"ipBlocks and notIpBlocks", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.0.0/8"}, NotIpBlocks: []string{"10.0.0.0/24"}}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"remoteIpBlocks like ipBlocks", []*Policy{P("a", allow, from(&meshv1.Source{RemoteIpBlocks: []string{"10.0.0.0/24"}}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"notRemoteIpBlocks like notIpBlocks", []*Policy{P("a", deny, from(&meshv1.Source{NotRemoteIpBlocks: []string{"10.0.0.0/24"}}))}, mtls(), true, ReasonNoPolicy, ""},
		{"remoteIpBlocks miss", []*Policy{P("a", deny, from(&meshv1.Source{RemoteIpBlocks: []string{"192.0.2.0/24"}}))}, mtls(), true, ReasonNoPolicy, ""},

		// Ports.
		{"ports", []*Policy{P("a", allow, to(&meshv1.Operation{Ports: []uint32{80, 8080}}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"ports miss", []*Policy{P("a", allow, to(&meshv1.Operation{Ports: []uint32{80}}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"notPorts", []*Policy{P("a", allow, to(&meshv1.Operation{NotPorts: []uint32{8080}}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"notPorts other", []*Policy{P("a", allow, to(&meshv1.Operation{NotPorts: []uint32{9090}}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"any to entry", []*Policy{P("a", allow, &meshv1.Rule{To: []*meshv1.Operation{{Ports: []uint32{1}}, {Ports: []uint32{8080}}}})}, mtls(), true, ReasonAllowed, "ns/a"},

		// L7 attributes in ALLOW: the rule never matches (fail closed).
		{"allow with methods fails closed", []*Policy{P("a", allow, &meshv1.Rule{
			From: []*meshv1.Source{{Principals: sm("cluster.local/ns/demo/sa/curl")}},
			To:   []*meshv1.Operation{{Methods: sm("GET")}}})}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with paths in one of two to entries fails closed", []*Policy{P("a", allow, &meshv1.Rule{
			To: []*meshv1.Operation{{Ports: []uint32{8080}}, {Paths: sm("/api*")}}})}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with hosts fails closed", []*Policy{P("a", allow, to(&meshv1.Operation{NotHosts: sm("x.com")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with requestPrincipals fails closed", []*Policy{P("a", allow, from(&meshv1.Source{RequestPrincipals: sm("*")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with notRequestPrincipals fails closed", []*Policy{P("a", allow, from(&meshv1.Source{NotRequestPrincipals: sm("*")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with header condition fails closed", []*Policy{P("a", allow, when(cond("request.headers[x-token]", "secret")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with unknown when key fails closed", []*Policy{P("a", allow, when(cond("source.bogus", "x")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow with sni condition fails closed", []*Policy{P("a", allow, when(cond("connection.sni", "x")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"allow L7 rule next to L4 rule", []*Policy{P("a", allow,
			to(&meshv1.Operation{Methods: sm("GET")}),
			from(&meshv1.Source{Namespaces: sm("demo")}))}, mtls(), true, ReasonAllowed, "ns/a"},

		// L7 attributes in DENY: evaluated as if they matched (denies more).
		{"deny with methods denies all methods", []*Policy{P("a", deny, to(&meshv1.Operation{Methods: sm("DELETE")}))}, mtls(), false, ReasonDenied, "ns/a"},
		{"deny with methods keeps the port", []*Policy{P("a", deny, to(&meshv1.Operation{Methods: sm("DELETE"), Ports: []uint32{8080}}))}, mtls(), false, ReasonDenied, "ns/a"},
		{"deny with methods other port", []*Policy{P("a", deny, to(&meshv1.Operation{Methods: sm("DELETE"), Ports: []uint32{9090}}))}, mtls(), true, ReasonNoPolicy, ""},
		{"deny with requestPrincipals keeps namespaces", []*Policy{P("a", deny, from(&meshv1.Source{RequestPrincipals: sm("*"), Namespaces: sm("prod")}))}, mtls(), true, ReasonNoPolicy, ""},
		{"deny with requestPrincipals alone matches all", []*Policy{P("a", deny, from(&meshv1.Source{NotRequestPrincipals: sm("*")}))}, plaintext(), false, ReasonDenied, "ns/a"},
		{"deny with header condition", []*Policy{P("a", deny, when(cond("request.headers[x]", "1"), cond("source.namespace", "demo")))}, mtls(), false, ReasonDenied, "ns/a"},
		{"deny with header condition and other L4 condition", []*Policy{P("a", deny, when(cond("request.headers[x]", "1"), cond("source.namespace", "prod")))}, mtls(), true, ReasonNoPolicy, ""},
		{"deny with unknown when key", []*Policy{P("a", deny, when(cond("foo.bar", "1")))}, mtls(), false, ReasonDenied, "ns/a"},

		// When conditions.
		{"when source.ip", []*Policy{P("a", allow, when(cond("source.ip", "10.0.0.0/24")))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"when source.ip miss", []*Policy{P("a", allow, when(cond("source.ip", "10.9.0.0/16", "10.0.0.6")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when source.ip notValues", []*Policy{P("a", allow, when(notCond("source.ip", "10.0.0.5")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when source.ip v6", []*Policy{P("a", allow, when(cond("source.ip", "2001:db8:1::/64")))}, with(mtls(), v6), true, ReasonAllowed, "ns/a"},
		{"when destination.ip", []*Policy{P("a", allow, when(cond("destination.ip", "10.0.1.7")))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"when destination.ip miss", []*Policy{P("a", allow, when(cond("destination.ip", "10.0.1.8")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when destination.ip v6 notValues", []*Policy{P("a", deny, when(notCond("destination.ip", "2001:db8:2::/64")))}, with(mtls(), v6), true, ReasonNoPolicy, ""},
		{"when destination.port", []*Policy{P("a", allow, when(cond("destination.port", "8080")))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"when destination.port miss", []*Policy{P("a", allow, when(cond("destination.port", "80")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when destination.port notValues", []*Policy{P("a", allow, when(notCond("destination.port", "8080")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when destination.port any", []*Policy{P("a", allow, when(cond("destination.port", "*")))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"when source.namespace", []*Policy{P("a", allow, when(cond("source.namespace", "dem*")))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"when source.namespace plaintext", []*Policy{P("a", allow, when(cond("source.namespace", "*")))}, plaintext(), false, ReasonNotAllowed, "ns/a"},
		{"when source.namespace notValues", []*Policy{P("a", allow, when(notCond("source.namespace", "demo")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when source.principal", []*Policy{P("a", allow, when(cond("source.principal", "*/sa/curl")))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"when source.principal notValues plaintext", []*Policy{P("a", allow, when(notCond("source.principal", "*")))}, plaintext(), true, ReasonAllowed, "ns/a"},
		{"when all conditions", []*Policy{P("a", allow, when(cond("source.namespace", "demo"), cond("destination.port", "80")))}, mtls(), false, ReasonNotAllowed, "ns/a"},
		{"when values and notValues", []*Policy{P("a", allow, when(&meshv1.Condition{Key: "source.ip", Values: sm("10.0.0.0/8"), NotValues: sm("10.0.0.5")}))}, mtls(), false, ReasonNotAllowed, "ns/a"},

		// Plaintext vs mTLS on the same policy.
		{"allow demo namespace mTLS", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("demo")}))}, mtls(), true, ReasonAllowed, "ns/a"},
		{"allow demo namespace plaintext", []*Policy{P("a", allow, from(&meshv1.Source{Namespaces: sm("demo")}))}, plaintext(), false, ReasonNotAllowed, "ns/a"},
		{"allow by ip plaintext", []*Policy{P("a", allow, from(&meshv1.Source{IpBlocks: []string{"10.0.0.0/8"}}))}, plaintext(), true, ReasonAllowed, "ns/a"},

		// AUDIT never decides.
		{"audit alone", []*Policy{P("a", audit, &meshv1.Rule{})}, mtls(), true, ReasonNoPolicy, ""},
		{"audit with allow-nothing", []*Policy{P("a", audit, &meshv1.Rule{}), P("b", allow)}, mtls(), false, ReasonNotAllowed, "ns/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Evaluate(tt.conn, Policies{Namespace: tt.policies})
			if d.Allow != tt.wantAllow || d.Reason != tt.wantReason || d.Policy != tt.wantPolicy {
				t.Errorf("Evaluate = {Allow:%v Reason:%v Policy:%q}, want {Allow:%v Reason:%v Policy:%q}",
					d.Allow, d.Reason, d.Policy, tt.wantAllow, tt.wantReason, tt.wantPolicy)
			}
		})
	}
}

func TestEvaluateScopes(t *testing.T) {
	mk := func(name string, scope meshv1.Authorization_Scope, action meshv1.Authorization_Action, rules ...*meshv1.Rule) *Policy {
		p, err := Compile(&meshv1.Authorization{Name: name, Namespace: "ns", Scope: scope, Action: action, Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	global := mk("global-deny-prod", meshv1.Authorization_GLOBAL, deny, from(&meshv1.Source{Namespaces: sm("prod")}))
	nsAllow := mk("ns-allow-demo", meshv1.Authorization_NAMESPACE, allow, from(&meshv1.Source{Namespaces: sm("demo")}))
	selDeny := mk("sel-deny-8080", meshv1.Authorization_WORKLOAD_SELECTOR, deny, to(&meshv1.Operation{Ports: []uint32{8080}}))
	selAllow := mk("sel-allow-all", meshv1.Authorization_WORKLOAD_SELECTOR, allow, &meshv1.Rule{})
	nsDenyAll := mk("ns-deny-all", meshv1.Authorization_NAMESPACE, deny, &meshv1.Rule{})
	table := PolicyMap{}
	for _, p := range []*Policy{global, nsAllow, selDeny, selAllow, nsDenyAll} {
		table[p.Key] = p
	}
	fromProd := with(mtls(), func(c *Conn) { c.Source = prod })
	tests := []struct {
		name       string
		ps         Policies
		conn       Conn
		wantAllow  bool
		wantReason Reason
		wantPolicy string
	}{
		{"global deny", Policies{Global: []*Policy{global}}, fromProd, false, ReasonDenied, "ns/global-deny-prod"},
		{"global deny other ns", Policies{Global: []*Policy{global}}, mtls(), true, ReasonNoPolicy, ""},
		{"global deny wins over namespace allow", Policies{Global: []*Policy{global}, Namespace: []*Policy{nsAllow}}, fromProd, false, ReasonDenied, "ns/global-deny-prod"},
		{"namespace allow", Policies{Global: []*Policy{global}, Namespace: []*Policy{nsAllow}}, mtls(), true, ReasonAllowed, "ns/ns-allow-demo"},
		{"selector deny resolves", Policies{Namespace: []*Policy{nsAllow}, Selected: []string{"ns/sel-deny-8080"}, Resolver: table}, mtls(), false, ReasonDenied, "ns/sel-deny-8080"},
		{"selector allow adds to namespace allow", Policies{Namespace: []*Policy{nsAllow}, Selected: []string{"ns/sel-allow-all"}, Resolver: table}, fromProd, true, ReasonAllowed, "ns/sel-allow-all"},
		{"selected key of a namespace policy is ignored", Policies{Selected: []string{"ns/ns-deny-all"}, Resolver: table}, mtls(), true, ReasonNoPolicy, ""},
		{"unresolved selected key fails closed", Policies{Namespace: []*Policy{nsAllow}, Selected: []string{"ns/missing"}, Resolver: table}, mtls(), false, ReasonUnresolvedPolicy, "ns/missing"},
		{"unresolved without resolver fails closed", Policies{Selected: []string{"ns/sel-allow-all"}}, mtls(), false, ReasonUnresolvedPolicy, "ns/sel-allow-all"},
		{"deny reported before unresolved", Policies{Global: []*Policy{global}, Selected: []string{"ns/missing"}, Resolver: table}, fromProd, false, ReasonDenied, "ns/global-deny-prod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Evaluate(tt.conn, tt.ps)
			if d.Allow != tt.wantAllow || d.Reason != tt.wantReason || d.Policy != tt.wantPolicy {
				t.Errorf("Evaluate = {Allow:%v Reason:%v Policy:%q}, want {Allow:%v Reason:%v Policy:%q}",
					d.Allow, d.Reason, d.Policy, tt.wantAllow, tt.wantReason, tt.wantPolicy)
			}
		})
	}
}

func TestEvaluateAuditAndDryRun(t *testing.T) {
	mk := func(name string, action meshv1.Authorization_Action, dry bool, rules ...*meshv1.Rule) *Policy {
		p, err := Compile(&meshv1.Authorization{Name: name, Namespace: "ns", Scope: meshv1.Authorization_NAMESPACE, Action: action, DryRun: dry, Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	auditDemo := mk("audit-demo", audit, false, from(&meshv1.Source{Namespaces: sm("demo")}))
	auditProd := mk("audit-prod", audit, false, from(&meshv1.Source{Namespaces: sm("prod")}))
	dryDeny := mk("dry-deny", deny, true, &meshv1.Rule{})
	dryAllowProd := mk("dry-allow-prod", allow, true, from(&meshv1.Source{Namespaces: sm("prod")}))

	d := Evaluate(mtls(), Policies{Namespace: []*Policy{auditProd, auditDemo}})
	if !d.Allow || d.Audit != "ns/audit-demo" || d.DryRun.Applied {
		t.Errorf("audit: %+v", d)
	}
	d = Evaluate(mtls(), Policies{Namespace: []*Policy{dryDeny}})
	if !d.Allow || d.Reason != ReasonNoPolicy || !d.DryRun.Applied || d.DryRun.Allow || d.DryRun.Reason != ReasonDenied || d.DryRun.Policy != "ns/dry-deny" {
		t.Errorf("dry-run deny: %+v", d)
	}
	d = Evaluate(mtls(), Policies{Namespace: []*Policy{dryAllowProd}})
	if !d.Allow || !d.DryRun.Applied || d.DryRun.Allow || d.DryRun.Reason != ReasonNotAllowed {
		t.Errorf("dry-run allow: %+v", d)
	}
	// A dry-run ALLOW does not make enforced ALLOW semantics apply.
	d = Evaluate(mtls(), Policies{Namespace: []*Policy{dryAllowProd, mk("allow-demo", allow, false, from(&meshv1.Source{Namespaces: sm("demo")}))}})
	if !d.Allow || d.Reason != ReasonAllowed || d.Policy != "ns/allow-demo" {
		t.Errorf("mixed: %+v", d)
	}
}

func TestCompileUnsupported(t *testing.T) {
	p := pol(t, "l7", allow, &meshv1.Rule{
		From: []*meshv1.Source{{RequestPrincipals: sm("*")}},
		To:   []*meshv1.Operation{{Methods: sm("GET"), Paths: sm("/x")}},
		When: []*meshv1.Condition{cond("request.auth.claims[iss]", "x"), cond("source.ip", "10.0.0.1")},
	})
	want := []string{
		"rules[0].from[0].request_principals",
		"rules[0].to[0].methods",
		"rules[0].to[0].paths",
		`rules[0].when[0] "request.auth.claims[iss]"`,
	}
	if strings.Join(p.Unsupported, ",") != strings.Join(want, ",") {
		t.Errorf("Unsupported = %q, want %q", p.Unsupported, want)
	}
	if pol(t, "l4", allow, from(&meshv1.Source{Namespaces: sm("x")})).Unsupported != nil {
		t.Error("L4 policy has Unsupported")
	}
}

func TestCompileErrors(t *testing.T) {
	base := func(rules ...*meshv1.Rule) *meshv1.Authorization {
		return &meshv1.Authorization{Name: "p", Namespace: "ns", Action: allow, Rules: rules}
	}
	tests := []struct {
		name string
		in   *meshv1.Authorization
		want string
	}{
		{"nil", nil, "nil Authorization"},
		{"no name", &meshv1.Authorization{Namespace: "ns"}, "name: required"},
		{"no namespace", &meshv1.Authorization{Name: "p"}, "namespace: required"},
		{"bad scope", &meshv1.Authorization{Name: "p", Namespace: "ns", Scope: 7}, "scope: unknown value 7"},
		{"bad action", &meshv1.Authorization{Name: "p", Namespace: "ns", Action: 9}, "action: unknown value 9"},
		{"null rule", base(nil), "rules[0]: null rule"},
		{"bad cidr", base(from(&meshv1.Source{IpBlocks: []string{"10.0.0.0/8", "10.0.0.256"}})), `rules[0].from[0].ip_blocks[1]: invalid IP address or CIDR "10.0.0.256"`},
		{"bad cidr bits", base(from(&meshv1.Source{NotRemoteIpBlocks: []string{"10.0.0.0/33"}})), `rules[0].from[0].not_remote_ip_blocks[0]: invalid IP address or CIDR "10.0.0.0/33"`},
		{"zone", base(from(&meshv1.Source{NotIpBlocks: []string{"fe80::1%eth0"}})), `rules[0].from[0].not_ip_blocks[0]: invalid IP address or CIDR "fe80::1%eth0"`},
		{"port 0", base(to(&meshv1.Operation{Ports: []uint32{0}})), "rules[0].to[0].ports[0]: invalid port 0: want 1-65535"},
		{"port too big", base(to(&meshv1.Operation{NotPorts: []uint32{70000}})), "rules[0].to[0].not_ports[0]: invalid port 70000: want 1-65535"},
		{"empty string match", base(from(&meshv1.Source{Principals: []*meshv1.StringMatch{{}}})), "rules[0].from[0].principals[0]: no match kind set (want exact, prefix, suffix or any)"},
		{"any false", base(from(&meshv1.Source{Namespaces: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Any{}}}})), "rules[0].from[0].namespaces[0]: any: must be true when set"},
		{"empty L7 match", base(to(&meshv1.Operation{Methods: []*meshv1.StringMatch{{}}})), "rules[0].to[0].methods[0]: no match kind set (want exact, prefix, suffix or any)"},
		{"when without key", base(when(&meshv1.Condition{Values: sm("x")})), "rules[0].when[0].key: required"},
		{"when without values", base(when(&meshv1.Condition{Key: "source.ip"})), "rules[0].when[0]: one of values and not_values is required"},
		{"when bad ip", base(when(cond("source.ip", "nope"))), `rules[0].when[0].values[0]: invalid IP address or CIDR "nope"`},
		{"when prefix ip", base(when(cond("destination.ip", "10.*"))), "rules[0].when[0].values[0]: an IP condition takes an address or CIDR, not a prefix or suffix match"},
		{"when bad port", base(when(notCond("destination.port", "http"))), `rules[0].when[0].not_values[0]: invalid port "http": want a number in 1-65535`},
		{"when suffix port", base(when(cond("destination.port", "*80"))), "rules[0].when[0].values[0]: a port condition takes a number, not a prefix or suffix match"},
		{"null source", base(&meshv1.Rule{From: []*meshv1.Source{nil}}), "rules[0].from[0]: null source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Compile error = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestMatchPrincipal checks the allocation-free principal matching against
// plain string operations on spiffe.ID.Principal().
func TestMatchPrincipal(t *testing.T) {
	ids := []spiffe.ID{curl, prod, {TrustDomain: "td", Namespace: "a", ServiceAccount: "b"}}
	pats := []string{
		"", "c", "cluster.local", "cluster.local/", "cluster.local/ns/", "cluster.local/ns/demo/sa/curl",
		"cluster.local/ns/demo/sa/curlx", "xcluster.local/ns/demo/sa/curl", "/sa/curl", "curl", "url", "l/ns/d",
		"td/ns/a/sa/b", "a/sa/b", "/ns/a/", "ns", "local/ns/prod/sa/frontend", "td/ns/a/sa/bb",
	}
	for _, id := range ids {
		pr := id.Principal()
		for _, p := range pats {
			for _, kind := range []matchKind{matchExact, matchPrefix, matchSuffix, matchAny} {
				m := strMatch{kind: kind, s: p}
				var want bool
				switch kind {
				case matchExact:
					want = pr == p
				case matchPrefix:
					want = strings.HasPrefix(pr, p)
				case matchSuffix:
					want = strings.HasSuffix(pr, p)
				case matchAny:
					want = pr != ""
				}
				if got := m.matchPrincipal(&id); got != want {
					t.Errorf("kind %d %q vs %q: got %v, want %v", kind, p, pr, got, want)
				}
			}
		}
	}
}

func TestReasonString(t *testing.T) {
	for r, want := range map[Reason]string{
		ReasonNoPolicy: "no_policy", ReasonDenied: "denied", ReasonAllowed: "allowed",
		ReasonNotAllowed: "not_allowed", ReasonUnresolvedPolicy: "unresolved_policy", Reason(99): "unknown",
	} {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", r, r.String(), want)
		}
	}
}
