package state

import (
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

const (
	UNSET      = meshv1.PeerAuthentication_UNSET
	PERMISSIVE = meshv1.PeerAuthentication_PERMISSIVE
	MSTRICT    = meshv1.PeerAuthentication_STRICT
	DISABLE    = meshv1.PeerAuthentication_DISABLE
)

type portModes = map[uint32]meshv1.PeerAuthentication_Mode

func globalPA(name string, m meshv1.PeerAuthentication_Mode) *meshv1.PeerAuthentication {
	return &meshv1.PeerAuthentication{Name: name, Namespace: "istio-system", Scope: meshv1.Authorization_GLOBAL, Mode: m}
}

func nsPA(ns, name string, m meshv1.PeerAuthentication_Mode, pm portModes) *meshv1.PeerAuthentication {
	return &meshv1.PeerAuthentication{Name: name, Namespace: ns, Scope: meshv1.Authorization_NAMESPACE, Mode: m, PortModes: pm}
}

func selPA(ns, name string, m meshv1.PeerAuthentication_Mode, pm portModes, uids ...string) *meshv1.PeerAuthentication {
	return &meshv1.PeerAuthentication{Name: name, Namespace: ns, Scope: meshv1.Authorization_WORKLOAD_SELECTOR, Mode: m, PortModes: pm, Workloads: uids}
}

func TestPeerAuthMode(t *testing.T) {
	w := wl("app", "w", "10.0.0.1")
	U := w.Uid
	type check struct {
		port uint16
		want meshv1.PeerAuthentication_Mode
	}
	tests := []struct {
		name   string
		pas    []*meshv1.PeerAuthentication
		checks []check
	}{
		{"default permissive", nil, []check{{80, PERMISSIVE}}},
		{"global strict", []*meshv1.PeerAuthentication{globalPA("default", MSTRICT)}, []check{{80, MSTRICT}}},
		{"global unset", []*meshv1.PeerAuthentication{globalPA("default", UNSET)}, []check{{80, PERMISSIVE}}},
		{"namespace overrides global", []*meshv1.PeerAuthentication{globalPA("default", MSTRICT), nsPA("app", "p", PERMISSIVE, nil)}, []check{{80, PERMISSIVE}}},
		{"namespace unset inherits global", []*meshv1.PeerAuthentication{globalPA("default", MSTRICT), nsPA("app", "p", UNSET, nil)}, []check{{80, MSTRICT}}},
		{"other namespace ignored", []*meshv1.PeerAuthentication{nsPA("other", "p", MSTRICT, nil)}, []check{{80, PERMISSIVE}}},
		{"workload overrides namespace", []*meshv1.PeerAuthentication{nsPA("app", "p", MSTRICT, nil), selPA("app", "w", PERMISSIVE, nil, U)}, []check{{80, PERMISSIVE}}},
		{"workload unset inherits namespace", []*meshv1.PeerAuthentication{nsPA("app", "p", MSTRICT, nil), selPA("app", "w", UNSET, nil, U)}, []check{{80, MSTRICT}}},
		{"workload unset inherits global through unset namespace", []*meshv1.PeerAuthentication{globalPA("g", MSTRICT), nsPA("app", "p", UNSET, nil), selPA("app", "w", UNSET, nil, U)}, []check{{80, MSTRICT}}},
		{"port permissive under strict namespace", []*meshv1.PeerAuthentication{nsPA("app", "p", MSTRICT, nil), selPA("app", "w", UNSET, portModes{8080: PERMISSIVE}, U)},
			[]check{{8080, PERMISSIVE}, {9090, MSTRICT}}},
		{"port strict under permissive workload", []*meshv1.PeerAuthentication{globalPA("g", MSTRICT), selPA("app", "w", PERMISSIVE, portModes{9090: MSTRICT}, U)},
			[]check{{9090, MSTRICT}, {80, PERMISSIVE}}},
		{"port unset inherits workload", []*meshv1.PeerAuthentication{selPA("app", "w", MSTRICT, portModes{80: UNSET}, U)}, []check{{80, MSTRICT}}},
		{"disable is permissive", []*meshv1.PeerAuthentication{globalPA("g", MSTRICT), nsPA("app", "p", DISABLE, nil)}, []check{{80, PERMISSIVE}}},
		{"port disable is permissive", []*meshv1.PeerAuthentication{selPA("app", "w", MSTRICT, portModes{80: DISABLE}, U)}, []check{{80, PERMISSIVE}, {81, MSTRICT}}},
		{"namespace port modes ignored", []*meshv1.PeerAuthentication{nsPA("app", "p", MSTRICT, portModes{80: PERMISSIVE})}, []check{{80, MSTRICT}}},
		{"selector from another namespace ignored", []*meshv1.PeerAuthentication{selPA("istio-system", "root-sel", MSTRICT, nil, U)}, []check{{80, PERMISSIVE}}},
		{"selector not listing the workload", []*meshv1.PeerAuthentication{selPA("app", "x", MSTRICT, nil, uidOf("app", "other"))}, []check{{80, PERMISSIVE}}},
		{"lowest global key wins", []*meshv1.PeerAuthentication{globalPA("b", PERMISSIVE), globalPA("a", MSTRICT)}, []check{{80, MSTRICT}}},
		{"lowest namespace key wins", []*meshv1.PeerAuthentication{nsPA("app", "b", MSTRICT, nil), nsPA("app", "a", PERMISSIVE, nil)}, []check{{80, PERMISSIVE}}},
		{"lowest selector key wins", []*meshv1.PeerAuthentication{selPA("app", "b", PERMISSIVE, nil, U), selPA("app", "a", MSTRICT, portModes{80: PERMISSIVE}, U)},
			[]check{{80, PERMISSIVE}, {81, MSTRICT}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(Options{})
			mustApply(t, s, workloads(w), peerAuths(tt.pas...))
			for _, c := range tt.checks {
				if got := s.PeerAuthMode(w, c.port); got != c.want {
					t.Errorf("PeerAuthMode(port %d) = %v, want %v", c.port, got, c.want)
				}
			}
		})
	}
}

func TestPeerAuthModeUpdates(t *testing.T) {
	w := wl("app", "w", "10.0.0.1")
	s := NewStore(Options{})
	mustApply(t, s, workloads(w), peerAuths(globalPA("g", MSTRICT), selPA("app", "w", PERMISSIVE, nil, w.Uid)))
	if got := s.PeerAuthMode(w, 80); got != PERMISSIVE {
		t.Fatalf("got %v", got)
	}
	if got := s.PeerAuthMode(nil, 80); got != MSTRICT {
		t.Errorf("nil workload: got %v, want the global STRICT", got)
	}
	mustApply(t, s, removes(meshv1.TypePeerAuthentication, "app/w"))
	if got := s.PeerAuthMode(w, 80); got != MSTRICT {
		t.Errorf("after removal: got %v", got)
	}
	mustApply(t, s, peerAuths(globalPA("g", PERMISSIVE)))
	if got := s.PeerAuthMode(w, 80); got != PERMISSIVE {
		t.Errorf("after update: got %v", got)
	}
}
