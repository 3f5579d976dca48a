package waypoint

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// FuzzCompileConfig: whatever the control plane sends, compiling it
// returns a config or an error, never panics.
func FuzzCompileConfig(f *testing.F) {
	seed, _ := proto.Marshal(&meshv1.WaypointConfig{Name: "w", Namespace: "shop", Services: []*meshv1.ServiceRoutes{{Service: "shop/echo.shop.svc.cluster.local",
		Ports: []*meshv1.PortRoutes{{Port: 80, Rules: []*meshv1.RouteRule{{Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Type: meshv1.PathMatch_REGEX, Value: "/v[0-9]+"}}},
			Retry: &meshv1.Retry{Attempts: 1, RetryOn: []string{"5xx"}}}}}}}},
		Policies: []*meshv1.Authorization{{Name: "p", Namespace: "shop", Rules: []*meshv1.Rule{{When: []*meshv1.Condition{{Key: "request.headers[x]", Values: []*meshv1.StringMatch{{Kind: &meshv1.StringMatch_Any{Any: true}}}}}}}}}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		wc := &meshv1.WaypointConfig{}
		if proto.Unmarshal(b, wc) != nil {
			return
		}
		c, err := compileConfig(wc)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

// FuzzDetectAndUpstreamHost: the protocol sniffer and the pool-key parser
// take anything.
func FuzzDetectAndUpstreamHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1"), "0a:80")
	f.Add([]byte("PRI * HTTP/2.0"), "00000000000000000000ffff0af40202.00000000000000000000ffff0af40102:8080")
	f.Fuzz(func(t *testing.T, b []byte, host string) {
		classify(b)
		parseUpstreamHost(host)
	})
}

// FuzzHTTP1Parse: the HTTP/1.1 loop's request parser takes any bytes, and
// what it accepts net/http reads the same way (method, target, Host,
// header fields, body length); what it does not accept goes to net/http.
func FuzzHTTP1Parse(f *testing.F) {
	f.Add([]byte("GET /a?b=c HTTP/1.1\r\nHost: echo\r\nX-A: 1\r\nx-a:  2 \r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"))
	f.Add([]byte("GET http://x/ HTTP/1.1\r\nHost: echo\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\nHost: echo\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := &Proxy{}
		p.limits.defaults()
		sc := &h1Server{p: p, hdr: http.Header{}, tmpl: new(http.Request), br: bufio.NewReader(bytes.NewReader(b))}
		complete, err := sc.readHead(p.limits.MaxHeaderBytes)
		if err != nil || !complete || !sc.parse() {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, b)
		}
		got := &sc.req
		if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host ||
			got.URL.String() != want.URL.String() || got.ContentLength != want.ContentLength || got.Close != want.Close {
			t.Fatalf("%q: read as %s %s host %q length %d close %v; net/http: %s %s host %q length %d close %v", b,
				got.Method, got.RequestURI, got.Host, got.ContentLength, got.Close, want.Method, want.RequestURI, want.Host, want.ContentLength, want.Close)
		}
		if !reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("%q: header %v; net/http: %v", b, got.Header, want.Header)
		}
		if n := headerCount(want.Header); sc.nfields != n || sc.fieldsBytes != headerSize(want.Header) {
			t.Fatalf("%q: %d fields of %d bytes counted; net/http's header has %d of %d", b, sc.nfields, sc.fieldsBytes, n, headerSize(want.Header))
		}
	})
}

// FuzzResponseHead: the upstream client's in-place response parser takes
// any bytes, and what it accepts net/http reads the same way.
func FuzzResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 503\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &http.Request{Method: "GET"}
		br := bufio.NewReader(bytes.NewReader(b))
		got, err := readResponse(br, req, nil)
		if err != nil {
			return
		}
		defer got.Body.Close()
		want, werr := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if werr != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", werr, b)
		}
		if got.StatusCode != want.StatusCode || got.ContentLength != want.ContentLength || got.Close != want.Close {
			t.Fatalf("%q: %d length %d close %v; net/http: %d length %d close %v", b,
				got.StatusCode, got.ContentLength, got.Close, want.StatusCode, want.ContentLength, want.Close)
		}
		if !reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("%q: header %v; net/http: %v", b, got.Header, want.Header)
		}
		gb, gerr := io.ReadAll(got.Body)
		wb, werr := io.ReadAll(want.Body)
		if !bytes.Equal(gb, wb) || (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: body %q (%v); net/http: %q (%v)", b, gb, gerr, wb, werr)
		}
	})
}
