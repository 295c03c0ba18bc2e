package token

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/finauthz/authz/authz/internal/polltest"
)

// fetchLog records OnFetch calls.
type fetchLog struct {
	mu    sync.Mutex
	calls []fetchCall
}

type fetchCall struct {
	issuer string
	failed bool
}

func (l *fetchLog) record(issuer string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fetchCall{issuer, err != nil})
}

func (l *fetchLog) snapshot() []fetchCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]fetchCall(nil), l.calls...)
}

func TestOnFetchReportsEveryFetchWithItsOutcome(t *testing.T) {
	t.Parallel()
	clk, logs, fetches := newTestClock(), &logSink{}, &fetchLog{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.OnFetch = fetches.record })
	waitReady(t, v)
	polltest.Until(t, "the first fetch is reported", func() bool { return len(fetches.snapshot()) == 1 })
	if got := fetches.snapshot()[0]; got != (fetchCall{issA, false}) {
		t.Fatalf("first fetch reported as %+v, want a success for %s", got, issA)
	}

	// An unknown kid makes the verifier fetch again; the IdP now fails.
	idp.respond(http.StatusServiceUnavailable, nil)
	clk.Advance(DefaultUnknownKIDCooldown)
	other := newSigningKey("k2", "ES256", testKeys().p256b)
	verifyFails(t, v, other.sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
	calls := fetches.snapshot()
	if len(calls) != 2 || calls[1] != (fetchCall{issA, true}) {
		t.Fatalf("fetches reported = %+v, want a success then a failure for %s", calls, issA)
	}
}

func TestCacheStatsCountHitsAndMisses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		cacheSize              int
		wantHits, wantMisses   uint64
		verifications, repeats int
	}{
		{name: "a repeated token is a miss then hits", cacheSize: 0, verifications: 1, repeats: 3, wantHits: 2, wantMisses: 1},
		{name: "distinct tokens are misses", cacheSize: 0, verifications: 3, repeats: 1, wantHits: 0, wantMisses: 3},
		{name: "a disabled cache counts nothing", cacheSize: -1, verifications: 2, repeats: 2, wantHits: 0, wantMisses: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk, logs := newTestClock(), &logSink{}
			key := newSigningKey("k1", "ES256", testKeys().p256a)
			v := singleIssuer(t, newIdP(t, key), clk, logs, func(c *Config) { c.CacheSize = tc.cacheSize })
			waitReady(t, v)
			for i := range tc.verifications {
				raw := key.sign(t, with(claimsAt(issA, clk.Now()), "jti", string(rune('a'+i))), nil)
				for range tc.repeats {
					verifyOK(t, v, raw)
				}
			}
			// Refused before the cache is consulted: counts as neither.
			verifyFails(t, v, "", ErrMalformed)
			hits, misses := v.CacheStats()
			if hits != tc.wantHits || misses != tc.wantMisses {
				t.Errorf("CacheStats = %d hits, %d misses, want %d, %d", hits, misses, tc.wantHits, tc.wantMisses)
			}
		})
	}
}

func TestKeySetAgesFollowTheLastSuccessfulFetch(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	hold := newIdP(t, key)
	release := hold.hold(t)
	v := startVerifier(t, Config{
		Issuers: []Issuer{
			{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}},
			{Issuer: issB, JWKSURI: hold.url(), Audiences: []string{"payments-api"}},
		},
		Now:    clk.Now,
		Logger: logs.logger(),
	})
	polltest.Until(t, "issuer A has keys", func() bool { _, ok := v.KeySetAges()[issA]; return ok })
	clk.Advance(90 * time.Second)
	ages := v.KeySetAges()
	if ages[issA] != 90*time.Second {
		t.Errorf("age of %s = %s, want 1m30s", issA, ages[issA])
	}
	if _, ok := ages[issB]; ok {
		t.Errorf("%s has an age before its first key set arrived", issB)
	}
	release()
	polltest.Until(t, "issuer B has keys", func() bool { _, ok := v.KeySetAges()[issB]; return ok })
}
