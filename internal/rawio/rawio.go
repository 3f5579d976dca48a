// Package rawio reads and writes non-blocking sockets with raw read(2),
// write(2) and writev(2) inside syscall.RawConn's callbacks: readiness is
// still awaited in the runtime's poller, and deadlines and Close still
// apply, as with net.Conn, but the calls skip the runtime's system-call
// bookkeeping (entersyscall/exitsyscall).
//
// Why: the first system call after the process was idle wakes the
// runtime's monitor thread (sysmon), which then polls every 20 µs until
// the process is idle again. A proxy hop is exactly such a burst — wake
// up, read, write, sleep — so every hop paid a futex wake-up of sysmon on
// its critical path plus a few sysmon wake-ups after it: a tenth of a
// ztunnel's CPU under bulk transfer and of a waypoint's at 1000 requests/s
// (bench/README.md). Calls on a non-blocking descriptor never block, so
// nothing needs the bookkeeping's hand-off of the P to another thread.
//
// It is for the data-plane proxies' sockets: internal/hbone (under TLS and
// the tunnels' TCP ends) and internal/waypoint (plaintext and upstream
// connections), through IO or Conn.
package rawio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// maxRW bounds one system call, as internal/poll does (some kernels refuse
// larger ones).
const maxRW = 1 << 30

// IO makes the raw calls on one socket. Its callbacks are made once, so a
// call allocates nothing. It must not be used by two goroutines at once
// for the same direction: callers that may do so lock (Conn does).
type IO struct {
	rc syscall.RawConn

	rfn, wfn, wvfn func(fd uintptr) bool
	rp, wp         []byte
	iov            []syscall.Iovec
	rn, wn         int
	rerr, werr     syscall.Errno
	once           bool // write: give up rather than wait for the socket
}

// New returns an IO for c, or nil if c offers no raw access.
func New(c any) *IO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &IO{rc: rc}
	r.rfn, r.wfn, r.wvfn = r.read, r.write, r.writev
	return r
}

// call makes one raw system call on a non-blocking socket, again when a
// signal interrupts it. again reports EAGAIN (wait for the socket); n is 0
// whenever errno is set, never the -1 the kernel returns.
func call(trap, fd uintptr, p unsafe.Pointer, n int) (done int, errno syscall.Errno, again bool) {
	for {
		r, _, e := syscall.RawSyscall(trap, fd, uintptr(p), uintptr(n))
		switch e {
		case 0:
			return int(r), 0, false
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, e, true
		}
		return 0, e, false
	}
}

func (r *IO) read(fd uintptr) bool {
	n, e, again := call(syscall.SYS_READ, fd, unsafe.Pointer(&r.rp[0]), len(r.rp))
	if again {
		return false // wait until readable
	}
	r.rn, r.rerr = n, e
	return true
}

func (r *IO) write(fd uintptr) bool {
	n, e, again := call(syscall.SYS_WRITE, fd, unsafe.Pointer(&r.wp[0]), len(r.wp))
	if again {
		return r.once // wait until writable, unless once
	}
	r.wn, r.werr = n, e
	return true
}

func (r *IO) writev(fd uintptr) bool {
	n, e, again := call(syscall.SYS_WRITEV, fd, unsafe.Pointer(&r.iov[0]), len(r.iov))
	if again {
		return false
	}
	r.wn, r.werr = n, e
	return true
}

// Read is net.Conn's Read: io.EOF at the peer's FIN; errors from the
// RawConn (deadlines, Close) are returned as it gives them.
func (r *IO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerr = p[:min(len(p), maxRW)], 0, 0
	err := r.rc.Read(r.rfn)
	r.rp = nil
	switch {
	case err != nil:
		return 0, err
	case r.rerr != 0:
		return 0, os.NewSyscallError("read", r.rerr)
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

// Write writes all of p, waiting for the socket as needed.
func (r *IO) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		rest := p[written:]
		r.wp, r.wn, r.werr = rest[:min(len(rest), maxRW)], 0, 0
		err := r.rc.Write(r.wfn)
		r.wp = nil
		written += r.wn
		if err != nil {
			return written, err
		}
		if r.werr != 0 {
			return written, os.NewSyscallError("write", r.werr)
		}
	}
	return written, nil
}

// WriteOnce makes one non-blocking write(2) of p: it returns how much the
// socket took, 0 (and no error) if its buffer is full.
func (r *IO) WriteOnce(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wp, r.wn, r.werr, r.once = p[:min(len(p), maxRW)], 0, 0, true
	err := r.rc.Write(r.wfn)
	r.wp, r.once = nil, false
	switch {
	case err != nil:
		return 0, err
	case r.werr != 0:
		return 0, os.NewSyscallError("write", r.werr)
	}
	return r.wn, nil
}

// WriteBuffers writes all of bufs with writev(2); iov is scratch space
// for at least len(bufs) entries, which the caller clears afterwards (it
// points into bufs).
func (r *IO) WriteBuffers(bufs [][]byte, iov []syscall.Iovec) (int64, error) {
	var total int64
	for len(bufs) > 0 {
		iov = iov[:0]
		for _, b := range bufs {
			if len(b) > 0 {
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iov = append(iov, v)
			}
		}
		if len(iov) == 0 {
			break
		}
		r.iov, r.wn, r.werr = iov, 0, 0
		err := r.rc.Write(r.wvfn)
		r.iov = nil
		n := r.wn
		total += int64(n)
		if err != nil {
			return total, err
		}
		if r.werr != 0 {
			return total, os.NewSyscallError("writev", r.werr)
		}
		for len(bufs) > 0 && n >= len(bufs[0]) { // drop what was written
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
		if len(bufs) > 0 {
			bufs[0] = bufs[0][n:]
		}
	}
	return total, nil
}
