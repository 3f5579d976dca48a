// Package echo is `ambit app echo`, the built-in test workload: it answers
// HTTP/1.1, h2c and gRPC with a description of the request as it arrived
// (so tests can see what the mesh did to it: rewritten paths, added headers,
// which backend and peer), and echoes raw TCP bytes. Used by examples, the
// end-to-end tests, and as a container command.
package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
)

// Options configure the server. Zero ports disable that protocol.
type Options struct {
	// HTTPPorts serve HTTP/1.1 and h2c (prior knowledge) on each port.
	HTTPPorts []int
	// GRPCPorts serve the ambit.echo.v1.Echo service (h2c).
	GRPCPorts []int
	// TCPPorts echo every byte back, half-close included.
	TCPPorts []int
	// Host to bind; empty means all addresses.
	Host string
	// Identity reported in every answer; defaults come from the environment
	// a pod gets (POD_NAME, POD_NAMESPACE, SERVICE_VERSION).
	Pod, Namespace, Version, Zone string
	// Delay added to every HTTP and gRPC answer (a per-request ?delay= adds to it).
	Delay time.Duration
	// DelayFile, if set, names a file holding a further delay ("300ms"):
	// checked on every answer and re-read when it changes, so a backend
	// can be made slow and fast again while it runs (the zonal
	// experiment's degraded zone). Missing or empty: nothing added.
	DelayFile string
	Log       *slog.Logger
}

