package echo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
)

func start(t *testing.T) (httpAddr, grpcAddr, tcpAddr string) {
	t.Helper()
	s, err := Start(Options{HTTPPorts: []int{0}, GRPCPorts: []int{0}, TCPPorts: []int{0}, Host: "127.0.0.1",
		Pod: "echo-v1-abc", Namespace: "shop", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	a := s.Addrs()
	return a[0].String(), a[1].String(), a[2].String()
}

func TestHTTP(t *testing.T) {
	addr, _, _ := start(t)
	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	tests := []struct {
		name       string
		client     *http.Client
		path       string
		header     http.Header
		wantCode   int
		wantProto  string
		wantHeader http.Header
		minTime    time.Duration
	}{
		{name: "http/1.1", client: http.DefaultClient, path: "/hello?x=1", wantCode: 200, wantProto: "HTTP/1.1"},
		{name: "h2c", client: h2c, path: "/hello", wantCode: 200, wantProto: "HTTP/2.0"},
		{name: "status", client: http.DefaultClient, path: "/status/503", wantCode: 503, wantProto: "HTTP/1.1"},
		{name: "delay", client: http.DefaultClient, path: "/?delay=60ms", wantCode: 200, wantProto: "HTTP/1.1", minTime: 60 * time.Millisecond},
		{name: "set headers", client: http.DefaultClient, path: "/", header: http.Header{"X-Echo-Set-Header": {"X-A: 1, x-b:two"}},
			wantCode: 200, wantProto: "HTTP/1.1", wantHeader: http.Header{"X-A": {"1"}, "X-B": {"two"}}},
		{name: "bad delay", client: http.DefaultClient, path: "/?delay=soon", wantCode: 400},
		{name: "bad status", client: http.DefaultClient, path: "/status/abc", wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+addr+tt.path, nil)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			req.Header.Set("X-Test", tt.name)
			began := time.Now()
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if time.Since(began) < tt.minTime {
				t.Errorf("answered after %v, want at least %v", time.Since(began), tt.minTime)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Values(k); strings.Join(got, ",") != strings.Join(v, ",") {
					t.Errorf("header %s = %v, want %v", k, got, v)
				}
			}
			if tt.wantProto == "" {
				return
			}
			var r Response
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				t.Fatal(err)
			}
			if r.Pod != "echo-v1-abc" || r.Namespace != "shop" || r.Version != "v1" || r.Proto != tt.wantProto ||
				http.Header(r.Headers).Get("X-Test") != tt.name || r.Host != addr || !strings.HasPrefix(r.Peer, "127.0.0.1:") || r.Local != addr {
				t.Errorf("response %+v", r)
			}
			if tt.name == "http/1.1" && (r.Path != "/hello" || r.RawQuery != "x=1") {
				t.Errorf("path %q query %q", r.Path, r.RawQuery)
			}
		})
	}
}

func TestGRPC(t *testing.T) {
	_, addr, _ := start(t)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := echov1.NewEchoClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test", "grpc")
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Message != "hi" || resp.Pod != "echo-v1-abc" || resp.Metadata["x-test"] != "grpc" || resp.Method != "Echo" {
		t.Errorf("unary: %v", resp)
	}
	if _, err := c.Echo(ctx, &echov1.EchoRequest{StatusCode: int32(codes.Unavailable)}); status.Code(err) != codes.Unavailable {
		t.Errorf("requested status: %v", err)
	}
	stream, err := c.EchoStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b", "c"} {
		if err := stream.Send(&echov1.EchoRequest{Message: m}); err != nil {
			t.Fatal(err)
		}
		got, err := stream.Recv()
		if err != nil || got.Message != m {
			t.Fatalf("stream: %v %v", got, err)
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("stream end: %v", err)
	}
}

func TestTCPEchoWithHalfClose(t *testing.T) {
	_, _, addr := start(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes (err %v), want the same %d bytes back", len(got), err, len(payload))
	}
}

func TestDelayFile(t *testing.T) {
	file := t.TempDir() + "/delay"
	s, err := Start(Options{HTTPPorts: []int{0}, Host: "127.0.0.1", DelayFile: file})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	write := func(v string) {
		if err := os.WriteFile(file, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		content string // "-": remove the file
		want    time.Duration
	}{
		{"-", 0},
		{"80ms\n", 80 * time.Millisecond},
		{"0s", 0},
		{"300ms", 300 * time.Millisecond},
		{"soon", 0},
		{"", 0},
		{"-", 0},
	} {
		if step.content == "-" {
			os.Remove(file)
		} else {
			write(step.content)
		}
		if got := s.delayFromFile(); got != step.want {
			t.Errorf("file %q: delay %v, want %v", step.content, got, step.want)
		}
	}
	// A running server answers late once the file says so.
	write("80ms\n")
	began := time.Now()
	resp, err := http.Get("http://" + s.Addrs()[0].String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(began); d < 80*time.Millisecond {
		t.Errorf("answered in %v with an 80ms delay file", d)
	}
}
