package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

// internalCommand holds helpers that ambit runs itself (in pods, or as the
// detached cluster's supervisor); they are not meant to be typed.
func internalCommand() *cli.Command {
	return &cli.Command{
		Name:   "internal",
		Short:  "Helpers ambit runs itself (pod processes, detached clusters)",
		Hidden: true,
		Subcommands: []*cli.Command{
			podExecCommand(),
			serveCommand(),
			httpGetCommand(),
		},
	}
}

func podExecCommand() *cli.Command {
	var hosts string
	return &cli.Command{
		Name:  "pod-exec",
		Usage: "[--hosts FILE] -- CMD [ARG...]",
		Short: "Run CMD with FILE bind-mounted over /etc/hosts in a new mount namespace",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&hosts, "hosts", "", "hosts file to mount over /etc/hosts")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 && args[0] == "--" {
				args = args[1:]
			}
			if len(args) == 0 {
				return cli.Usagef("no command given")
			}
			return local.PodExec(hosts, args)
		},
	}
}

func httpGetCommand() *cli.Command {
	var timeout time.Duration
	return &cli.Command{
		Name:  "http-get",
		Usage: "[--timeout D] URL",
		Short: "GET URL and print the body (a curl for pods without one)",
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return cli.Usagef("want exactly one URL")
			}
			c := &http.Client{Timeout: timeout}
			resp, err := c.Get(args[0])
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(cli.Stdout, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s: %s", args[0], resp.Status)
			}
			return nil
		},
	}
}
