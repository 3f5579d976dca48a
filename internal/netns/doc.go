// Package netns holds the small Linux network-namespace helpers that the
// rest of Ambit builds on: opening, creating and deleting namespaces, running
// code inside one, creating sockets that live inside one, and the few
// link/address/route calls that tests and the local cluster need to wire
// namespaces together.
//
// Who uses it: the ztunnel (sockets inside each pod's namespace), the node
// agent and internal/redirect (rules inside a pod's namespace), the embedded
// local cluster (internal/local) and integration tests. Because the ztunnel
// links it, this package must stay small: no Kubernetes, Istio, Prometheus,
// Wasm or OpenTelemetry dependencies (deps_test.go guards that).
//
// # Threads and namespaces
//
// A network namespace belongs to an OS thread, not to a goroutine. [Do] locks
// the calling goroutine to its thread, switches the thread into the target
// namespace, runs the function and switches back. If switching back fails,
// the thread is left locked so that the Go runtime destroys it when the
// goroutine exits: a thread in the wrong namespace is never returned to the
// scheduler. Goroutines started inside the function run on other threads,
// in the process's namespace, not in the target one.
//
// A socket stays in the namespace it was created in, whatever thread later
// uses it. [ListenConfig], [ListenTCP], [DialTCP] and [Dialer] therefore only
// call socket(2) inside the namespace (a few microseconds on a locked
// thread); bind, listen and connect happen afterwards on ordinary goroutines
// through Go's network poller, so a slow connect does not pin a thread.
//
// Child processes inherit the namespace of the thread that forks them.
// [StartCmd] and [RunCmd] start an *exec.Cmd from a thread switched into the
// namespace (what `ip netns exec` does, without a helper binary).
//
// # Safety
//
// Every helper that changes links, addresses, routes or sysctls refuses to
// act on the host's namespace (the one this process started in, or PID 1's):
// tests and the local cluster only ever wire namespaces they created.
// Veth pairs are created with each end directly in its namespace, so no
// interface ever appears in the caller's namespace.
package netns
