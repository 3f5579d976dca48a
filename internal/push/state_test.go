package push

import (
	"slices"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

func wl(uid, addr string) *meshv1.Workload {
	return &meshv1.Workload{Uid: uid, Name: uid, Namespace: "default", Addresses: []string{addr}, Node: "node-a",
		Services: map[string]*meshv1.PortList{"default/echo.default.svc.cluster.local": {Ports: []*meshv1.Port{{ServicePort: 80, TargetPort: 8080}}}}}
}

func svc(name, vip string) *meshv1.Service {
	return &meshv1.Service{Name: name, Namespace: "default", Hostname: name + ".default.svc.cluster.local", Addresses: []string{vip}}
}

type step struct {
	name    string
	update  map[string]map[string]proto.Message // Update when non-nil
	upserts map[string]map[string]proto.Message // else Apply
	deletes map[string][]string
	// want: version of the server, and per type/name the version of the
	// resource (negative: tombstone at -v; absent from the map: unknown).
	version uint64
	want    map[string]map[string]int64
	log     []string // "v type-short name" entries of the log
}

func TestUpdateDiffing(t *testing.T) {
	steps := []step{
		{
			name: "initial",
			update: map[string]map[string]proto.Message{
				meshv1.TypeWorkload: {"w1": wl("w1", "10.0.0.1"), "w2": wl("w2", "10.0.0.2")},
				meshv1.TypeService:  {"default/echo": svc("echo", "10.96.0.1")},
			},
			version: 1,
			want:    map[string]map[string]int64{meshv1.TypeWorkload: {"w1": 1, "w2": 1}, meshv1.TypeService: {"default/echo": 1}},
			log:     []string{"1 Service default/echo", "1 Workload w1", "1 Workload w2"},
		},
		{
			name: "unchanged resources keep their version, no new version",
			update: map[string]map[string]proto.Message{
				meshv1.TypeWorkload: {"w1": wl("w1", "10.0.0.1"), "w2": wl("w2", "10.0.0.2")},
			},
			version: 1,
			want:    map[string]map[string]int64{meshv1.TypeWorkload: {"w1": 1, "w2": 1}, meshv1.TypeService: {"default/echo": 1}},
			log:     []string{"1 Service default/echo", "1 Workload w1", "1 Workload w2"},
		},
		{
			name: "changed bumps, removed becomes tombstone, absent type untouched",
			update: map[string]map[string]proto.Message{
				meshv1.TypeWorkload: {"w1": wl("w1", "10.0.0.9"), "w3": wl("w3", "10.0.0.3")},
			},
			version: 2,
			want:    map[string]map[string]int64{meshv1.TypeWorkload: {"w1": 2, "w2": -2, "w3": 2}, meshv1.TypeService: {"default/echo": 1}},
			log:     []string{"1 Service default/echo", "1 Workload w1", "1 Workload w2", "2 Workload w1", "2 Workload w2", "2 Workload w3"},
		},
		{
			name:    "apply: upsert unchanged is a no-op",
			upserts: map[string]map[string]proto.Message{meshv1.TypeWorkload: {"w3": wl("w3", "10.0.0.3")}},
			version: 2,
			want:    map[string]map[string]int64{meshv1.TypeWorkload: {"w1": 2, "w2": -2, "w3": 2}},
		},
		{
			name:    "apply: re-create a deleted name, delete another, delete wins over upsert",
			upserts: map[string]map[string]proto.Message{meshv1.TypeWorkload: {"w2": wl("w2", "10.0.0.2"), "w1": wl("w1", "10.0.0.10")}},
			deletes: map[string][]string{meshv1.TypeWorkload: {"w1", "w3", "missing"}},
			version: 3,
			want:    map[string]map[string]int64{meshv1.TypeWorkload: {"w1": -3, "w2": 3, "w3": -3}},
		},
		{
			name:    "empty map for a type deletes all of it",
			update:  map[string]map[string]proto.Message{meshv1.TypeService: {}},
			version: 4,
			want:    map[string]map[string]int64{meshv1.TypeService: {"default/echo": -4}},
		},
	}
	s := New(Options{})
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.update != nil {
				s.Update(st.update)
			} else {
				s.Apply(st.upserts, st.deletes)
			}
			if got := s.Version(); got != st.version {
				t.Fatalf("version = %d, want %d", got, st.version)
			}
			for typ, names := range st.want {
				ts := s.types[typ]
				for name, want := range names {
					r := ts.res[name]
					if r == nil {
						t.Fatalf("%s %s: not held", typ, name)
					}
					got := int64(r.Version)
					if r.Body == nil {
						got = -got
					}
					if got != want {
						t.Errorf("%s %s: version %d, want %d (negative: tombstone)", typ, name, got, want)
					}
				}
			}
			if st.log != nil {
				var got []string
				for _, e := range s.changeLog {
					got = append(got, logString(e))
				}
				// Within a version the log order is unspecified: compare as
				// sorted lists (versions sort first).
				slices.Sort(got)
				if !slices.Equal(got, st.log) {
					t.Errorf("log = %q, want %q", got, st.log)
				}
			}
		})
	}
	if n := s.Resources()[meshv1.TypeWorkload]; n != 1 {
		t.Errorf("live workloads = %d, want 1", n)
	}
}

