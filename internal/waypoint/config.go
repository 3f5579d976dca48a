package waypoint

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/routematch"
)

// config is a WaypointConfig checked and compiled for the request path. It
// is immutable; a new one replaces it on every change.
type config struct {
	source          *meshv1.WaypointConfig
	name, namespace string
	waypointFor     string
	// services bound to the waypoint, by Service key.
	services map[string]*serviceRoutes
	policies []*l7Policy
	// dest holds DestinationRule settings by Service key.
	dest map[string]*destPolicy
}

type serviceRoutes struct {
	key      string
	ports    map[uint32]*portRoutes
	consumer map[string]map[uint32]*portRoutes // client namespace → port
}

type portRoutes struct {
	pr        *meshv1.PortRoutes
	needQuery bool // some rule matches query parameters
	rules     map[*meshv1.RouteRule]*rule
}

// rule holds what the request path needs of a RouteRule beyond the message.
type rule struct {
	r           *meshv1.RouteRule
	totalWeight uint64
	retry       *retryPolicy
}

type retryPolicy struct {
	attempts      int
	perTry        time.Duration
	backoff       time.Duration
	codes         map[int]bool
	on5xx         bool
	onGatewayErr  bool
	onConnect     bool // connect-failure, refused-stream, reset: always for the first byte not sent
	onReset       bool
	grpcCodes     map[string]bool // retriable gRPC statuses (cancelled, unavailable, ...)
	onRetriable4x bool            // retriable-4xx: 409
}

// forService returns the routes of svc's port for a client in namespace
// clientNS: its consumer routes if it has any for the port, else the
// producer routes. Nil when the port has none (not an L7 port of the
// Service, or the Service is not bound here).
func (c *config) forService(svcKey string, port uint32, clientNS string) *portRoutes {
	sr := c.services[svcKey]
	if sr == nil {
		return nil
	}
	if cons := sr.consumer[clientNS]; cons != nil {
		if pr := cons[port]; pr != nil {
			return pr
		}
	}
	return sr.ports[port]
}

// compileConfig checks wc and compiles it. Errors name the field.
func compileConfig(wc *meshv1.WaypointConfig) (*config, error) {
	if wc.GetName() == "" || wc.GetNamespace() == "" {
		return nil, fmt.Errorf("name and namespace: required")
	}
	c := &config{source: wc, name: wc.GetName(), namespace: wc.GetNamespace(), waypointFor: wc.GetWaypointFor(),
		services: map[string]*serviceRoutes{}, dest: map[string]*destPolicy{}}
	switch c.waypointFor {
	case "", "service", "workload", "all", "none":
	default:
		return nil, fmt.Errorf("waypoint_for: %q is not one of service, workload, all, none", c.waypointFor)
	}
	for i, sr := range wc.GetServices() {
		field := fmt.Sprintf("services[%d]", i)
		if !validServiceKey(sr.GetService()) {
			return nil, fmt.Errorf("%s.service: %q is not <namespace>/<hostname>", field, sr.GetService())
		}
		s := c.services[sr.GetService()]
		if s == nil {
			s = &serviceRoutes{key: sr.GetService(), ports: map[uint32]*portRoutes{}, consumer: map[string]map[uint32]*portRoutes{}}
			c.services[s.key] = s
		}
		for j, pr := range sr.GetPorts() {
			pf := fmt.Sprintf("%s.ports[%d]", field, j)
			cp, err := compilePortRoutes(pf, pr)
			if err != nil {
				return nil, err
			}
			target := s.ports
			if ns := pr.GetConsumerNamespace(); ns != "" {
				if target = s.consumer[ns]; target == nil {
					target = map[uint32]*portRoutes{}
					s.consumer[ns] = target
				}
			}
			if target[pr.GetPort()] != nil {
				return nil, fmt.Errorf("%s.port: %d appears twice for %s", pf, pr.GetPort(), s.key)
			}
			target[pr.GetPort()] = cp
		}
	}
	scoped := map[string][]string{}
	for k, l := range wc.GetPolicyServices() {
		scoped[k] = l.GetServices()
	}
	for i, a := range wc.GetPolicies() {
		p, err := compileL7Policy(a, scoped)
		if err != nil {
			return nil, fmt.Errorf("policies[%d] (%s/%s): %w", i, a.GetNamespace(), a.GetName(), err)
		}
		c.policies = append(c.policies, p)
	}
	for i, dp := range wc.GetDestinationPolicies() {
		d, err := compileDestPolicy(dp)
		if err != nil {
			return nil, fmt.Errorf("destination_policies[%d] (%s): %w", i, dp.GetOrigin(), err)
		}
		c.dest[dp.GetService()] = d
	}
	return c, nil
}

