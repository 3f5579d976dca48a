package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/cli"
	"github.com/ambit-mesh/ambit/internal/local"
)

const errNotRoot = "needs root on Linux: it creates network namespaces; run it with sudo"

func needRoot() error {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return fmt.Errorf("needs root on Linux: it works in the cluster's network namespaces; run it with sudo")
	}
	return nil
}

func upCommand() *cli.Command {
	var files cli.StringList
	var name string
	var detach bool
	return &cli.Command{
		Name:  "up",
		Usage: "-f DIR|FILE [--name NAME] [--detach]",
		Short: "Start a whole mesh on this Linux machine (root)",
		Long: `Start a whole mesh on this Linux machine: network namespaces for the
cluster, its nodes and pods (no link to the host's network); the control
plane; a ztunnel per node with its node agent; the workloads from the
manifests' Deployments and Pods, each container's command run inside its
pod's namespace (restarted with backoff when it exits); a waypoint pod per
Gateway of class istio-waypoint. Service names resolve in pods through
/etc/hosts.

In the foreground, Ctrl-C tears everything down; with --detach it returns
once the mesh is ready and 'ambit down' removes it. While it runs, 'ambit
apply', 'ambit delete' and 'ambit label' change it live. State, logs and
sockets live in /run/ambit/NAME.`,
		Flags: func(fs *flag.FlagSet) {
			fs.Var(&files, "f", "manifest file or directory (repeatable)")
			fs.StringVar(&name, "name", "ambit", "cluster name")
			fs.BoolVar(&detach, "detach", false, "return once the mesh is ready")
		},
		Run: func(ctx context.Context, args []string) error {
			files = append(files, args...)
			if len(files) == 0 {
				return cli.Usagef("no manifests given: use -f FILE|DIR")
			}
			start := time.Now()
			prep, err := local.Prepare(name, files)
			if err != nil {
				return err
			}
			if runtime.GOOS != "linux" || os.Geteuid() != 0 {
				return errors.New(errNotRoot)
			}
			ambitBin, ztunnelBin, waypointBin, err := local.Binaries()
			if err != nil {
				return err
			}
			if waypointBin == "" && prep.Plan.NeedsWaypoint() {
				return fmt.Errorf("the manifests have a waypoint Gateway but there is no waypoint binary next to %s nor in $PATH: build it with 'make build'", ambitBin)
			}
			out := cli.Stdout
			fmt.Fprintf(out, "Starting cluster %q from %s: %d nodes, %d pods, %d services\n", name, strings.Join(files, ", "),
				len(prep.Plan.Nodes), len(prep.Plan.Pods), len(prep.Plan.Services))
			if detach {
				if err := startDetached(ctx, name, files, out); err != nil {
					return err
				}
				fmt.Fprintf(out, "ready in %.1f s\n", time.Since(start).Seconds())
				printHints(out, name, nil)
				return nil
			}
			progress := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
			c, err := local.Start(ctx, prep, local.Options{AmbitBin: ambitBin, ZtunnelBin: ztunnelBin, WaypointBin: waypointBin, Progress: progress})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "ready in %.1f s\n", time.Since(start).Seconds())
			proofCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			printProof(out, c, proofCtx)
			cancel()
			st := c.State()
			printHints(out, name, &st)
			fmt.Fprintln(out, "Press Ctrl-C to tear the cluster down.")
			<-ctx.Done()
			fmt.Fprintln(out, "\nTearing down...")
			t := time.Now()
			if err := c.Close(); err != nil {
				return err
			}
			fmt.Fprintf(out, "cluster %q removed in %.1f s\n", name, time.Since(t).Seconds())
			return nil
		},
	}
}

