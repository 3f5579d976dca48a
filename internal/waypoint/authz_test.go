package waypoint

import (
	"net/http"
	"net/netip"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
)

func exact(s string) *meshv1.StringMatch {
	return &meshv1.StringMatch{Kind: &meshv1.StringMatch_Exact{Exact: s}}
}
func prefix(s string) *meshv1.StringMatch {
	return &meshv1.StringMatch{Kind: &meshv1.StringMatch_Prefix{Prefix: s}}
}
func anyMatch() *meshv1.StringMatch {
	return &meshv1.StringMatch{Kind: &meshv1.StringMatch_Any{Any: true}}
}

func TestAuthorize(t *testing.T) {
	const svc = "shop/echo.shop.svc.cluster.local"
	client := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
	other := spiffe.ID{TrustDomain: "cluster.local", Namespace: "other", ServiceAccount: "x"}
	policy := func(name string, action meshv1.Authorization_Action, rules ...*meshv1.Rule) *meshv1.Authorization {
		return &meshv1.Authorization{Name: name, Namespace: "shop", Action: action, Rules: rules}
	}
	denyAdmin := policy("deny-admin", meshv1.Authorization_DENY, &meshv1.Rule{To: []*meshv1.Operation{{Paths: []*meshv1.StringMatch{prefix("/admin")}}}})
	allowClientGet := policy("allow-get", meshv1.Authorization_ALLOW, &meshv1.Rule{
		From: []*meshv1.Source{{Principals: []*meshv1.StringMatch{exact("cluster.local/ns/shop/sa/client")}}},
		To:   []*meshv1.Operation{{Methods: []*meshv1.StringMatch{exact("GET")}}},
	})
	// to[0] and to[1] are alternatives: port 80 with GET, or port 90 with POST.
	pairs := policy("pairs", meshv1.Authorization_ALLOW, &meshv1.Rule{To: []*meshv1.Operation{
		{Ports: []uint32{80}, Methods: []*meshv1.StringMatch{exact("GET")}},
		{Ports: []uint32{90}, Methods: []*meshv1.StringMatch{exact("POST")}},
	}})
	headerWhen := policy("header", meshv1.Authorization_ALLOW, &meshv1.Rule{When: []*meshv1.Condition{{Key: "request.headers[x-token]", Values: []*meshv1.StringMatch{exact("secret")}}}})
	notHosts := policy("hosts", meshv1.Authorization_DENY, &meshv1.Rule{To: []*meshv1.Operation{{NotHosts: []*meshv1.StringMatch{exact("echo.shop")}}}})
	nsWhen := policy("ns", meshv1.Authorization_DENY, &meshv1.Rule{When: []*meshv1.Condition{{Key: "source.namespace", Values: []*meshv1.StringMatch{exact("other")}}}})
	jwt := policy("jwt", meshv1.Authorization_ALLOW, &meshv1.Rule{From: []*meshv1.Source{{RequestPrincipals: []*meshv1.StringMatch{anyMatch()}}}})
	emptyAllow := policy("nothing", meshv1.Authorization_ALLOW)

	req := func(method, host, path string, h http.Header) *requestAttrs {
		return &requestAttrs{method: method, host: host, path: path, header: h}
	}
	for _, c := range []struct {
		name     string
		policies []*meshv1.Authorization
		scoped   map[string][]string
		peer     spiffe.ID
		port     uint16
		req      *requestAttrs
		want     bool
		decider  string
	}{
		{"no policy allows", nil, nil, client, 80, req("GET", "echo", "/", nil), true, ""},
		{"deny matches", []*meshv1.Authorization{denyAdmin}, nil, client, 80, req("GET", "echo", "/admin/x", nil), false, "shop/deny-admin"},
		{"deny does not match", []*meshv1.Authorization{denyAdmin}, nil, client, 80, req("GET", "echo", "/ok", nil), true, ""},
		{"deny before allow", []*meshv1.Authorization{allowClientGet, denyAdmin}, nil, client, 80, req("GET", "echo", "/admin", nil), false, "shop/deny-admin"},
		{"allow matches", []*meshv1.Authorization{allowClientGet}, nil, client, 80, req("GET", "echo", "/", nil), true, "shop/allow-get"},
		{"allow: wrong method", []*meshv1.Authorization{allowClientGet}, nil, client, 80, req("POST", "echo", "/", nil), false, "shop/allow-get"},
		{"allow: wrong principal", []*meshv1.Authorization{allowClientGet}, nil, other, 80, req("GET", "echo", "/", nil), false, "shop/allow-get"},
		{"pairs: port 80 GET", []*meshv1.Authorization{pairs}, nil, client, 80, req("GET", "echo", "/", nil), true, "shop/pairs"},
		{"pairs: port 80 POST is not port 90's POST", []*meshv1.Authorization{pairs}, nil, client, 80, req("POST", "echo", "/", nil), false, "shop/pairs"},
		{"pairs: port 90 POST", []*meshv1.Authorization{pairs}, nil, client, 90, req("POST", "echo", "/", nil), true, "shop/pairs"},
		{"header condition present", []*meshv1.Authorization{headerWhen}, nil, client, 80, req("GET", "echo", "/", http.Header{"X-Token": {"secret"}}), true, "shop/header"},
		{"header condition absent", []*meshv1.Authorization{headerWhen}, nil, client, 80, req("GET", "echo", "/", nil), false, "shop/header"},
		{"notHosts: host with port matches hostname", []*meshv1.Authorization{notHosts}, nil, client, 80, req("GET", "ECHO.shop:80", "/", nil), true, ""},
		{"notHosts: other host denied", []*meshv1.Authorization{notHosts}, nil, client, 80, req("GET", "evil", "/", nil), false, "shop/hosts"},
		{"L4 condition in an L7 policy", []*meshv1.Authorization{nsWhen}, nil, other, 80, req("GET", "echo", "/", nil), false, "shop/ns"},
		{"request principal never present", []*meshv1.Authorization{jwt}, nil, client, 80, req("GET", "echo", "/", nil), false, "shop/jwt"},
		{"ALLOW without rules denies", []*meshv1.Authorization{emptyAllow}, nil, client, 80, req("GET", "echo", "/", nil), false, "shop/nothing"},
		{"policy scoped to another service", []*meshv1.Authorization{emptyAllow}, map[string][]string{"shop/nothing": {"shop/other.shop.svc.cluster.local"}}, client, 80, req("GET", "echo", "/", nil), true, ""},
		{"L4 relay: ALLOW rule needing HTTP matches nothing", []*meshv1.Authorization{allowClientGet}, nil, client, 80, nil, false, "shop/allow-get"},
		{"L4 relay: DENY enforced without its HTTP half", []*meshv1.Authorization{denyAdmin}, nil, client, 80, nil, false, "shop/deny-admin"},
		{"L4 relay: DENY on another namespace only", []*meshv1.Authorization{nsWhen}, nil, client, 80, nil, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			wc := &meshv1.WaypointConfig{Name: "waypoint", Namespace: "shop", Policies: c.policies}
			for k, v := range c.scoped {
				if wc.PolicyServices == nil {
					wc.PolicyServices = map[string]*meshv1.ServiceList{}
				}
				wc.PolicyServices[k] = &meshv1.ServiceList{Services: v}
			}
			cfg, err := compileConfig(wc)
			if err != nil {
				t.Fatal(err)
			}
			conn := authz.Conn{Source: c.peer, SourceIP: netip.MustParseAddr("10.244.1.2"), DestinationIP: netip.MustParseAddr("10.96.0.10"), DestinationPort: c.port}
			got, decider := cfg.authorize(svc, &conn, c.req)
			if got != c.want || decider != c.decider {
				t.Errorf("got %v by %q, want %v by %q", got, decider, c.want, c.decider)
			}
		})
	}
}
