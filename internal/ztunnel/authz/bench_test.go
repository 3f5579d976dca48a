package authz

import (
	"fmt"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// tenPolicies is a typical set for one workload: a global deny, namespace
// allows by principal / namespace / IP / port, selector policies, an audit.
func tenPolicies(tb testing.TB) Policies {
	mk := func(name string, scope meshv1.Authorization_Scope, action meshv1.Authorization_Action, rules ...*meshv1.Rule) *Policy {
		p, err := Compile(&meshv1.Authorization{Name: name, Namespace: "ns", Scope: scope, Action: action, Rules: rules})
		if err != nil {
			tb.Fatal(err)
		}
		return p
	}
	var ps Policies
	ps.Global = []*Policy{
		mk("deny-blocked", meshv1.Authorization_GLOBAL, deny, from(&meshv1.Source{IpBlocks: []string{"192.0.2.0/24", "2001:db8:dead::/48"}})),
		mk("deny-plaintext", meshv1.Authorization_GLOBAL, deny, &meshv1.Rule{
			From: []*meshv1.Source{{NotPrincipals: sm("*")}},
			To:   []*meshv1.Operation{{Ports: []uint32{9999}}},
		}),
	}
	for i := 0; i < 4; i++ {
		ps.Namespace = append(ps.Namespace, mk(fmt.Sprintf("allow-%d", i), meshv1.Authorization_NAMESPACE, allow, &meshv1.Rule{
			From: []*meshv1.Source{{Principals: sm(fmt.Sprintf("cluster.local/ns/team%d/sa/*", i), "*/sa/admin")}, {Namespaces: sm(fmt.Sprintf("team%d-*", i))}},
			To:   []*meshv1.Operation{{Ports: []uint32{80, 443}}},
		}))
	}
	table := PolicyMap{}
	sel := []*Policy{
		mk("sel-deny-debug", meshv1.Authorization_WORKLOAD_SELECTOR, deny, to(&meshv1.Operation{Ports: []uint32{6060}})),
		mk("sel-allow-ip", meshv1.Authorization_WORKLOAD_SELECTOR, allow, when(cond("source.ip", "10.1.0.0/16"), cond("destination.port", "8081"))),
		mk("sel-audit", meshv1.Authorization_WORKLOAD_SELECTOR, audit, from(&meshv1.Source{Namespaces: sm("demo")})),
		mk("sel-allow-curl", meshv1.Authorization_WORKLOAD_SELECTOR, allow, from(&meshv1.Source{Principals: sm("cluster.local/ns/demo/sa/curl")})),
	}
	for _, p := range sel {
		table[p.Key] = p
		ps.Selected = append(ps.Selected, p.Key)
	}
	ps.Resolver = table
	return ps
}

func TestEvaluateAllocs(t *testing.T) {
	ps := tenPolicies(t)
	for _, c := range []Conn{mtls(), plaintext()} {
		var d Decision
		n := testing.AllocsPerRun(200, func() { d = Evaluate(c, ps) })
		if n != 0 {
			t.Errorf("Evaluate allocates %v times", n)
		}
		_ = d
	}
	if d := Evaluate(mtls(), ps); !d.Allow || d.Policy != "ns/sel-allow-curl" || d.Audit != "ns/sel-audit" {
		t.Errorf("mtls: %+v", d)
	}
	if d := Evaluate(plaintext(), ps); d.Allow || d.Reason != ReasonNotAllowed {
		t.Errorf("plaintext: %+v", d)
	}
}

// go test -run '^$' -bench Evaluate -benchmem ./internal/ztunnel/authz/
func BenchmarkEvaluate10Policies(b *testing.B) {
	ps := tenPolicies(b)
	for _, bc := range []struct {
		name string
		c    Conn
	}{{"allowed-last", mtls()}, {"denied-plaintext", plaintext()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Evaluate(bc.c, ps)
			}
		})
	}
}
