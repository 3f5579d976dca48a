package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Header names an HBONE request carries besides the pseudo-headers.
const (
	HeaderForwarded = "Forwarded"
	HeaderBaggage   = "Baggage"
)

// ---------------------------------------------------------------------------
// Forwarded (RFC 7239)

// FormatForwarded renders "for=<addr>" for the Forwarded header: an IPv4
// address bare, an IPv6 address quoted in brackets, as RFC 7239 §6 requires.
func FormatForwarded(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is6() {
		return `for="[` + addr.WithZone("").String() + `]"`
	}
	return "for=" + addr.String()
}

// ParseForwarded returns the for= address of the first element of the
// Forwarded header values (RFC 7239): the original client, since each proxy
// appends an element. values are the header's field lines, in order.
//
// It returns the zero Addr and no error when there is no header, when the
// first element has no for= parameter, or when that names no address
// ("unknown", an obfuscated "_node"). Anything that does not follow the
// RFC's grammar — bad quoting, a repeated parameter, an unquoted IPv6
// address, an address that does not parse — is an error, in any element. A
// port, when given, is checked and dropped. IPv4-mapped IPv6 addresses are
// returned as IPv4.
func ParseForwarded(values []string) (netip.Addr, error) {
	var first netip.Addr
	seenFirst := false
	for _, v := range values {
		p := fwdParser{s: v}
		for {
			p.skipOWS()
			if p.done() {
				break
			}
			if p.peek() == ',' { // empty list element, allowed by the #rule
				p.i++
				continue
			}
			forVal, hasFor, err := p.element()
			if err != nil {
				return netip.Addr{}, fmt.Errorf("malformed Forwarded header %q: %w", v, err)
			}
			var a netip.Addr
			if hasFor {
				if a, err = parseForwardedNode(forVal); err != nil {
					return netip.Addr{}, fmt.Errorf("malformed Forwarded header %q: for=%q: %w", v, forVal, err)
				}
			}
			if !seenFirst {
				seenFirst, first = true, a
			}
		}
	}
	return first, nil
}

type fwdParser struct {
	s string
	i int
}

func (p *fwdParser) done() bool { return p.i >= len(p.s) }
func (p *fwdParser) peek() byte { return p.s[p.i] }
func (p *fwdParser) skipOWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// element parses one forwarded-element up to and including the ',' that
// ends it, and returns its for= value (unquoted) if present.
func (p *fwdParser) element() (forVal string, hasFor bool, err error) {
	var seen [4]string // parameter names seen in this element (for, by, host, proto, and others)
	nseen := 0
	var extra []string
	for {
		p.skipOWS()
		if p.done() {
			return forVal, hasFor, nil
		}
		switch p.peek() {
		case ',':
			p.i++
			return forVal, hasFor, nil
		case ';': // empty pair
			p.i++
			continue
		}
		start := p.i
		for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
			p.i++
		}
		name := strings.ToLower(p.s[start:p.i])
		if name == "" {
			return "", false, fmt.Errorf("unexpected %q at offset %d", p.s[p.i], p.i)
		}
		if p.done() || p.peek() != '=' {
			return "", false, fmt.Errorf("parameter %q without '='", name)
		}
		p.i++
		var val string
		if !p.done() && p.peek() == '"' {
			val, err = p.quoted()
			if err != nil {
				return "", false, err
			}
		} else {
			start := p.i
			for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
				p.i++
			}
			val = p.s[start:p.i]
			if val == "" {
				return "", false, fmt.Errorf("parameter %q has an empty value", name)
			}
		}
		dup := false
		if nseen < len(seen) {
			dup = slices.Contains(seen[:nseen], name)
			if !dup {
				seen[nseen] = name
				nseen++
			}
		} else {
			dup = slices.Contains(seen[:], name) || slices.Contains(extra, name)
			if !dup {
				extra = append(extra, name)
			}
		}
		if dup {
			return "", false, fmt.Errorf("parameter %q repeated in one element", name)
		}
		if name == "for" {
			forVal, hasFor = val, true
		}
		p.skipOWS()
		if p.done() {
			return forVal, hasFor, nil
		}
		switch p.peek() {
		case ';':
			p.i++
		case ',':
			p.i++
			return forVal, hasFor, nil
		default:
			return "", false, fmt.Errorf("unexpected %q after parameter %q", p.peek(), name)
		}
	}
}

