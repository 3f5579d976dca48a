// Package hbone implements HBONE tunnels: TCP streams carried as HTTP/2
// CONNECT requests over mutual TLS 1.3 (ALPN "h2"), conventionally on port
// 15008, as Istio's ambient mode defines them. It is the wire between the
// data-plane proxies — ztunnel to ztunnel, ztunnel to waypoint, waypoint to
// ztunnel — and is meant for those two (cmd/ztunnel via internal/ztunnel,
// cmd/waypoint via internal/waypoint) and their tests.
//
// On the wire: the client sends :method CONNECT with :authority set to the
// original destination "ip:port", "Forwarded: for=<source ip>" (RFC 7239)
// and a W3C baggage header describing the source workload
// (PeerMetadata.Baggage); the server answers 200 (optionally with its own
// baggage), after which the stream's DATA frames carry the tunnelled bytes
// both ways and END_STREAM is a TCP half-close. Refusals are 400
// (malformed), 401/403 (authorization), 503 (the destination could not be
// reached); non-CONNECT methods get 405.
//
//   - Server accepts connections (identity chosen per connection by local
//     address or SNI), verifies client certificates against the mesh roots,
//     parses and validates each CONNECT into a Request and hands it to the
//     handler, which Accepts (getting a *Stream) or Rejects it. Graceful
//     Shutdown sends GOAWAY and drains.
//   - Pool opens tunnels (Connect) over connections pooled per source
//     identity, expected destination identities and endpoint, with shared
//     dials, a stream limit per connection, idle closing and retries of
//     streams the server did not process.
//   - Stream is the tunnel: a net.Conn with half-close; Splice relays it to
//     a TCP connection with byte counts.
//   - ParseForwarded, ParseBaggage, FormatForwarded, PeerMetadata: the
//     header formats.
//
// The HTTP/2 layer is this package's own, a CONNECT-only endpoint built on
// golang.org/x/net/http2/hpack rather than net/http: writers frame data
// straight into TLS records without a hand-off to a writer goroutine,
// received DATA is read from TLS into pooled buffers and handed to the
// reader (or, with WriteTo, to writev) without further copies, and windows
// and frames are large (see Tuning). On a loopback pair this makes a tunnel's
// throughput and CPU per byte close to those of plain TLS; see
// bench_test.go.
//
// The package must stay light for the node proxy: the standard library,
// x/net's hpack, internal/spiffe and internal/identity only — no Kubernetes,
// no metrics library (Stats are plain counters), no Wasm. deps_test.go
// enforces this.
package hbone
