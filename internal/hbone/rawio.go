package hbone

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a non-blocking socket with raw read(2), write(2)
// and writev(2) inside syscall.RawConn's callbacks, waiting for readiness
// through the runtime's poller as net.Conn does, but without the runtime's
// system-call bookkeeping (entersyscall/exitsyscall).
//
// Why: the first system call after the process was idle wakes the
// runtime's monitor thread (sysmon), which then polls every 20 µs until
// the process is idle again. A proxy hop is exactly such a burst — wake
// up, read, write, sleep — so every hop paid a futex wake-up of sysmon on
// its critical path plus a few sysmon wake-ups after it: with bulk
// transfers a tenth of the receiving ztunnel's CPU was sysmon's
// context switches (bench/README.md). Socket calls on a non-blocking
// descriptor never block, so nothing needs the bookkeeping's hand-off of
// the P to another thread; they only hold the P while the kernel copies.
//
// A rawIO's callbacks are made once, so a call allocates nothing; it must
// not be used by two goroutines at once for the same direction.
type rawIO struct {
	rc syscall.RawConn

	rfn, wfn, wvfn func(fd uintptr) bool
	rp, wp         []byte
	iov            []syscall.Iovec
	rn, wn         int
	rerr, werr     syscall.Errno
	once           bool // write: give up rather than wait for the socket
}

// newRawIO returns a rawIO for c, or nil if c offers no raw access.
func newRawIO(c any) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.rfn, r.wfn, r.wvfn = r.read, r.write, r.writev
	return r
}

func (r *rawIO) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rp[0])), uintptr(len(r.rp)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		}
		r.rn, r.rerr = int(n), e
		return true
	}
}

func (r *rawIO) write(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wp[0])), uintptr(len(r.wp)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return r.once // wait until writable, unless once
		}
		r.wn, r.werr = int(n), e
		return true
	}
}

func (r *rawIO) writev(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(len(r.iov)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.wn, r.werr = int(n), e
		return true
	}
}

// Read is net.Conn's Read: io.EOF at the peer's FIN; deadlines and Close
// apply as they do to the net.Conn.
func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerr = p, 0, 0
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
func (r *rawIO) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		r.wp, r.wn, r.werr = p[written:], 0, 0
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

// writeOnce makes one non-blocking write(2) of p: it returns how much the
// socket took, 0 (and no error) if its buffer is full.
func (r *rawIO) writeOnce(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wp, r.wn, r.werr, r.once = p, 0, 0, true
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

// writeBuffers writes all of bufs with writev(2); iov is scratch space
// for at least len(bufs) entries, which the caller clears afterwards (it
// points into bufs).
func (r *rawIO) writeBuffers(bufs [][]byte, iov []syscall.Iovec) (int64, error) {
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
