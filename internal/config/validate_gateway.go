package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Gateway API puts most of its schema on named string types (Hostname,
// ObjectName, HeaderName...): one pattern each, wherever the type is used.
// typeRules holds those patterns, and checkTypedStrings walks an object
// applying them, so no use of a type is forgotten. Struct-level rules (the
// CRDs' CEL rules) are written out below.

type stringRule struct {
	min, max int
	re       *regexp.Regexp
	enum     []string
	what     string // what the value should look like, for the message
}

func (r stringRule) check(p *fieldPath, s string, e *errs) {
	switch {
	case s == "" && r.min > 0:
		if r.enum != nil {
			e.add(p, "required; must be one of "+strings.Join(r.enum, ", "))
		} else {
			e.add(p, "required")
		}
	case r.enum != nil:
		if !slices.Contains(r.enum, s) {
			e.add(p, fmt.Sprintf("invalid value %q: must be one of %s", s, strings.Join(r.enum, ", ")))
		}
	case r.max > 0 && len(s) > r.max:
		e.add(p, fmt.Sprintf("too long: %d characters, at most %d allowed", len(s), r.max))
	case r.re != nil && s != "" && !r.re.MatchString(s):
		e.add(p, fmt.Sprintf("invalid value %q: must be %s", truncate(s, 80), r.what))
	}
}

const (
	dnsSubdomainPattern = `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
	qualifiedKeyPattern = `^(` + dnsSubdomainPattern + `/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$`
)

var (
	headerNameRule = stringRule{min: 1, max: 256, re: regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$"), what: "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"}
	methodEnum     = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

var typeRules = map[reflect.Type]stringRule{
	reflect.TypeFor[gatewayv1.Hostname]():        {min: 1, max: 253, re: regexp.MustCompile(`^(\*\.)?` + dnsSubdomainPattern + `$`), what: `a lowercase DNS name, optionally prefixed with "*." (IP addresses are not allowed)`},
	reflect.TypeFor[gatewayv1.PreciseHostname](): {min: 1, max: 253, re: regexp.MustCompile(`^` + dnsSubdomainPattern + `$`), what: "a lowercase DNS name without wildcard"},
	reflect.TypeFor[gatewayv1.Group]():           {max: 253, re: regexp.MustCompile(`^$|^` + dnsSubdomainPattern + `$`), what: `an API group: "" for the core group, else a DNS subdomain`},
	reflect.TypeFor[gatewayv1.Kind]():            {min: 1, max: 63, re: regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`), what: "a kind name such as Service"},
	reflect.TypeFor[gatewayv1.ObjectName]():      {min: 1, max: 253},
	reflect.TypeFor[gatewayv1.Namespace]():       {min: 1, max: 63, re: dns1123LabelRE, what: "a namespace name (an RFC 1123 label)"},
	reflect.TypeFor[gatewayv1.SectionName]():     {min: 1, max: 253, re: regexp.MustCompile(`^` + dnsSubdomainPattern + `$`), what: "a lowercase RFC 1123 subdomain"},
	reflect.TypeFor[gatewayv1.HeaderName]():      headerNameRule,
	reflect.TypeFor[gatewayv1.HTTPHeaderName]():  headerNameRule,
	reflect.TypeFor[gatewayv1.GRPCHeaderName]():  headerNameRule,
	reflect.TypeFor[gatewayv1.Duration]():        {re: regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`), what: `a Gateway API duration such as "10s", "500ms" or "1h30m" (units h, m, s, ms)`},
	reflect.TypeFor[gatewayv1.AnnotationKey]():   {min: 1, max: 253, re: regexp.MustCompile(qualifiedKeyPattern), what: "a qualified key ([prefix/]name)"},
	reflect.TypeFor[gatewayv1.LabelKey]():        {min: 1, max: 253, re: regexp.MustCompile(qualifiedKeyPattern), what: "a qualified key ([prefix/]name)"},
	reflect.TypeFor[gatewayv1.AnnotationValue](): {max: 4096},
	reflect.TypeFor[gatewayv1.LabelValue]():      {max: 63, re: labelValueRE, what: "a label value"},
	reflect.TypeFor[gatewayv1.ProtocolType]():    {min: 1, max: 255, re: regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|` + dnsSubdomainPattern + `\/[A-Za-z0-9]+$`), what: "a protocol such as HTTP, HTTPS, TLS, TCP or UDP"},
	reflect.TypeFor[gatewayv1.AbsoluteURI]():     {min: 1, max: 253, re: regexp.MustCompile(`^(([^:/?#]+):)(//([^/?#]*))([^?#]*)(\?([^#]*))?(#(.*))?`), what: "an absolute URI"},
	reflect.TypeFor[gatewayv1.CORSOrigin]():      {min: 1, max: 253, re: regexp.MustCompile(`(^\*$)|(^(http(s)?):\/\/(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)`), what: `"*" or an origin such as "https://example.com"`},

	reflect.TypeFor[gatewayv1.HTTPMethod]():             {enum: methodEnum},
	reflect.TypeFor[gatewayv1.HTTPMethodWithWildcard](): {enum: append(slices.Clone(methodEnum), "*")},
	reflect.TypeFor[gatewayv1.PathMatchType]():          {enum: []string{"Exact", "PathPrefix", "RegularExpression"}},
	reflect.TypeFor[gatewayv1.HeaderMatchType]():        {enum: []string{"Exact", "RegularExpression"}},
	reflect.TypeFor[gatewayv1.QueryParamMatchType]():    {enum: []string{"Exact", "RegularExpression"}},
	reflect.TypeFor[gatewayv1.GRPCMethodMatchType]():    {enum: []string{"Exact", "RegularExpression"}},
	reflect.TypeFor[gatewayv1.GRPCHeaderMatchType]():    {enum: []string{"Exact", "RegularExpression"}},
	reflect.TypeFor[gatewayv1.HTTPRouteFilterType]():    {min: 1, enum: []string{"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect", "URLRewrite", "ExtensionRef", "CORS", "ExternalAuth"}},
	reflect.TypeFor[gatewayv1.GRPCRouteFilterType]():    {min: 1, enum: []string{"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"}},
	reflect.TypeFor[gatewayv1.HTTPPathModifierType]():   {min: 1, enum: []string{"ReplaceFullPath", "ReplacePrefixMatch"}},
	reflect.TypeFor[gatewayv1.FromNamespaces]():         {enum: []string{"All", "Selector", "Same", "None"}},
	reflect.TypeFor[gatewayv1.TLSModeType]():            {enum: []string{"Terminate", "Passthrough"}},
	reflect.TypeFor[gatewayv1.SessionPersistenceType](): {enum: []string{"Cookie", "Header"}},
	reflect.TypeFor[gatewayv1.CookieLifetimeType]():     {enum: []string{"Permanent", "Session"}},
	reflect.TypeFor[gatewayv1.GatewayDefaultScope]():    {enum: []string{"All", "None"}},
}

