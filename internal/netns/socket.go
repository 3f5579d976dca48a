//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketOptions are applied to sockets created by [ListenConfig], [DialTCP]
// and [Dialer] before bind(2).
type SocketOptions struct {
	// Mark sets SO_MARK (needs CAP_NET_ADMIN) when non-zero. The ztunnel
	// marks its own sockets so that the pod's redirection rules let them
	// through (see internal/redirect).
	Mark uint32
	// Transparent sets IP_TRANSPARENT / IPV6_TRANSPARENT: a listener accepts
	// TPROXY'd connections, a dialer may bind a source address that is not
	// local (to preserve the original client's IP).
	Transparent bool
	// ReuseAddr sets SO_REUSEADDR. Listeners always set it, as Go does.
	ReuseAddr bool
	// ReusePort sets SO_REUSEPORT (lets two ztunnel generations listen at
	// once during a hand-over).
	ReusePort bool
	// Source is the local address a dialer binds before connecting
	// (dialers only). With Transparent it may be any address, for example
	// the original client's; its port may be 0.
	Source netip.AddrPort
	// Timeout bounds a dial (dialers only); 0 means only the context's
	// deadline applies.
	Timeout time.Duration
}

func (o SocketOptions) apply(fd int, family int) error {
	if o.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); err != nil {
			return fmt.Errorf("SO_MARK: %w", err)
		}
	}
	if o.Transparent {
		var err error
		if family == unix.AF_INET6 {
			err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
		if err != nil {
			return fmt.Errorf("IP_TRANSPARENT: %w", err)
		}
	}
	if o.ReuseAddr {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("SO_REUSEADDR: %w", err)
		}
	}
	if o.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	return nil
}

// socketIn creates a non-blocking, close-on-exec socket inside ns (or in
// the calling thread's namespace when ns is nil).
func socketIn(ns *NS, family, typ, proto int) (int, error) {
	fd := -1
	mk := func() error {
		var err error
		fd, err = unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		return nil
	}
	var err error
	if ns == nil {
		err = mk()
	} else {
		err = Do(ns, mk)
	}
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, err
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	a := ap.Addr()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, unix.AF_INET
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(z); err == nil {
			sa.ZoneId = uint32(n)
		}
	}
	return sa, unix.AF_INET6
}

// parseAddr parses "ip:port"; an empty host means 0.0.0.0 (IPv4 only) and
// "[::]" means all addresses, IPv4 included (dual stack). Host names are
// refused: resolving them would not happen inside the namespace.
func parseAddr(address string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid port %q", port)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p)), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address (names are not resolved inside a namespace)", host)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// ListenConfig creates listening sockets inside a namespace.
type ListenConfig struct {
	// NS is the namespace the sockets live in; nil means the calling
	// thread's namespace.
	NS *NS
	SocketOptions
	// Backlog for listen(2); 0 means 4096 (capped by net.core.somaxconn).
	Backlog int
}

func (lc ListenConfig) socket(address string, typ int) (int, netip.AddrPort, error) {
	ap, err := parseAddr(address)
	if err != nil {
		return -1, ap, err
	}
	sa, family := sockaddr(ap)
	fd, err := socketIn(lc.NS, family, typ, 0)
	if err != nil {
		return -1, ap, err
	}
	opts := lc.SocketOptions
	opts.ReuseAddr = opts.ReuseAddr || typ == unix.SOCK_STREAM
	err = opts.apply(fd, family)
	if err == nil && family == unix.AF_INET6 {
		v6only := 1
		if ap.Addr().IsUnspecified() {
			v6only = 0
		}
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only)
	}
	if err == nil {
		err = os.NewSyscallError("bind", unix.Bind(fd, sa))
	}
	if err != nil {
		unix.Close(fd)
		return -1, ap, err
	}
	return fd, ap, nil
}

// ListenTCP listens on address ("ip:port", see parseAddr) inside lc.NS.
func (lc ListenConfig) ListenTCP(address string) (*net.TCPListener, error) {
	fd, _, err := lc.socket(address, unix.SOCK_STREAM)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: err}
	}
	backlog := lc.Backlog
	if backlog <= 0 {
		backlog = 4096
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("listen", err)}
	}
	f := os.NewFile(uintptr(fd), "tcp-listener")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

