package rawio

import (
	"context"
	"io"
	"net"
	"sync"
)

// Conn is a TCP connection whose Read and Write go through an IO; its
// errors are net's own (*net.OpError, so timeouts, net.ErrClosed and
// resets are recognized as usual). Everything else (deadlines, Close,
// CloseWrite, ReadFrom, WriteTo) is the *net.TCPConn's. Safe for
// concurrent use as a net.Conn is.
type Conn struct {
	*net.TCPConn
	io       *IO
	rmu, wmu sync.Mutex
}

// Wrap returns c as a *Conn, or c itself when it is not a TCP connection
// with raw access.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	r := New(tc)
	if r == nil {
		return c
	}
	return &Conn{TCPConn: tc, io: r}
}

// Unwrap returns a *Conn's *net.TCPConn, for code that recognizes TCP
// connections (splice(2), resets), else c.
func Unwrap(c io.ReadWriteCloser) io.ReadWriteCloser {
	if s, ok := c.(*Conn); ok {
		return s.TCPConn
	}
	return c
}

// Dialer returns dial with its TCP connections wrapped.
func Dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	}
}

// Listener wraps the TCP connections it accepts.
type Listener struct{ net.Listener }

func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	n, err := c.io.Read(p)
	c.rmu.Unlock()
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	n, err := c.io.Write(p)
	c.wmu.Unlock()
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// opError wraps err as net's own methods do, so that callers' checks see
// the same errors.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok { // the RawConn's, "raw-read"
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
