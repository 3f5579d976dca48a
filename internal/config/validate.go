package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The validators enforce what the Kubernetes API server, the Gateway API CRD
// schemas and Istio's validating webhook would, so that a manifest ambit
// accepts from a directory would also be accepted by a cluster, and a
// mistake is reported when the file is read rather than when traffic fails.
// Messages name the rule broken and the value found; paths are relative to
// the object (the caller adds file, document, object and line).

type nameRule int

const (
	dns1123Subdomain nameRule = iota
	dns1123Label
	dns1035Label
)

var (
	dns1123LabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123SubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dns1035LabelRE     = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
)

// checkName returns why s is not a valid name under rule, or "".
func checkName(rule nameRule, s string) string {
	switch rule {
	case dns1123Label:
		if len(s) > 63 || !dns1123LabelRE.MatchString(s) {
			return fmt.Sprintf("invalid name %q: must be an RFC 1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)", s)
		}
	case dns1035Label:
		if len(s) > 63 || !dns1035LabelRE.MatchString(s) {
			return fmt.Sprintf("invalid name %q: must be an RFC 1035 label (at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)", s)
		}
	default:
		if len(s) > 253 || !dns1123SubdomainRE.MatchString(s) {
			return fmt.Sprintf("invalid name %q: must be an RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)", s)
		}
	}
	return ""
}

func validateMeta(info *kindInfo, m metav1.Object, e *errs) {
	meta := newPath("metadata")
	if n := m.GetName(); n != "" {
		if msg := checkName(info.name, n); msg != "" {
			e.add(meta.child("name"), msg)
		}
	}
	if ns := m.GetNamespace(); info.namespaced && ns != "" {
		if msg := checkName(dns1123Label, ns); msg != "" {
			e.add(meta.child("namespace"), strings.Replace(msg, "invalid name", "invalid namespace", 1))
		}
	}
	validateLabels(m.GetLabels(), meta.child("labels"), e)
	for _, k := range sortedMapKeys(m.GetAnnotations()) {
		if msg := checkQualifiedName(k); msg != "" {
			e.add(meta.child("annotations").key(k), "invalid annotation key: "+msg)
		}
	}
}

var (
	qualifiedNameRE = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	labelValueRE    = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

// checkQualifiedName checks a label or annotation key: an optional DNS
// subdomain prefix and "/", then a name of at most 63 characters.
func checkQualifiedName(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || len(prefix) > 253 || !dns1123SubdomainRE.MatchString(prefix)) {
		return fmt.Sprintf("%q: the prefix before '/' must be a lowercase DNS subdomain", k)
	}
	if name == "" || len(name) > 63 || !qualifiedNameRE.MatchString(name) {
		return fmt.Sprintf("%q: the name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k)
	}
	return ""
}

func validateLabels(labels map[string]string, p *fieldPath, e *errs) {
	for _, k := range sortedMapKeys(labels) {
		if msg := checkQualifiedName(k); msg != "" {
			e.add(p.key(k), "invalid label key "+msg)
			continue
		}
		if v := labels[k]; len(v) > 63 || !labelValueRE.MatchString(v) {
			e.add(p.key(k), fmt.Sprintf("invalid label value %q: must be empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", v))
		}
	}
}

func validateLabelSelector(s *metav1.LabelSelector, p *fieldPath, e *errs) {
	if s == nil {
		return
	}
	validateLabels(s.MatchLabels, p.child("matchLabels"), e)
	for i, r := range s.MatchExpressions {
		rp := p.child("matchExpressions").at(i)
		if msg := checkQualifiedName(r.Key); msg != "" {
			e.add(rp.child("key"), "invalid label key "+msg)
		}
		switch r.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(r.Values) == 0 {
				e.add(rp.child("values"), fmt.Sprintf("required for operator %s", r.Operator))
			}
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			if len(r.Values) > 0 {
				e.add(rp.child("values"), fmt.Sprintf("must be empty for operator %s", r.Operator))
			}
		case "":
			e.add(rp.child("operator"), "required; must be one of In, NotIn, Exists, DoesNotExist")
		default:
			e.add(rp.child("operator"), fmt.Sprintf("invalid operator %q: must be one of In, NotIn, Exists, DoesNotExist", r.Operator))
		}
	}
}