// FromEnv fills identity fields from the pod environment where unset.
func (o *Options) FromEnv() {
	if o.Pod == "" {
		o.Pod = os.Getenv("POD_NAME")
	}
	if o.Pod == "" {
		o.Pod, _ = os.Hostname()
	}
	if o.Namespace == "" {
		o.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if o.Version == "" {
		o.Version = os.Getenv("SERVICE_VERSION")
	}
	if o.Zone == "" {
		o.Zone = os.Getenv("ZONE")
	}
}

// Response is the JSON body of every HTTP answer.
type Response struct {
	Pod       string              `json:"pod"`
	Namespace string              `json:"namespace"`
	Version   string              `json:"version,omitempty"`
	Zone      string              `json:"zone,omitempty"`
	Method    string              `json:"method"`
	Path      string              `json:"path"`
	RawQuery  string              `json:"query,omitempty"`
	Host      string              `json:"host"`
	Proto     string              `json:"proto"`
	Headers   map[string][]string `json:"headers"`
	Peer      string              `json:"peer"`
	// Local is the address the request arrived at.
	Local string `json:"local"`
}

// Server is a running echo server.
type Server struct {
	opts      Options
	listeners []net.Listener
	http      []*http.Server
	grpc      []*grpc.Server
	wg        sync.WaitGroup

	fileMu    sync.Mutex
	fileStamp string // size and mtime the delay was read at
	fileDelay time.Duration
}

// delayFromFile is Options.DelayFile's delay now.
func (s *Server) delayFromFile() time.Duration {
	if s.opts.DelayFile == "" {
		return 0
	}
	stamp := ""
	if fi, err := os.Stat(s.opts.DelayFile); err == nil {
		stamp = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if stamp == s.fileStamp {
		return s.fileDelay
	}
	s.fileStamp, s.fileDelay = stamp, 0
	if stamp == "" {
		return 0
	}
	b, err := os.ReadFile(s.opts.DelayFile)
	if v := strings.TrimSpace(string(b)); err == nil && v != "" {
		d, perr := time.ParseDuration(v)
		if perr != nil || d < 0 {
			s.opts.Log.Warn("delay file: want a duration such as 300ms; no delay", "file", s.opts.DelayFile, "content", v)
			return 0
		}
		s.fileDelay = d
	}
	s.opts.Log.Info("delay file read", "file", s.opts.DelayFile, "delay", s.fileDelay.String())
	return s.fileDelay
}

// Start opens every listener; an error means none is left open.
func Start(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts}
	listen := func(port int) (net.Listener, error) {
		return net.Listen("tcp", net.JoinHostPort(opts.Host, strconv.Itoa(port)))
	}
	for _, p := range opts.HTTPPorts {
		l, err := listen(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		hs := &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
		s.serve(l, func() { hs.Serve(l) })
		s.http = append(s.http, hs)
	}
	for _, p := range opts.GRPCPorts {
		l, err := listen(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		gs := grpc.NewServer()
		echov1.RegisterEchoServer(gs, &grpcEcho{s: s})
		s.serve(l, func() { gs.Serve(l) })
		s.grpc = append(s.grpc, gs)
	}
	for _, p := range opts.TCPPorts {
		l, err := listen(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.serve(l, func() { s.serveTCP(l) })
	}
	return s, nil
}

func (s *Server) serve(l net.Listener, run func()) {
	s.listeners = append(s.listeners, l)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); run() }()
	s.opts.Log.Info("echo listening", "addr", l.Addr().String())
}

// Addrs are the bound addresses, HTTP first, then gRPC, then TCP.
func (s *Server) Addrs() []net.Addr {
	var out []net.Addr
	for _, l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// Close stops every listener and open connection.
func (s *Server) Close() {
	for _, h := range s.http {
		h.Close()
	}
	for _, g := range s.grpc {
		g.Stop()
	}
	for _, l := range s.listeners {
		l.Close()
	}
	s.wg.Wait()
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := http.StatusOK
	delay := s.opts.Delay + s.delayFromFile()
	if d := r.URL.Query().Get("delay"); d != "" {
		extra, err := time.ParseDuration(d)
		if err != nil {
			if ms, err2 := strconv.Atoi(d); err2 == nil {
				extra = time.Duration(ms) * time.Millisecond
			} else {
				http.Error(w, fmt.Sprintf("delay=%q: want a duration such as 150ms", d), http.StatusBadRequest)
				return
			}
		}
		delay += extra
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		c, err := strconv.Atoi(rest)
		if err != nil || c < 100 || c > 599 {
			http.Error(w, fmt.Sprintf("/status/%s: want a status code 100-599", rest), http.StatusBadRequest)
			return
		}
		code = c
	}
	for _, kv := range splitHeaderList(r.Header.Values("X-Echo-Set-Header")) {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.TrimSpace(k) == "" {
			http.Error(w, fmt.Sprintf("X-Echo-Set-Header: %q: want name:value", kv), http.StatusBadRequest)
			return
		}
		w.Header().Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	// The body is read (and counted) so that clients sending one see it consumed.
	n, _ := io.Copy(io.Discard, r.Body)
	resp := Response{
		Pod: s.opts.Pod, Namespace: s.opts.Namespace, Version: s.opts.Version, Zone: s.opts.Zone,
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, Proto: r.Proto,
		Headers: r.Header, Peer: r.RemoteAddr,
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		resp.Local = la.String()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(resp)
	s.opts.Log.Info("request", "method", r.Method, "path", r.URL.Path, "host", r.Host, "proto", r.Proto,
		"peer", r.RemoteAddr, "status", code, "bodyBytes", n, "took", time.Since(start).Round(time.Microsecond).String())
}

// splitHeaderList splits comma-separated header values.
func splitHeaderList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (s *Server) serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(c, c)
			// Propagate the client's half-close back, so "send, close write,
			// read everything" works as with any TCP echo.
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			s.opts.Log.Info("tcp", "peer", c.RemoteAddr().String(), "bytes", n)
		}()
	}
}

type grpcEcho struct {
	echov1.UnimplementedEchoServer
	s *Server
}

func (g *grpcEcho) answer(ctx context.Context, method string, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	delay := g.s.opts.Delay + g.s.delayFromFile() + time.Duration(req.GetDelayMs())*time.Millisecond
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c := req.GetStatusCode(); c != 0 {
		return nil, status.Errorf(codes.Code(c), "status %d requested", c)
	}
	resp := &echov1.EchoResponse{Message: req.GetMessage(), Pod: g.s.opts.Pod, Namespace: g.s.opts.Namespace,
		Version: g.s.opts.Version, Method: method, Metadata: map[string]string{}}
	if p, ok := peer.FromContext(ctx); ok {
		resp.Peer = p.Addr.String()
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for k, v := range md {
			if len(v) > 0 {
				resp.Metadata[k] = v[0]
			}
		}
	}
	g.s.opts.Log.Info("grpc", "method", method, "peer", resp.Peer)
	return resp, nil
}

func (g *grpcEcho) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return g.answer(ctx, "Echo", req)
}

func (g *grpcEcho) EchoStream(stream echov1.Echo_EchoStreamServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := g.answer(stream.Context(), "EchoStream", req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