// checkTypedStrings applies typeRules to every string in v (a spec struct).
// Optional fields left unset are skipped: nil pointers, and zero values of
// fields marked omitempty; a zero required field is reported as missing.
func checkTypedStrings(v reflect.Value, p *fieldPath, e *errs) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			checkTypedStrings(v.Elem(), p, e)
		}
	case reflect.Struct:
		t := v.Type()
		for _, f := range jsonFields(t) {
			fv := v.FieldByIndex(f.index)
			if f.omitempty && fv.IsZero() {
				continue
			}
			fp := p
			if f.name != "" {
				fp = p.childOrRoot(f.name)
			}
			checkTypedStrings(fv, fp, e)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			checkTypedStrings(v.Index(i), p.at(i), e)
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := iter.Key()
			kp := p.key(fmt.Sprint(k.Interface()))
			if r, ok := typeRules[k.Type()]; ok {
				r.check(kp, k.String(), e)
			}
			checkTypedStrings(iter.Value(), kp, e)
		}
	case reflect.String:
		if r, ok := typeRules[v.Type()]; ok {
			r.check(p, v.String(), e)
		}
	}
}

type jsonField struct {
	name      string // "" for an inlined embedded struct
	index     []int
	omitempty bool
}

var jsonFieldsCache sync.Map // reflect.Type -> []jsonField