func checkPort[T int | int32 | int64 | uint32](p *fieldPath, port T, e *errs) {
	if port < 1 || port > 65535 {
		e.add(p, fmt.Sprintf("must be between 1 and 65535, got %d", port))
	}
}

func checkRange[T int | int32 | int64 | uint32](p *fieldPath, v, lo, hi T, e *errs) {
	switch {
	case v < lo:
		e.add(p, fmt.Sprintf("must be >= %d, got %d", lo, v))
	case v > hi:
		e.add(p, fmt.Sprintf("must be <= %d, got %d", hi, v))
	}
}

func checkMin[T int | int32 | int64](p *fieldPath, v, lo T, e *errs) {
	if v < lo {
		e.add(p, fmt.Sprintf("must be >= %d, got %d", lo, v))
	}
}

func checkMaxItems(p *fieldPath, n, max int, e *errs) {
	if n > max {
		e.add(p, fmt.Sprintf("too many items: %d, at most %d allowed", n, max))
	}
}

// checkRegex compiles a regular expression. Envoy and ambit's waypoint both
// use RE2 syntax, which is Go's, so what compiles here works there.
func checkRegex(p *fieldPath, expr string, e *errs) {
	if _, err := regexp.Compile(expr); err != nil {
		msg := strings.TrimPrefix(err.Error(), "error parsing regexp: ")
		e.add(p, fmt.Sprintf("invalid regular expression %q: %s", expr, msg))
	}
}

func checkEnum(p *fieldPath, v string, allowed []string, e *errs) {
	if !slices.Contains(allowed, v) {
		if v == "" {
			e.add(p, "required; must be one of "+strings.Join(allowed, ", "))
			return
		}
		e.add(p, fmt.Sprintf("invalid value %q: must be one of %s", v, strings.Join(allowed, ", ")))
	}
}

func checkIP(p *fieldPath, s string, e *errs) {
	if _, err := netip.ParseAddr(s); err != nil {
		e.add(p, fmt.Sprintf("invalid IP address %q", s))
	}
}

// checkIPOrCIDR accepts "10.0.0.1" and "10.0.0.0/16", as Istio's ipBlocks do.
func checkIPOrCIDR(p *fieldPath, s string, e *errs) {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			e.add(p, fmt.Sprintf("invalid CIDR %q", s))
		}
		return
	}
	if _, err := netip.ParseAddr(s); err != nil {
		e.add(p, fmt.Sprintf("invalid IP address or CIDR %q", s))
	}
}

var (
	ianaSvcNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	hasLetterRE   = regexp.MustCompile(`[a-z]`)
)

// checkPortName validates a named port (IANA service name syntax), which is
// what a Service targetPort or container port name must be.
func checkPortName(p *fieldPath, s string, e *errs) {
	if len(s) > 15 || !ianaSvcNameRE.MatchString(s) || strings.Contains(s, "--") || !hasLetterRE.MatchString(s) {
		e.add(p, fmt.Sprintf("invalid port name %q: must be at most 15 lowercase letters, digits and '-', with at least one letter, no '--', starting and ending with a letter or digit", s))
	}
}

var (
	wildcardLabelRE = regexp.MustCompile(`^(\*|\*?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)$`)
	hostLabelRE     = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
)

// checkIstioHost validates a host as Istio's ValidateWildcardDomain does:
// short names ("reviews"), FQDNs, and a wildcard in the first label only.
func checkIstioHost(p *fieldPath, h string, e *errs) {
	if h == "" {
		e.add(p, "required")
		return
	}
	if len(h) > 255 {
		e.add(p, fmt.Sprintf("host %q is too long (at most 255 characters)", truncate(h, 40)))
		return
	}
	labels := strings.Split(h, ".")
	if !wildcardLabelRE.MatchString(labels[0]) || len(labels[0]) > 63 {
		e.add(p, fmt.Sprintf("invalid host %q: label %q is not a DNS label (a wildcard may only be the first label, as in \"*.example.com\")", h, labels[0]))
		return
	}
	for _, l := range labels[1:] {
		if l == "" {
			e.add(p, fmt.Sprintf("invalid host %q: empty label (two dots in a row, or a trailing dot)", h))
			return
		}
		if len(l) > 63 || !hostLabelRE.MatchString(l) {
			e.add(p, fmt.Sprintf("invalid host %q: label %q is not a DNS label", h, l))
			return
		}
	}
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
