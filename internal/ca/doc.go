// Package ca is the mesh certificate authority. It runs inside the control
// plane and nowhere else: it holds the signing key, turns node proxies' CSRs
// into SPIFFE X.509 workload certificates, and decides which node may obtain
// which identity.
//
// The pieces:
//
//   - CA (New): the signing root or intermediate, loaded from a directory or
//     created there on first start, plus the trust bundle (the current root
//     and any extra roots kept trusted during a root rotation).
//   - CA.ParseCSR / CA.Issue: the rules a CSR must follow and the leaf
//     certificate the mesh issues for it.
//   - NodeAuthenticator: who is calling (a node name). TokenAuthenticator
//     verifies the per-node bearer tokens that CA.NodeToken hands out in the
//     file/local mode; a Kubernetes TokenReview authenticator can be added
//     behind the same interface.
//   - IdentityChecker: which identities run on which node, answered by the
//     control plane from its model.
//   - Server: the gRPC CertificateAuthority service tying them together.
//   - CA.ServingTLSConfig: the control plane's own TLS certificate, issued by
//     the mesh root so proxies verify the control plane with the same roots
//     they use for workloads.
//
// Node proxies must not import this package (it links Prometheus and knows
// the signing key); their side is internal/identity.
package ca
