package waypoint

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/routematch"
	"github.com/ambit-mesh/ambit/internal/ztunnel/authz"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// exchange is one request on its way through the waypoint.
type exchange struct {
	p     *Proxy
	w     http.ResponseWriter
	r     *http.Request
	t     *tunnel
	cfg   *config
	view  *state.View
	start time.Time

	svc      *meshv1.Service // addressed Service (nil: a workload)
	svcKey   string          // and its key
	dstSvc   *meshv1.Service // backend Service the request went to
	endpoint *state.Endpoint
	upstream netip.AddrPort
	rule     *rule
	status   int
	grpc     string
	flags    string
	reqBody  func() int64 // bytes of a streamed body read so far
	bodyN    int64        // else: of the body read into memory
	respN    int64
	grpcReq  bool

	nfields     int   // request header fields as received
	fieldsBytes int64 // and their size

	srcW    *meshv1.Workload // the client's workload (source), once looked up
	srcDone bool

	// The upstream request of an attempt sent with the synchronous client
	// (nothing holds it past the attempt).
	out    http.Request
	outURL url.URL
	body   memBody
}

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

// ServeHTTP handles one request that arrived through a tunnel.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := exchangePool.Get().(*exchange)
	*x = exchange{p: p, w: w, r: r, t: tunnelFrom(r.Context()), cfg: p.store.config(), view: p.store.state.View(), start: time.Now(), flags: "-"}
	x.grpcReq = strings.HasPrefix(headerValue(r.Header, "Content-Type"), "application/grpc")
	// The request's header fields as received (the HTTP/1.1 loop counted
	// them as it parsed).
	if hw, ok := w.(*h1Writer); ok {
		x.nfields, x.fieldsBytes = hw.nfields, hw.fieldsBytes
	} else {
		x.nfields, x.fieldsBytes = headerCount(r.Header), headerSize(r.Header)
	}
	defer func() {
		// Also when the handler aborts a broken response (panic
		// http.ErrAbortHandler), which net/http recovers.
		x.finish()
		*x = exchange{}
		exchangePool.Put(x)
	}()
	if x.t == nil || x.cfg == nil {
		x.reply(http.StatusServiceUnavailable, "NC", "no configuration\n")
		return
	}
	x.serve()
}