func TestUpdateSkipsWrongTypes(t *testing.T) {
	s := New(Options{})
	s.Update(map[string]map[string]proto.Message{
		meshv1.TypeWorkload: {"ok": wl("ok", "10.0.0.1"), "svc": svc("x", "10.96.0.1"), "nil": nil, "typednil": (*meshv1.Workload)(nil)},
	})
	if got := s.Resources()[meshv1.TypeWorkload]; got != 1 {
		t.Fatalf("live = %d, want 1 (only the Workload)", got)
	}
}

func TestLogTruncation(t *testing.T) {
	s := New(Options{MaxLogEntries: 2})
	s.Update(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"a": wl("a", "1"), "b": wl("b", "2")}}) // v1
	s.Apply(nil, map[string][]string{meshv1.TypeWorkload: {"a"}})                                              // v2: tombstone a; drops one v1 entry
	if s.floor != 1 {
		t.Fatalf("floor = %d, want 1", s.floor)
	}
	s.Apply(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"c": wl("c", "3")}}, nil) // v3: drops the other v1 entry
	if s.floor != 1 {
		t.Fatalf("floor = %d, want 1", s.floor)
	}
	if r := s.types[meshv1.TypeWorkload].res["a"]; r == nil || r.Body != nil {
		t.Fatal("tombstone of a dropped while the log still references it")
	}
	s.Apply(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"d": wl("d", "4")}}, nil) // v4: drops v2 (a)
	if s.floor != 2 {
		t.Fatalf("floor = %d, want 2", s.floor)
	}
	if _, ok := s.types[meshv1.TypeWorkload].res["a"]; ok {
		t.Fatal("tombstone of a kept after its log entry was dropped")
	}
	if len(s.changeLog) != 2 || len(s.batches) != 2 {
		t.Fatalf("log %d entries, %d batches; want 2, 2", len(s.changeLog), len(s.batches))
	}
}

func logString(e logEntry) string {
	short := e.ts.url[len(typeURLPrefix+"ambit.mesh.v1."):]
	return strconv.FormatUint(e.version, 10) + " " + short + " " + e.name
}

func TestImmutableMessages(t *testing.T) {
	s := New(Options{ImmutableMessages: true})
	w1, w2 := wl("w1", "10.0.0.1"), wl("w2", "10.0.0.2")
	s.Update(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"w1": w1, "w2": w2}})
	// Same pointers: unchanged without encoding.
	s.Update(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"w1": w1, "w2": w2}})
	if s.Version() != 1 {
		t.Fatalf("version %d, want 1", s.Version())
	}
	// New pointer, same content: unchanged, and remembered.
	w1b := wl("w1", "10.0.0.1")
	s.Update(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"w1": w1b, "w2": w2}})
	if s.Version() != 1 || s.types[meshv1.TypeWorkload].src["w1"] != proto.Message(w1b) {
		t.Fatalf("version %d, src updated %v", s.Version(), s.types[meshv1.TypeWorkload].src["w1"] == proto.Message(w1b))
	}
	// New content: bumped; deletion forgets the message.
	s.Update(map[string]map[string]proto.Message{meshv1.TypeWorkload: {"w1": wl("w1", "10.0.0.9")}})
	if s.Version() != 2 || s.types[meshv1.TypeWorkload].res["w1"].Version != 2 {
		t.Fatalf("version %d", s.Version())
	}
	if _, ok := s.types[meshv1.TypeWorkload].src["w2"]; ok {
		t.Fatal("deleted w2 still referenced")
	}
}
