package routematch

import (
	"net/http"
	"net/url"
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

func TestMatchRequest(t *testing.T) {
	path := func(typ meshv1.PathMatch_Type, v string) *meshv1.RouteMatch {
		return &meshv1.RouteMatch{Path: &meshv1.PathMatch{Type: typ, Value: v}}
	}
	hdr := func(name string, typ meshv1.HeaderMatch_Type, v string, invert bool) *meshv1.RouteMatch {
		return &meshv1.RouteMatch{Headers: []*meshv1.HeaderMatch{{Name: name, Type: typ, Value: v, Invert: invert}}}
	}
	qp := func(name string, typ meshv1.HeaderMatch_Type, v string) *meshv1.RouteMatch {
		return &meshv1.RouteMatch{QueryParams: []*meshv1.HeaderMatch{{Name: name, Type: typ, Value: v}}}
	}
	for _, c := range []struct {
		name   string
		m      *meshv1.RouteMatch
		method string
		path   string
		h      http.Header
		q      url.Values
		want   bool
	}{
		{"nil match", nil, "GET", "/x", nil, nil, true},
		{"exact", path(meshv1.PathMatch_EXACT, "/a"), "GET", "/a", nil, nil, true},
		{"exact trailing slash", path(meshv1.PathMatch_EXACT, "/a"), "GET", "/a/", nil, nil, false},
		{"exact case", path(meshv1.PathMatch_EXACT, "/a"), "GET", "/A", nil, nil, false},
		{"prefix root", path(meshv1.PathMatch_PREFIX, "/"), "GET", "/anything/at/all", nil, nil, true},
		{"prefix equal", path(meshv1.PathMatch_PREFIX, "/abc"), "GET", "/abc", nil, nil, true},
		{"prefix slash", path(meshv1.PathMatch_PREFIX, "/abc"), "GET", "/abc/", nil, nil, true},
		{"prefix segment", path(meshv1.PathMatch_PREFIX, "/abc"), "GET", "/abc/def", nil, nil, true},
		{"prefix not segment", path(meshv1.PathMatch_PREFIX, "/abc"), "GET", "/abcd", nil, nil, false},
		{"prefix value trailing slash", path(meshv1.PathMatch_PREFIX, "/abc/"), "GET", "/abc", nil, nil, true},
		{"prefix shorter path", path(meshv1.PathMatch_PREFIX, "/abc"), "GET", "/ab", nil, nil, false},
		{"string prefix", path(meshv1.PathMatch_STRING_PREFIX, "/abc"), "GET", "/abcd", nil, nil, true},
		{"regex whole", path(meshv1.PathMatch_REGEX, "/v[0-9]+"), "GET", "/v12", nil, nil, true},
		{"regex anchored", path(meshv1.PathMatch_REGEX, "/v[0-9]+"), "GET", "/v12/x", nil, nil, false},
		{"regex alternation anchored", path(meshv1.PathMatch_REGEX, "/a|/b"), "GET", "/a/x", nil, nil, false},
		{"invalid regex never matches", path(meshv1.PathMatch_REGEX, "(["), "GET", "/", nil, nil, false},
		{"method", &meshv1.RouteMatch{Method: "POST"}, "POST", "/", nil, nil, true},
		{"method case", &meshv1.RouteMatch{Method: "POST"}, "post", "/", nil, nil, false},
		{"header exact, name case", hdr("version", meshv1.HeaderMatch_EXACT, "one", false), "GET", "/", http.Header{"Version": {"one"}}, nil, true},
		{"header value case", hdr("version", meshv1.HeaderMatch_EXACT, "one", false), "GET", "/", http.Header{"Version": {"ONE"}}, nil, false},
		{"header absent", hdr("version", meshv1.HeaderMatch_EXACT, "one", false), "GET", "/", nil, nil, false},
		{"header repeated joined", hdr("x", meshv1.HeaderMatch_EXACT, "a,b", false), "GET", "/", http.Header{"X": {"a", "b"}}, nil, true},
		{"header non-canonical key", hdr("x-test-case", meshv1.HeaderMatch_EXACT, "set", false), "GET", "/", http.Header{"x-test-case": {"set"}}, nil, true},
		{"header prefix", hdr("x", meshv1.HeaderMatch_PREFIX, "ab", false), "GET", "/", http.Header{"X": {"abc"}}, nil, true},
		{"header regex", hdr("x", meshv1.HeaderMatch_REGEX, "a.c", false), "GET", "/", http.Header{"X": {"abc"}}, nil, true},
		{"header regex anchored", hdr("x", meshv1.HeaderMatch_REGEX, "a.c", false), "GET", "/", http.Header{"X": {"abcd"}}, nil, false},
		{"header present", hdr("x", meshv1.HeaderMatch_PRESENT, "", false), "GET", "/", http.Header{"X": {""}}, nil, true},
		{"header inverted absent", hdr("x", meshv1.HeaderMatch_PRESENT, "", true), "GET", "/", nil, nil, true},
		{"header inverted present", hdr("x", meshv1.HeaderMatch_EXACT, "1", true), "GET", "/", http.Header{"X": {"1"}}, nil, false},
		{"pseudo method", hdr(":method", meshv1.HeaderMatch_PREFIX, "PO", false), "POST", "/", nil, nil, true},
		{"pseudo authority from Host", hdr(":authority", meshv1.HeaderMatch_EXACT, "echo", false), "GET", "/", http.Header{"Host": {"echo"}}, nil, true},
		{"pseudo authority", hdr(":authority", meshv1.HeaderMatch_EXACT, "echo", false), "GET", "/", http.Header{":authority": {"echo"}}, nil, true},
		{"query exact", qp("animal", meshv1.HeaderMatch_EXACT, "whale"), "GET", "/", nil, url.Values{"animal": {"whale"}}, true},
		{"query first value", qp("animal", meshv1.HeaderMatch_EXACT, "whale"), "GET", "/", nil, url.Values{"animal": {"dolphin", "whale"}}, false},
		{"query name case", qp("animal", meshv1.HeaderMatch_EXACT, "whale"), "GET", "/", nil, url.Values{"Animal": {"whale"}}, false},
		{"query regex", qp("n", meshv1.HeaderMatch_REGEX, "[0-9]+"), "GET", "/", nil, url.Values{"n": {"42"}}, true},
		{"query present empty", qp("debug", meshv1.HeaderMatch_PRESENT, ""), "GET", "/", nil, url.Values{"debug": {""}}, true},
	} {
		if got := MatchRequest(c.m, c.method, c.path, c.h, c.q); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSelectRuleFirstMatchWins(t *testing.T) {
	pr := &meshv1.PortRoutes{Rules: []*meshv1.RouteRule{
		{Origin: "a", Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_PREFIX, Value: "/a"}}, {Method: "PUT"}}},
		{Origin: "b"},
	}}
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/a/x", "a"}, {"PUT", "/z", "a"}, {"GET", "/z", "b"},
	} {
		if r, ok := SelectRule(pr, c.method, c.path, nil, nil); !ok || r.GetOrigin() != c.want {
			t.Errorf("%s %s: %v", c.method, c.path, r.GetOrigin())
		}
	}
	if _, ok := SelectRule(nil, "GET", "/", nil, nil); ok {
		t.Error("nil port routes matched")
	}
	if _, ok := SelectRule(&meshv1.PortRoutes{}, "GET", "/", nil, nil); ok {
		t.Error("empty port routes matched")
	}
}

