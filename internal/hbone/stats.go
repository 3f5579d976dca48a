package hbone

import "sync/atomic"

// Stats are cumulative counters of a Server or a Pool, for the caller to
// export as metrics (this package links no metrics library). Take a
// snapshot with Server.Stats or Pool.Stats.
type Stats struct {
	// ConnectionsOpened counts HTTP/2 connections established (TLS
	// handshake and ALPN done); ConnectionsClosed those closed since.
	ConnectionsOpened uint64
	ConnectionsClosed uint64
	// HandshakeFailures counts connections refused or failed before they
	// were established: TLS errors (bad certificates, garbage, timeouts),
	// no ALPN h2, a bad HTTP/2 preface. On a Pool, dial errors count too.
	HandshakeFailures uint64
	// StreamsOpened counts CONNECT streams: received (Server) or sent (Pool).
	StreamsOpened uint64
	// StreamsRefused counts streams refused with REFUSED_STREAM: over the
	// concurrency limit or on a draining connection (Server), or refused by
	// the server (Pool; such streams are retried on another connection).
	StreamsRefused uint64
	// StreamsRejected counts CONNECTs answered with a status other than 200.
	StreamsRejected uint64
}

type stats struct {
	connectionsOpened atomic.Uint64
	connectionsClosed atomic.Uint64
	handshakeFailures atomic.Uint64
	streamsOpened     atomic.Uint64
	streamsRefused    atomic.Uint64
	streamsRejected   atomic.Uint64
}

func (s *stats) snapshot() Stats {
	return Stats{
		ConnectionsOpened: s.connectionsOpened.Load(),
		ConnectionsClosed: s.connectionsClosed.Load(),
		HandshakeFailures: s.handshakeFailures.Load(),
		StreamsOpened:     s.streamsOpened.Load(),
		StreamsRefused:    s.streamsRefused.Load(),
		StreamsRejected:   s.streamsRejected.Load(),
	}
}
