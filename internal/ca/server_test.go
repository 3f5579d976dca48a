package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// placement says which identities run on which node.
var placement = IdentityCheckerFunc(func(node string, id spiffe.ID) bool {
	switch node {
	case "node-a":
		return id.Namespace == "default" && id.ServiceAccount == "echo"
	case "node-b":
		return id.Namespace == "default" && id.ServiceAccount == "sleep"
	}
	return false
})

// startServer serves the CA over TLS (the CA's own serving certificate) on a
// loopback port and returns a client that verifies the server with the mesh
// root.
func startServer(t *testing.T, c *CA, opts ServerOptions) meshv1.CertificateAuthorityClient {
	t.Helper()
	opts.CA = c
	if opts.Authenticator == nil {
		opts.Authenticator = c.TokenAuthenticator()
	}
	if opts.Identities == nil {
		opts.Identities = placement
	}
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := c.ServingTLSConfig([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	meshv1.RegisterCertificateAuthorityServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	clientTLS := &tls.Config{RootCAs: c.CertPool(), MinVersion: tls.VersionTLS13}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshv1.NewCertificateAuthorityClient(conn)
}

func withToken(t *testing.T, token string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func TestServer(t *testing.T) {
	clk := newTestClock()
	clk.t = time.Now().Truncate(time.Second) // the TLS handshake checks the serving cert against the real clock
	c := newMemCA(t, clk)
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	client := startServer(t, c, ServerOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), Registerer: reg})
	otherCA := newMemCA(t, nil)
	tokA, tokB := c.NodeToken("node-a"), c.NodeToken("node-b")

	tests := []struct {
		name     string
		token    string
		csr      []byte
		validity int64
		code     codes.Code
		msg      string // substring of the status message
	}{
		{name: "issued", token: tokA, csr: csrFor(t, echoID), code: codes.OK},
		{name: "validity honoured", token: tokA, csr: csrFor(t, echoID), validity: 3600, code: codes.OK},
		{name: "no token", csr: csrFor(t, echoID), code: codes.Unauthenticated, msg: "missing authorization"},
		{name: "no token and bad CSR: authentication first", csr: []byte("junk"), code: codes.Unauthenticated},
		{name: "forged token", token: otherCA.NodeToken("node-a"), csr: csrFor(t, echoID), code: codes.Unauthenticated, msg: "invalid signature"},
		{name: "garbage token", token: "xyz", csr: csrFor(t, echoID), code: codes.Unauthenticated, msg: "malformed"},
		{
			name: "identity on another node", token: tokB, csr: csrFor(t, echoID), code: codes.PermissionDenied,
			msg: "node node-b may not obtain spiffe://cluster.local/ns/default/sa/echo: no pod with that identity runs on node-b",
		},
		{
			name: "unknown node", token: c.NodeToken("node-z"), csr: csrFor(t, echoID), code: codes.PermissionDenied,
			msg: "node node-z may not obtain",
		},
		{name: "two SANs", token: tokA, csr: makeCSR(t, newKey(t), csrTemplate{uris: []string{echoID, echoID + "2"}}), code: codes.InvalidArgument, msg: "2 URI SANs"},
		{name: "wrong trust domain", token: tokA, csr: csrFor(t, "spiffe://other.td/ns/default/sa/echo"), code: codes.InvalidArgument, msg: "trust domain"},
		{name: "DNS SAN", token: tokA, csr: makeCSR(t, newKey(t), csrTemplate{uris: []string{echoID}, dns: []string{"x"}}), code: codes.InvalidArgument, msg: "DNS SAN"},
		{name: "empty CSR", token: tokA, code: codes.InvalidArgument, msg: "not PEM"},
		{name: "negative validity", token: tokA, csr: csrFor(t, echoID), validity: -5, code: codes.InvalidArgument, msg: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.CreateCertificate(withToken(t, tt.token), &meshv1.CertificateRequest{Csr: string(tt.csr), ValiditySeconds: tt.validity})
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code = %v (%s), want %v", st.Code(), st.Message(), tt.code)
			}
			if !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("message %q does not contain %q", st.Message(), tt.msg)
			}
			if tt.code != codes.OK {
				return
			}
			chain := parseAll(t, resp.CertChain)
			roots := parseAll(t, resp.TrustBundle)
			if len(chain) != 1 || len(roots) != 1 || !roots[0].Equal(c.SigningCertificate()) {
				t.Fatalf("chain %d certs, bundle %d roots", len(chain), len(roots))
			}
			if err := verify(chain, pool(roots...), clk.Now(), x509.ExtKeyUsageClientAuth); err != nil {
				t.Fatal(err)
			}
			want := DefaultTTL
			if tt.validity > 0 {
				want = time.Duration(tt.validity) * time.Second
			}
			if got := chain[0].NotAfter.Sub(clk.Now()); got != want {
				t.Errorf("lifetime %s, want %s", got, want)
			}
		})
	}

	out := logs.String()
	for _, tok := range []string{tokA, tokB} {
		if strings.Contains(out, tok) {
			t.Error("a node token appears in the logs")
		}
	}
	if !strings.Contains(out, "issued certificate") || !strings.Contains(out, "node=node-a") {
		t.Errorf("issuance not logged:\n%s", out)
	}

	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ambit_ca_certificate_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"issued": 2, "unauthenticated": 4, "denied": 2, "invalid": 5, "error": 0}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("requests_total{result=%q} = %v, want %v", k, counts[k], v)
		}
	}
}

// errAuth is an authenticator whose backend is down.
type errAuth struct{ err error }

func (a errAuth) Authenticate(context.Context) (string, error) { return "", a.err }

func TestServerPassesAuthenticatorStatus(t *testing.T) {
	c := newMemCA(t, nil)
	srv, err := NewServer(ServerOptions{CA: c, Authenticator: errAuth{status.Error(codes.Unavailable, "TokenReview: API server unreachable")}, Identities: placement})
	if err != nil {
		t.Fatal(err)
	}
	_, err = srv.CreateCertificate(context.Background(), &meshv1.CertificateRequest{Csr: string(csrFor(t, echoID))})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "unreachable") {
		t.Errorf("got %v, want the authenticator's Unavailable status", err)
	}
	if _, err := NewServer(ServerOptions{CA: c}); err == nil {
		t.Error("NewServer without authenticator succeeded")
	}
}

func parseAll(t *testing.T, pems []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range pems {
		block, rest := pem.Decode([]byte(p))
		if block == nil || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("want one PEM block per string, got %q", p)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cert)
	}
	return out
}
