// Package routematch applies translated L7 routes (api/mesh/v1 RouteRule,
// PortRoutes) to a request: rule selection, URL rewrites and redirect
// locations, with Gateway API and Istio semantics. It is the waypoint's
// router and the reference the control plane's translation tests run
// requests through, so both agree on what a route means. It depends only on
// the standard library and the mesh API — no Kubernetes types — so the data
// plane may link it. Pure and safe for concurrent use.
package routematch

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// SelectRule returns the first rule of pr that matches the request; false
// when none does (the waypoint answers 404). path is the request path without
// the query; headers hold the request headers (names canonical or not);
// query the decoded query parameters.
//
// Semantics:
//   - A rule matches when any of its matches does; a rule without matches
//     matches everything.
//   - A match holds when all its conditions do.
//   - Path EXACT: equal. PREFIX (Gateway API PathPrefix): by path segment,
//     trailing "/" of the value ignored ("/foo" matches "/foo", "/foo/",
//     "/foo/bar", not "/foobar"). STRING_PREFIX (VirtualService uri.prefix):
//     plain string prefix. REGEX: RE2, the whole path must match.
//   - Headers: names case-insensitive; a header sent several times is
//     matched as its values joined with ",". EXACT compares case-sensitively,
//     PREFIX is a string prefix, REGEX must match the whole value, PRESENT
//     checks presence; invert negates (an absent header then matches).
//     Pseudo-headers: ":method" is the method argument, ":path" the path,
//     ":authority" headers[":authority"] else the Host header, ":scheme"
//     headers[":scheme"].
//   - Query parameters: names case-sensitive, the first value counts.
//   - Method: exact, case-sensitive.
func SelectRule(pr *meshv1.PortRoutes, method, path string, headers http.Header, query url.Values) (*meshv1.RouteRule, bool) {
	for _, r := range pr.GetRules() {
		if RuleMatches(r, method, path, headers, query) {
			return r, true
		}
	}
	return nil, false
}

// RuleMatches reports whether a rule applies to the request (see SelectRule).
func RuleMatches(r *meshv1.RouteRule, method, path string, headers http.Header, query url.Values) bool {
	if r == nil {
		return false
	}
	if len(r.GetMatches()) == 0 {
		return true
	}
	for _, m := range r.GetMatches() {
		if MatchRequest(m, method, path, headers, query) {
			return true
		}
	}
	return false
}

// MatchRequest reports whether one match holds for the request.
func MatchRequest(m *meshv1.RouteMatch, method, path string, headers http.Header, query url.Values) bool {
	if m == nil {
		return true
	}
	if p := m.GetPath(); p != nil && !matchPath(p, path) {
		return false
	}
	if m.GetMethod() != "" && m.GetMethod() != method {
		return false
	}
	for _, h := range m.GetHeaders() {
		v, ok := headerValue(h.GetName(), method, path, headers)
		if matchValue(h, v, ok) == h.GetInvert() {
			return false
		}
	}
	for _, q := range m.GetQueryParams() {
		vs, ok := query[q.GetName()]
		v := ""
		if ok && len(vs) > 0 {
			v = vs[0]
		}
		if matchValue(q, v, ok) == q.GetInvert() {
			return false
		}
	}
	return true
}

func matchPath(p *meshv1.PathMatch, path string) bool {
	v := p.GetValue()
	switch p.GetType() {
	case meshv1.PathMatch_EXACT:
		return path == v
	case meshv1.PathMatch_PREFIX:
		v = strings.TrimRight(v, "/")
		if v == "" {
			return true // "/" matches every path
		}
		return path == v || (strings.HasPrefix(path, v) && path[len(v)] == '/')
	case meshv1.PathMatch_STRING_PREFIX:
		return strings.HasPrefix(path, v)
	case meshv1.PathMatch_REGEX:
		re := compiledRegex(v)
		return re != nil && re.MatchString(path)
	}
	return false
}

func headerValue(name, method, path string, headers http.Header) (string, bool) {
	switch strings.ToLower(name) {
	case ":method":
		return method, true
	case ":path":
		return path, true
	case ":authority":
		if v, ok := headers[":authority"]; ok && len(v) > 0 {
			return strings.Join(v, ","), true
		}
		name = "Host"
	case ":scheme":
		v, ok := headers[":scheme"]
		return strings.Join(v, ","), ok && len(v) > 0
	}
	vs := headers.Values(name)
	if len(vs) == 0 {
		if v, ok := headers[name]; ok { // non-canonical key set directly
			vs = v
		}
	}
	if len(vs) == 0 {
		return "", false
	}
	return strings.Join(vs, ","), true
}

func matchValue(h *meshv1.HeaderMatch, v string, present bool) bool {
	if !present {
		return false
	}
	switch h.GetType() {
	case meshv1.HeaderMatch_EXACT:
		return v == h.GetValue()
	case meshv1.HeaderMatch_PREFIX:
		return strings.HasPrefix(v, h.GetValue())
	case meshv1.HeaderMatch_REGEX:
		re := compiledRegex(h.GetValue())
		return re != nil && re.MatchString(v)
	case meshv1.HeaderMatch_PRESENT:
		return true
	}
	return false
}

// regexCache holds compiled, anchored patterns. Patterns come from
// configuration, so the set is small; the cache is cleared if it ever grows
// past regexCacheMax (e.g. under a fuzzer).
var (
	regexCache    sync.Map // pattern → *regexp.Regexp (nil for invalid)
	regexCacheLen atomic.Int64
)

