//go:build linux

package local

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// PodExec is the helper every pod process goes through (`ambit internal
// pod-exec --hosts FILE -- CMD...`, started inside the pod's network
// namespace): it moves into a new mount namespace, bind-mounts hosts over
// /etc/hosts so the cluster's names resolve, and executes argv (looked up
// in $PATH). It returns only on failure.
func PodExec(hosts string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("no command")
	}
	// Namespaces belong to the thread: unshare and exec from the same one.
	runtime.LockOSThread()
	if hosts != "" {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare mount namespace: %w", err)
		}
		// Keep our mounts out of the host's namespace.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make / private: %w", err)
		}
		if err := unix.Mount(hosts, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount %s over /etc/hosts: %w", hosts, err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}
