// Package spiffe names mesh workload identities: SPIFFE IDs of the form
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, as Istio uses.
// It has no dependencies so that every binary, however small, may use it.
package spiffe

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// ID is a workload identity.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String renders the ID as a SPIFFE URI.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// Principal is the form AuthorizationPolicy principals use: the ID without "spiffe://".
func (id ID) Principal() string {
	return id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the ID as a URL, ready for an X.509 URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// Parse accepts exactly spiffe://<td>/ns/<ns>/sa/<sa>, with non-empty parts.
func Parse(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("SPIFFE ID %q: must start with spiffe://", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	for _, p := range []string{parts[0], parts[2], parts[4]} {
		if p == "" {
			return ID{}, fmt.Errorf("SPIFFE ID %q: empty trust domain, namespace or service account", s)
		}
	}
	if !validTrustDomain(parts[0]) {
		return ID{}, fmt.Errorf("SPIFFE ID %q: trust domain may hold only lowercase letters, digits, '.', '-' and '_'", s)
	}
	if !validSegment(parts[2]) || !validSegment(parts[4]) {
		return ID{}, fmt.Errorf("SPIFFE ID %q: namespace and service account may hold only letters, digits, '.', '-' and '_'", s)
	}
	return ID{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}

// ControlPlaneID is the identity of the control plane's serving certificate;
// proxies check it instead of the address they dialled.
func ControlPlaneID(trustDomain string) ID {
	return ID{TrustDomain: trustDomain, Namespace: "istio-system", ServiceAccount: "ambit-controlplane"}
}

// The SPIFFE spec's character sets: anything else (ports, queries, escapes,
// user info) would make two spellings of one identity possible.
func validTrustDomain(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validSegment(s string) bool {
	if s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// FromCertificate returns the single SPIFFE ID in cert's URI SANs. A
// certificate with none, several, or a malformed one is refused: identity must
// never be ambiguous.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return ID{}, fmt.Errorf("certificate %q has no SPIFFE URI SAN", cert.Subject.String())
	case 1:
		return Parse(found[0].String())
	default:
		return ID{}, fmt.Errorf("certificate %q has %d SPIFFE URI SANs, want exactly one", cert.Subject.String(), len(found))
	}
}
