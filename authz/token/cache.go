package token

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxCacheShards spreads the verification cache over independently locked maps so that concurrent hits on
// different tokens rarely touch the same lock.
const maxCacheShards = 64

// evictionProbes is how many entries an insert into a full shard looks at: it drops the dead ones among them,
// or else the first one (map iteration starts at a random entry, so this is random eviction).
const evictionProbes = 4

// verifyCache remembers successful verifications by the SHA-256 of the raw token, never the token itself.
// Its capacity is split evenly over a power-of-two number of shards, so it never holds more than the
// configured size.
type verifyCache struct {
	shardCap int
	mask     int
	shards   []cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]*cacheEntry
}

type cacheEntry struct {
	tok        *Token
	keys       *keySet
	generation uint64
}

func newVerifyCache(size int) *verifyCache {
	n := 1
	for n*2 <= min(size, maxCacheShards) {
		n *= 2
	}
	c := &verifyCache{shardCap: size / n, mask: n - 1, shards: make([]cacheShard, n)}
	for i := range c.shards {
		c.shards[i].m = make(map[[sha256.Size]byte]*cacheEntry)
	}
	return c
}

func (c *verifyCache) shard(sum *[sha256.Size]byte) *cacheShard {
	return &c.shards[int(sum[0])&c.mask]
}

// live reports whether a cached verification still holds at now: before exp (exclusive, no leeway), and
// with the issuer's keys unchanged and not too old.
func (e *cacheEntry) live(now time.Time) bool {
	return now.Before(e.tok.Expiry) && e.keys.current(e.generation, now)
}

// get returns the cached token for sum if its verification still holds, and drops the entry otherwise.
func (c *verifyCache) get(sum *[sha256.Size]byte, now time.Time) *Token {
	s := c.shard(sum)
	s.mu.RLock()
	e := s.m[*sum]
	s.mu.RUnlock()
	if e == nil {
		return nil
	}
	if e.live(now) {
		return e.tok
	}
	s.mu.Lock()
	if s.m[*sum] == e {
		delete(s.m, *sum)
	}
	s.mu.Unlock()
	return nil
}

func (c *verifyCache) put(sum *[sha256.Size]byte, e *cacheEntry, now time.Time) {
	s := c.shard(sum)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*sum]; !ok && len(s.m) >= c.shardCap {
		s.evictLocked(now)
	}
	s.m[*sum] = e
}

func (s *cacheShard) evictLocked(now time.Time) {
	var first [sha256.Size]byte
	probed, evicted := 0, false
	for k, e := range s.m {
		if probed == 0 {
			first = k
		}
		if !e.live(now) {
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

func (c *verifyCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
