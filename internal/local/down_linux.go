//go:build linux

package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// pidAlive reports whether pid exists (and is not a zombie we could reap).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// State is the field after the parenthesised command.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// Down removes cluster name: it asks its supervisor to tear down, then
// removes whatever is left — processes in the cluster's namespaces, the
// namespaces (found by their name prefix under /run/netns), the state
// directory. It is idempotent: found reports whether anything was there.
func Down(name string, logf func(format string, args ...any)) (found bool, err error) {
	if err := CheckName(name); err != nil {
		return false, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if st, err := LoadState(name); err == nil {
		found = true
		if st.Supervisor != os.Getpid() && pidAlive(st.Supervisor) {
			logf("stopping cluster %s (supervisor pid %d)", name, st.Supervisor)
			syscall.Kill(st.Supervisor, syscall.SIGTERM)
			deadline := time.Now().Add(15 * time.Second)
			for pidAlive(st.Supervisor) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if pidAlive(st.Supervisor) {
				logf("supervisor %d did not stop: killing it", st.Supervisor)
				syscall.Kill(st.Supervisor, syscall.SIGKILL)
			}
		}
		for _, pid := range st.ProcessIDs() {
			if pid > 1 && pid != os.Getpid() && pidAlive(pid) {
				syscall.Kill(-pid, syscall.SIGKILL)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	names := clusterNamespaces(name)
	if len(names) > 0 {
		found = true
		killInNamespaces(names)
		for _, n := range names {
			if err1 := netns.DeleteNamed(n); err1 != nil && err == nil {
				err = err1
			}
		}
	}
	if _, e := os.Stat(StateDir(name)); e == nil {
		found = true
		if err1 := os.RemoveAll(StateDir(name)); err1 != nil && err == nil {
			err = err1
		}
	}
	return found, err
}

// clusterNamespaces lists the named network namespaces of cluster name.
func clusterNamespaces(name string) []string {
	ents, _ := os.ReadDir(netns.RunDir)
	var out []string
	for _, e := range ents {
		if isClusterNS(name, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// killInNamespaces kills every process whose network namespace is one of
// names (TERM, then KILL after 2 s).
func killInNamespaces(names []string) {
	inodes := map[string]bool{}
	for _, n := range names {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(netns.RunDir, n), &st) == nil {
			inodes[fmt.Sprintf("net:[%d]", st.Ino)] = true
		}
	}
	find := func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err == nil && inodes[link] && pidAlive(pid) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	pids := find()
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(find()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range find() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(2 * time.Second)
	for len(find()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}