func jsonFields(t reflect.Type) []jsonField {
	if f, ok := jsonFieldsCache.Load(t); ok {
		return f.([]jsonField)
	}
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" && !f.Anonymous {
			name = f.Name
		}
		out = append(out, jsonField{name: name, index: f.Index, omitempty: strings.Contains(opts, "omitempty")})
	}
	jsonFieldsCache.Store(t, out)
	return out
}

func validateGateway(g *gatewayv1.Gateway, e *errs) {
	spec := newPath("spec")
	checkTypedStrings(reflect.ValueOf(g.Spec), spec, e)
	ls := spec.child("listeners")
	if len(g.Spec.Listeners) == 0 {
		e.add(ls, "required: a Gateway needs at least one listener")
	}
	checkMaxItems(ls, len(g.Spec.Listeners), 64, e)
	names := map[gatewayv1.SectionName]int{}
	type listenerKey struct {
		port     gatewayv1.PortNumber
		protocol gatewayv1.ProtocolType
		hostname gatewayv1.Hostname
	}
	combos := map[listenerKey]int{}
	for i, l := range g.Spec.Listeners {
		lp := ls.at(i)
		if j, dup := names[l.Name]; dup && l.Name != "" {
			e.add(lp.child("name"), fmt.Sprintf("duplicate listener name %q (also listeners[%d])", l.Name, j))
		} else {
			names[l.Name] = i
		}
		checkPort(lp.child("port"), l.Port, e)
		var host gatewayv1.Hostname
		if l.Hostname != nil {
			host = *l.Hostname
		}
		k := listenerKey{l.Port, l.Protocol, host}
		if j, dup := combos[k]; dup {
			e.add(lp, fmt.Sprintf("same port, protocol and hostname as listeners[%d]", j))
		} else {
			combos[k] = i
		}
		switch l.Protocol {
		case gatewayv1.HTTPProtocolType, gatewayv1.TCPProtocolType, gatewayv1.UDPProtocolType:
			if l.TLS != nil {
				e.add(lp.child("tls"), fmt.Sprintf("must not be set for protocol %s", l.Protocol))
			}
		case gatewayv1.HTTPSProtocolType:
			if l.TLS != nil && l.TLS.Mode != nil && *l.TLS.Mode != gatewayv1.TLSModeTerminate {
				e.add(lp.child("tls", "mode"), "must be Terminate for protocol HTTPS")
			}
		case gatewayv1.TLSProtocolType:
			if l.TLS == nil || l.TLS.Mode == nil || *l.TLS.Mode == "" {
				e.add(lp.child("tls", "mode"), "required for protocol TLS")
			}
		}
		if (l.Protocol == gatewayv1.TCPProtocolType || l.Protocol == gatewayv1.UDPProtocolType) && host != "" {
			e.add(lp.child("hostname"), fmt.Sprintf("must not be set for protocol %s", l.Protocol))
		}
		if ar := l.AllowedRoutes; ar != nil {
			checkMaxItems(lp.child("allowedRoutes", "kinds"), len(ar.Kinds), 8, e)
			if ns := ar.Namespaces; ns != nil && ns.From != nil && *ns.From == gatewayv1.NamespacesFromSelector && ns.Selector == nil {
				e.add(lp.child("allowedRoutes", "namespaces", "selector"), "required when from is Selector")
			}
		}
	}
	checkMaxItems(spec.child("addresses"), len(g.Spec.Addresses), 16, e)
}

func validateCommonRoute(c *gatewayv1.CommonRouteSpec, spec *fieldPath, e *errs) {
	pr := spec.child("parentRefs")
	checkMaxItems(pr, len(c.ParentRefs), 32, e)
	for i, ref := range c.ParentRefs {
		if ref.Port != nil {
			checkPort(pr.at(i).child("port"), *ref.Port, e)
		}
	}
}

func validateBackendRef(b *gatewayv1.BackendRef, p *fieldPath, e *errs) {
	if b.Weight != nil {
		checkRange(p.child("weight"), *b.Weight, 0, 1000000, e)
	}
	validateBackendObjectRef(&b.BackendObjectReference, p, e)
}

