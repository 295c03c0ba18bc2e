package token

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/finauthz/authz/authz/internal/clocktest"
)

func TestCachedVerificationLastsUntilExpiry(t *testing.T) {
	t.Parallel()
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	clk, _, v := readyIssuer(t, key)

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

// readyIssuer starts an IdP serving keys and a verifier trusting it on a test clock, and waits until the verifier
// has the keys.
func readyIssuer(t *testing.T, keys ...signingKey) (*clocktest.Clock, *testIdP, *Verifier) {
	t.Helper()
	clk := newTestClock()
	idp := newIdP(t, keys...)
	v := singleIssuer(t, idp, clk, &logSink{}, nil)
	waitReady(t, v)
	return clk, idp, v
}

func TestLastingFailuresAreRemembered(t *testing.T) {
	t.Parallel()
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	other := newSigningKey("k1", "ES256", testKeys().p256b) // same kid, another key: a bad signature
	clk, _, v := readyIssuer(t, key)

	tests := []struct {
		name string
		raw  string
		want error
	}{
		{"bad signature", other.sign(t, claimsAt(issA, clk.Now()), nil), ErrSignature},
		{"expired", key.sign(t, with(claimsAt(issA, clk.Now()), "exp", clk.Now().Add(-time.Hour).Unix()), nil), ErrExpired},
		{"audience not accepted", key.sign(t, with(claimsAt(issA, clk.Now()), "aud", "someone-else"), nil), ErrAudience},
	}
	for _, tc := range tests {
		first := verifyFails(t, v, tc.raw, tc.want)
		hits, _ := v.CacheStats()
		if again := verifyFails(t, v, tc.raw, tc.want); again != first {
			t.Errorf("%s: the second verification was not answered from the failure cache", tc.name)
		}
		if h, _ := v.CacheStats(); h != hits+1 {
			t.Errorf("%s: cache hits went from %d to %d, want one more", tc.name, hits, h)
		}
	}
	if n := v.cache.failures.Len(); n != len(tests) {
		t.Errorf("failure cache holds %d entries, want %d", n, len(tests))
	}
	if v.cache.len() != 0 {
		t.Error("a failure was stored as a verified token")
	}

	// A failure is forgotten after failureTTL.
	clk.Advance(failureTTL)
	hits, _ := v.CacheStats()
	verifyFails(t, v, tests[0].raw, ErrSignature)
	if h, _ := v.CacheStats(); h != hits {
		t.Error("a failure was served after failureTTL")
	}
}

func TestFailuresThatTimeOrAFetchCanUndoAreNotRemembered(t *testing.T) {
	t.Parallel()
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	clk, _, v := readyIssuer(t, key)
	notYet := key.sign(t, with(claimsAt(issA, clk.Now()), "nbf", clk.Now().Add(time.Hour).Unix()), nil)
	unknownKid := key.as("k2", "ES256").sign(t, claimsAt(issA, clk.Now()), nil)
	verifyFails(t, v, notYet, ErrNotYetValid)
	verifyFails(t, v, unknownKid, ErrUnknownKey)
	if n := v.cache.failures.Len(); n != 0 {
		t.Errorf("failure cache holds %d entries, want none", n)
	}
	// The token becomes valid with time, and is then verified.
	clk.Advance(time.Hour)
	verifyOK(t, v, notYet)
}

func TestRememberedFailuresEndWithTheKeySet(t *testing.T) {
	t.Parallel()
	oldKey := newSigningKey("k1", "ES256", testKeys().p256a)
	newKey := newSigningKey("k1", "ES256", testKeys().p256b) // the IdP re-keys under the same kid
	clk, idp, v := readyIssuer(t, oldKey)
	raw := newKey.sign(t, claimsAt(issA, clk.Now()), nil)
	verifyFails(t, v, raw, ErrSignature)

	idp.serve(t, newKey)
	clk.Advance(DefaultUnknownKIDCooldown)
	// An unknown kid makes the verifier fetch the new set.
	verifyFails(t, v, newKey.as("k9", "ES256").sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
	wantRequests(t, idp, 2)
	verifyOK(t, v, raw)
}
