//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bind-mounted, as `ip netns add` does.
const RunDir = "/run/netns"

// NS is an open handle on a network namespace: a file descriptor on an nsfs
// inode. The namespace lives as long as a handle, a bind mount or a process
// refers to it. An NS is safe for concurrent use; Close it when done.
type NS struct {
	f    *os.File
	name string // set for namespaces bind-mounted under RunDir
}

// ErrHostNamespace is returned by helpers that refuse to change the host's
// network namespace.
var ErrHostNamespace = errors.New("netns: refusing to modify the host network namespace")

// New creates an anonymous network namespace with its loopback interface up
// (as a container runtime would). It is freed once the returned NS is closed
// and nothing else refers to it.
func New() (*NS, error) {
	f, err := unshareNet()
	if err != nil {
		return nil, err
	}
	ns := &NS{f: f}
	if err := SetLinkUp(ns, "lo"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// NewNamed creates a network namespace bind-mounted at /run/netns/<name>,
// like `ip netns add <name>`, with its loopback interface up. It fails if
// the name is taken. Delete it with [NS.Delete] or [DeleteNamed].
func NewNamed(name string) (*NS, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := prepareRunDir(); err != nil {
		return nil, err
	}
	path := filepath.Join(RunDir, name)
	mp, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("netns: create %s: %w", path, err)
	}
	mp.Close()
	f, err := unshareNet()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	src := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("netns: bind mount %s: %w", path, err)
	}
	ns := &NS{f: f, name: name}
	if err := SetLinkUp(ns, "lo"); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// DeleteNamed unmounts and removes /run/netns/<name>, like `ip netns del`.
// The namespace itself goes away once no handle or process refers to it.
func DeleteNamed(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	path := filepath.Join(RunDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: remove %s: %w", path, err)
	}
	return nil
}

// OpenNamed opens /run/netns/<name>.
func OpenNamed(name string) (*NS, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	ns, err := Open(filepath.Join(RunDir, name))
	if err != nil {
		return nil, err
	}
	ns.name = name
	return ns, nil
}

// Open opens the network namespace at path (/run/netns/x, /proc/<pid>/ns/net,
// /proc/self/fd/<n>, ...). It fails if path is not a network namespace.
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns, err := FromFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ns, nil
}

// FromFile wraps an open namespace file (for example one received over a
// Unix socket). It checks that f refers to a network namespace; on success
// the NS owns f, on failure the caller still does.
func FromFile(f *os.File) (*NS, error) {
	if f == nil {
		return nil, errors.New("netns: nil file")
	}
	if err := checkNetNS(f); err != nil {
		return nil, err
	}
	return &NS{f: f}, nil
}

// Current opens the network namespace of the calling thread.
func Current() (*NS, error) {
	return Open("/proc/thread-self/ns/net")
}

// IsNetNS reports whether f is an open network-namespace file.
func IsNetNS(f *os.File) bool { return checkNetNS(f) == nil }

func checkNetNS(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("netns: %s: %w", f.Name(), err)
	}
	var typ int
	var ierr error
	if err := rc.Control(func(fd uintptr) { typ, ierr = unix.IoctlRetInt(int(fd), unix.NS_GET_NSTYPE) }); err != nil {
		return fmt.Errorf("netns: %s: %w", f.Name(), err)
	}
	if ierr != nil {
		return fmt.Errorf("netns: %s is not a namespace: %w", f.Name(), ierr)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("netns: %s is a namespace of type %#x, not a network namespace", f.Name(), typ)
	}
	return nil
}

// File returns the underlying file; it stays owned by ns.
func (ns *NS) File() *os.File { return ns.f }

// Fd returns the file descriptor; valid until ns is closed.
func (ns *NS) Fd() int { return int(ns.f.Fd()) }

// Name returns the name under /run/netns, or "" for an anonymous namespace.
func (ns *NS) Name() string { return ns.name }

// Path returns a path that opens this namespace while ns is open:
// /run/netns/<name> for named namespaces, /proc/<pid>/fd/<fd> otherwise
// (usable by `nsenter --net=<path>` and friends).
func (ns *NS) Path() string {
	if ns.name != "" {
		return filepath.Join(RunDir, ns.name)
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.f.Fd())
}

// String describes the namespace for logs.
func (ns *NS) String() string {
	if ns == nil {
		return "<nil netns>"
	}
	id, err := ns.ID()
	if err != nil {
		return ns.Path()
	}
	if ns.name != "" {
		return fmt.Sprintf("netns %s (%s)", ns.name, id)
	}
	return "netns " + id.String()
}

// ID identifies a namespace: the (device, inode) pair of its nsfs file.
type ID struct{ Dev, Ino uint64 }

