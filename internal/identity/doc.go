// Package identity is the node proxy's side of mesh identity: it obtains and
// renews the SPIFFE X.509 certificates of the workloads a proxy serves (from
// the control plane's CertificateAuthority service), keeps the trust bundle
// current through root rotations, and verifies peers' certificates for mTLS.
//
// ztunnel and the waypoint use it, and so may anything else that speaks mTLS
// for a workload. It must stay small: it imports only the standard library,
// gRPC, api/mesh/v1 and internal/spiffe — never Kubernetes, Wasm, tracing or
// the CA itself. deps_test.go enforces this.
//
//   - Manager: one certificate per requested identity, fetched on first use,
//     renewed at a fraction of its lifetime, retried with jittered
//     exponential backoff, the old certificate served until it expires.
//   - Bundle: the current roots, replaced by what each CA response carries.
//   - VerifyPeer, Manager.ServerTLSConfig, Manager.ClientTLSConfig: chain and
//     SPIFFE-ID checks against the current roots on every handshake.
//   - ControlPlaneTLSConfig, NodeTokenCredentials: how a proxy reaches the CA.
package identity
