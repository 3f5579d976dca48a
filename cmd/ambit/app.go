package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/echo"
)

func appCommand() *cli.Command {
	return &cli.Command{
		Name:        "app",
		Short:       "Built-in test workloads",
		Subcommands: []*cli.Command{echoCommand()},
	}
}

// portList is a repeatable or comma-separated port flag; "none" disables.
type portList struct {
	ports []int
	set   bool
}

func (p *portList) String() string {
	var s []string
	for _, n := range p.ports {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (p *portList) Set(v string) error {
	if !p.set {
		p.ports, p.set = nil, true
	}
	if v == "none" {
		return nil
	}
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q is not a port number (0-65535, or none)", f)
		}
		p.ports = append(p.ports, n)
	}
	return nil
}

func echoCommand() *cli.Command {
	httpPorts := &portList{ports: []int{8080}}
	grpcPorts := &portList{ports: []int{7070}}
	tcpPorts := &portList{ports: []int{9000}}
	var opts echo.Options
	var delay time.Duration
	return &cli.Command{
		Name:  "echo",
		Usage: "[flags]",
		Short: "Answer HTTP/1.1, h2c, gRPC and TCP with what arrived",
		Long: `Run the test workload. HTTP (1.1 and h2c) answers JSON describing the request
as it arrived: pod, namespace, version, method, path, host, protocol, headers,
peer address. Per request: ?delay=150ms waits, /status/503 answers that
status, X-Echo-Set-Header: name:value,... sets response headers. gRPC serves
ambit.echo.v1.Echo (unary and streaming); TCP ports echo bytes back. Identity
comes from the pod environment (POD_NAME, POD_NAMESPACE, SERVICE_VERSION)
unless given. One log line per request.`,
		Flags: func(fs *flag.FlagSet) {
			fs.Var(httpPorts, "port", "HTTP/h2c ports (repeatable or comma-separated; none to disable)")
			fs.Var(grpcPorts, "grpc-port", "gRPC ports")
			fs.Var(tcpPorts, "tcp-port", "raw TCP echo ports")
			fs.StringVar(&opts.Host, "host", "", "address to bind (default: all)")
			fs.StringVar(&opts.Pod, "pod", "", "pod name to report (default $POD_NAME or the hostname)")
			fs.StringVar(&opts.Namespace, "namespace", "", "namespace to report (default $POD_NAMESPACE)")
			fs.StringVar(&opts.Version, "version", "", "version to report (default $SERVICE_VERSION)")
			fs.DurationVar(&delay, "delay", 0, "delay every HTTP and gRPC answer by this much")
			fs.StringVar(&opts.DelayFile, "delay-file", "", "file holding a further delay (e.g. 300ms), re-read when it changes: slow a running backend down and back")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.Usagef("unexpected arguments %q", args)
			}
			opts.HTTPPorts, opts.GRPCPorts, opts.TCPPorts, opts.Delay = httpPorts.ports, grpcPorts.ports, tcpPorts.ports, delay
			opts.FromEnv()
			opts.Log = slog.New(slog.NewJSONHandler(os.Stdout, nil))
			s, err := echo.Start(opts)
			if err != nil {
				return err
			}
			<-ctx.Done()
			s.Close()
			return nil
		},
	}
}
