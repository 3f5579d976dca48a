package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// SpliceResult is what Splice moved, for TCP metrics
// (istio_tcp_sent_bytes_total and istio_tcp_received_bytes_total).
type SpliceResult struct {
	// AtoB and BtoA count the bytes copied from a to b and from b to a.
	AtoB, BtoA int64
	// Err is the first error that aborted the splice: a read error other
	// than EOF, a write error, or ctx's cause. Nil when both directions
	// ended with a clean half-close.
	Err error
}

// Splice relays bytes between a and b in both directions until both are
// done — typically a TCP connection and a *Stream, or two Streams. It owns
// both: it closes them before returning.
//
//   - When one side's reads end with EOF (a FIN, an END_STREAM), the other
//     side is half-closed for writing (CloseWrite, if it has one), and the
//     opposite direction carries on until it ends too; then both are closed.
//   - On any error, or when ctx is done, both sides are aborted at once: a
//     *net.TCPConn with a reset (SO_LINGER 0), a *Stream with RST_STREAM
//     (CANCEL), anything else by Close.
//
// Bytes go through the zero-copy paths of Stream.ReadFrom and
// Stream.WriteTo (and the kernel's splice for TCP to TCP).
func Splice(ctx context.Context, a, b io.ReadWriteCloser) SpliceResult {
	var (
		res      SpliceResult
		once     sync.Once
		firstErr error
	)
	abort := func(err error) {
		once.Do(func() {
			firstErr = err
			abortConn(a)
			abortConn(b)
		})
	}
	stop := context.AfterFunc(ctx, func() { abort(context.Cause(ctx)) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := copyHalf(b, a)
		res.AtoB = n
		if err == nil {
			err = closeWrite(b)
		}
		if err != nil {
			abort(err)
		}
	}()
	n, err := copyHalf(a, b)
	res.BtoA = n
	if err == nil {
		err = closeWrite(a)
	}
	if err != nil {
		abort(err)
	}
	<-done
	stop()
	once.Do(func() {
		a.Close()
		b.Close()
	})
	res.Err = firstErr
	return res
}

// copyHalf copies src to dst until src's EOF (nil error).
func copyHalf(dst io.Writer, src io.Reader) (int64, error) {
	if s, ok := dst.(*Stream); ok {
		return s.ReadFrom(src)
	}
	if s, ok := src.(*Stream); ok {
		return s.WriteTo(dst)
	}
	ch := getChunk(32 << 10)
	defer putChunk(ch)
	return io.CopyBuffer(dst, src, ch.buf[:cap(ch.buf)])
}

func closeWrite(w any) error {
	if cw, ok := w.(interface{ CloseWrite() error }); ok {
		err := cw.CloseWrite()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	return nil
}

func abortConn(c io.Closer) {
	switch v := c.(type) {
	case *Stream:
		v.Reset()
		v.Close()
	case *net.TCPConn:
		v.SetLinger(0)
		v.Close()
	default:
		c.Close()
	}
}
