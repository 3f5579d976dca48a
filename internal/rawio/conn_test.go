package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// connPair is a loopback TCP connection: the Conn end and the plain
// peer.
func connPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := Listener{l}.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	peer, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := <-accepted
	sc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("accepted %T, want *Conn", c)
	}
	t.Cleanup(func() { sc.Close(); peer.Close() })
	return sc, peer
}

func TestConnReadWrite(t *testing.T) {
	sc, peer := connPair(t)
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := sc.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if n, err := sc.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}

	// A write larger than the socket buffers completes once the peer
	// reads: the write waits for writability in between.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := sc.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("peer read %d bytes, not what was written", len(b))
	}

	// The peer half-closes: EOF.
	peer.(*net.TCPConn).CloseWrite()
	if n, err := sc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer's FIN = %d, %v; want io.EOF", n, err)
	}
}

// Errors are the ones net's own connections return, so that callers'
// checks hold.
func TestConnErrors(t *testing.T) {
	sc, peer := connPair(t)
	buf := make([]byte, 16)

	sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := sc.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read past the deadline: %#v; want a *net.OpError for read", err)
	}
	sc.SetReadDeadline(time.Time{})

	// A read blocked when the connection closes returns net.ErrClosed.
	errc := make(chan error, 1)
	go func() {
		_, err := sc.Read(buf)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	sc.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read interrupted by Close: %v; want net.ErrClosed", err)
	}
	if _, err := sc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
	peer.Close()
}

func TestConnReset(t *testing.T) {
	sc, peer := connPair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // RST
	time.Sleep(20 * time.Millisecond)
	_, err := sc.Read(make([]byte, 16))
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "read" {
		t.Fatalf("Read after a reset: %v; want ECONNRESET as an *os.SyscallError", err)
	}
}

// Reads and writes may run at once, as on any net.Conn.
func TestConnConcurrent(t *testing.T) {
	sc, peer := connPair(t)
	const n = 1 << 20
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // echo
		defer wg.Done()
		io.CopyN(peer, peer, n)
	}()
	go func() {
		defer wg.Done()
		chunk := bytes.Repeat([]byte("x"), 1000)
		for sent := 0; sent < n; {
			m := min(len(chunk), n-sent)
			if _, err := sc.Write(chunk[:m]); err != nil {
				t.Error(err)
				return
			}
			sent += m
		}
	}()
	if got, err := io.CopyN(io.Discard, sc, n); got != n || err != nil {
		t.Fatalf("read back %d bytes, %v", got, err)
	}
	wg.Wait()
}

// A write the kernel refuses counts nothing written: the -1 of a failed
// system call must not reach the byte counts (a stream giving back flow
// control for what it did not deliver relies on them).
func TestWriteErrorCountsNothing(t *testing.T) {
	sc, peer := connPair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // RST
	time.Sleep(20 * time.Millisecond)
	if n, err := sc.io.Write([]byte("x")); err == nil || n != 0 {
		t.Errorf("Write after a reset: %d, %v; want 0 and an error", n, err)
	}
	n, err := sc.io.WriteBuffers([][]byte{[]byte("a"), []byte("b")}, nil)
	if err == nil || n != 0 {
		t.Errorf("WriteBuffers after a reset: %d, %v; want 0 and an error", n, err)
	}
}