func TestRewriteAndRedirect(t *testing.T) {
	prefixRule := func(typ meshv1.PathMatch_Type, prefix, repl string) *meshv1.RouteRule {
		return &meshv1.RouteRule{
			Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: typ, Value: prefix}}},
			Rewrite: &meshv1.Rewrite{ReplacePrefix: repl, HasReplacePrefix: true},
		}
	}
	// The Gateway API table for ReplacePrefixMatch.
	for _, c := range []struct{ path, prefix, repl, want string }{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		{"/a/b", "/", "/x", "/x/a/b"},
	} {
		if got := RewritePath(prefixRule(meshv1.PathMatch_PREFIX, c.prefix, c.repl), c.path); got != c.want {
			t.Errorf("PathPrefix %s → %q on %s: %q, want %q", c.prefix, c.repl, c.path, got, c.want)
		}
	}
	// VirtualService prefixes are replaced literally (Envoy prefix_rewrite).
	if got := RewritePath(prefixRule(meshv1.PathMatch_STRING_PREFIX, "/v1/", "/"), "/v1/books"); got != "/books" {
		t.Errorf("string prefix: %q", got)
	}
	rx := &meshv1.RouteRule{Rewrite: &meshv1.Rewrite{Regex: "^/service/([^/]+)(/.*)$", RegexSubstitution: "\\2/instance/\\1"}}
	if got := RewritePath(rx, "/service/foo/v1/api"); got != "/v1/api/instance/foo" {
		t.Errorf("regex rewrite: %q", got)
	}
	if got := RewritePath(&meshv1.RouteRule{}, "/same"); got != "/same" {
		t.Errorf("no rewrite: %q", got)
	}
	rd := &meshv1.RouteRule{Redirect: &meshv1.Redirect{Scheme: "https", Port: 8443}}
	if loc, st := RedirectLocation(rd, "http", "::1", 80, "/p", ""); loc != "https://[::1]:8443/p" || st != 302 {
		t.Errorf("ipv6 redirect %s %d", loc, st)
	}
	if loc, _ := RedirectLocation(&meshv1.RouteRule{Redirect: &meshv1.Redirect{}}, "http", "echo", 8080, "/p", ""); loc != "http://echo:8080/p" {
		t.Errorf("port kept: %s", loc)
	}
}

