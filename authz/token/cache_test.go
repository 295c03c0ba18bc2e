package token

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

func TestCachedVerificationLastsUntilExpiry(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)

	raw := key.sign(t, claimsAt(issA, clk.Now()), nil)
	first := verifyOK(t, v, raw)
	sum := sha256.Sum256([]byte(raw))
	if v.cache.get(&sum, clk.Now()) != first {
		t.Fatal("the cache does not hold the verification under the SHA-256 of the token")
	}
	clk.Advance(time.Hour - time.Second)
	if verifyOK(t, v, raw) != first {
		t.Error("verification was not served from the cache one second before exp")
	}

	// exp is exclusive: at exp the entry is void; the leeway still lets a full verification pass.
	clk.Advance(time.Second)
	if verifyOK(t, v, raw) == first {
		t.Error("the cache served a token at its exp")
	}
	if v.cache.len() != 0 {
		t.Errorf("cache holds %d entries after its only token expired", v.cache.len())
	}
	clk.Advance(DefaultLeeway)
	checkFailure(t, verifyErr(v, raw), raw, ErrExpired, "token_expired")
}

func verifyErr(v *Verifier, raw string) error {
	_, err := v.Verify(context.Background(), raw)
	return err
}

func TestDisabledCacheVerifiesEveryTime(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.CacheSize = -1 })
	waitReady(t, v)
	raw := key.sign(t, claimsAt(issA, clk.Now()), nil)
	// A cache hit returns the same *Token; two verifications must give two.
	first, second := verifyOK(t, v, raw), verifyOK(t, v, raw)
	if v.cache != nil || first == second {
		t.Error("verification was cached although the cache is disabled")
	}
}

func TestCacheNeverHoldsMoreThanItsSize(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "EdDSA", testKeys().ed1)
	idp := newIdP(t, key)
	const size = 10
	v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.CacheSize = size })
	waitReady(t, v)
	for i := range 200 {
		verifyOK(t, v, key.sign(t, with(claimsAt(issA, clk.Now()), "jti", fmt.Sprint(i)), nil))
		if n := v.cache.len(); n > size {
			t.Fatalf("cache holds %d entries, size is %d", n, size)
		}
	}
}

func TestFullCacheShardEvictsDeadEntriesFirst(t *testing.T) {
	t.Parallel()
	now := time.Unix(2_000_000_000, 0)
	ks := &keySet{maxStale: time.Hour}
	ks.snap.Store(&keySnapshot{generation: 2, fetchedAt: now})
	c := newVerifyCache(1) // one shard, one entry
	entry := func(exp time.Time, gen uint64) *cacheEntry {
		return &cacheEntry{tok: &Token{Expiry: exp}, keys: ks, generation: gen}
	}
	tests := []struct {
		name string
		old  *cacheEntry
	}{
		{"expired entry", entry(now, 2)},
		{"entry of an older key generation", entry(now.Add(time.Hour), 1)},
		{"live entry when nothing is dead", entry(now.Add(time.Hour), 2)},
	}
	for i, tc := range tests {
		t.Run(tc.name+" makes room", func(t *testing.T) {
			oldSum, newSum := sha256.Sum256([]byte{byte(i), 0}), sha256.Sum256([]byte{byte(i), 1})
			c.m.Clear()
			c.put(&oldSum, tc.old, now)
			fresh := entry(now.Add(time.Hour), 2)
			c.put(&newSum, fresh, now)
			if c.len() != 1 || c.get(&newSum, now) != fresh.tok {
				t.Errorf("cache holds %d entries; the new one present: %v", c.len(), c.get(&newSum, now) != nil)
			}
		})
	}
}
