package token

import (
	"crypto/sha256"
	"time"

	"github.com/finauthz/authz/authz/cache"
)

// verifyCache remembers successful verifications by the SHA-256 of the raw token, never the token itself.
// It never holds more than the configured size.
type verifyCache struct {
	m *cache.Map[*cacheEntry]
}

type cacheEntry struct {
	tok        *Token
	keys       *keySet
	generation uint64
}

func newVerifyCache(size int) *verifyCache {
	return &verifyCache{m: cache.New(size, (*cacheEntry).live)}
}

// live reports whether a cached verification still holds at now: before exp (exclusive, no leeway), and
// with the issuer's keys unchanged and not too old.
func (e *cacheEntry) live(now time.Time) bool {
	return now.Before(e.tok.Expiry) && e.keys.current(e.generation, now)
}

// get returns the cached token for sum if its verification still holds, and drops the entry otherwise.
func (c *verifyCache) get(sum *[sha256.Size]byte, now time.Time) *Token {
	if e, ok := c.m.Get(sum, now); ok {
		return e.tok
	}
	return nil
}

func (c *verifyCache) put(sum *[sha256.Size]byte, e *cacheEntry, now time.Time) {
	c.m.Put(sum, e, now)
}

func (c *verifyCache) len() int { return c.m.Len() }
