package main

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/ambit-mesh/ambit/internal/local"
	"github.com/ambit-mesh/ambit/internal/netns"
)

// runInPod runs argv in pod (network namespace, hosts file, environment)
// with stdio attached and returns its exit code.
func runInPod(pod *local.PodState, argv []string) (int, error) {
	ns, err := netns.OpenNamed(pod.NetNS)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, append([]string{"internal", "pod-exec", "--hosts", pod.HostsFile, "--"}, argv...)...)
	cmd.Env = pod.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The command gets the terminal's signals; we just wait for it.
	signal.Ignore(os.Interrupt, syscall.SIGQUIT)
	if err := netns.RunCmd(ns, cmd); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal()), nil
			}
			return ee.ExitCode(), nil
		}
		return 0, err
	}
	return 0, nil
}
