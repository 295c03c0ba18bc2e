package token

import (
	"crypto/sha256"
	"errors"
	"time"

	"github.com/finauthz/authz/authz/cache"
)

// verifyCache remembers successful verifications by the SHA-256 of the raw token, never the token itself,
// and, apart, recent failures that no later attempt can turn into a success. It never holds more than the
// configured size of successes, and failureCacheSize failures: a flood of distinct bad tokens cannot evict
// the good ones.
type verifyCache struct {
	m        *cache.Map[*cacheEntry]
	failures *cache.Map[*failureEntry]
}

// failureCacheSize bounds the remembered failures; failureTTL bounds how long one is remembered.
const (
	failureCacheSize = 4096
	failureTTL       = time.Minute
)

// failureEntry is a failed verification: a bad signature, an expired token, an audience not accepted or a
// missing exp. Each stays a failure for as long as the issuer's keys are unchanged (time only moves a token
// further past its exp). Failures that time or a key set fetch can undo (nbf, iat, unknown kid, keys
// unavailable) are never remembered.
type failureEntry struct {
	err        error
	keys       *keySet
	generation uint64
	until      time.Time
}

func (e *failureEntry) live(now time.Time) bool {
	return now.Before(e.until) && e.keys.current(e.generation, now)
}

// lastingFailure reports whether err stays a failure while the keys that produced it are unchanged.
func lastingFailure(err error) bool {
	for _, sentinel := range []error{ErrSignature, ErrExpired, ErrAudience, ErrMissingExpiry} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

type cacheEntry struct {
	tok        *Token
	keys       *keySet
	generation uint64
}

func newVerifyCache(size int) *verifyCache {
	return &verifyCache{
		m:        cache.New(size, (*cacheEntry).live),
		failures: cache.New(min(size, failureCacheSize), (*failureEntry).live),
	}
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

// getFailure returns the remembered failure of the token with digest sum, or nil.
func (c *verifyCache) getFailure(sum *[sha256.Size]byte, now time.Time) error {
	if e, ok := c.failures.Get(sum, now); ok {
		return e.err
	}
	return nil
}

// putFailure remembers err for the token with digest sum if it is a lasting failure of a token whose
// issuer's keys were consulted.
func (c *verifyCache) putFailure(sum *[sha256.Size]byte, err error, used keysUsed, now time.Time) {
	if used.keys == nil || !lastingFailure(err) {
		return
	}
	c.failures.Put(sum, &failureEntry{err: err, keys: used.keys, generation: used.generation, until: now.Add(failureTTL)}, now)
}