// ListenUDP opens a UDP socket bound to address inside lc.NS.
func (lc ListenConfig) ListenUDP(address string) (*net.UDPConn, error) {
	fd, _, err := lc.socket(address, unix.SOCK_DGRAM)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "udp", Err: err}
	}
	f := os.NewFile(uintptr(fd), "udp")
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// ListenTCP listens on address ("ip:port") inside ns with opts.
func ListenTCP(ns *NS, address string, opts SocketOptions) (*net.TCPListener, error) {
	return ListenConfig{NS: ns, SocketOptions: opts}.ListenTCP(address)
}

// DialFunc has the signature of net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Dialer returns a dial function whose TCP sockets are created inside ns
// with opts. network must be "tcp", "tcp4" or "tcp6"; address must be a
// numeric "ip:port".
func Dialer(ns *NS, opts SocketOptions) DialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		switch network {
		case "tcp", "tcp4", "tcp6":
		default:
			return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
		}
		ap, err := parseAddr(address)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		if (network == "tcp4" && !ap.Addr().Is4()) || (network == "tcp6" && ap.Addr().Is4()) {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.AddrError{Err: "address family mismatch", Addr: address}}
		}
		return DialTCP(ctx, ns, ap, opts)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// DialTCP connects to raddr from a socket created inside ns (nil: the
// calling thread's namespace) with opts. Only socket(2) runs inside the
// namespace; the connect waits in Go's poller.
func DialTCP(ctx context.Context, ns *NS, raddr netip.AddrPort, opts SocketOptions) (*net.TCPConn, error) {
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	if !raddr.IsValid() {
		return nil, opErr(errors.New("invalid address"))
	}
	rsa, family := sockaddr(raddr)
	var lsa unix.Sockaddr
	if opts.Source.IsValid() {
		src := netip.AddrPortFrom(opts.Source.Addr().Unmap(), opts.Source.Port())
		var lfamily int
		lsa, lfamily = sockaddr(src)
		if lfamily != family {
			return nil, opErr(fmt.Errorf("source %s and destination are of different address families", src))
		}
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	fd, err := socketIn(ns, family, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, opErr(err)
	}
	if err := opts.apply(fd, family); err != nil {
		unix.Close(fd)
		return nil, opErr(err)
	}
	if lsa != nil {
		if err := unix.Bind(fd, lsa); err != nil {
			unix.Close(fd)
			return nil, opErr(os.NewSyscallError("bind", err))
		}
	}
	// The fd is non-blocking: os.NewFile registers it with the poller.
	f := os.NewFile(uintptr(fd), "tcp")
	defer f.Close()
	if d, ok := ctx.Deadline(); ok {
		if err := f.SetWriteDeadline(d); err != nil {
			return nil, opErr(err)
		}
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(aLongTimeAgo) })
	err = connect(f, rsa)
	if !stop() && err == nil {
		err = ctx.Err() // the context ended just as the connect completed
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Only the context sets deadlines on f. The poller may notice
			// the deadline a moment before the context's own timer does.
			err = ctx.Err()
			if err == nil {
				err = context.DeadlineExceeded
			}
		}
		return nil, opErr(err)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, opErr(err)
	}
	return c.(*net.TCPConn), nil
}

// connect runs a non-blocking connect(2), waiting in the poller, as the
// net package does.
func connect(f *os.File, sa unix.Sockaddr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var connErr error
	started := false
	werr := rc.Write(func(fd uintptr) bool {
		if !started {
			started = true
			switch err := unix.Connect(int(fd), sa); err {
			case nil, unix.EISCONN:
				return true
			case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
				return false
			default:
				connErr = os.NewSyscallError("connect", err)
				return true
			}
		}
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			connErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := syscall.Errno(soerr); e {
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		case 0:
			if _, err := unix.Getpeername(int(fd)); err == nil {
				return true
			} else if err != unix.ENOTCONN {
				connErr = os.NewSyscallError("getpeername", err)
				return true
			}
			return false
		default:
			connErr = os.NewSyscallError("connect", e)
			return true
		}
	})
	if werr != nil {
		return werr
	}
	return connErr
}