const regexCacheMax = 4096

func compiledRegex(p string) *regexp.Regexp {
	if v, ok := regexCache.Load(p); ok {
		return v.(*regexp.Regexp)
	}
	re, err := regexp.Compile(Anchored(p))
	if err != nil {
		re = nil
	}
	if regexCacheLen.Add(1) > regexCacheMax {
		regexCache.Clear()
		regexCacheLen.Store(1)
	}
	regexCache.Store(p, re)
	return re
}

// Anchored makes an RE2 pattern match whole strings, as route regexes do
// (Gateway API RegularExpression and Istio regex matches are full matches).
func Anchored(p string) string { return "^(?:" + p + ")$" }

// matchedPrefix returns the prefix a rule's path match consumed for a path,
// for ReplacePrefixMatch: the first PREFIX or STRING_PREFIX match fitting the
// path. segment tells which semantics apply.
func matchedPrefix(r *meshv1.RouteRule, path string) (prefix string, segment, ok bool) {
	for _, m := range r.GetMatches() {
		p := m.GetPath()
		if p == nil || !matchPath(p, path) {
			continue
		}
		switch p.GetType() {
		case meshv1.PathMatch_PREFIX:
			return strings.TrimRight(p.GetValue(), "/"), true, true
		case meshv1.PathMatch_STRING_PREFIX:
			return p.GetValue(), false, true
		}
	}
	return "", false, false
}

// replacePrefix swaps the matched prefix of path for repl. For a Gateway API
// (segment) prefix the result has exactly one "/" at the junction, so
// "/foo/bar" with prefix "/foo" becomes "/xyz/bar" whether repl is "/xyz" or
// "/xyz/", and "/" or "" leave "/bar"; a VirtualService (string) prefix is
// replaced literally, as Envoy's prefix_rewrite does.
func replacePrefix(path, prefix string, segment bool, repl string) string {
	rest := strings.TrimPrefix(path, prefix)
	if !segment {
		return repl + rest
	}
	if rest == "" || rest == "/" {
		if repl == "" {
			return "/"
		}
		if rest == "/" && !strings.HasSuffix(repl, "/") {
			return repl + "/"
		}
		return repl
	}
	out := strings.TrimRight(repl, "/") + rest
	if !strings.HasPrefix(out, "/") {
		out = "/" + out
	}
	return out
}

// RewritePath returns the path the backend receives after the rule's URL
// rewrite (the path itself when the rule has none).
func RewritePath(r *meshv1.RouteRule, path string) string {
	rw := r.GetRewrite()
	if rw == nil {
		return path
	}
	switch {
	case rw.GetFullPath() != "":
		return rw.GetFullPath()
	case rw.GetHasReplacePrefix():
		if prefix, seg, ok := matchedPrefix(r, path); ok {
			return replacePrefix(path, prefix, seg, rw.GetReplacePrefix())
		}
		return rw.GetReplacePrefix()
	case rw.GetRegex() != "":
		re, err := regexp.Compile(rw.GetRegex())
		if err != nil {
			return path
		}
		return re.ReplaceAllString(path, envoySubstitution(rw.GetRegexSubstitution()))
	}
	return path
}

// envoySubstitution turns Envoy's "\1" capture references into Go's "${1}".
func envoySubstitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '$' {
			b.WriteString("$$")
			continue
		}
		if c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			b.WriteString("${" + s[i+1:j] + "}")
			i = j - 1
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// RedirectLocation computes the Location header and status of a rule's
// redirect, for a request with this scheme, host (without port), port, path
// and raw query. A zero redirect port follows Gateway API: the well-known
// port of a redirect scheme if one is set, else the request's port; the port
// is left out of the URL when it is the scheme's default.
func RedirectLocation(r *meshv1.RouteRule, scheme, host string, port uint32, path, rawQuery string) (string, uint32) {
	rd := r.GetRedirect()
	if rd == nil {
		return "", 0
	}
	if rd.GetScheme() != "" {
		scheme = rd.GetScheme()
	}
	if rd.GetHostname() != "" {
		host = rd.GetHostname()
	}
	switch {
	case rd.GetPort() != 0:
		port = rd.GetPort()
	case rd.GetScheme() == "http":
		port = 80
	case rd.GetScheme() == "https":
		port = 443
	}
	switch {
	case rd.GetFullPath() != "":
		path = rd.GetFullPath()
	case rd.GetHasReplacePrefix():
		if prefix, seg, ok := matchedPrefix(r, path); ok {
			path = replacePrefix(path, prefix, seg, rd.GetReplacePrefix())
		} else {
			path = rd.GetReplacePrefix()
		}
	}
	hostport := host
	if port != 0 && !(scheme == "http" && port == 80) && !(scheme == "https" && port == 443) {
		hostport = host + ":" + strconv.FormatUint(uint64(port), 10)
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") { // IPv6 literal
		if hostport == host {
			hostport = "[" + host + "]"
		} else {
			hostport = "[" + host + "]:" + strconv.FormatUint(uint64(port), 10)
		}
	}
	loc := scheme + "://" + hostport + path
	if rawQuery != "" {
		loc += "?" + rawQuery
	}
	status := rd.GetStatusCode()
	if status == 0 {
		status = 302
	}
	return loc, status
}
