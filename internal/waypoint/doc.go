// Package waypoint is Ambit's L7 proxy, the shared HTTP proxy that traffic
// for Services (or workloads) bound to a waypoint Gateway passes through.
// cmd/waypoint runs it; tests embed it.
//
// A waypoint takes HBONE tunnels from ztunnels (mutual TLS 1.3, the client
// certificate verified against the mesh roots; the peer's SPIFFE ID is the
// source principal) on port 15008. The tunnel's :authority is the original
// destination — a Service VIP and port, or a pod address — and it alone
// selects what applies: the Service's routes for that port, its L7
// AuthorizationPolicies, its DestinationRules. The Host header never does.
//
// Inside the tunnel the waypoint speaks HTTP/1.1 (keep-alive, WebSocket
// upgrades), h2c and gRPC, chosen by the Service port's protocol
// (appProtocol or port name) or, when the port declares none, detected from
// the first bytes; anything else is relayed at L4. Each request is
// authorized (DENY before ALLOW; denied → 403 "RBAC: access denied"), routed
// by the first matching rule (none → 404; internal/routematch holds the
// semantics), filtered (header modifiers, rewrites, redirects, faults,
// mirrors) and forwarded — with timeouts and retries — to an endpoint chosen
// by the DestinationRule's load balancer, over HBONE to the endpoint's
// ztunnel with the waypoint's own identity, Forwarded: for=<original source>
// and the source's baggage. Bodies stream; only retries and mirrors keep a
// bounded copy.
//
// Configuration comes from the control plane (internal/xds): the Gateway's
// WaypointConfig by name, and every Workload and Service, which
// internal/ztunnel/state indexes. An update that does not validate is
// refused as a whole (NACK) and the proxy keeps its last good configuration.
//
// Metrics are Istio's request metrics with reporter="waypoint"
// (internal/telemetry); each request can write one JSON access log line.
package waypoint