// quoted parses a quoted-string (RFC 9110 §5.6.4) starting at the opening quote.
func (p *fwdParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			if p.i+1 >= len(p.s) || !isQuotedPairChar(p.s[p.i+1]) {
				return "", errors.New("bad escape in quoted string")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case isQdText(c):
			b.WriteByte(c)
			p.i++
		default:
			return "", fmt.Errorf("invalid byte 0x%02x in quoted string", c)
		}
	}
	return "", errors.New("unterminated quoted string")
}

// parseForwardedNode parses an RFC 7239 §6 node: an IPv4 address, a
// bracketed IPv6 address, "unknown" or an obfuscated identifier, each with an
// optional port. A bare IPv6 address (which can only arrive quoted) is
// accepted too: without a port it is unambiguous.
func parseForwardedNode(s string) (netip.Addr, error) {
	if strings.EqualFold(s, "unknown") {
		return netip.Addr{}, nil
	}
	if rest, ok := strings.CutPrefix(s, "_"); ok {
		name, port, hasPort := strings.Cut(rest, ":")
		if !validObfuscated(name) {
			return netip.Addr{}, errors.New("invalid obfuscated identifier")
		}
		if hasPort {
			return netip.Addr{}, checkNodePort(":" + port)
		}
		return netip.Addr{}, nil
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, errors.New("missing ']'")
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Addr{}, errors.New("not an IPv6 address")
		}
		if err := checkNodePort(s[end+1:]); err != nil {
			return netip.Addr{}, err
		}
		return a.Unmap(), nil
	}
	if strings.Count(s, ":") > 1 {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Addr{}, errors.New("not an IP address")
		}
		return a.Unmap(), nil
	}
	host, port, _ := strings.Cut(s, ":")
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.New("not an IP address")
	}
	if port != "" || strings.HasSuffix(s, ":") {
		if err := checkNodePort(":" + port); err != nil {
			return netip.Addr{}, err
		}
	}
	return a, nil
}

// checkNodePort accepts "", ":<port>" or ":_<obfuscated>".
func checkNodePort(s string) error {
	if s == "" {
		return nil
	}
	if s[0] != ':' || len(s) == 1 {
		return errors.New("bad port")
	}
	s = s[1:]
	if s[0] == '_' {
		if !validObfuscated(s[1:]) {
			return errors.New("bad obfuscated port")
		}
		return nil
	}
	if len(s) > 5 {
		return errors.New("bad port")
	}
	if _, err := strconv.ParseUint(s, 10, 16); err != nil {
		return errors.New("bad port")
	}
	return nil
}

func validObfuscated(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// Baggage (W3C Baggage, https://www.w3.org/TR/baggage/)

// Limits of the W3C Baggage specification.
const (
	maxBaggageMembers = 180
	maxBaggageBytes   = 8192
)

// Baggage is the set of W3C baggage list-members of a request: key to
// (percent-decoded) value. Member properties are dropped.
type Baggage map[string]string

// ParseBaggage parses the baggage header's field lines. It is lenient, as
// telemetry must never break traffic: a malformed list-member is skipped,
// and the error (if not nil) describes the first one skipped while the
// result still holds every well-formed member. Of repeated keys, the first
// wins. Members beyond the specification's limits (180 members, 8192 bytes)
// are dropped with an error. It returns nil when there is no member.
func ParseBaggage(values []string) (Baggage, error) {
	var b Baggage
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	total, members := 0, 0
	for _, v := range values {
		total += len(v)
		for member := range strings.SplitSeq(v, ",") {
			member = strings.Trim(member, " \t")
			if member == "" {
				continue
			}
			members++
			if members > maxBaggageMembers || total > maxBaggageBytes {
				fail(fmt.Errorf("baggage exceeds %d members or %d bytes: rest dropped", maxBaggageMembers, maxBaggageBytes))
				return b, firstErr
			}
			key, val, err := parseBaggageMember(member)
			if err != nil {
				fail(fmt.Errorf("baggage member %q skipped: %w", member, err))
				continue
			}
			if b == nil {
				b = Baggage{}
			}
			if _, dup := b[key]; !dup {
				b[key] = val
			}
		}
	}
	return b, firstErr
}

func parseBaggageMember(m string) (key, val string, err error) {
	kv, _, _ := strings.Cut(m, ";") // properties are not kept
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return "", "", errors.New("no '='")
	}
	k = strings.Trim(k, " \t")
	v = strings.Trim(v, " \t")
	if k == "" || !isToken(k) {
		return "", "", errors.New("key is not a token")
	}
	for i := 0; i < len(v); i++ {
		if !isBaggageOctet(v[i]) {
			return "", "", fmt.Errorf("invalid byte 0x%02x in value", v[i])
		}
	}
	dec, err := percentDecode(v)
	if err != nil {
		return "", "", err
	}
	return k, dec, nil
}

