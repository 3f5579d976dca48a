// Package lb is endpoint choice, shared by the ztunnel (L4: which endpoint
// or waypoint instance a new connection goes to) and the waypoint (L7:
// which endpoint a request goes to), so both agree on what a Service's
// locality preference means.
//
// LocalityChooser ranks endpoints by how much locality (region, zone,
// subzone, node) they share with the caller and picks within the closest
// tier that has an eligible endpoint. Health adds what the proxy observes
// itself: an EWMA of latency per endpoint and per zone (connect time at L4,
// response time at L7), passive health (consecutive failures eject an
// endpoint for a growing backoff), and zone degradation — a zone whose
// latency exceeds the best zone's by a factor plus a floor is avoided (at
// once on strong evidence: several requests each far slower, answered or
// still waiting), with hysteresis on the way back so choice does not flap.
// Probes keep the zones traffic does not reach measured, by copies of
// requests where the proxy can make them. LocalityPolicy is a
// DestinationRule's distribute, failover and failoverPriority.
package lb