func (id ID) String() string { return fmt.Sprintf("net:[%d]", id.Ino) }

// ID returns the namespace's identity; two handles on the same namespace
// have equal IDs.
func (ns *NS) ID() (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(ns.Fd(), &st); err != nil {
		return ID{}, fmt.Errorf("netns: fstat: %w", err)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Equal reports whether ns and other refer to the same namespace.
func (ns *NS) Equal(other *NS) bool {
	if ns == nil || other == nil {
		return false
	}
	a, err1 := ns.ID()
	b, err2 := other.ID()
	return err1 == nil && err2 == nil && a == b
}

// Dup returns a new, independent handle on the same namespace.
func (ns *NS) Dup() (*NS, error) {
	fd, err := unix.FcntlInt(ns.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: dup: %w", err)
	}
	return &NS{f: os.NewFile(uintptr(fd), ns.f.Name()), name: ns.name}, nil
}

// Close closes the handle. A named namespace stays mounted.
func (ns *NS) Close() error {
	if ns == nil || ns.f == nil {
		return nil
	}
	return ns.f.Close()
}

// Delete closes the handle and, for a named namespace, removes its bind
// mount (see [DeleteNamed]).
func (ns *NS) Delete() error {
	err := ns.Close()
	if ns.name != "" {
		err = errors.Join(err, DeleteNamed(ns.name))
	}
	return err
}

// Do runs f on the calling goroutine's OS thread switched into ns, then
// switches the thread back to the namespace it was in. If switching back
// fails the thread stays locked, so the runtime kills it when the goroutine
// exits instead of reusing a thread in the wrong namespace. Goroutines that
// f starts do not run in ns.
func Do(ns *NS, f func() error) (err error) {
	if ns == nil || ns.f == nil {
		return errors.New("netns: Do on a nil namespace")
	}
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: open current namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(ns.Fd(), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", ns, err)
	}
	// Deferred so that a panic in f also switches back (or keeps the thread
	// locked) before unwinding further.
	defer func() {
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			// Leave the thread locked: it dies with this goroutine.
			err = errors.Join(err, fmt.Errorf("netns: switch back from %s failed, thread retired: %w", ns, serr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return f()
}

// unshareNet creates a new network namespace on a locked thread and returns
// a file referring to it, leaving the thread back in its original namespace.
func unshareNet() (*os.File, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("netns: open current namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("netns: unshare: %w", err)
	}
	f, openErr := os.Open("/proc/thread-self/ns/net")
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if f != nil {
			f.Close()
		}
		// Thread stays locked and is retired with this goroutine.
		return nil, fmt.Errorf("netns: switch back after unshare failed, thread retired: %w", err)
	}
	runtime.UnlockOSThread()
	if openErr != nil {
		return nil, fmt.Errorf("netns: open new namespace: %w", openErr)
	}
	return f, nil
}

// prepareRunDir makes RunDir a shared mount point, as iproute2 does, so that
// unmounting a namespace there propagates to other mount namespaces.
func prepareRunDir() error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	madeMount := false
	for {
		err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || madeMount {
			return fmt.Errorf("netns: make %s shared: %w", RunDir, err)
		}
		if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("netns: bind %s onto itself: %w", RunDir, err)
		}
		madeMount = true
	}
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 200 {
		return fmt.Errorf("netns: invalid namespace name %q", name)
	}
	return nil
}

var (
	hostOnce sync.Once
	hostIDs  []ID
)

// The process's own namespace, recorded before any thread could switch.
var startID, startErr = func() (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return ID{}, err
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}()

func hostNamespaces() []ID {
	hostOnce.Do(func() {
		if startErr == nil {
			hostIDs = append(hostIDs, startID)
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/1/ns/net", &st); err == nil {
			hostIDs = append(hostIDs, ID{Dev: st.Dev, Ino: st.Ino})
		}
	})
	return hostIDs
}

// IsHost reports whether ns is the namespace this process started in or PID
// 1's namespace. Helpers that modify networking refuse such namespaces.
func IsHost(ns *NS) bool {
	id, err := ns.ID()
	if err != nil {
		return true // be safe
	}
	for _, h := range hostNamespaces() {
		if h == id {
			return true
		}
	}
	return false
}

// guard returns an error unless ns is a non-nil namespace other than the
// host's.
func guard(ns *NS) error {
	if ns == nil || ns.f == nil {
		return errors.New("netns: nil namespace")
	}
	if IsHost(ns) {
		return ErrHostNamespace
	}
	return nil
}

// Guard returns [ErrHostNamespace] if ns is the host's namespace (see
// [IsHost]) and an error if ns is nil; packages that change a namespace's
// configuration (internal/redirect) call it first.
func Guard(ns *NS) error { return guard(ns) }
