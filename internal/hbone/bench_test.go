package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

// Benchmarks compare HBONE with what it has to beat, over loopback, client
// and server in this process (so CPU figures cover both ends):
//
//	tcp    plain TCP
//	tls    mutual TLS 1.3 with crypto/tls: the stunnel-equivalent baseline
//	hbone  this package
//	std    HBONE built on net/http's HTTP/2 (HTTP2Config tuned), the
//	       alternative this package was measured against
//
// Run with, e.g.:
//
//	go test ./internal/hbone -run '^$' -bench . -benchtime 1s -count 3
//
// Besides ns/op, B/s and allocs/op, each reports cpu-ns/op (user+system
// CPU of the whole process per op, from getrusage) and cpu% (of one core).

// benchConn is one end of a benchmark connection.
type benchConn interface {
	io.ReadWriter
	CloseWrite() error
	Close() error
}

// transport starts a server running handler for every connection and
// returns a dialer.
type transport struct {
	name  string
	start func(b *testing.B, handler func(benchConn)) (dial func() (benchConn, error))
}

var transports = []transport{
	{"tcp", startTCP},
	{"tls", startTLS},
	{"hbone", startHBONE},
	{"std", startStd},
}

func startTCP(b *testing.B, handler func(benchConn)) func() (benchConn, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { handler(c.(*net.TCPConn)); c.Close() }()
		}
	}()
	return func() (benchConn, error) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

// tlsConfigs are a stunnel-like mTLS pair: TLS 1.3, client certificates,
// full-size records.
func tlsConfigs(b testing.TB, certs *testCerts) (server, client *tls.Config) {
	sc, _ := certs.Certificate(context.Background(), serverID)
	cc, _ := certs.Certificate(context.Background(), clientID)
	server = &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*sc},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: certs.Roots(),
		DynamicRecordSizingDisabled: true, SessionTicketsDisabled: true,
	}
	client = &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cc},
		RootCAs: certs.Roots(), ServerName: "unused", InsecureSkipVerify: true,
		DynamicRecordSizingDisabled: true,
	}
	return server, client
}

func startTLS(b *testing.B, handler func(benchConn)) func() (benchConn, error) {
	certs := newTestCerts(b, newTestCA(b))
	scfg, ccfg := tlsConfigs(b, certs)
	l, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { handler(c.(*tls.Conn)); c.Close() }()
		}
	}()
	return func() (benchConn, error) {
		c, err := tls.Dial("tcp", l.Addr().String(), ccfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

func startHBONE(b *testing.B, handler func(benchConn)) func() (benchConn, error) {
	e := newEnv(b, envOptions{handler: func(ctx context.Context, r *Request) {
		if s, err := r.Accept(nil); err == nil {
			handler(s)
		}
	}})
	return func() (benchConn, error) {
		s, _, err := e.pool.Connect(context.Background(), e.target())
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// stdConn adapts a net/http server handler's request and response.
type stdConn struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	r  *http.Request
}

func (c *stdConn) Read(p []byte) (int, error) { return c.r.Body.Read(p) }
func (c *stdConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.rc.Flush()
	return n, err
}
func (c *stdConn) CloseWrite() error { return nil } // the handler's return ends the response
func (c *stdConn) Close() error      { return nil }

func startStd(b *testing.B, handler func(benchConn)) func() (benchConn, error) {
	certs := newTestCerts(b, newTestCA(b))
	addr := newStdServer(b, certs, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush()
		handler(&stdConn{w: w, rc: rc, r: r})
	})
	tr := newStdTransport(b, certs)
	return func() (benchConn, error) {
		t, _, err := stdConnect(tr, addr, http.MethodConnect, testAuthority.String())
		if err != nil {
			return nil, err
		}
		return t, nil
	}
}

// cpuMeter measures the process's CPU time.
type cpuMeter struct {
	wall time.Time
	cpu  time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{wall: time.Now(), cpu: processCPU()} }

func (m cpuMeter) report(b *testing.B) {
	cpu := processCPU() - m.cpu
	wall := time.Since(m.wall)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%")
}

// sink reads everything and reports the count.
func sink(total chan<- int64) func(benchConn) {
	return func(c benchConn) {
		buf := make([]byte, 64<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		c.CloseWrite()
		total <- n
	}
}

// BenchmarkThroughput: one connection (or stream) sending 64 KiB writes
// to a reader that discards them.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 64 << 10
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			total := make(chan int64, 1)
			dial := tr.start(b, sink(total))
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, chunk)
			c.Write(buf) // warm up: handshakes, windows
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			m := startCPU()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			got := <-total // everything has arrived
			m.report(b)
			b.StopTimer()
			if got != int64(b.N+1)*chunk {
				b.Fatalf("sink got %d bytes, want %d", got, int64(b.N+1)*chunk)
			}
		})
	}
}

func echo(c benchConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	c.CloseWrite()
}

// reportLatency adds percentiles of the per-op round trips.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkEcho16: 16 long-lived connections (streams) in parallel, each
// op one 1 KiB request echoed back (request/response latency of small
// messages; ns/op is the aggregate rate).
func BenchmarkEcho16(b *testing.B) {
	const streams, size = 16, 1 << 10
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			dial := tr.start(b, echo)
			conns := make(chan benchConn, streams)
			for range streams {
				c, err := dial()
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				c.Write(make([]byte, size)) // warm up
				io.ReadFull(c, make([]byte, size))
				conns <- c
			}
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism((streams + 1) / 2) // 16 goroutines on 2 CPUs
			b.ReportAllocs()
			b.ResetTimer()
			m := startCPU()
			b.RunParallel(func(pb *testing.PB) {
				c := <-conns
				defer func() { conns <- c }()
				buf := make([]byte, size)
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					if _, err := c.Write(buf); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			m.report(b)
			reportLatency(b, lat)
		})
	}
}