func validateBackendObjectRef(b *gatewayv1.BackendObjectReference, p *fieldPath, e *errs) {
	if b.Port != nil {
		checkPort(p.child("port"), *b.Port, e)
	}
	isService := (b.Group == nil || *b.Group == "") && (b.Kind == nil || *b.Kind == "Service")
	if isService && b.Port == nil {
		e.add(p.child("port"), "required when referring to a Service")
	}
}

func validateHTTPRoute(r *gatewayv1.HTTPRoute, e *errs) {
	spec := newPath("spec")
	checkTypedStrings(reflect.ValueOf(r.Spec), spec, e)
	validateCommonRoute(&r.Spec.CommonRouteSpec, spec, e)
	checkMaxItems(spec.child("hostnames"), len(r.Spec.Hostnames), 16, e)
	rules := spec.child("rules")
	checkMaxItems(rules, len(r.Spec.Rules), 16, e)
	total := 0
	ruleNames := map[gatewayv1.SectionName]int{}
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		rp := rules.at(i)
		total += len(rule.Matches)
		if rule.Name != nil {
			if j, dup := ruleNames[*rule.Name]; dup {
				e.add(rp.child("name"), fmt.Sprintf("duplicate rule name %q (also rules[%d])", *rule.Name, j))
			} else {
				ruleNames[*rule.Name] = i
			}
		}
		checkMaxItems(rp.child("matches"), len(rule.Matches), 64, e)
		for j := range rule.Matches {
			validateHTTPMatch(&rule.Matches[j], rp.child("matches").at(j), e)
		}
		validateHTTPFilters(rule.Filters, rule.Matches, rp.child("filters"), e)
		bp := rp.child("backendRefs")
		checkMaxItems(bp, len(rule.BackendRefs), 16, e)
		for j := range rule.BackendRefs {
			b := &rule.BackendRefs[j]
			validateBackendRef(&b.BackendRef, bp.at(j), e)
			validateHTTPFilters(b.Filters, rule.Matches, bp.at(j).child("filters"), e)
		}
		if len(rule.BackendRefs) > 0 {
			for j, f := range rule.Filters {
				if f.Type == gatewayv1.HTTPRouteFilterRequestRedirect {
					e.add(rp.child("filters").at(j), "a RequestRedirect filter must not be used together with backendRefs: a redirected request is not forwarded")
				}
			}
		}
		if t := rule.Timeouts; t != nil {
			tp := rp.child("timeouts")
			req, reqOK := gatewayDuration(t.Request)
			back, backOK := gatewayDuration(t.BackendRequest)
			if reqOK && backOK && req != 0 && back > req {
				e.add(tp.child("backendRequest"), fmt.Sprintf("must not be longer than the request timeout (%s), got %s", *t.Request, *t.BackendRequest))
			}
		}
		if rt := rule.Retry; rt != nil {
			if rt.Attempts != nil {
				checkMin(rp.child("retry", "attempts"), *rt.Attempts, 1, e)
			}
			for j, c := range rt.Codes {
				checkRange(rp.child("retry", "codes").at(j), int(c), 400, 599, e)
			}
		}
	}
	if total > 128 {
		e.add(rules, fmt.Sprintf("too many matches: %d across all rules, at most 128 allowed", total))
	}
}

func gatewayDuration(d *gatewayv1.Duration) (time.Duration, bool) {
	if d == nil {
		return 0, false
	}
	v, err := time.ParseDuration(string(*d))
	return v, err == nil
}

func validateHTTPMatch(m *gatewayv1.HTTPRouteMatch, p *fieldPath, e *errs) {
	if pm := m.Path; pm != nil {
		typ := gatewayv1.PathMatchPathPrefix
		if pm.Type != nil {
			typ = *pm.Type
		}
		value := "/"
		if pm.Value != nil {
			value = *pm.Value
		}
		checkPathMatch(p.child("path", "value"), typ, value, e)
	}
	checkMaxItems(p.child("headers"), len(m.Headers), 16, e)
	seen := map[string]int{}
	for i, h := range m.Headers {
		hp := p.child("headers").at(i)
		key := strings.ToLower(string(h.Name))
		if j, dup := seen[key]; dup {
			e.add(hp.child("name"), fmt.Sprintf("duplicate header %q (also headers[%d]); header names are case-insensitive", h.Name, j))
		}
		seen[key] = i
		checkMatchValue(hp.child("value"), h.Value, 4096, h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression, e)
	}
	checkMaxItems(p.child("queryParams"), len(m.QueryParams), 16, e)
	seenQ := map[string]int{}
	for i, q := range m.QueryParams {
		qp := p.child("queryParams").at(i)
		if j, dup := seenQ[string(q.Name)]; dup {
			e.add(qp.child("name"), fmt.Sprintf("duplicate query parameter %q (also queryParams[%d])", q.Name, j))
		}
		seenQ[string(q.Name)] = i
		checkMatchValue(qp.child("value"), q.Value, 1024, q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression, e)
	}
}

