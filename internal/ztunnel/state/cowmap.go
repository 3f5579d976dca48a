package state

import (
	"encoding/binary"
	"hash/maphash"
	"iter"
	"maps"
	"net/netip"
)

// The indexes are sharded copy-on-write maps: a snapshot holds a pointer to
// an array of shard maps that are never written once published. An update
// copies the array (256 pointers) and clones only the shards it touches, so
// a one-resource delta on a 100,000-entry index copies ~400 entries instead
// of rebuilding the index, and readers never take a lock.

const (
	shardBits = 8
	nShards   = 1 << shardBits
)

type shardArray[K comparable, V any] [nShards]map[K]V

// cowMap is an immutable sharded map. The zero value is empty.
type cowMap[K comparable, V any] struct {
	shards *shardArray[K, V]
	n      int
}

func (m cowMap[K, V]) get(shard uint32, k K) (V, bool) {
	if m.shards == nil {
		var zero V
		return zero, false
	}
	v, ok := m.shards[shard][k]
	return v, ok
}

func (m cowMap[K, V]) len() int { return m.n }

// all iterates in no particular order.
func (m cowMap[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		if m.shards == nil {
			return
		}
		for _, s := range m.shards {
			for k, v := range s {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// cowBuilder derives a new cowMap from a base one without changing it.
type cowBuilder[K comparable, V any] struct {
	base  cowMap[K, V]
	next  *shardArray[K, V]
	owned [nShards]bool
	n     int
}

func newBuilder[K comparable, V any](base cowMap[K, V]) *cowBuilder[K, V] {
	return &cowBuilder[K, V]{base: base, n: base.n}
}

func (b *cowBuilder[K, V]) get(shard uint32, k K) (V, bool) {
	if b.next != nil {
		v, ok := b.next[shard][k]
		return v, ok
	}
	return b.base.get(shard, k)
}

// own makes shard writable: the first write to a shard clones it.
func (b *cowBuilder[K, V]) own(shard uint32) map[K]V {
	if b.next == nil {
		b.next = new(shardArray[K, V])
		if b.base.shards != nil {
			*b.next = *b.base.shards
		}
	}
	if !b.owned[shard] {
		b.owned[shard] = true
		if b.next[shard] == nil {
			b.next[shard] = make(map[K]V)
		} else {
			b.next[shard] = maps.Clone(b.next[shard])
		}
	}
	return b.next[shard]
}

func (b *cowBuilder[K, V]) set(shard uint32, k K, v V) {
	m := b.own(shard)
	if _, ok := m[k]; !ok {
		b.n++
	}
	m[k] = v
}

func (b *cowBuilder[K, V]) del(shard uint32, k K) {
	if _, ok := b.get(shard, k); !ok {
		return
	}
	delete(b.own(shard), k)
	b.n--
}

func (b *cowBuilder[K, V]) build() cowMap[K, V] {
	if b.next == nil {
		return b.base
	}
	return cowMap[K, V]{shards: b.next, n: b.n}
}

var seed = maphash.MakeSeed()

func strShard(s string) uint32 { return uint32(maphash.String(seed, s) >> (64 - shardBits)) }

func addrShard(a netip.Addr) uint32 {
	b := a.As16()
	h := binary.LittleEndian.Uint64(b[8:]) ^ binary.LittleEndian.Uint64(b[:8])*0x9E3779B97F4A7C15
	h *= 0xBF58476D1CE4E5B9
	return uint32(h >> (64 - shardBits))
}

// strMap and addrMap hash their keys themselves.
type strMap[V any] struct{ cowMap[string, V] }

func (m strMap[V]) lookup(k string) (V, bool) { return m.get(strShard(k), k) }

type strBuilder[V any] struct{ *cowBuilder[string, V] }

func newStrBuilder[V any](m strMap[V]) strBuilder[V] {
	return strBuilder[V]{newBuilder(m.cowMap)}
}
func (b strBuilder[V]) lookup(k string) (V, bool) { return b.get(strShard(k), k) }
func (b strBuilder[V]) put(k string, v V)         { b.set(strShard(k), k, v) }
func (b strBuilder[V]) remove(k string)           { b.del(strShard(k), k) }
func (b strBuilder[V]) done() strMap[V]           { return strMap[V]{b.build()} }

type addrMap[V any] struct{ cowMap[netip.Addr, V] }

func (m addrMap[V]) lookup(k netip.Addr) (V, bool) { return m.get(addrShard(k), k) }

type addrBuilder[V any] struct{ *cowBuilder[netip.Addr, V] }

func newAddrBuilder[V any](m addrMap[V]) addrBuilder[V] {
	return addrBuilder[V]{newBuilder(m.cowMap)}
}
func (b addrBuilder[V]) lookup(k netip.Addr) (V, bool) { return b.get(addrShard(k), k) }
func (b addrBuilder[V]) put(k netip.Addr, v V)         { b.set(addrShard(k), k, v) }
func (b addrBuilder[V]) remove(k netip.Addr)           { b.del(addrShard(k), k) }
func (b addrBuilder[V]) done() addrMap[V]              { return addrMap[V]{b.build()} }
