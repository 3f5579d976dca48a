package push

import (
	"bytes"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
)

// typeState is the desired state of one resource type.
//
// res holds, per name, the *meshv1.Resource every stream sends: name, the
// version at which the resource last changed and the pre-encoded body. A
// published Resource is immutable (a change publishes a new one), so streams
// share it and marshal it concurrently without copying. A Resource with a nil
// Body is a tombstone: the name was deleted at Version. Tombstones live as
// long as the change log references them (see truncateLocked).
type typeState struct {
	url      string
	idx      int
	fullName protoreflect.FullName // message full name the type URL names
	res      map[string]*meshv1.Resource
	live     int
	// src (Options.ImmutableMessages only): the message each live resource
	// was encoded from. Only Update/Apply use it, under updateMu.
	src map[string]proto.Message
}

func newTypeState(url string, idx int) *typeState {
	return &typeState{
		url:      url,
		idx:      idx,
		fullName: protoreflect.FullName(url[strings.LastIndexByte(url, '/')+1:]),
		res:      make(map[string]*meshv1.Resource),
	}
}

// logEntry records that (ts, name) changed (upsert or delete) at version.
// Within one version a name appears at most once.
type logEntry struct {
	version uint64
	ts      *typeState
	name    string
}

// batch is the time at which a version was published (for the age bound of
// the log and for the convergence histogram).
type batch struct {
	version uint64
	at      time.Time
}

// change is one difference found by Update/Apply, before it is committed.
type change struct {
	ts   *typeState
	name string
	res  *meshv1.Resource // nil: delete; with src set and res nil: only remember src
	src  proto.Message    // Options.ImmutableMessages: the message res was encoded from
}