func checkMatchValue(p *fieldPath, v string, max int, regex bool, e *errs) {
	switch {
	case v == "":
		e.add(p, "required")
	case len(v) > max:
		e.add(p, fmt.Sprintf("too long: %d characters, at most %d allowed", len(v), max))
	case regex:
		checkRegex(p, v, e)
	}
}

var pathCharsRE = regexp.MustCompile(`^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`)

// checkPathMatch applies the HTTPPathMatch CEL rules.
func checkPathMatch(p *fieldPath, typ gatewayv1.PathMatchType, v string, e *errs) {
	if len(v) > 1024 {
		e.add(p, fmt.Sprintf("too long: %d characters, at most 1024 allowed", len(v)))
		return
	}
	switch typ {
	case gatewayv1.PathMatchRegularExpression:
		checkRegex(p, v, e)
	case gatewayv1.PathMatchExact, gatewayv1.PathMatchPathPrefix:
		checkPathValue(p, fmt.Sprintf("for a %s match", typ), v, e)
	}
}

// checkPathValue checks an absolute request path (a match or a rewrite).
func checkPathValue(p *fieldPath, context, v string, e *errs) {
	bad := func(why string) { e.add(p, fmt.Sprintf("invalid path %q %s: %s", v, context, why)) }
	switch {
	case !strings.HasPrefix(v, "/"):
		bad("must start with '/'")
	case strings.Contains(v, "//"):
		bad("must not contain '//'")
	case strings.Contains(v, "/./"), strings.HasSuffix(v, "/."):
		bad("must not contain a '.' segment")
	case strings.Contains(v, "/../"), strings.HasSuffix(v, "/.."):
		bad("must not contain a '..' segment")
	case strings.Contains(v, "%2f"), strings.Contains(v, "%2F"):
		bad("must not contain an encoded '/' (%2F)")
	case strings.Contains(v, "#"):
		bad("must not contain '#'")
	case !pathCharsRE.MatchString(v):
		bad("contains characters that are not allowed in a path; percent-encode them")
	}
}