// BenchmarkConnectEcho: a new tunnel per op (16 in parallel): open, 1 KiB
// echoed, close. For tls that is a full mTLS handshake per op, which is
// what a stunnel pair does for every TCP connection; HBONE opens a stream
// on a pooled connection.
func BenchmarkConnectEcho(b *testing.B) {
	const size = 1 << 10
	for _, tr := range transports {
		if tr.name == "tcp" {
			continue
		}
		b.Run(tr.name, func(b *testing.B) {
			dial := tr.start(b, echo)
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			m := startCPU()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, size)
				for pb.Next() {
					c, err := dial()
					if err != nil {
						b.Error(err)
						return
					}
					c.Write(buf)
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Error(err)
					}
					c.CloseWrite()
					io.Copy(io.Discard, c)
					c.Close()
				}
			})
			m.report(b)
		})
	}
}

// BenchmarkRelayPair is a proxy pair as deployed: an application's TCP
// connection to the outbound proxy, a tunnel to the inbound proxy, TCP to
// the destination application (which discards). "tls" is a stunnel pair
// (one mTLS connection per TCP connection, io.Copy both ways); "hbone" is
// a ztunnel pair (Pool.Connect + Splice, Server handler + Splice). One
// connection, 64 KiB application writes.
func BenchmarkRelayPair(b *testing.B) {
	const chunk = 64 << 10
	for _, name := range []string{"tls", "hbone"} {
		b.Run(name, func(b *testing.B) {
			total := make(chan int64, 1)
			app := tcpSink(b, total)
			var outbound net.Listener
			if name == "tls" {
				outbound = stunnelPair(b, app)
			} else {
				outbound = ztunnelPair(b, app)
			}
			c, err := net.Dial("tcp", outbound.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, chunk)
			c.Write(buf)
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			m := startCPU()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			got := <-total
			m.report(b)
			b.StopTimer()
			if got != int64(b.N+1)*chunk {
				b.Fatalf("sink got %d bytes, want %d", got, int64(b.N+1)*chunk)
			}
		})
	}
}

// BenchmarkRelayEcho16 is the per-request case of a proxy pair: 16
// application connections through the pair in parallel (16 TLS
// connections for the stunnel pair, 16 streams on one connection for the
// ztunnel pair), each op a 1 KiB request echoed by the destination
// application.
func BenchmarkRelayEcho16(b *testing.B) {
	const conns, size = 16, 1 << 10
	for _, name := range []string{"tls", "hbone"} {
		b.Run(name, func(b *testing.B) {
			app := tcpEcho(b)
			var outbound net.Listener
			if name == "tls" {
				outbound = stunnelPair(b, app)
			} else {
				outbound = ztunnelPair(b, app)
			}
			pool := make(chan net.Conn, conns)
			for range conns {
				c, err := net.Dial("tcp", outbound.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				c.Write(make([]byte, size))
				if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
					b.Fatal(err)
				}
				pool <- c
			}
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(conns / 2)
			b.ReportAllocs()
			b.ResetTimer()
			m := startCPU()
			b.RunParallel(func(pb *testing.PB) {
				c := <-pool
				defer func() { pool <- c }()
				buf := make([]byte, size)
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					if _, err := c.Write(buf); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			m.report(b)
			reportLatency(b, lat)
		})
	}
}

func tcpEcho(b *testing.B) net.Addr {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				echo(c.(*net.TCPConn))
				c.Close()
			}()
		}
	}()
	return l.Addr()
}

func tcpSink(b *testing.B, total chan<- int64) net.Addr {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				sink(total)(c.(*net.TCPConn))
				c.Close()
			}()
		}
	}()
	return l.Addr()
}

// relay copies both ways with half-close, as stunnel does.
func relay(a, c benchConn) {
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(c, a); c.CloseWrite() })
	io.Copy(a, c)
	a.CloseWrite()
	wg.Wait()
	a.Close()
	c.Close()
}

func stunnelPair(b *testing.B, app net.Addr) net.Listener {
	certs := newTestCerts(b, newTestCA(b))
	scfg, ccfg := tlsConfigs(b, certs)
	in, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close() })
	go func() {
		for {
			c, err := in.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := net.Dial("tcp", app.String())
				if err != nil {
					c.Close()
					return
				}
				relay(c.(*tls.Conn), up.(*net.TCPConn))
			}()
		}
	}()
	out, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { out.Close() })
	go func() {
		for {
			c, err := out.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := tls.Dial("tcp", in.Addr().String(), ccfg)
				if err != nil {
					c.Close()
					return
				}
				relay(c.(*net.TCPConn), up)
			}()
		}
	}()
	return out
}

func ztunnelPair(b *testing.B, app net.Addr) net.Listener {
	e := newEnv(b, envOptions{handler: func(ctx context.Context, r *Request) {
		up, err := net.Dial("tcp", app.String())
		if err != nil {
			r.Reject(http.StatusServiceUnavailable, nil)
			return
		}
		s, err := r.Accept(nil)
		if err != nil {
			up.Close()
			return
		}
		Splice(ctx, s, up)
	}})
	out, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { out.Close() })
	go func() {
		for {
			c, err := out.Accept()
			if err != nil {
				return
			}
			go func() {
				tgt := e.target()
				tgt.ForwardedFor = c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
				s, _, err := e.pool.Connect(context.Background(), tgt)
				if err != nil {
					c.Close()
					return
				}
				Splice(context.Background(), c, s)
			}()
		}
	}()
	return out
}

var (
	_ = netip.Addr{}
	_ = spiffe.ID{}
	_ = atomic.Int64{}
)