func validServiceKey(k string) bool {
	ns, host, ok := strings.Cut(k, "/")
	return ok && ns != "" && host != ""
}

func validPort(p uint32) bool { return p > 0 && p <= 65535 }

func compilePortRoutes(field string, pr *meshv1.PortRoutes) (*portRoutes, error) {
	if !validPort(pr.GetPort()) {
		return nil, fmt.Errorf("%s.port: %d is not in 1-65535", field, pr.GetPort())
	}
	if _, ok := meshv1.AppProtocol_name[int32(pr.GetProtocol())]; !ok {
		return nil, fmt.Errorf("%s.protocol: unknown value %d", field, pr.GetProtocol())
	}
	out := &portRoutes{pr: pr, rules: make(map[*meshv1.RouteRule]*rule, len(pr.GetRules()))}
	for i, r := range pr.GetRules() {
		rf := fmt.Sprintf("%s.rules[%d]", field, i)
		if r == nil {
			return nil, fmt.Errorf("%s: null rule", rf)
		}
		cr, err := compileRule(rf, r)
		if err != nil {
			return nil, err
		}
		for _, m := range r.GetMatches() {
			if len(m.GetQueryParams()) > 0 {
				out.needQuery = true
			}
		}
		out.rules[r] = cr
	}
	return out, nil
}

func compileRule(field string, r *meshv1.RouteRule) (*rule, error) {
	out := &rule{r: r}
	for i, m := range r.GetMatches() {
		mf := fmt.Sprintf("%s.matches[%d]", field, i)
		if m == nil {
			return nil, fmt.Errorf("%s: null match", mf)
		}
		if p := m.GetPath(); p != nil {
			if _, ok := meshv1.PathMatch_Type_name[int32(p.GetType())]; !ok {
				return nil, fmt.Errorf("%s.path.type: unknown value %d", mf, p.GetType())
			}
			if p.GetType() == meshv1.PathMatch_REGEX {
				if err := checkRegex(p.GetValue()); err != nil {
					return nil, fmt.Errorf("%s.path.value: %v", mf, err)
				}
			}
		}
		for j, h := range append(append([]*meshv1.HeaderMatch(nil), m.GetHeaders()...), m.GetQueryParams()...) {
			if h == nil || h.GetName() == "" {
				return nil, fmt.Errorf("%s: header or query match %d without a name", mf, j)
			}
			if h.GetType() == meshv1.HeaderMatch_REGEX {
				if err := checkRegex(h.GetValue()); err != nil {
					return nil, fmt.Errorf("%s: match on %q: %v", mf, h.GetName(), err)
				}
			}
		}
	}
	for i, b := range r.GetBackends() {
		bf := fmt.Sprintf("%s.backends[%d]", field, i)
		if b.GetInvalidReason() == "" {
			if err := checkDestination(bf+".destination", b.GetDestination()); err != nil {
				return nil, err
			}
		}
		out.totalWeight += uint64(b.GetWeight())
	}
	for i, m := range r.GetMirrors() {
		mf := fmt.Sprintf("%s.mirrors[%d]", field, i)
		if err := checkDestination(mf+".destination", m.GetDestination()); err != nil {
			return nil, err
		}
		if p := m.GetPercent(); p < 0 || p > 100 {
			return nil, fmt.Errorf("%s.percent: %v is not in 0-100", mf, p)
		}
	}
	if rd := r.GetRedirect(); rd != nil {
		switch rd.GetStatusCode() {
		case 0, 301, 302, 303, 307, 308:
		default:
			return nil, fmt.Errorf("%s.redirect.status_code: %d is not a redirect status", field, rd.GetStatusCode())
		}
		if rd.GetPort() > 65535 {
			return nil, fmt.Errorf("%s.redirect.port: %d is not in 1-65535", field, rd.GetPort())
		}
		switch rd.GetScheme() {
		case "", "http", "https":
		default:
			return nil, fmt.Errorf("%s.redirect.scheme: %q is not http or https", field, rd.GetScheme())
		}
	}
	if rw := r.GetRewrite(); rw != nil && rw.GetRegex() != "" {
		if _, err := regexp.Compile(rw.GetRegex()); err != nil {
			return nil, fmt.Errorf("%s.rewrite.regex: %v", field, err)
		}
	}
	if r.GetDirectStatus() != 0 && (r.GetDirectStatus() < 200 || r.GetDirectStatus() > 599) {
		return nil, fmt.Errorf("%s.direct_status: %d is not in 200-599", field, r.GetDirectStatus())
	}
	if r.GetTimeoutMs() < 0 || r.GetBackendTimeoutMs() < 0 {
		return nil, fmt.Errorf("%s: negative timeout", field)
	}
	if f := r.GetFault(); f != nil {
		if f.GetDelayPercent() < 0 || f.GetDelayPercent() > 100 || f.GetAbortPercent() < 0 || f.GetAbortPercent() > 100 {
			return nil, fmt.Errorf("%s.fault: percentages must be in 0-100", field)
		}
		if f.GetDelayMs() < 0 {
			return nil, fmt.Errorf("%s.fault.delay_ms: negative", field)
		}
		if s := f.GetAbortStatus(); s != 0 && (s < 200 || s > 599) {
			return nil, fmt.Errorf("%s.fault.abort_status: %d is not in 200-599", field, s)
		}
		if f.GetAbortGrpcStatus() > 16 {
			return nil, fmt.Errorf("%s.fault.abort_grpc_status: %d is not a gRPC status", field, f.GetAbortGrpcStatus())
		}
	}
	if rt := r.GetRetry(); rt != nil {
		p, err := compileRetry(field+".retry", rt)
		if err != nil {
			return nil, err
		}
		out.retry = p
	}
	return out, nil
}

