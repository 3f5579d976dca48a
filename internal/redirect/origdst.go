//go:build linux

package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// missing from x/sys/unix.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a connection had before netfilter
// changed it: for a connection captured by REDIRECT (outbound, port 15001)
// the address the app dialled. It asks conntrack with getsockopt
// SOL_IP/SO_ORIGINAL_DST (SOL_IPV6/IP6T_SO_ORIGINAL_DST for IPv6). For a
// connection that was not NATed — TPROXY'd inbound ones included — it
// returns the connection's own local address, which then is the original
// destination. It fails if conntrack has no entry for the connection.
func OriginalDst(conn *net.TCPConn) (netip.AddrPort, error) {
	if conn == nil {
		return netip.AddrPort{}, errors.New("redirect: OriginalDst of a nil connection")
	}
	la, ok := conn.LocalAddr().(*net.TCPAddr)
	if !ok || la == nil {
		return netip.AddrPort{}, errors.New("redirect: OriginalDst: connection has no local address")
	}
	// The conntrack entry is IPv4 for IPv4 and v4-mapped connections.
	v4 := la.AddrPort().Addr().Unmap().Is4()
	rc, err := conn.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	var gerr error
	if err := rc.Control(func(fd uintptr) { ap, gerr = getOrigDst(int(fd), v4) }); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("redirect: SO_ORIGINAL_DST: %w", gerr)
	}
	return ap, nil
}

func getOrigDst(fd int, v4 bool) (netip.AddrPort, error) {
	var buf [unix.SizeofSockaddrInet6]byte
	size := uint32(len(buf))
	level, opt := unix.SOL_IP, unix.SO_ORIGINAL_DST
	if !v4 {
		level, opt = unix.SOL_IPV6, ip6tSOOriginalDst
	}
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return parseSockaddr(buf[:size])
}

// parseSockaddr decodes a struct sockaddr_in or sockaddr_in6.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("short sockaddr (%d bytes)", len(b))
	}
	family := binary.NativeEndian.Uint16(b[0:2])
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case family == unix.AF_INET6 && len(b) >= unix.SizeofSockaddrInet6:
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), nil
	}
	return netip.AddrPort{}, fmt.Errorf("unexpected sockaddr family %d (%d bytes)", family, len(b))
}