// validateHTTPFilters applies the HTTPRouteFilter CEL rules: each filter
// carries exactly the configuration its type names, some types may appear
// only once, and prefix rewrites need a prefix match to rewrite.
func validateHTTPFilters(fs []gatewayv1.HTTPRouteFilter, matches []gatewayv1.HTTPRouteMatch, p *fieldPath, e *errs) {
	checkMaxItems(p, len(fs), 16, e)
	count := map[gatewayv1.HTTPRouteFilterType]int{}
	for i := range fs {
		f := &fs[i]
		fp := p.at(i)
		count[f.Type]++
		if count[f.Type] == 2 && f.Type != gatewayv1.HTTPRouteFilterRequestMirror && f.Type != gatewayv1.HTTPRouteFilterExtensionRef && f.Type != gatewayv1.HTTPRouteFilterExternalAuth {
			e.add(fp.child("type"), fmt.Sprintf("%s filter cannot be repeated", f.Type))
		}
		configs := []filterConfig{
			{string(gatewayv1.HTTPRouteFilterRequestHeaderModifier), "requestHeaderModifier", f.RequestHeaderModifier != nil},
			{string(gatewayv1.HTTPRouteFilterResponseHeaderModifier), "responseHeaderModifier", f.ResponseHeaderModifier != nil},
			{string(gatewayv1.HTTPRouteFilterRequestMirror), "requestMirror", f.RequestMirror != nil},
			{string(gatewayv1.HTTPRouteFilterRequestRedirect), "requestRedirect", f.RequestRedirect != nil},
			{string(gatewayv1.HTTPRouteFilterURLRewrite), "urlRewrite", f.URLRewrite != nil},
			{string(gatewayv1.HTTPRouteFilterCORS), "cors", f.CORS != nil},
			{string(gatewayv1.HTTPRouteFilterExternalAuth), "externalAuth", f.ExternalAuth != nil},
			{string(gatewayv1.HTTPRouteFilterExtensionRef), "extensionRef", f.ExtensionRef != nil},
		}
		checkFilterConfig(fp, string(f.Type), configs, e)
		if h := f.RequestHeaderModifier; h != nil {
			validateHeaderFilter(h, fp.child("requestHeaderModifier"), e)
		}
		if h := f.ResponseHeaderModifier; h != nil {
			validateHeaderFilter(h, fp.child("responseHeaderModifier"), e)
		}
		if m := f.RequestMirror; m != nil {
			validateMirror(m, fp.child("requestMirror"), e)
		}
		if rd := f.RequestRedirect; rd != nil {
			rp := fp.child("requestRedirect")
			if rd.Scheme != nil {
				checkEnum(rp.child("scheme"), *rd.Scheme, []string{"http", "https"}, e)
			}
			if rd.StatusCode != nil && !slices.Contains([]int{301, 302, 303, 307, 308}, *rd.StatusCode) {
				e.add(rp.child("statusCode"), fmt.Sprintf("invalid redirect status code %d: must be one of 301, 302, 303, 307, 308", *rd.StatusCode))
			}
			if rd.Port != nil {
				checkPort(rp.child("port"), *rd.Port, e)
			}
			validatePathModifier(rd.Path, matches, rp.child("path"), e)
		}
		if rw := f.URLRewrite; rw != nil {
			validatePathModifier(rw.Path, matches, fp.child("urlRewrite", "path"), e)
		}
		if c := f.CORS; c != nil {
			cp := fp.child("cors")
			if len(c.AllowOrigins) > 1 && slices.Contains(c.AllowOrigins, "*") {
				e.add(cp.child("allowOrigins"), `"*" cannot be combined with other origins`)
			}
			if len(c.AllowMethods) > 1 && slices.Contains(c.AllowMethods, "*") {
				e.add(cp.child("allowMethods"), `"*" cannot be combined with other methods`)
			}
			if len(c.AllowHeaders) > 1 && slices.Contains(c.AllowHeaders, "*") {
				e.add(cp.child("allowHeaders"), `"*" cannot be combined with other headers`)
			}
			if c.MaxAge != 0 {
				checkMin(cp.child("maxAge"), c.MaxAge, 1, e)
			}
		}
	}
	if count[gatewayv1.HTTPRouteFilterRequestRedirect] > 0 && count[gatewayv1.HTTPRouteFilterURLRewrite] > 0 {
		e.add(p, "RequestRedirect and URLRewrite filters cannot be used together")
	}
}

// filterConfig says whether a filter's configuration field for one filter
// type is set.
type filterConfig struct {
	typ, field string
	set        bool
}

// checkFilterConfig requires the configuration field of the filter's own
// type and rejects the fields of every other type.
func checkFilterConfig(fp *fieldPath, typ string, configs []filterConfig, e *errs) {
	for _, c := range configs {
		switch {
		case c.typ == typ && !c.set:
			e.add(fp.child(c.field), fmt.Sprintf("required for a filter of type %s", typ))
		case c.typ != typ && c.set:
			e.add(fp.child(c.field), fmt.Sprintf("must not be set for a filter of type %s (set type: %s to use it)", typ, c.typ))
		}
	}
}