func checkRegex(p string) error {
	_, err := regexp.Compile(routematch.Anchored(p))
	return err
}

func checkDestination(field string, d *meshv1.Destination) error {
	if d == nil {
		return fmt.Errorf("%s: required", field)
	}
	if !validServiceKey(d.GetService()) {
		return fmt.Errorf("%s.service: %q is not <namespace>/<hostname>", field, d.GetService())
	}
	if !validPort(d.GetPort()) {
		return fmt.Errorf("%s.port: %d is not in 1-65535", field, d.GetPort())
	}
	return nil
}

// retriable gRPC statuses by Envoy's retry_on names.
var grpcRetryOn = map[string]string{
	"cancelled": "1", "deadline-exceeded": "4", "resource-exhausted": "8", "unavailable": "14", "internal": "13",
}

func compileRetry(field string, rt *meshv1.Retry) (*retryPolicy, error) {
	p := &retryPolicy{attempts: int(rt.GetAttempts()), perTry: ms(rt.GetPerTryTimeoutMs()), backoff: ms(rt.GetBackoffMs()), codes: map[int]bool{}}
	if rt.GetPerTryTimeoutMs() < 0 || rt.GetBackoffMs() < 0 {
		return nil, fmt.Errorf("%s: negative duration", field)
	}
	for i, c := range rt.GetCodes() {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("%s.codes[%d]: %d is not an HTTP status", field, i, c)
		}
		p.codes[int(c)] = true
	}
	// Connection failures are always retried: nothing reached the backend.
	p.onConnect = true
	for _, on := range rt.GetRetryOn() {
		switch on {
		case "5xx":
			p.on5xx = true
		case "gateway-error":
			p.onGatewayErr = true
		case "reset", "reset-before-request":
			p.onReset = true
		case "connect-failure", "refused-stream", "retriable-status-codes", "envoy-ratelimited", "http3-post-connect-failure":
		case "retriable-4xx":
			p.onRetriable4x = true
		default:
			if code, ok := grpcRetryOn[on]; ok {
				if p.grpcCodes == nil {
					p.grpcCodes = map[string]bool{}
				}
				p.grpcCodes[code] = true
				continue
			}
			return nil, fmt.Errorf("%s.retry_on: unknown condition %q", field, on)
		}
	}
	// Gateway API retries (codes only) and Istio's retries without
	// conditions retry on the listed codes; Istio's default policy adds
	// 503 and the connection failures.
	if len(rt.GetCodes()) == 0 && len(rt.GetRetryOn()) == 0 {
		p.codes[503] = true
	}
	return p, nil
}

// defaultRetry is Istio's default retry policy for HTTP routes that set
// none (meshConfig.defaultHttpRetryPolicy): two retries on connection
// failures, refused streams, gRPC unavailable/cancelled and 503, each on
// an endpoint the request has not tried yet where there is one (Envoy's
// previous_hosts retry predicate, which Istio's default policy sets).
var defaultRetry = &retryPolicy{attempts: 2, onConnect: true, codes: map[int]bool{503: true}, grpcCodes: map[string]bool{"1": true, "14": true}}

func (p *retryPolicy) retriableStatus(code int, grpcStatus string) bool {
	switch {
	case p.codes[code]:
		return true
	case p.on5xx && code >= 500:
		return true
	case p.onGatewayErr && (code == 502 || code == 503 || code == 504):
		return true
	case p.onRetriable4x && code == 409:
		return true
	case grpcStatus != "" && p.grpcCodes[grpcStatus]:
		return true
	}
	return false
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
