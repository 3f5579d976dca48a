// Package redirect implements in-pod traffic redirection, Istio ambient
// "in-pod" style: the rules that steer a pod's TCP traffic to the node's
// ztunnel, and the protocol by which the node agent hands each pod's network
// namespace to the ztunnel, which then opens its listeners inside it.
//
// # Who uses it
//
//   - The node agent and the CNI plugin: [Install] / [Remove] in each
//     enrolled pod's namespace, and an [Agent] serving the ztunnel.
//   - The ztunnel: [DialAgent] / [ZtunnelClient] with a [PodHandler], and
//     [OriginalDst] on captured outbound connections.
//   - The local cluster (internal/local) and tests, for both.
//
// The ztunnel links this package, so it must stay small: no Kubernetes,
// Istio, Prometheus, Wasm or OpenTelemetry dependencies (deps_test.go).
// Code that needs client-go (the pod watcher, the CNI plugin's Kubernetes
// lookups) belongs in a sub-package or elsewhere, not here.
//
// # What the rules do (inside the pod's namespace)
//
//   - Outbound TCP from the pod is REDIRECTed (nat OUTPUT) to
//     127.0.0.1:15001 ([::1]:15001). The ztunnel listens there and recovers
//     the address the app dialled with [OriginalDst] (SO_ORIGINAL_DST).
//   - Inbound TCP to the pod is TPROXY'd (mangle PREROUTING) to port 15006
//     with mark 0x111, keeping the packet's destination: the ztunnel's
//     transparent (IP_TRANSPARENT) listener on 0.0.0.0:15006 accepts
//     connections whose local address is the original destination, with no
//     NAT involved. Inbound to 15008 (HBONE), 15001, 15006 and the excluded
//     ports (15020, 15021 by default) is not touched: the ztunnel listens on
//     15008 in the pod directly.
//   - Packets marked 0x539/0xfff — every socket the ztunnel opens in the pod
//     sets SO_MARK 0x539 — are never captured, nor is anything on lo, nor
//     packets of established connections, nor DNS unless Config.CaptureDNS.
//   - The ztunnel's connections to the pod's own apps loop back through lo
//     and may carry a spoofed source (the real client's IP, bound with
//     IP_TRANSPARENT); they get connmark 0x111, the apps' replies get mark
//     0x111 back in mangle OUTPUT, and "ip rule fwmark 0x111/0xfff lookup
//     100" with "local default dev lo table 100" delivers them to the
//     ztunnel's socket instead of routing them out of the pod.
//
// Rules live in dedicated chains (AMBIT_PREROUTING and AMBIT_OUTPUT in
// mangle, AMBIT_OUTPUT in nat) jumped to first from the built-in chains.
// [Rules] prints the exact iptables-restore input. iptables-restore runs
// inside the pod's namespace by forking it from a thread switched into that
// namespace (internal/netns), the way `ip netns exec` works, without nsenter.
//
// # The node agent ↔ ztunnel protocol
//
// JSON messages over a SOCK_SEQPACKET Unix socket, the pod's netns passed as
// SCM_RIGHTS: see docs/node-agent-protocol.md.
package redirect