func printHints(out io.Writer, name string, st *local.State) {
	if st == nil {
		if s, err := local.LoadState(name); err == nil {
			st = s
		}
	}
	nameFlag := ""
	if name != "ambit" {
		nameFlag = " --name " + name
	}
	if st != nil {
		fmt.Fprintf(out, "control plane: %s (metrics and /debug/* at http://%s, inside the cluster)\n", st.ControlPlane, st.ControlPlaneHTTP)
		for _, n := range st.Nodes {
			fmt.Fprintf(out, "node %-8s zone %-8s ztunnel metrics %s\n", n.Name, n.Zone, n.Metrics)
		}
		fmt.Fprintf(out, "logs: %s/logs\n", local.StateDir(name))
	}
	fmt.Fprintf(out, "Next:\n  ambit get pods -A -o wide%s\n", nameFlag)
	if st != nil {
	hint:
		for _, p := range st.Pods {
			if p.Deployment != "client" {
				continue
			}
			for _, s := range st.Services {
				if s.Namespace == p.Namespace {
					fmt.Fprintf(out, "  ambit exec%s -n %s deploy/client -- curl -s http://%s/\n", nameFlag, p.Namespace, s.Name)
					fmt.Fprintf(out, "  ambit exec%s -n %s deploy/client -- ambit internal http-get http://%s/\n", nameFlag, p.Namespace, s.Name)
					break hint
				}
			}
		}
	}
	fmt.Fprintf(out, "  ambit logs%s -n NAMESPACE POD|deploy/NAME\n  ambit down%s\n", nameFlag, nameFlag)
}

// startDetached runs the cluster in a background process (`ambit internal
// serve`), relaying its progress until it is ready or has failed.
func startDetached(ctx context.Context, name string, files []string, out io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	args := []string{"internal", "serve", "--name", name}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	cmd := exec.Command(exe, args...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return err
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var failure string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if msg, ok := strings.CutPrefix(line, serveErrorPrefix); ok {
			failure = msg
			continue
		}
		fmt.Fprintln(out, line)
	}
	r.Close()
	if failure != "" {
		<-exited
		return errors.New(failure)
	}
	select {
	case err := <-exited:
		return fmt.Errorf("the cluster's supervisor exited before it was ready: %v", err)
	default:
	}
	st, err := local.LoadState(name)
	if err != nil || !st.Ready {
		return fmt.Errorf("cluster %q did not become ready", name)
	}
	cmd.Process.Release()
	return nil
}

// printProof prints the cluster's proof that the mesh works (see Cluster.Proof).
func printProof(out io.Writer, c *local.Cluster, ctx context.Context) {
	lines, err := c.Proof(ctx)
	if err != nil {
		fmt.Fprintf(out, "proof: request failed: %v\n", err)
	}
	for _, l := range lines {
		fmt.Fprintf(out, "proof: %s\n", l)
	}
}

const serveErrorPrefix = "\x00error: "

// serveCommand is the detached cluster's supervisor: progress goes to fd 3
// until the cluster is ready; then it serves until SIGTERM and tears down.
func serveCommand() *cli.Command {
	var files cli.StringList
	var name string
	return &cli.Command{
		Name:  "serve",
		Usage: "--name NAME -f FILE...",
		Short: "Run a detached cluster (used by 'ambit up --detach')",
		Flags: func(fs *flag.FlagSet) {
			fs.Var(&files, "f", "manifest file or directory (repeatable)")
			fs.StringVar(&name, "name", "ambit", "cluster name")
		},
		Run: func(ctx context.Context, args []string) error {
			// Processes we start must not inherit the progress pipe, or
			// 'ambit up --detach' would wait for them.
			syscall.CloseOnExec(3)
			progress := os.NewFile(3, "progress")
			// Nothing else of ours may write to the terminal we came from.
			if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
				unix.Dup2(int(null.Fd()), 0)
				unix.Dup2(int(null.Fd()), 1)
				unix.Dup2(int(null.Fd()), 2)
			}
			fail := func(err error) error {
				fmt.Fprintf(progress, "%s%v\n", serveErrorPrefix, err)
				progress.Close()
				return err
			}
			prep, err := local.Prepare(name, files)
			if err != nil {
				return fail(err)
			}
			c, err := local.Start(ctx, prep, local.Options{Progress: func(format string, args ...any) {
				fmt.Fprintf(progress, format+"\n", args...)
			}})
			if err != nil {
				return fail(err)
			}
			proofCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			printProof(progress, c, proofCtx)
			cancel()
			progress.Close()
			<-ctx.Done()
			return c.Close()
		},
	}
}
