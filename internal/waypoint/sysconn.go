package waypoint

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/ambit-mesh/ambit/internal/hbone"
)

// sysConn is a TCP connection whose Read and Write make their system calls
// without the runtime's syscall bookkeeping (syscall.RawSyscall inside
// syscall.RawConn, which still waits in the netpoller when the socket is
// not ready).
//
// Why: the socket is non-blocking, so read and write never block, and the
// bookkeeping (entersyscall/exitsyscall) only lets the runtime take the P
// away from a call that does. Its cost is elsewhere: every entersyscall
// after the process was idle wakes the runtime's monitor thread (sysmon),
// which then polls every 20 µs until the process is idle again. A waypoint
// at moderate load goes idle between most requests (it waits for the
// client, then for the upstream), so that wake-up came once or twice per
// request: a futex wake on the request path, and the monitor's thread
// switched in and out a few times — a tenth of the waypoint's CPU at 1000
// requests/s. Through here, a request's reads and writes wake nothing.
//
// Everything else (deadlines, Close, CloseWrite, splice through ReadFrom
// and WriteTo) is the *net.TCPConn's.
type sysConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// Reads and writes each pass their buffer and result through the
	// connection, so that the functions given to the RawConn are made
	// once, not per call.
	rmu    sync.Mutex
	rp     []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex
	wp      []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool
}

// sysDial makes dial's TCP connections sysConns.
func sysDial(dial hbone.DialFunc) hbone.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newSysConn(c), nil
	}
}

// sysListener makes the TCP connections it accepts sysConns.
type sysListener struct{ net.Listener }

func (l sysListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newSysConn(c), nil
}

// unwrapSysConn returns the *net.TCPConn of a sysConn, for code that
// recognizes TCP connections (hbone.Splice), else c.
func unwrapSysConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	if s, ok := c.(*sysConn); ok {
		return s.TCPConn
	}
	return c
}

// newSysConn wraps c; it returns c itself when it cannot (no raw access).
func newSysConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	s := &sysConn{TCPConn: tc, rc: rc}
	s.readFn = s.doRead
	s.writeFn = s.doWrite
	return s
}

// maxRW bounds one system call, as internal/poll does (some kernels
// refuse larger ones).
const maxRW = 1 << 30

func (c *sysConn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rp[0])), uintptr(len(c.rp)))
		switch e {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait in the netpoller
		}
		c.rerr = e
		return true
	}
}

func (c *sysConn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wp) {
		p := c.wp[c.wn:]
		if len(p) > maxRW {
			p = p[:maxRW]
		}
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			c.wn += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until writable
		}
		c.werr = e
		return true
	}
	return true
}

func (c *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rp, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rp = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *sysConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wp, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werr
	c.wp = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError wraps err as net's own methods do, so that callers' checks
// (timeouts, net.ErrClosed, ECONNRESET) see the same errors.
func (c *sysConn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok { // the RawConn's, "raw-read"
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
