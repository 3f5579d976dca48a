package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// IdentityChecker answers, from the control plane's model, whether a pod with
// identity id runs on node. It is what scopes a node proxy to its own pods: a
// compromised node can then only obtain the identities it already hosts.
type IdentityChecker interface {
	NodeRuns(node string, id spiffe.ID) bool
}

// IdentityCheckerFunc adapts a function to IdentityChecker.
type IdentityCheckerFunc func(node string, id spiffe.ID) bool

// NodeRuns implements IdentityChecker.
func (f IdentityCheckerFunc) NodeRuns(node string, id spiffe.ID) bool { return f(node, id) }

// ServerOptions configure NewServer. CA, Authenticator and Identities are
// required.
type ServerOptions struct {
	CA            *CA
	Authenticator NodeAuthenticator
	Identities    IdentityChecker
	// Logger gets one line per issued or refused certificate (default: discard).
	Logger *slog.Logger
	// Registerer, if set, receives ambit_ca_certificate_requests_total{result}.
	Registerer prometheus.Registerer
}

// Server implements the CertificateAuthority gRPC service: authenticate the
// node, check the CSR, check the node runs the identity, sign.
type Server struct {
	meshv1.UnimplementedCertificateAuthorityServer

	ca       *CA
	auth     NodeAuthenticator
	ids      IdentityChecker
	log      *slog.Logger
	requests *prometheus.CounterVec
}

// Results counted in ambit_ca_certificate_requests_total.
const (
	resultIssued          = "issued"
	resultUnauthenticated = "unauthenticated"
	resultDenied          = "denied"
	resultInvalid         = "invalid"
	resultError           = "error"
)

// NewServer checks opts and returns the service; register it with
// meshv1.RegisterCertificateAuthorityServer.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.CA == nil || opts.Authenticator == nil || opts.Identities == nil {
		return nil, errors.New("ca.NewServer: CA, Authenticator and Identities are required")
	}
	s := &Server{ca: opts.CA, auth: opts.Authenticator, ids: opts.Identities, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer != nil {
		s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_ca_certificate_requests_total",
			Help: "Certificate requests handled by the mesh CA, by result (issued, unauthenticated, denied, invalid, error).",
		}, []string{"result"})
		for _, r := range []string{resultIssued, resultUnauthenticated, resultDenied, resultInvalid, resultError} {
			s.requests.WithLabelValues(r)
		}
		if err := opts.Registerer.Register(s.requests); err != nil {
			return nil, fmt.Errorf("ca.NewServer: register metrics: %w", err)
		}
	}
	return s, nil
}

// CreateCertificate implements meshv1.CertificateAuthorityServer. Every
// refusal carries its reason in the status message, and is logged.
func (s *Server) CreateCertificate(ctx context.Context, req *meshv1.CertificateRequest) (*meshv1.CertificateResponse, error) {
	log := s.log
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		log = log.With("peer", p.Addr.String())
	}

	caller, err := authenticateCaller(ctx, s.auth)
	node := caller.Node
	if err != nil {
		st, ok := status.FromError(err)
		if !ok {
			st = status.New(codes.Unauthenticated, "CA: "+err.Error())
		}
		s.count(resultUnauthenticated)
		log.Warn("CA: refused unauthenticated certificate request", "reason", st.Message())
		return nil, st.Err()
	}
	log = log.With("node", node)
	if caller.Workload() {
		log = log.With("workload", caller.Namespace+"/"+caller.ServiceAccount)
	}

	csr, err := s.ca.ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		return nil, s.refuse(log, resultInvalid, codes.InvalidArgument, "CA: node %s: bad CSR: %v", node, err)
	}
	id := csr.ID()
	log = log.With("identity", id.String())
	ttl, err := s.ca.TTL(time.Duration(req.GetValiditySeconds()) * time.Second)
	if err != nil {
		return nil, s.refuse(log, resultInvalid, codes.InvalidArgument, "CA: node %s: %v", node, err)
	}

	if caller.Workload() && (id.Namespace != caller.Namespace || id.ServiceAccount != caller.ServiceAccount) {
		return nil, s.refuse(log, resultDenied, codes.PermissionDenied,
			"workload %s/%s on node %s may obtain only its own identity, not %s", caller.Namespace, caller.ServiceAccount, node, id)
	}
	if !s.ids.NodeRuns(node, id) {
		return nil, s.refuse(log, resultDenied, codes.PermissionDenied,
			"node %s may not obtain %s: no pod with that identity runs on %s", node, id, node)
	}

	issued, err := s.ca.Issue(csr, ttl)
	if err != nil {
		return nil, s.refuse(log, resultError, codes.FailedPrecondition, "CA: cannot issue %s for node %s: %v", id, node, err)
	}
	s.count(resultIssued)
	log.Info("CA: issued certificate", "serial", issued.Leaf.SerialNumber.Text(16),
		"not_after", issued.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return &meshv1.CertificateResponse{CertChain: issued.ChainPEM(), TrustBundle: s.ca.TrustBundlePEM()}, nil
}

func (s *Server) refuse(log *slog.Logger, result string, code codes.Code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.count(result)
	log.Warn("CA: refused certificate request", "code", code.String(), "reason", msg)
	return status.Error(code, msg)
}

func (s *Server) count(result string) {
	if s.requests != nil {
		s.requests.WithLabelValues(result).Inc()
	}
}
