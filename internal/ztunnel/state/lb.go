package state

import "github.com/ambit-mesh/ambit/internal/lb"

// Endpoint choice lives in internal/lb, shared with the waypoint; these
// names keep the ztunnel's vocabulary.
type (
	Endpoint        = lb.Endpoint
	Request         = lb.Request
	Chooser         = lb.Chooser
	Scorer          = lb.Scorer
	Ejector         = lb.Ejector
	LocalityChooser = lb.LocalityChooser
)

// CompareEndpoints is the order of View.Endpoints lists (lb.CompareEndpoints).
func CompareEndpoints(a, b *Endpoint) int { return lb.CompareEndpoints(a, b) }
