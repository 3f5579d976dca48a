package kube

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Election configures leader election over a Lease. Every control plane
// replica watches the API and serves proxies; only work that writes to the
// API (the waypoint controller, status) runs on the leader.
type Election struct {
	Clients   *Clients
	Namespace string
	Name      string // the Lease
	Identity  string // this replica (its pod name)
	// LeaseDuration, RenewDeadline and RetryPeriod as in client-go
	// (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Run calls lead with a context that ends when leadership is lost, each
// time this replica becomes the leader, until ctx ends. On ctx's end a
// held Lease is released, so another replica takes over at once.
func (e *Election) Run(ctx context.Context, lead func(ctx context.Context)) error {
	log := e.Log
	if log == nil {
		log = slog.Default()
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, e.Namespace, e.Name,
		e.Clients.Kube.CoreV1(), e.Clients.Kube.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: e.Identity})
	if err != nil {
		return err
	}
	cfg := leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   or(e.LeaseDuration, 15*time.Second),
		RenewDeadline:   or(e.RenewDeadline, 10*time.Second),
		RetryPeriod:     or(e.RetryPeriod, 2*time.Second),
		ReleaseOnCancel: true,
		Name:            e.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
				lead(ctx)
			},
			OnStoppedLeading: func() { log.Info("not leading", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity) },
		},
	}
	le, err := leaderelection.NewLeaderElector(cfg)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
