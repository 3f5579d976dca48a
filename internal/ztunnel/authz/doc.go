// Package authz is the ztunnel's L4 authorization: Istio AuthorizationPolicy
// semantics for what a node proxy can see of a connection (peer identity,
// addresses, destination port), evaluated without allocating.
//
// Policies arrive as meshv1.Authorization (translated by the control plane
// from Istio AuthorizationPolicies without targetRefs, internal/translate)
// and are compiled once, when the update that carries them is applied
// (Compile): CIDRs are parsed, ports checked, L7 attributes resolved. The data
// path then calls Evaluate with the policies that apply to the destination
// workload (internal/ztunnel/state builds that set).
//
// # Decision
//
// As Istio (https://istio.io/latest/docs/concepts/security/#implicit-enablement
// and the AuthorizationPolicy reference):
//
//  1. AUDIT policies never change the decision (the first matching one is
//     reported in Decision.Audit).
//  2. Any matching DENY policy denies.
//  3. If any ALLOW policy applies to the workload, the connection is allowed
//     only when one of them matches; otherwise it is allowed.
//
// A policy matches when any of its rules matches; a policy without rules
// matches nothing (so an ALLOW policy without rules denies everything and a
// DENY policy without rules denies nothing). A rule matches when (it has no
// from, or any from matches) and (it has no to, or any to matches) and every
// when condition matches; an empty rule matches everything. Within a source,
// operation or condition every field that is set must match: a positive list
// matches when any entry matches, a not-list when none does.
//
// Policies marked dry_run (annotation istio.io/dry-run) are not enforced; what
// they alone would decide is reported in Decision.DryRun, like Istio's shadow
// rules.
//
// # Peer identity
//
// The principal is the peer's SPIFFE ID without "spiffe://"
// ("td/ns/<ns>/sa/<sa>", spiffe.ID.Principal) and the source namespace is the
// identity's namespace. A plaintext peer has neither: principals and
// namespaces entries never match it and notPrincipals / notNamespaces entries
// never exclude it — in particular principals: ["*"] requires mTLS and
// notPrincipals: ["*"] selects exactly the plaintext peers, as in Istio
// (istio/ztunnel src/rbac.rs: an absent identity fails every principal and
// namespace predicate; "*" is a presence match, which an empty value fails).
//
// # Attributes a node proxy cannot see
//
// The ztunnel sees no HTTP. As istiod's ambient translation does
// (pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go,
// handleRule) and Istio's ambient documentation describes ("Use Layer 4
// security policy": a policy that needs more than L4 processing makes the
// ztunnel drop traffic as a defensive move; the policy status reads "Within an
// ALLOW policy, rules matching HTTP attributes are omitted" / "DENY policy
// with HTTP attributes is enforced without the HTTP rules. This will be more
// restrictive than requested."):
//
//   - L7 attributes are operation hosts / notHosts / methods / notMethods /
//     paths / notPaths, source requestPrincipals / notRequestPrincipals (JWT),
//     and every when key other than source.ip, source.namespace,
//     source.principal, destination.ip and destination.port (request.headers[…],
//     request.auth.*, connection.sni, remote.ip, and unknown keys).
//   - In an ALLOW policy a rule that uses any L7 attribute never matches (it
//     allows nothing: fail closed). If that leaves the policy without a rule
//     that can match, the workload denies everything the policy would have
//     allowed.
//   - In a DENY (and AUDIT) policy the L7 attributes are dropped and the rest
//     of the rule is evaluated, i.e. the L7 parts are taken as matching: the
//     policy denies more than written, never less.
//
// The reasons are listed in Policy.Unsupported for status and logs.
//
// remoteIpBlocks / notRemoteIpBlocks: a node proxy receives no
// X-Forwarded-For, so the "remote" address is the connection's source address
// and these are evaluated exactly like ipBlocks / notIpBlocks (the behaviour
// of Istio's sidecar TCP filter, where Envoy's remote_ip is the peer address).
// istiod's ambient translation differs: it treats them as L7 (ALLOW rule
// dropped, DENY field ignored). The difference matters only for clients
// behind another proxy (a gateway): there the sidecar semantics used here
// test the gateway's address, not the original client's.
//
// The package depends only on the standard library, api/mesh/v1 and
// internal/spiffe (deps_test.go enforces it).
package authz