type namedMsg struct {
	name string
	msg  proto.Message
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// typeFor returns the state of typeURL, creating it. Caller holds updateMu
// (creation takes stateMu itself).
func (s *Server) typeFor(typeURL string) *typeState {
	s.stateMu.RLock()
	ts := s.types[typeURL]
	s.stateMu.RUnlock()
	if ts != nil {
		return ts
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	ts = newTypeState(typeURL, len(s.typeList))
	if s.opts.ImmutableMessages {
		ts.src = make(map[string]proto.Message)
	}
	s.types[typeURL] = ts
	s.typeList = append(s.typeList, ts)
	return ts
}

// Update replaces the desired state of every type URL present in state
// (name -> message; a present type with an empty map deletes all of that
// type); types absent from the map are left as they are. Each message is
// encoded once, deterministically, and compared with what is held: only new
// or changed resources get the new version, names no longer present become
// tombstones. When anything changed the system version goes up by one and
// the streams are woken; Update never waits for a proxy.
//
// Messages must be of the type the type URL names; other messages (and nil
// ones) are skipped and logged. Update does not keep references to the
// messages; callers may reuse them after it returns.
//
// Update and Apply calls are serialized.
func (s *Server) Update(state map[string]map[string]proto.Message) {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	start := time.Now()
	next := s.version + 1
	var changes []change
	for _, typeURL := range sortedKeys(state) {
		msgs := state[typeURL]
		ts := s.typeFor(typeURL)
		changes = append(changes, s.diffUpserts(ts, msgs, nil, next)...)
		// Readers only read ts.res and writers hold updateMu: reading it here
		// without stateMu is safe.
		for name, r := range ts.res {
			if r.Body == nil {
				continue
			}
			if _, ok := msgs[name]; !ok {
				changes = append(changes, change{ts: ts, name: name})
			}
		}
	}
	s.commit(next, changes, start)
}

// Apply changes the desired state incrementally: upserts (type URL -> name
// -> message) are added or replaced (unchanged ones keep their version),
// deletes (type URL -> names) become tombstones. A name both upserted and
// deleted in one call is deleted. Same guarantees as Update.
func (s *Server) Apply(upserts map[string]map[string]proto.Message, deletes map[string][]string) {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	start := time.Now()
	next := s.version + 1
	var changes []change
	for _, typeURL := range sortedKeys(upserts) {
		var skip map[string]struct{}
		if dels := deletes[typeURL]; len(dels) > 0 {
			skip = make(map[string]struct{}, len(dels))
			for _, n := range dels {
				skip[n] = struct{}{}
			}
		}
		changes = append(changes, s.diffUpserts(s.typeFor(typeURL), upserts[typeURL], skip, next)...)
	}
	for _, typeURL := range sortedKeys(deletes) {
		s.stateMu.RLock()
		ts := s.types[typeURL]
		s.stateMu.RUnlock()
		if ts == nil {
			continue
		}
		seen := make(map[string]struct{}, len(deletes[typeURL]))
		for _, name := range deletes[typeURL] {
			if _, dup := seen[name]; dup {
				continue
			}
			seen[name] = struct{}{}
			if r := ts.res[name]; r != nil && r.Body != nil {
				changes = append(changes, change{ts: ts, name: name})
			}
		}
	}
	s.commit(next, changes, start)
}

// diffUpserts encodes msgs (in parallel) and returns the ones that differ
// from what ts holds, as Resources at version next. Caller holds updateMu.
func (s *Server) diffUpserts(ts *typeState, msgs map[string]proto.Message, skip map[string]struct{}, next uint64) []change {
	if len(msgs) == 0 {
		return nil
	}
	kvs := s.kvScratch[:0]
	for name, m := range msgs {
		if _, ok := skip[name]; ok {
			continue
		}
		kvs = append(kvs, namedMsg{name, m})
	}
	defer func() {
		clear(kvs) // drop references to the caller's messages
		s.kvScratch = kvs[:0]
	}()

	workers := runtime.GOMAXPROCS(0)
	if n := len(kvs) / 512; n < workers {
		workers = max(n, 1)
	}
	type result struct {
		changes []change
		bad     int
		badName string
	}
	results := make([]result, workers)
	diff := func(w int, part []namedMsg) {
		r := &results[w]
		var buf []byte
		for _, kv := range part {
			if kv.msg == nil || !kv.msg.ProtoReflect().IsValid() || kv.msg.ProtoReflect().Descriptor().FullName() != ts.fullName {
				r.bad++
				r.badName = kv.name
				continue
			}
			if ts.src != nil && ts.src[kv.name] == kv.msg {
				continue // same message as last time, and messages are immutable
			}
			var err error
			buf, err = deterministic.MarshalAppend(buf[:0], kv.msg)
			if err != nil {
				r.bad++
				r.badName = kv.name
				continue
			}
			if old := ts.res[kv.name]; old != nil && old.Body != nil && bytes.Equal(old.Body.Value, buf) {
				if ts.src != nil {
					// Equal content, new pointer: remember it for next time.
					r.changes = append(r.changes, change{ts: ts, name: kv.name, src: kv.msg})
				}
				continue
			}
			ch := change{ts: ts, name: kv.name, res: &meshv1.Resource{
				Name:    kv.name,
				Version: next,
				Body:    &anypb.Any{TypeUrl: ts.url, Value: bytes.Clone(buf)},
			}}
			if ts.src != nil {
				ch.src = kv.msg
			}
			r.changes = append(r.changes, ch)
		}
	}
	if workers == 1 {
		diff(0, kvs)
	} else {
		var wg sync.WaitGroup
		chunk := (len(kvs) + workers - 1) / workers
		for w := range workers {
			lo, hi := w*chunk, min((w+1)*chunk, len(kvs))
			wg.Go(func() { diff(w, kvs[lo:hi]) })
		}
		wg.Wait()
	}
	var out []change
	bad, badName := 0, ""
	for _, r := range results {
		out = append(out, r.changes...)
		bad += r.bad
		if r.badName != "" {
			badName = r.badName
		}
	}
	if bad > 0 {
		s.log.Error("push: skipping resources that are nil, not encodable or not of their type URL's message type",
			"type", ts.url, "count", bad, "example", badName)
	}
	return out
}

// commit publishes changes at version next and wakes the streams.
func (s *Server) commit(next uint64, changes []change, start time.Time) {
	// src bookkeeping (ImmutableMessages) is only read under updateMu,
	// which the caller holds.
	n := 0
	for _, c := range changes {
		if c.ts.src != nil {
			switch {
			case c.res != nil || c.src != nil:
				c.ts.src[c.name] = c.src
			default:
				delete(c.ts.src, c.name)
			}
		}
		if c.res == nil && c.src != nil {
			continue // content unchanged
		}
		changes[n] = c
		n++
	}
	changes = changes[:n]
	if len(changes) == 0 {
		s.metrics.updateSeconds.Observe(time.Since(start).Seconds())
		return
	}
	now := time.Now()
	s.stateMu.Lock()
	touched := make(map[*typeState]struct{}, 4)
	for _, c := range changes {
		touched[c.ts] = struct{}{}
		old := c.ts.res[c.name]
		wasLive := old != nil && old.Body != nil
		if c.res != nil {
			c.ts.res[c.name] = c.res
			if !wasLive {
				c.ts.live++
			}
		} else {
			// Tombstone; the log entry below refers to it.
			c.ts.res[c.name] = &meshv1.Resource{Name: c.name, Version: next}
			if wasLive {
				c.ts.live--
			}
		}
		s.changeLog = append(s.changeLog, logEntry{version: next, ts: c.ts, name: c.name})
	}
	s.version = next
	s.batches = append(s.batches, batch{version: next, at: now})
	s.truncateLocked(now)
	live := make(map[string]int, len(touched))
	for ts := range touched {
		live[ts.url] = ts.live
	}
	s.stateMu.Unlock()

	for url, n := range live {
		s.metrics.resources.WithLabelValues(url).Set(float64(n))
	}
	s.metrics.version.Set(float64(next))
	s.metrics.updateSeconds.Observe(time.Since(start).Seconds())
	s.notifyAll()
}

// truncateLocked bounds the change log by entries and age. floor becomes the
// highest version whose entries may be (partly) gone: a proxy at version >=
// floor can still be sent exact deltas, an older one gets full state.
// Tombstones whose deletion entry is dropped are forgotten.
func (s *Server) truncateLocked(now time.Time) {
	drop := 0
	if max := s.opts.MaxLogEntries; len(s.changeLog) > max {
		drop = len(s.changeLog) - max
	}
	if age := s.opts.MaxLogAge; age > 0 {
		cutoff := now.Add(-age)
		// First batch young enough to keep.
		i := sort.Search(len(s.batches), func(i int) bool { return !s.batches[i].at.Before(cutoff) })
		if i > 0 {
			v := s.batches[i-1].version
			if n := sort.Search(len(s.changeLog), func(j int) bool { return s.changeLog[j].version > v }); n > drop {
				drop = n
			}
		}
	}
	if drop == 0 {
		return
	}
	for _, e := range s.changeLog[:drop] {
		if r := e.ts.res[e.name]; r != nil && r.Body == nil && r.Version == e.version {
			delete(e.ts.res, e.name)
		}
	}
	s.floor = s.changeLog[drop-1].version
	clear(s.changeLog[:drop])
	s.changeLog = s.changeLog[drop:]
	b := sort.Search(len(s.batches), func(i int) bool { return s.batches[i].version > s.floor })
	s.batches = s.batches[b:]
}

// publishedAt returns when the first version after v was published, if the
// log still knows.
func (s *Server) publishedAfter(v uint64) (time.Time, bool) {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	i := sort.Search(len(s.batches), func(i int) bool { return s.batches[i].version > v })
	if i == len(s.batches) || (i == 0 && v < s.floor) {
		return time.Time{}, false
	}
	return s.batches[i].at, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