// reply answers locally (no upstream): a gRPC request gets its status in a
// trailers-only response, as Envoy does.
func (x *exchange) reply(status int, flags, body string) {
	x.status, x.flags = status, flags
	h := x.w.Header()
	if x.grpcReq {
		x.status, x.grpc = http.StatusOK, grpcStatusFor(status)
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", x.grpc)
		h.Set("Grpc-Message", strings.TrimSpace(body))
		x.w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(status)
	n, _ := io.WriteString(x.w, body)
	x.respN += int64(n)
}

// grpcStatusFor maps an HTTP status to a gRPC status as gRPC does
// (https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md).
func grpcStatusFor(status int) string {
	switch status {
	case 400:
		return "13"
	case 401:
		return "16"
	case 403:
		return "7"
	case 404:
		return "12"
	case 429, 502, 503, 504:
		return "14"
	}
	return "2"
}

func (x *exchange) serve() {
	r := x.r
	lim := &x.p.limits
	if len(r.RequestURI) > lim.MaxURIBytes {
		x.reply(http.StatusRequestURITooLong, "-", "request target too long\n")
		return
	}
	if x.nfields > lim.MaxHeaders {
		x.reply(http.StatusRequestHeaderFieldsTooLarge, "-", "too many request headers\n")
		return
	}
	dst := x.t.authority
	svc, _ := x.view.ServiceByVIP(dst)
	x.svc = svc
	svcKey := ""
	if svc != nil {
		svcKey = x.t.serviceKey(svc)
		x.svcKey = svcKey
	}
	conn := authz.Conn{Source: x.t.peer, SourceIP: x.t.src, DestinationIP: dst.Addr(), DestinationPort: dst.Port()}
	attrs := requestAttrs{host: r.Host, method: r.Method, path: r.URL.Path, header: r.Header}
	if ok, policy := x.cfg.authorize(svcKey, &conn, &attrs); !ok {
		x.p.log.Debug("request denied", "policy", policy, "src", x.t.src.String(), "path", r.URL.Path)
		x.reply(http.StatusForbidden, "-", "RBAC: access denied")
		return
	}
	if svc == nil {
		// Addressed to a workload: no routes apply, it goes to that workload.
		x.forwardTo(nil, nil, nil, dst)
		return
	}
	pr := x.cfg.forService(svcKey, uint32(dst.Port()), x.clientNamespace())
	if pr == nil {
		x.forwardTo(nil, nil, nil, netip.AddrPort{})
		return
	}
	var query url.Values
	if pr.needQuery {
		query = r.URL.Query()
	}
	rr, ok := routematch.SelectRule(pr.pr, r.Method, r.URL.Path, r.Header, query)
	if !ok {
		x.reply(http.StatusNotFound, "NR", "route not found\n")
		return
	}
	x.rule = pr.rules[rr]
	if f := rr.GetFault(); f != nil {
		if f.GetDelayMs() > 0 && roll(f.GetDelayPercent()) {
			x.flags = "DI"
			select {
			case <-time.After(ms(f.GetDelayMs())):
			case <-r.Context().Done():
				x.status, x.flags = 499, "DC"
				return
			}
		}
		if (f.GetAbortStatus() != 0 || f.GetAbortGrpcStatus() != 0) && roll(f.GetAbortPercent()) {
			x.abort(f)
			return
		}
	}
	switch {
	case rr.GetRedirect() != nil:
		x.redirect(rr)
		return
	case rr.GetDirectStatus() != 0:
		x.reply(int(rr.GetDirectStatus()), "-", rr.GetDirectBody())
		return
	}
	be := pickBackend(rr.GetBackends(), x.rule.totalWeight)
	if be == nil {
		x.reply(http.StatusInternalServerError, "NR", "no backend\n")
		return
	}
	if be.GetInvalidReason() != "" {
		x.reply(http.StatusInternalServerError, "NR", be.GetInvalidReason()+"\n")
		return
	}
	x.forwardTo(rr, be, x.rule, netip.AddrPort{})
}

// clientNamespace is the client's namespace for consumer routes: its
// workload's, else its identity's.
func (x *exchange) clientNamespace() string {
	if w := x.source(); w != nil {
		return w.GetNamespace()
	}
	return x.t.peer.Namespace
}

func roll(percent float64) bool {
	return percent >= 100 || (percent > 0 && rand.Float64()*100 < percent)
}

func pickBackend(bs []*meshv1.WeightedBackend, total uint64) *meshv1.WeightedBackend {
	if total == 0 {
		return nil
	}
	n := rand.Uint64N(total)
	for _, b := range bs {
		if w := uint64(b.GetWeight()); n < w {
			return b
		}
		n -= uint64(b.GetWeight())
	}
	return nil
}

func (x *exchange) abort(f *meshv1.Fault) {
	x.flags = "FI"
	if x.grpcReq && f.GetAbortGrpcStatus() != 0 || f.GetAbortStatus() == 0 {
		x.status = http.StatusOK
		x.grpc = strconv.Itoa(int(f.GetAbortGrpcStatus()))
		h := x.w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", x.grpc)
		h.Set("Grpc-Message", "fault filter abort")
		x.w.WriteHeader(http.StatusOK)
		return
	}
	x.reply(int(f.GetAbortStatus()), "FI", "fault filter abort")
}

func (x *exchange) redirect(rr *meshv1.RouteRule) {
	host, port := x.r.Host, uint32(0)
	if h, ps, err := net.SplitHostPort(host); err == nil {
		if n, err := strconv.ParseUint(ps, 10, 16); err == nil {
			host, port = h, uint32(n)
		}
	}
	if port == 0 {
		port = 80
	}
	loc, status := routematch.RedirectLocation(rr, "http", host, port, x.r.URL.EscapedPath(), x.r.URL.RawQuery)
	x.status = int(status)
	x.w.Header().Set("Location", loc)
	x.w.WriteHeader(int(status))
}

// headerValue is h.Get(key) for a key already in canonical form (the
// headers of requests and responses always are: every parser
// canonicalizes), without canonicalizing it again on every call.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// removeHopHeaders deletes the connection-specific fields (RFC 9110
// 7.6.1) and those the Connection field names: one pass over h.
func removeHopHeaders(h http.Header) {
	conn := h["Connection"]
	for k, vv := range h {
		if isHopHeader(k, vv) {
			delete(h, k)
		}
	}
	removeConnectionListed(h, conn)
}

// copyEndToEnd copies the fields of src that are not connection-specific
// into dst (what removeHopHeaders would leave of them).
func copyEndToEnd(dst, src http.Header) {
	for k, vv := range src {
		if !isHopHeader(k, vv) {
			dst[k] = vv
		}
	}
	removeConnectionListed(dst, src["Connection"])
}

// isHopHeader reports a field that is never forwarded; TE only when it
// asks for more than trailers.
func isHopHeader(k string, vv []string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	case "Te":
		return !(len(vv) == 1 && strings.EqualFold(vv[0], "trailers"))
	}
	return false
}