func validateHeaderFilter(h *gatewayv1.HTTPHeaderFilter, p *fieldPath, e *errs) {
	for _, list := range []struct {
		field   string
		headers []gatewayv1.HTTPHeader
	}{{"set", h.Set}, {"add", h.Add}} {
		lp := p.child(list.field)
		checkMaxItems(lp, len(list.headers), 16, e)
		seen := map[string]int{}
		for i, hd := range list.headers {
			key := strings.ToLower(string(hd.Name))
			if j, dup := seen[key]; dup {
				e.add(lp.at(i).child("name"), fmt.Sprintf("duplicate header %q (also %s[%d]); header names are case-insensitive", hd.Name, list.field, j))
			}
			seen[key] = i
			if hd.Value == "" {
				e.add(lp.at(i).child("value"), "required")
			} else if len(hd.Value) > 4096 {
				e.add(lp.at(i).child("value"), fmt.Sprintf("too long: %d characters, at most 4096 allowed", len(hd.Value)))
			}
		}
	}
	rp := p.child("remove")
	checkMaxItems(rp, len(h.Remove), 16, e)
	seen := map[string]int{}
	for i, name := range h.Remove {
		headerNameRule.check(rp.at(i), name, e)
		if j, dup := seen[strings.ToLower(name)]; dup {
			e.add(rp.at(i), fmt.Sprintf("duplicate header %q (also remove[%d])", name, j))
		}
		seen[strings.ToLower(name)] = i
	}
}

func validateMirror(m *gatewayv1.HTTPRequestMirrorFilter, p *fieldPath, e *errs) {
	validateBackendObjectRef(&m.BackendRef, p.child("backendRef"), e)
	if m.Percent != nil {
		checkRange(p.child("percent"), *m.Percent, 0, 100, e)
	}
	if fr := m.Fraction; fr != nil {
		fp := p.child("fraction")
		if m.Percent != nil {
			e.add(fp, "only one of percent and fraction may be set")
		}
		checkMin(fp.child("numerator"), fr.Numerator, 0, e)
		denom := int32(100)
		if fr.Denominator != nil {
			denom = *fr.Denominator
			checkMin(fp.child("denominator"), denom, 1, e)
		}
		if fr.Numerator > denom {
			e.add(fp.child("numerator"), fmt.Sprintf("must be <= denominator (%d), got %d", denom, fr.Numerator))
		}
	}
}

func validatePathModifier(pm *gatewayv1.HTTPPathModifier, matches []gatewayv1.HTTPRouteMatch, p *fieldPath, e *errs) {
	if pm == nil {
		return
	}
	switch pm.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if pm.ReplaceFullPath == nil {
			e.add(p.child("replaceFullPath"), "required when type is ReplaceFullPath")
		} else {
			checkPathValue(p.child("replaceFullPath"), "in replaceFullPath", *pm.ReplaceFullPath, e)
		}
		if pm.ReplacePrefixMatch != nil {
			e.add(p.child("replacePrefixMatch"), "must not be set when type is ReplaceFullPath")
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if pm.ReplacePrefixMatch == nil {
			e.add(p.child("replacePrefixMatch"), "required when type is ReplacePrefixMatch")
		} else if v := *pm.ReplacePrefixMatch; len(v) > 1024 {
			e.add(p.child("replacePrefixMatch"), fmt.Sprintf("too long: %d characters, at most 1024 allowed", len(v)))
		}
		if pm.ReplaceFullPath != nil {
			e.add(p.child("replaceFullPath"), "must not be set when type is ReplacePrefixMatch")
		}
		// An omitted matches list defaults to a single PathPrefix "/" match.
		ok := len(matches) == 0 || (len(matches) == 1 && (matches[0].Path == nil || matches[0].Path.Type == nil || *matches[0].Path.Type == gatewayv1.PathMatchPathPrefix))
		if !ok {
			e.add(p.child("type"), "ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix: it replaces the matched prefix")
		}
	}
}

var (
	grpcServiceRE = regexp.MustCompile(`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`)
	grpcMethodRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
)

