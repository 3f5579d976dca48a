//go:build linux

package netns

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// StartCmd starts cmd inside ns: the child is forked from a thread switched
// into ns and so inherits it (other namespaces — mount, PID, user — are the
// caller's). Wait for it with cmd.Wait as usual.
func StartCmd(ns *NS, cmd *exec.Cmd) error {
	return Do(ns, cmd.Start)
}

// RunCmd starts cmd inside ns (see [StartCmd]) and waits for it.
func RunCmd(ns *NS, cmd *exec.Cmd) error {
	if err := StartCmd(ns, cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// Output runs name with args inside ns, feeding it stdin, and returns its
// standard output. A non-zero exit is an error that includes stderr.
func Output(ns *NS, stdin string, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := RunCmd(ns, cmd); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
