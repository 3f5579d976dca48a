package waypoint

import (
	"fmt"
	"sync"
	"sync/atomic"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/internal/ztunnel/state"
)

// TypeURLs are the resource types a waypoint subscribes to: every Workload
// and Service (wildcard; endpoints and VIPs) and its own WaypointConfig (by
// name).
var TypeURLs = []string{meshv1.TypeWorkload, meshv1.TypeService, meshv1.TypeWaypointConfig}

// Store is the waypoint's configuration: the mesh's workloads and services
// (internal/ztunnel/state) and the compiled WaypointConfig of one Gateway.
// It implements xds.Handler: an update is applied whole or refused whole.
type Store struct {
	gateway string // WaypointConfig resource name, "<namespace>/<name>"
	state   *state.Store
	mu      sync.Mutex // serializes Apply
	cfg     atomic.Pointer[config]
}

var _ xds.Handler = (*Store)(nil)

// NewStore returns an empty store for the waypoint of Gateway
// "<namespace>/<name>".
func NewStore(gateway string) *Store {
	return &Store{gateway: gateway, state: state.NewStore(state.Options{})}
}

// Gateway is the WaypointConfig resource name the store takes.
func (s *Store) Gateway() string { return s.gateway }

// State is the workloads and services.
func (s *Store) State() *state.Store { return s.state }

// HasConfig reports whether the waypoint's WaypointConfig has arrived.
func (s *Store) HasConfig() bool { return s.cfg.Load() != nil }

func (s *Store) config() *config { return s.cfg.Load() }

// Apply implements xds.Handler. The WaypointConfig is compiled first, then
// the rest goes to the state store; only when both succeed does either
// change.
func (s *Store) Apply(u *xds.Update) error {
	if u == nil {
		return fmt.Errorf("nil update")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var next *config
	changed := false
	rest := &xds.Update{Epoch: u.Epoch, Version: u.Version}
	for _, tu := range u.Types {
		if tu.TypeURL != meshv1.TypeWaypointConfig {
			rest.Types = append(rest.Types, tu)
			continue
		}
		for _, r := range tu.Upserts {
			if r.Name != s.gateway {
				return fmt.Errorf("WaypointConfig %q: this waypoint serves %q only", r.Name, s.gateway)
			}
			wc, ok := r.Message.(*meshv1.WaypointConfig)
			if !ok || wc == nil {
				return fmt.Errorf("WaypointConfig %q: message is %T", r.Name, r.Message)
			}
			c, err := compileConfig(wc)
			if err != nil {
				return fmt.Errorf("WaypointConfig %q: %w", r.Name, err)
			}
			next, changed = c, true
		}
		for _, name := range tu.Removes {
			if name == s.gateway {
				next, changed = nil, true
			}
		}
	}
	if err := s.state.Apply(rest); err != nil {
		return err
	}
	if changed {
		s.cfg.Store(next)
	}
	return nil
}