func percentDecode(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", errors.New("bad percent-encoding in value")
		}
		out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	return string(out), nil
}

// String renders the baggage as a header value, keys sorted, values
// percent-encoded where the specification requires it.
func (b Baggage) String() string {
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for _, k := range keys {
		appendBaggageMember(&sb, k, b[k])
	}
	return sb.String()
}

func appendBaggageMember(sb *strings.Builder, key, val string) {
	if val == "" || !isToken(key) {
		return
	}
	if sb.Len() > 0 {
		sb.WriteByte(',')
	}
	sb.WriteString(key)
	sb.WriteByte('=')
	for i := 0; i < len(val); i++ {
		c := val[i]
		if isBaggageOctet(c) && c != '%' {
			sb.WriteByte(c)
			continue
		}
		const hexDigits = "0123456789ABCDEF"
		sb.WriteByte('%')
		sb.WriteByte(hexDigits[c>>4])
		sb.WriteByte(hexDigits[c&0xf])
	}
}

// Baggage keys Istio's ztunnel sends and understands.
const (
	BaggageCluster   = "k8s.cluster.name"
	BaggageNamespace = "k8s.namespace.name"
	BaggageService   = "service.name"
	BaggageVersion   = "service.version"
	BaggageRegion    = "cloud.region"
	BaggageZone      = "cloud.availability_zone"
)

// workloadKinds are the k8s.<kind>.name keys that name a workload.
var workloadKinds = []string{"deployment", "statefulset", "daemonset", "replicaset", "cronjob", "job", "pod"}

// PeerMetadata is what one end of a tunnel tells the other about its
// workload, in the baggage header, as Istio's ztunnel does; telemetry labels
// (source_workload, destination_zone, ...) come from it.
type PeerMetadata struct {
	Cluster   string // k8s.cluster.name
	Namespace string // k8s.namespace.name
	Workload  string // k8s.<WorkloadKind>.name
	// WorkloadKind is the lowercase Kubernetes kind owning the workload,
	// "deployment" when empty.
	WorkloadKind string
	Service      string // service.name (canonical service)
	Version      string // service.version (canonical revision)
	Region       string // cloud.region
	Zone         string // cloud.availability_zone
}

// Baggage renders m as a baggage header value in Istio's order; empty
// fields are left out.
func (m PeerMetadata) Baggage() string {
	kind := m.WorkloadKind
	if kind == "" {
		kind = "deployment"
	}
	var sb strings.Builder
	appendBaggageMember(&sb, BaggageCluster, m.Cluster)
	appendBaggageMember(&sb, BaggageNamespace, m.Namespace)
	appendBaggageMember(&sb, "k8s."+kind+".name", m.Workload)
	appendBaggageMember(&sb, BaggageService, m.Service)
	appendBaggageMember(&sb, BaggageVersion, m.Version)
	appendBaggageMember(&sb, BaggageRegion, m.Region)
	appendBaggageMember(&sb, BaggageZone, m.Zone)
	return sb.String()
}

// PeerMetadata extracts the workload metadata Istio puts in baggage.
func (b Baggage) PeerMetadata() PeerMetadata {
	m := PeerMetadata{
		Cluster:   b[BaggageCluster],
		Namespace: b[BaggageNamespace],
		Service:   b[BaggageService],
		Version:   b[BaggageVersion],
		Region:    b[BaggageRegion],
		Zone:      b[BaggageZone],
	}
	for _, kind := range workloadKinds {
		if v := b["k8s."+kind+".name"]; v != "" {
			m.Workload, m.WorkloadKind = v, kind
			break
		}
	}
	return m
}

// ---------------------------------------------------------------------------
// character classes

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isTokenChar: tchar of RFC 9110 §5.6.2.
func isTokenChar(c byte) bool {
	if isAlnum(c) {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// isQdText: qdtext of RFC 9110 §5.6.4 (obs-text included).
func isQdText(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || c >= 0x23 && c <= 0x5b || c >= 0x5d && c <= 0x7e || c >= 0x80
}

func isQuotedPairChar(c byte) bool {
	return c == '\t' || c == ' ' || c >= 0x21 && c <= 0x7e || c >= 0x80
}

// isBaggageOctet: baggage-octet of the W3C Baggage specification.
func isBaggageOctet(c byte) bool {
	return c == 0x21 || c >= 0x23 && c <= 0x2b || c >= 0x2d && c <= 0x3a || c >= 0x3c && c <= 0x5b || c >= 0x5d && c <= 0x7e
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
