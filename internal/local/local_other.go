//go:build !linux

package local

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("needs root on Linux: it creates network namespaces")

// Cluster is a running local cluster (Linux only).
type Cluster struct{}

// Start fails: the local cluster needs Linux.
func Start(ctx context.Context, prep *Prepared, opts Options) (*Cluster, error) {
	return nil, errNotLinux
}

// Close does nothing.
func (c *Cluster) Close() error { return nil }

// State is empty.
func (c *Cluster) State() State { return State{} }

// Proof does nothing.
func (c *Cluster) Proof(ctx context.Context) ([]string, error) { return nil, nil }

// Down fails: the local cluster needs Linux.
func Down(name string, logf func(format string, args ...any)) (bool, error) {
	return false, errNotLinux
}

// PodExec fails: the local cluster needs Linux.
func PodExec(hosts string, argv []string) error { return errNotLinux }