// FuzzMatch drives arbitrary requests through arbitrary matches: matching,
// rewriting and redirecting never panic, whatever the pattern or input.
func FuzzMatch(f *testing.F) {
	f.Add(int32(1), "/v2", "GET", "/v2/x", "version", "two", "a=b", "/new", "(a|b)+")
	f.Add(int32(2), "([", "POST", "/%zz", ":authority", "echo", ";;", "", "\\1")
	f.Fuzz(func(t *testing.T, typ int32, value, method, path, hname, hvalue, rawQuery, repl, rx string) {
		m := &meshv1.RouteMatch{
			Path:        &meshv1.PathMatch{Type: meshv1.PathMatch_Type(typ % 5), Value: value},
			Headers:     []*meshv1.HeaderMatch{{Name: hname, Type: meshv1.HeaderMatch_Type(typ % 5), Value: hvalue}},
			QueryParams: []*meshv1.HeaderMatch{{Name: hname, Type: meshv1.HeaderMatch_REGEX, Value: rx}},
		}
		r := &meshv1.RouteRule{Matches: []*meshv1.RouteMatch{m},
			Rewrite:  &meshv1.Rewrite{ReplacePrefix: repl, HasReplacePrefix: typ%2 == 0, Regex: rx, RegexSubstitution: repl},
			Redirect: &meshv1.Redirect{Hostname: hvalue, ReplacePrefix: repl, HasReplacePrefix: true}}
		q, _ := url.ParseQuery(rawQuery)
		h := http.Header{hname: {hvalue}}
		if RuleMatches(r, method, path, h, q) != MatchRequest(m, method, path, h, q) {
			t.Fatal("a one-match rule disagrees with its match")
		}
		_ = RewritePath(r, path)
		_, _ = RedirectLocation(r, "http", hvalue, 80, path, rawQuery)
	})
}