func validateGRPCRoute(r *gatewayv1.GRPCRoute, e *errs) {
	spec := newPath("spec")
	checkTypedStrings(reflect.ValueOf(r.Spec), spec, e)
	validateCommonRoute(&r.Spec.CommonRouteSpec, spec, e)
	checkMaxItems(spec.child("hostnames"), len(r.Spec.Hostnames), 16, e)
	rules := spec.child("rules")
	checkMaxItems(rules, len(r.Spec.Rules), 16, e)
	total := 0
	ruleNames := map[gatewayv1.SectionName]int{}
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		rp := rules.at(i)
		total += len(rule.Matches)
		if rule.Name != nil {
			if j, dup := ruleNames[*rule.Name]; dup {
				e.add(rp.child("name"), fmt.Sprintf("duplicate rule name %q (also rules[%d])", *rule.Name, j))
			} else {
				ruleNames[*rule.Name] = i
			}
		}
		checkMaxItems(rp.child("matches"), len(rule.Matches), 64, e)
		for j, m := range rule.Matches {
			mp := rp.child("matches").at(j)
			if mm := m.Method; mm != nil {
				regex := mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression
				if mm.Service == nil && mm.Method == nil {
					e.add(mp.child("method"), "one or both of service and method must be set")
				}
				if mm.Service != nil {
					if regex {
						checkRegex(mp.child("method", "service"), *mm.Service, e)
					} else if !grpcServiceRE.MatchString(*mm.Service) {
						e.add(mp.child("method", "service"), fmt.Sprintf("invalid gRPC service name %q: want a dotted name such as helloworld.Greeter", *mm.Service))
					}
				}
				if mm.Method != nil {
					if regex {
						checkRegex(mp.child("method", "method"), *mm.Method, e)
					} else if !grpcMethodRE.MatchString(*mm.Method) {
						e.add(mp.child("method", "method"), fmt.Sprintf("invalid gRPC method name %q: want an identifier such as SayHello", *mm.Method))
					}
				}
			}
			checkMaxItems(mp.child("headers"), len(m.Headers), 16, e)
			seen := map[string]int{}
			for k, h := range m.Headers {
				hp := mp.child("headers").at(k)
				key := strings.ToLower(string(h.Name))
				if l, dup := seen[key]; dup {
					e.add(hp.child("name"), fmt.Sprintf("duplicate header %q (also headers[%d])", h.Name, l))
				}
				seen[key] = k
				checkMatchValue(hp.child("value"), h.Value, 4096, h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression, e)
			}
		}
		validateGRPCFilters(rule.Filters, rp.child("filters"), e)
		bp := rp.child("backendRefs")
		checkMaxItems(bp, len(rule.BackendRefs), 16, e)
		for j := range rule.BackendRefs {
			b := &rule.BackendRefs[j]
			validateBackendRef(&b.BackendRef, bp.at(j), e)
			validateGRPCFilters(b.Filters, bp.at(j).child("filters"), e)
		}
	}
	if total > 128 {
		e.add(rules, fmt.Sprintf("too many matches: %d across all rules, at most 128 allowed", total))
	}
}

func validateGRPCFilters(fs []gatewayv1.GRPCRouteFilter, p *fieldPath, e *errs) {
	checkMaxItems(p, len(fs), 16, e)
	count := map[gatewayv1.GRPCRouteFilterType]int{}
	for i := range fs {
		f := &fs[i]
		fp := p.at(i)
		count[f.Type]++
		if count[f.Type] == 2 && (f.Type == gatewayv1.GRPCRouteFilterRequestHeaderModifier || f.Type == gatewayv1.GRPCRouteFilterResponseHeaderModifier) {
			e.add(fp.child("type"), fmt.Sprintf("%s filter cannot be repeated", f.Type))
		}
		configs := []filterConfig{
			{string(gatewayv1.GRPCRouteFilterRequestHeaderModifier), "requestHeaderModifier", f.RequestHeaderModifier != nil},
			{string(gatewayv1.GRPCRouteFilterResponseHeaderModifier), "responseHeaderModifier", f.ResponseHeaderModifier != nil},
			{string(gatewayv1.GRPCRouteFilterRequestMirror), "requestMirror", f.RequestMirror != nil},
			{string(gatewayv1.GRPCRouteFilterExtensionRef), "extensionRef", f.ExtensionRef != nil},
		}
		checkFilterConfig(fp, string(f.Type), configs, e)
		if h := f.RequestHeaderModifier; h != nil {
			validateHeaderFilter(h, fp.child("requestHeaderModifier"), e)
		}
		if h := f.ResponseHeaderModifier; h != nil {
			validateHeaderFilter(h, fp.child("responseHeaderModifier"), e)
		}
		if m := f.RequestMirror; m != nil {
			validateMirror(m, fp.child("requestMirror"), e)
		}
	}
}
