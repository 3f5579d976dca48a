package hbone

import (
	"encoding/binary"
	"fmt"
)

// HTTP/2 framing (RFC 9113 §4 and §6): only what a CONNECT-only endpoint
// needs. Frames are appended to byte slices so that a whole batch reaches
// the TLS connection in one Write (one set of records, one syscall).

const (
	frameHeaderLen = 9

	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize      = 0x1
	settingEnablePush           = 0x2
	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
	settingMaxHeaderListSize    = 0x6

	// Protocol limits.
	minMaxFrameSize   = 1 << 14
	maxMaxFrameSize   = 1<<24 - 1
	maxWindow         = 1<<31 - 1
	defaultWindow     = 65535
	defaultTableSize  = 4096
	clientPreface     = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	maxStreamID       = 1<<31 - 1
	maxSettingsFrame  = 6 * 64 // far more settings than exist; bounds a flood
	maxGoAwayDebugLen = 1 << 12
)

// ErrCode is an HTTP/2 error code (RFC 9113 §7), carried by RST_STREAM and
// GOAWAY.
type ErrCode uint32

// The error codes of RFC 9113 §7.
const (
	ErrCodeNo                 ErrCode = 0x0
	ErrCodeProtocol           ErrCode = 0x1
	ErrCodeInternal           ErrCode = 0x2
	ErrCodeFlowControl        ErrCode = 0x3
	ErrCodeSettingsTimeout    ErrCode = 0x4
	ErrCodeStreamClosed       ErrCode = 0x5
	ErrCodeFrameSize          ErrCode = 0x6
	ErrCodeRefusedStream      ErrCode = 0x7
	ErrCodeCancel             ErrCode = 0x8
	ErrCodeCompression        ErrCode = 0x9
	ErrCodeConnect            ErrCode = 0xa
	ErrCodeEnhanceYourCalm    ErrCode = 0xb
	ErrCodeInadequateSecurity ErrCode = 0xc
	ErrCodeHTTP11Required     ErrCode = 0xd
)

var errCodeNames = [...]string{
	"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
	"SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
	"CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
	"INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
}

func (c ErrCode) String() string {
	if int(c) < len(errCodeNames) {
		return errCodeNames[c]
	}
	return fmt.Sprintf("ERR_0x%x", uint32(c))
}

type frameHeader struct {
	length   uint32
	typ      byte
	flags    byte
	streamID uint32
}

func parseFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length:   uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:      b[3],
		flags:    b[4],
		streamID: binary.BigEndian.Uint32(b[5:9]) & maxStreamID,
	}
}

// putFrameHeader writes a frame header into b[:9].
func putFrameHeader(b []byte, length int, typ, flags byte, streamID uint32) {
	_ = b[8]
	b[0] = byte(length >> 16)
	b[1] = byte(length >> 8)
	b[2] = byte(length)
	b[3] = typ
	b[4] = flags
	binary.BigEndian.PutUint32(b[5:9], streamID&maxStreamID)
}

func appendFrameHeader(b []byte, length int, typ, flags byte, streamID uint32) []byte {
	var h [frameHeaderLen]byte
	putFrameHeader(h[:], length, typ, flags, streamID)
	return append(b, h[:]...)
}

type setting struct {
	id  uint16
	val uint32
}

func appendSettings(b []byte, settings []setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), frameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, s.id)
		b = binary.BigEndian.AppendUint32(b, s.val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, frameSettings, flagAck, 0)
}

func appendWindowUpdate(b []byte, streamID uint32, incr uint32) []byte {
	b = appendFrameHeader(b, 4, frameWindowUpdate, 0, streamID)
	return binary.BigEndian.AppendUint32(b, incr&maxWindow)
}

func appendRSTStream(b []byte, streamID uint32, code ErrCode) []byte {
	b = appendFrameHeader(b, 4, frameRSTStream, 0, streamID)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendPing(b []byte, ack bool, data [8]byte) []byte {
	var flags byte
	if ack {
		flags = flagAck
	}
	b = appendFrameHeader(b, 8, framePing, flags, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, lastStreamID uint32, code ErrCode) []byte {
	b = appendFrameHeader(b, 8, frameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lastStreamID&maxStreamID)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

// appendHeaderBlock appends a header block as one HEADERS frame followed by
// as many CONTINUATION frames as maxFrame requires.
func appendHeaderBlock(b []byte, streamID uint32, block []byte, endStream bool, maxFrame int) []byte {
	first := true
	for first || len(block) > 0 {
		n := min(len(block), maxFrame)
		var flags byte
		if n == len(block) {
			flags |= flagEndHeaders
		}
		typ := byte(frameContinuation)
		if first {
			typ = frameHeaders
			if endStream {
				flags |= flagEndStream
			}
		}
		b = appendFrameHeader(b, n, typ, flags, streamID)
		b = append(b, block[:n]...)
		block = block[n:]
		first = false
	}
	return b
}
