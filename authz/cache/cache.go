// Package cache is a bounded map keyed by SHA-256 digests, shared by the
// caches on the request path (token verifications, policy decisions). It
// never holds more entries than its size, drops entries that are no longer
// live when they are read, and spreads its entries over independently locked
// shards so that concurrent readers of different keys rarely meet.
package cache

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Key is the SHA-256 digest an entry is stored under. Callers hash what
// identifies an entry (a token, a decision's inputs); the cache never sees
// the material itself.
type Key = [sha256.Size]byte

// maxShards bounds the number of independently locked maps.
const maxShards = 64

// evictionProbes is how many entries an insert into a full shard looks at: it
// drops the dead ones among them, or else the first one (map iteration starts
// at a random entry, so this is random eviction).
const evictionProbes = 4

// Map is a bounded map from Key to V. Its capacity is split evenly over a
// power-of-two number of shards, so it never holds more than the size it was
// made with. The zero value is not usable; call New.
type Map[V any] struct {
	shardCap int
	mask     int
	shards   []shard[V]
	live     func(V, time.Time) bool
}

type shard[V any] struct {
	mu sync.RWMutex
	m  map[Key]V
}

// New returns a Map of at most size entries (at least one). live reports
// whether an entry may still be served at a time; an entry that is not live
// is never returned and is the first to go when a shard is full.
func New[V any](size int, live func(V, time.Time) bool) *Map[V] {
	size = max(size, 1)
	n := 1
	for n*2 <= min(size, maxShards) {
		n *= 2
	}
	c := &Map[V]{shardCap: size / n, mask: n - 1, shards: make([]shard[V], n), live: live}
	for i := range c.shards {
		c.shards[i].m = make(map[Key]V)
	}
	return c
}

// Capacity is the number of entries the map can hold: at most the size it
// was made with, and at least half of it.
func (c *Map[V]) Capacity() int { return c.shardCap * len(c.shards) }

func (c *Map[V]) shard(k *Key) *shard[V] {
	return &c.shards[int(k[0])&c.mask]
}

// Get returns the entry under k if it is live at now. An entry that is no
// longer live is removed.
func (c *Map[V]) Get(k *Key, now time.Time) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	v, ok := s.m[*k]
	s.mu.RUnlock()
	if !ok {
		return v, false
	}
	if c.live(v, now) {
		return v, true
	}
	s.mu.Lock()
	if cur, ok := s.m[*k]; ok && !c.live(cur, now) {
		delete(s.m, *k)
	}
	s.mu.Unlock()
	var zero V
	return zero, false
}

// Put stores v under k, evicting an entry of k's shard when the shard is
// full: a dead one if it finds one among a few, else a random one.
func (c *Map[V]) Put(k *Key, v V, now time.Time) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.shardCap {
		c.evictLocked(s, now)
	}
	s.m[*k] = v
}

func (c *Map[V]) evictLocked(s *shard[V], now time.Time) {
	var first Key
	probed, evicted := 0, false
	for k, v := range s.m {
		if probed == 0 {
			first = k
		}
		if !c.live(v, now) {
			delete(s.m, k)
			evicted = true
		}
		if probed++; probed == evictionProbes {
			break
		}
	}
	if !evicted {
		delete(s.m, first)
	}
}

// Len returns the number of entries held, live or not.
func (c *Map[V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Clear removes every entry.
func (c *Map[V]) Clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}
