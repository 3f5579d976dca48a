package hbone

import (
	"errors"
	"fmt"
	"net/http"
)

// StreamError reports that a stream was reset with RST_STREAM.
type StreamError struct {
	Code ErrCode
	// Remote is true when the peer reset the stream, false when this end did.
	Remote bool
}

func (e *StreamError) Error() string {
	if e.Remote {
		return "hbone: stream reset by peer: " + e.Code.String()
	}
	return "hbone: stream reset: " + e.Code.String()
}

// StatusError is returned by Pool.Connect when the server answers the
// CONNECT with a status other than 200.
type StatusError struct {
	StatusCode int
	Header     http.Header
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: CONNECT refused: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// ConnError reports that the HTTP/2 connection carrying a stream failed or
// was closed.
type ConnError struct {
	Err error
}

func (e *ConnError) Error() string { return "hbone: connection closed: " + e.Err.Error() }
func (e *ConnError) Unwrap() error { return e.Err }

// GoAwayError is the cause of a ConnError when the peer sent GOAWAY.
type GoAwayError struct {
	LastStreamID uint32
	Code         ErrCode
}

func (e *GoAwayError) Error() string {
	return fmt.Sprintf("peer sent GOAWAY (%s, last stream %d)", e.Code, e.LastStreamID)
}

// ErrPoolClosed is returned by Pool.Connect after Pool.Close.
var ErrPoolClosed = errors.New("hbone: pool closed")

// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
var ErrServerClosed = errors.New("hbone: server closed")

// protoError is a connection error this end detected: it is answered with
// GOAWAY carrying code.
type protoError struct {
	code   ErrCode
	reason string
}

func (e *protoError) Error() string { return "HTTP/2 " + e.code.String() + ": " + e.reason }

func connErr(code ErrCode, format string, args ...any) error {
	return &protoError{code: code, reason: fmt.Sprintf(format, args...)}
}

var (
	// errUnprocessed marks a client stream the server never processed
	// (refused, or above a GOAWAY's last stream ID): safe to retry elsewhere.
	errUnprocessed = errors.New("hbone: stream not processed by the server")
	// errIdleClose and errLocalClose are teardown causes of a connection
	// this end closed on purpose; they are answered with GOAWAY(NO_ERROR).
	errIdleClose            = errors.New("idle timeout")
	errLocalClose           = errors.New("closed locally")
	errKeepAlive            = errors.New("keepalive: peer did not answer PING")
	errPeerClosed           = errors.New("connection closed by peer")
	errWriteAfterCloseWrite = errors.New("hbone: write after CloseWrite")
)

// retryable reports whether a Connect attempt failed before the server
// processed the stream.
func retryable(err error) bool {
	return errors.Is(err, errUnprocessed)
}