// removeConnectionListed deletes the fields a Connection field lists.
func removeConnectionListed(h http.Header, conn []string) {
	for _, v := range conn {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if f = strings.TrimSpace(f); f != "" {
				delete(h, http.CanonicalHeaderKey(f))
			}
		}
	}
}

func applyHeaders(h http.Header, m *meshv1.HeaderModifier) {
	if m == nil {
		return
	}
	for _, name := range m.GetRemove() {
		h.Del(name)
	}
	for _, s := range m.GetSet() {
		h.Set(s.GetName(), s.GetValue())
	}
	for _, a := range m.GetAdd() {
		h.Add(a.GetName(), a.GetValue())
	}
}

// isUpgrade reports a WebSocket (or other) HTTP/1.1 upgrade request.
func isUpgrade(r *http.Request) bool {
	if r.ProtoMajor != 1 || headerValue(r.Header, "Upgrade") == "" {
		return false
	}
	for _, v := range r.Header["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return true
			}
		}
	}
	return false
}

// forwardTo sends the request upstream: to a backend of rule rr (be set),
// to the addressed Service itself (nothing set), or to a workload (direct).
func (x *exchange) forwardTo(rr *meshv1.RouteRule, be *meshv1.WeightedBackend, ru *rule, direct netip.AddrPort) {
	r := x.r
	upgrade := isUpgrade(r)
	upgradeProto := headerValue(r.Header, "Upgrade")
	removeHopHeaders(r.Header)
	if upgrade {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", upgradeProto)
	}
	path := r.URL.Path
	rawPath := r.URL.RawPath
	host := r.Host
	if rr != nil {
		applyHeaders(r.Header, rr.GetRequestHeaders())
		applyHeaders(r.Header, be.GetRequestHeaders())
		if rw := rr.GetRewrite(); rw != nil {
			if np := routematch.RewritePath(rr, path); np != path {
				path, rawPath = np, ""
			}
			if rw.GetHostname() != "" {
				host = rw.GetHostname()
			}
		}
	}
	if xff := r.Header["X-Forwarded-For"]; len(xff) > 0 {
		r.Header.Set("X-Forwarded-For", strings.Join(xff, ", ")+", "+x.t.srcText)
	} else {
		r.Header["X-Forwarded-For"] = []string{x.t.srcText}
	}
	if headerValue(r.Header, "X-Forwarded-Proto") == "" {
		r.Header["X-Forwarded-Proto"] = forwardedProtoHTTP
	}
	if headerValue(r.Header, "X-Request-Id") == "" {
		r.Header["X-Request-Id"] = []string{requestID()}
	}

	// Where to: a Service port (and subset), or one workload address.
	var dest *meshv1.Destination
	var own meshv1.Destination // the addressed Service's port
	switch {
	case be != nil:
		dest = be.GetDestination()
	case !direct.IsValid():
		own.Service, own.Port = x.svcKey, uint32(x.t.authority.Port())
		dest = &own
	}
	var sp *meshv1.ServicePort
	var c *cluster
	var tp = defaultTrafficPolicy
	if dest != nil {
		x.dstSvc = x.view.ServiceByKey(dest.GetService())
		for _, p := range x.dstSvc.GetPorts() {
			if p.GetPort() == dest.GetPort() {
				sp = p
			}
		}
		if x.dstSvc == nil || sp == nil {
			x.reply(http.StatusServiceUnavailable, "UH", "no healthy upstream")
			return
		}
		c, tp = x.p.clusterFor(x.cfg, dest.GetService(), dest.GetSubset())
	} else {
		x.dstSvc = nil
	}

	// Timeouts: the route's for the whole exchange; the backend's (or the
	// retry policy's per-try) for each attempt to get response headers.
	ctx := r.Context()
	if rr.GetTimeoutMs() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ms(rr.GetTimeoutMs()))
		defer cancel()
	}
	perTry := ms(rr.GetBackendTimeoutMs())
	retry := defaultRetry
	if ru != nil && ru.retry != nil {
		retry = ru.retry
	}
	if retry != nil && retry.perTry > 0 && (perTry == 0 || retry.perTry < perTry) {
		perTry = retry.perTry
	}

	// The body. A small one of declared length (the common HTTP/1.1 case)
	// is read first and sent from memory: one write upstream instead of
	// headers and body apart, and trivially sent again for retries and
	// mirrors. Others stream, tapped when they may be sent again.
	// HTTP/2 upstream: to a Service port that declares it, or for a
	// request that came over HTTP/2.
	useH2 := !upgrade && (r.ProtoMajor == 2 || (sp != nil && (sp.GetAppProtocol() == meshv1.AppProtocol_HTTP2 || sp.GetAppProtocol() == meshv1.AppProtocol_GRPC)))
	var whole []byte
	var tap *bodyTap
	var counted *countingBody
	hasBody := r.Body != nil && r.Body != http.NoBody
	switch {
	case hasBody && r.ContentLength > 0 && r.ContentLength <= int64(x.p.limits.BufferBytes) && headerValue(r.Header, "Expect") == "":
		if mb, ok := r.Body.(*memBody); ok && !useH2 && mb.off == 0 && int64(len(mb.b)) == r.ContentLength {
			// The HTTP/1.1 loop has read it, into a buffer that stays
			// untouched until the handler returns: sent from there.
			whole, mb.off = mb.b, len(mb.b)
			x.bodyN = int64(len(whole))
			break
		}
		whole = getBodyBuf(int(r.ContentLength))
		if !useH2 { // HTTP/2 may still be sending it when the handler returns
			defer putBodyBuf(whole)
		}
		n, err := io.ReadFull(r.Body, whole)
		x.bodyN = int64(n)
		if err != nil {
			x.status, x.flags = 499, "DC" // the client went away mid-body
			return
		}
	case hasBody && (retry != nil || len(rr.GetMirrors()) > 0):
		tap = newBodyTap(r.Body, x.p.limits.BufferBytes)
		x.reqBody = tap.bytesRead
	case hasBody:
		counted = &countingBody{ReadCloser: r.Body}
		x.reqBody = counted.n.Load
	}

	var transport http.RoundTripper = x.p.h1
	switch {
	case useH2:
		transport = x.p.h2
	case !upgrade && tap == nil && counted == nil && headerValue(r.Header, "Expect") == "":
		transport = x.p.h1fast // the body, if any, is in memory
	}
	var hash uint64
	var hasHash bool
	if tp.lb == lbHash {
		hash, hasHash = x.hashKey(tp)
	}

	attempts := 1
	if retry != nil {
		attempts += retry.attempts
	}
	var resp *http.Response
	var lastErr error
	var tried []*state.Endpoint // allocated on a retry only
	for try := 0; try < attempts; try++ {
		if try > 0 {
			if !c.retryAllowed() {
				x.flags = "URX"
				break
			}
			wait := retryBackoff(retry.backoff, try)
			c.releaseRetry()
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			// A retry chooses among the endpoints as they are now: in a
			// rollout, the view the request began with may list only pods
			// that have left since.
			x.view = x.p.store.state.View()
		}
		target := direct
		var e *state.Endpoint
		var st *endpointStats
		if c != nil {
			eps := c.endpoints(x.view.Endpoints(dest.GetService()))
			// A first attempt that can be sent twice (no body, a method
			// that changes nothing) lets a copy probe another zone.
			shadow := try == 0 && !hasBody && !upgrade && (r.Method == http.MethodGet || r.Method == http.MethodHead)
			var probe *state.Endpoint
			e, probe = c.pickShadow(eps, &state.Request{Service: x.dstSvc, Port: sp, Source: c.caller(x.view, x.t, x.source()), Zone: headerValue(r.Header, destinationZoneHeader)}, hash, hasHash, tried, shadow)
			if probe != nil {
				x.p.sendProbe(c, eps, probe, sp, r, x.t, host, path, rawPath)
			}
			if e == nil {
				x.reply(http.StatusServiceUnavailable, "UH", "no healthy upstream")
				return
			}
			tport, ok := e.TargetPort(sp)
			if !ok {
				x.reply(http.StatusServiceUnavailable, "UH", "no healthy upstream")
				return
			}
			target = netip.AddrPortFrom(e.Address(x.t.authority.Addr()), tport)
			if err := c.acquire(ctx); err != nil {
				if errors.Is(err, errOverflow) {
					x.reply(http.StatusServiceUnavailable, "UO", "upstream connect error or disconnect/reset before headers. reset reason: overflow")
				} else {
					x.timeoutReply(ctx)
				}
				return
			}
			st = c.statsOf(e.Workload.GetUid())
			st.active.Add(1)
		}
		x.endpoint, x.upstream = e, target
		out, u := &x.out, &x.outURL
		if transport != x.p.h1fast {
			out, u = new(http.Request), new(url.URL)
		}
		*u = url.URL{Scheme: "http", Host: x.t.upstreamHost(x.p, target), Path: path, RawPath: rawPath, RawQuery: r.URL.RawQuery}
		*out = http.Request{
			Method: r.Method, URL: u,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: r.Header, Host: host, ContentLength: r.ContentLength, Trailer: r.Trailer,
		}
		switch {
		case whole != nil && transport == x.p.h1fast:
			x.body = memBody{b: whole}
			out.Body = &x.body
		case whole != nil:
			b := whole // captured: whole itself stays on the stack
			out.Body = io.NopCloser(bytes.NewReader(b))
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		case tap != nil:
			out.Body = tap.attempt()
		case counted != nil:
			out.Body = counted
		}
		// An attempt gets a context of its own only for a per-try
		// timeout; a context that can never end is not passed at all
		// (WithContext copies the request).
		actx, acancel := ctx, noCancel
		timedOut := &notTimedOut
		var timer *time.Timer
		if perTry > 0 {
			actx, acancel = context.WithCancel(ctx)
			timedOut = new(atomic.Bool)
			timer = time.AfterFunc(perTry, func() { timedOut.Store(true); acancel() })
		}
		if actx.Done() != nil {
			out = out.WithContext(actx)
		}
		if c != nil {
			c.health.Begin(e) // observe follows, whatever happens
		}
		sent := time.Now()
		resp, lastErr = transport.RoundTrip(out)
		if timer != nil && !timer.Stop() && lastErr == nil {
			// The per-try timer fired as the headers arrived: the attempt
			// is cancelled, so its body would fail.
			lastErr = context.DeadlineExceeded
			resp.Body.Close()
			resp = nil
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		if c != nil {
			c.observe(c.endpoints(x.view.Endpoints(dest.GetService())), e, status, time.Since(sent))
		}
		retriable := retry != nil && try+1 < attempts && (tap == nil || tap.replayable()) && !upgrade
		if lastErr == nil {
			g := headerValue(resp.Header, "Grpc-Status")
			if retriable && retry.retriableStatus(resp.StatusCode, g) {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				resp = nil
				x.release(c, st)
				acancel()
				tried = append(tried, e)
				continue
			}
			if z := x.p.clusters.servedZone(e); z != "" {
				resp.Header.Set(servedZoneHeader, z)
			}
			// The attempt's cancel runs when the response is done.
			x.respond(resp, rr, be, upgrade, func() { acancel(); x.release(c, st) })
			x.mirror(rr, tap, whole, host, path, rawPath)
			return
		}
		acancel()
		x.release(c, st)
		tried = append(tried, e)
		if ctx.Err() != nil || (timedOut.Load() && !retriable) {
			break
		}
		if !retriable {
			break
		}
	}
	if resp == nil {
		switch {
		case ctx.Err() != nil && r.Context().Err() == nil:
			x.timeoutReply(ctx)
		case r.Context().Err() != nil:
			x.status, x.flags = 499, "DC"
		case errors.Is(lastErr, context.Canceled) || errors.Is(lastErr, context.DeadlineExceeded):
			x.reply(http.StatusGatewayTimeout, "UT", "upstream request timeout")
		case x.flags == "URX":
			x.reply(http.StatusServiceUnavailable, "URX", "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: "+errString(lastErr))
		default:
			x.p.log.Debug("upstream failed", "upstream", x.upstream.String(), "error", lastErr)
			x.reply(http.StatusServiceUnavailable, "UF", "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
		}
	}
}

func noCancel() {}

// notTimedOut stands for the timeout flag of attempts without a timer.
var notTimedOut atomic.Bool

func errString(err error) string {
	if err == nil {
		return "retriable status"
	}
	return err.Error()
}

func (x *exchange) timeoutReply(ctx context.Context) {
	if x.r.Context().Err() != nil {
		x.status, x.flags = 499, "DC"
		return
	}
	x.reply(http.StatusGatewayTimeout, "UT", "upstream request timeout")
}

func (x *exchange) release(c *cluster, st *endpointStats) {
	if c == nil {
		return
	}
	st.active.Add(-1)
	c.release()
}

// retryBackoff is Envoy's: exponential from the base (default 25ms),
// capped at ten times it, with full jitter.
func retryBackoff(base time.Duration, try int) time.Duration {
	if base <= 0 {
		base = 25 * time.Millisecond
	}
	d := base << min(try-1, 4)
	if d > 10*base {
		d = 10 * base
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

func (x *exchange) hashKey(tp *trafficPolicy) (uint64, bool) {
	switch {
	case tp.hashHeader != "":
		if v := x.r.Header.Get(tp.hashHeader); v != "" {
			return hashString(v), true
		}
	case tp.hashCookie != "":
		if c, err := x.r.Cookie(tp.hashCookie); err == nil {
			return hashString(c.Value), true
		}
	case tp.hashQuery != "":
		if v := x.r.URL.Query().Get(tp.hashQuery); v != "" {
			return hashString(v), true
		}
	case tp.hashSourceIP:
		return hashString(x.t.src.String()), true
	}
	return 0, false
}

// respond copies the upstream response to the client: headers (with the
// route's response header modifiers), body streamed (flushed as it comes for
// streams such as gRPC), trailers; or for an accepted upgrade, both
// directions of the upgraded connection.
func (x *exchange) respond(resp *http.Response, rr *meshv1.RouteRule, be *meshv1.WeightedBackend, upgrade bool, done func()) {
	defer done()
	defer resp.Body.Close()
	h := x.w.Header()
	copyEndToEnd(h, resp.Header)
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // passed on as it came: none sniffed (net/http would)
	}
	applyHeaders(h, be.GetResponseHeaders())
	applyHeaders(h, rr.GetResponseHeaders())
	x.status = resp.StatusCode
	x.grpc = headerValue(resp.Header, "Grpc-Status")
	if upgrade && resp.StatusCode == http.StatusSwitchingProtocols {
		x.upgraded(resp)
		return
	}
	// Streams are flushed as they come. A gRPC trailers-only response
	// (status in the headers) must not be: it has to leave as one HEADERS
	// frame ending the stream.
	stream := (resp.ContentLength < 0 || strings.HasPrefix(headerValue(resp.Header, "Content-Type"), "application/grpc") ||
		strings.HasPrefix(headerValue(resp.Header, "Content-Type"), "text/event-stream")) && x.grpc == ""
	x.w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(x.w)
	if stream {
		rc.Flush()
	}
	if hb, ok := resp.Body.(*h1Body); ok && !stream {
		if b, ok := hb.buffered(); ok {
			// Written straight from the upstream connection's buffer.
			if _, err := x.w.Write(b); err != nil {
				x.flags = "DC"
			} else {
				x.respN += int64(len(b))
			}
			hb.consumed()
			return // no trailers: a body of declared length
		}
	}
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := x.w.Write(buf[:n]); werr != nil {
				x.flags = "DC"
				break
			}
			x.respN += int64(n)
			if stream {
				rc.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// Cut mid-body: the client must see the response as broken.
			x.flags = "UC"
			bufPool.Put(bp)
			if x.r.ProtoMajor == 2 || x.grpcReq {
				panic(http.ErrAbortHandler)
			}
			if conn, _, herr := rc.Hijack(); herr == nil {
				conn.Close()
			}
			return
		}
	}
	bufPool.Put(bp)
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
		if k == "Grpc-Status" && len(vv) > 0 {
			x.grpc = vv[0]
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// upgraded relays an upgraded (101) connection both ways.
func (x *exchange) upgraded(resp *http.Response) {
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		x.reply(http.StatusBadGateway, "UC", "upgrade failed")
		return
	}
	conn, brw, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	defer conn.Close()
	defer up.Close()
	resp.Header = x.w.Header()
	resp.Body = nil
	if err := resp.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	errc := make(chan error, 2)
	var sent int64
	go func() {
		_, err := io.Copy(up, brw.Reader) // brw.Reader holds what the client sent ahead
		errc <- err
	}()
	go func() {
		var err error
		sent, err = io.Copy(conn, up)
		errc <- err
	}()
	// Either side ending ends the upgraded connection: close both so the
	// other copy returns too, and wait for it.
	<-errc
	conn.Close()
	up.Close()
	<-errc
	x.respN += sent
}

// mirror sends copies of the request to the rule's mirrors, fire and
// forget, with "-shadow" appended to the Host as Envoy does. A body not
// completely kept (longer than the buffer, or still streaming) is not
// mirrored.
func (x *exchange) mirror(rr *meshv1.RouteRule, tap *bodyTap, whole []byte, host, path, rawPath string) {
	for _, m := range rr.GetMirrors() {
		if !roll(m.GetPercent()) {
			continue
		}
		body := whole
		if tap != nil {
			b, ok := tap.complete()
			if !ok {
				x.p.log.Debug("request not mirrored: body not kept", "mirror", m.GetDestination().GetService())
				continue
			}
			body = b
		}
		x.p.sendMirror(x.cfg, x.view, m.GetDestination(), x.r, x.t, body, host, path, rawPath)
	}
}

// mirrorSlots bounds mirrored requests (and probe copies) in flight.
var mirrorSlots = make(chan struct{}, 256)

// sendProbe sends a copy of r (which has no body) to e, another zone's
// endpoint the health of c wants measured: the time to its response
// headers, or its failure, goes to c's health; the response is discarded.
// So a zone is measured — a degraded one included — without a client
// waiting on it.
func (p *Proxy) sendProbe(c *cluster, eps []*state.Endpoint, e *state.Endpoint, sp *meshv1.ServicePort, r *http.Request, t *tunnel, host, path, rawPath string) {
	tport, ok := e.TargetPort(sp)
	if !ok {
		return
	}
	p.shadow(netip.AddrPortFrom(e.Address(t.authority.Addr()), tport), r, t, nil, host, path, rawPath, &probeCopy{c, eps, e})
}

func (p *Proxy) sendMirror(cfg *config, view *state.View, d *meshv1.Destination, r *http.Request, t *tunnel, body []byte, host, path, rawPath string) {
	svc := view.ServiceByKey(d.GetService())
	var sp *meshv1.ServicePort
	for _, x := range svc.GetPorts() {
		if x.GetPort() == d.GetPort() {
			sp = x
		}
	}
	if sp == nil {
		return
	}
	c, _ := p.clusterFor(cfg, d.GetService(), d.GetSubset())
	e := c.pick(c.endpoints(view.Endpoints(d.GetService())), &state.Request{Service: svc, Port: sp, Source: c.caller(view, t, view.WorkloadByIP(t.src))}, 0, false, nil)
	if e == nil {
		return
	}
	tport, ok := e.TargetPort(sp)
	if !ok {
		return
	}
	p.shadow(netip.AddrPortFrom(e.Address(t.authority.Addr()), tport), r, t, body, host, path, rawPath, nil)
}

// probeCopy is a shadow request that measures e for c's health.
type probeCopy struct {
	c   *cluster
	eps []*state.Endpoint
	e   *state.Endpoint
}

// shadow sends a copy of r to target, fire and forget, with "-shadow"
// appended to the Host as Envoy does; a probe's outcome (status, time to
// response headers) goes to its cluster's health.
func (p *Proxy) shadow(target netip.AddrPort, r *http.Request, t *tunnel, body []byte, host, path, rawPath string, probe *probeCopy) {
	select {
	case mirrorSlots <- struct{}{}:
	default:
		return // saturated: mirroring must never slow the real traffic
	}
	out := &http.Request{
		Method: r.Method,
		URL:    &url.URL{Scheme: "http", Host: p.upstreamHost(target, t.src), Path: path, RawPath: rawPath, RawQuery: r.URL.RawQuery},
		Proto:  "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: r.Header.Clone(), Host: shadowHost(host), ContentLength: int64(len(body)),
	}
	if len(body) > 0 {
		out.Body = io.NopCloser(strings.NewReader(string(body)))
	}
	transport := p.h1
	if r.ProtoMajor == 2 {
		transport = p.h2
	}
	go func() {
		defer func() { <-mirrorSlots }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if probe != nil {
			probe.c.health.Begin(probe.e)
		}
		sent := time.Now()
		resp, err := transport.RoundTrip(out.WithContext(ctx))
		if probe != nil {
			status := 0
			if err == nil {
				status = resp.StatusCode
			}
			probe.c.observe(probe.eps, probe.e, status, time.Since(sent))
		}
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}

func shadowHost(h string) string {
	if host, port, err := net.SplitHostPort(h); err == nil {
		return host + "-shadow:" + port
	}
	return h + "-shadow"
}

const hexDigits = "0123456789abcdef"

// requestID is a random UUID (version 4), for X-Request-Id.
func requestID() string {
	var b [36]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	hi = hi&^(0xf<<12) | 4<<12
	lo = lo&^(0x3<<62) | 0x2<<62
	j := 0
	for i := 0; i < 32; i++ {
		if i == 8 || i == 12 || i == 16 || i == 20 {
			b[j] = '-'
			j++
		}
		var nib uint64
		if i < 16 {
			nib = hi >> (60 - 4*i) & 0xf
		} else {
			nib = lo >> (60 - 4*(i-16)) & 0xf
		}
		b[j] = hexDigits[nib]
		j++
	}
	return string(b[:])
}

// finish records the request's metrics and access log line.
func (x *exchange) finish() {
	if x.status == 0 {
		x.status = http.StatusOK
	}
	d := time.Since(x.start)
	reqBody := x.bodyN
	if x.reqBody != nil {
		reqBody = x.reqBody()
	}
	reqBytes := reqBody + x.fieldsBytes
	x.series().Record(d, reqBytes, x.respN)
	if x.p.access != nil {
		x.p.access.record(x, d, reqBytes)
	}
}

// headerCount counts header fields as they arrived (a repeated name counts
// each time), as Envoy's max_headers_count does.
func headerCount(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}

func headerSize(h http.Header) int64 {
	var n int
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}
