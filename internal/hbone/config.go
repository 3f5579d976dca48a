package hbone

import (
	"fmt"
	"time"
)

// Defaults of Tuning.
const (
	DefaultMaxConcurrentStreams = 100
	// The windows bound what a fast sender can make a receiver buffer when
	// the application reads slower than the tunnel delivers: per stream and
	// per connection. The window must also cover everything between the
	// sender's reservation and the receiver's WINDOW_UPDATE coming back:
	// TCP buffers both ways, decryption, the write to the destination and
	// the scheduling delays of four busy processes on a small node. With
	// 1 MiB the sending ztunnel of a single bulk stream waited for window
	// a tenth of the time. 2 MiB together with ReadFrom's bulk pipelining
	// gave +3 to +13 % single-stream throughput (either alone: +0 to +3 %)
	// for 2–4 MiB more peak RSS after bulk on the receiving side; 4 MiB
	// (Istio's ztunnel's) gave another +7 % for another ~3 MiB
	// (bench/README.md, 2026-12-02 21:15–22:20).
	DefaultStreamWindow     = 2 << 20
	DefaultConnWindow       = 8 << 20
	DefaultMaxFrameSize     = 256 << 10
	DefaultMaxHeaderBytes   = 32 << 10
	DefaultKeepAliveTimeout = 15 * time.Second
)

// Tuning configures the HTTP/2 layer of a Server or Pool. Zero values take
// the defaults; the defaults favour throughput (large windows and frames)
// and are what the benchmarks measure.
type Tuning struct {
	// MaxConcurrentStreams per connection (default 100). A server
	// advertises it; a pool opens another connection when every
	// connection to a destination has this many (or the server's
	// limit, if lower) streams.
	MaxConcurrentStreams int
	// StreamWindow and ConnWindow are the receive flow-control windows
	// (defaults 2 MiB per stream, 8 MiB per connection): how much a peer
	// may send ahead of the reader, and so the memory a slow reader can
	// make this end buffer. At most 2^31-1.
	StreamWindow int
	ConnWindow   int
	// MaxFrameSize is the largest DATA frame this end accepts (advertised
	// as SETTINGS_MAX_FRAME_SIZE) and sends (further capped by the
	// peer's setting); 16 KiB to 1 MiB, default 256 KiB.
	MaxFrameSize int
	// MaxHeaderBytes bounds a decoded header block (RFC 9113 header list
	// size; default 32 KiB). A server answers larger requests with 431.
	MaxHeaderBytes int
	// IdleTimeout closes a connection that has had no stream for this
	// long; negative means never. The default differs between Server and
	// Pool.
	IdleTimeout time.Duration
	// KeepAlive sends a PING after this long without receiving a frame and
	// closes the connection if nothing arrives within KeepAliveTimeout
	// (default 15s). Negative disables; the default differs between
	// Server (disabled) and Pool.
	KeepAlive        time.Duration
	KeepAliveTimeout time.Duration
}

func (t Tuning) connConfig(defaultIdle, defaultKeepAlive time.Duration) (connConfig, error) {
	cfg := connConfig{
		maxStreams:     DefaultMaxConcurrentStreams,
		streamWindow:   DefaultStreamWindow,
		connWindow:     DefaultConnWindow,
		maxReadFrame:   DefaultMaxFrameSize,
		maxHeaderBytes: DefaultMaxHeaderBytes,
		idleTimeout:    defaultIdle,
		keepAlive:      defaultKeepAlive,
		keepAliveWait:  DefaultKeepAliveTimeout,
	}
	if t.MaxConcurrentStreams < 0 || t.StreamWindow < 0 || t.ConnWindow < 0 || t.MaxFrameSize < 0 || t.MaxHeaderBytes < 0 {
		return cfg, fmt.Errorf("hbone: negative Tuning value: %+v", t)
	}
	if t.MaxConcurrentStreams > 0 {
		cfg.maxStreams = uint32(t.MaxConcurrentStreams)
	}
	if t.StreamWindow > 0 {
		if t.StreamWindow > maxWindow {
			return cfg, fmt.Errorf("hbone: StreamWindow %d exceeds %d", t.StreamWindow, maxWindow)
		}
		cfg.streamWindow = int32(t.StreamWindow)
	}
	if t.ConnWindow > 0 {
		if t.ConnWindow > maxWindow {
			return cfg, fmt.Errorf("hbone: ConnWindow %d exceeds %d", t.ConnWindow, maxWindow)
		}
		cfg.connWindow = int32(t.ConnWindow)
	}
	if t.MaxFrameSize > 0 {
		if t.MaxFrameSize < minMaxFrameSize || t.MaxFrameSize > maxChunkSize {
			return cfg, fmt.Errorf("hbone: MaxFrameSize %d outside [%d, %d]", t.MaxFrameSize, minMaxFrameSize, maxChunkSize)
		}
		cfg.maxReadFrame = uint32(t.MaxFrameSize)
	}
	cfg.writeFrame = cfg.maxReadFrame
	if t.MaxHeaderBytes > 0 {
		cfg.maxHeaderBytes = uint32(t.MaxHeaderBytes)
	}
	switch {
	case t.IdleTimeout < 0:
		cfg.idleTimeout = 0
	case t.IdleTimeout > 0:
		cfg.idleTimeout = t.IdleTimeout
	}
	switch {
	case t.KeepAlive < 0:
		cfg.keepAlive = 0
	case t.KeepAlive > 0:
		cfg.keepAlive = t.KeepAlive
	}
	if t.KeepAliveTimeout > 0 {
		cfg.keepAliveWait = t.KeepAliveTimeout
	}
	return cfg, nil
}
