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
// golang.org/x/net/http2/hpack rather than net/http, because the tunnel's
// cost is the product (see bench_test.go for the measurements):
//
//   - No writer goroutine: the goroutine with frames to send writes them to
//     TLS itself; goroutines arriving meanwhile queue theirs behind it, and
//     the writer sends the queue next ("group commit"), so concurrent
//     streams share TLS records and write(2) calls.
//   - A batch of several TLS records goes to the socket in one write(2)
//     (corkConn) instead of one per 16 KiB record.
//   - Received DATA is read from TLS into pooled buffers, handed to Read, or
//     by WriteTo straight to the destination socket (writev); ReadFrom reads
//     the source into a buffer with room for the frame header, so neither
//     direction of Splice copies payload outside TLS.
//   - While WriteTo waits for data and its destination is a TCP socket, the
//     read loop writes a small payload (up to one TLS record) to that socket
//     itself with one non-blocking write(2), queueing only what the socket
//     does not take: no goroutine wake-up per request on the receiving
//     side, and a slow destination still never blocks the read loop.
//   - A bulk ReadFrom (reads that fill its 256 KiB buffer) reads the
//     source on one goroutine while another sends (window, encryption,
//     write(2)) the buffer read before; small reads stay on one goroutine.
//   - Windows of 2 MiB per stream and 8 MiB per connection, frames of
//     256 KiB, full-size TLS records from the first byte.
//   - Sockets are read and written with raw system calls (internal/rawio),
//     which keeps the runtime's monitor thread asleep instead of waking it at
//     every burst of traffic; the read loop writes its acknowledgements
//     and window updates itself with a non-blocking write (corkConn's
//     no-wait mode) instead of handing them to another goroutine.
//
// The read loop never blocks on writing (it queues acknowledgements), so
// two ends writing hard at each other cannot deadlock; every queue is
// bounded.
//
// The package must stay light for the node proxy: the standard library,
// x/net's hpack, internal/spiffe and internal/identity only — no Kubernetes,
// no metrics library (Stats are plain counters), no Wasm. deps_test.go
// enforces this.
package hbone
