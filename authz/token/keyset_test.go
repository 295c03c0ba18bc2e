package token

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finauthz/authz/authz/internal/clocktest"
	"github.com/finauthz/authz/authz/internal/polltest"
)

// singleIssuer starts a verifier for issA backed by idp.
func singleIssuer(t testing.TB, idp *testIdP, clk *clocktest.Clock, logs *logSink, mutate func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{
		Issuers: []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
		Now:     clk.Now,
		Logger:  logs.logger(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return startVerifier(t, cfg)
}

func verifyOK(t testing.TB, v *Verifier, raw string) *Token {
	t.Helper()
	tok, err := v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return tok
}

func verifyFails(t testing.TB, v *Verifier, raw string, want error) error {
	t.Helper()
	_, err := v.Verify(context.Background(), raw)
	if !errors.Is(err, want) {
		t.Fatalf("Verify error = %v, want %v", err, want)
	}
	return err
}

func wantRequests(t testing.TB, idp *testIdP, want int64) {
	t.Helper()
	if got := idp.requests.Load(); got != want {
		t.Fatalf("JWKS requests = %d, want %d", got, want)
	}
}

func TestNewKeyVerifiesWithinOneCooldown(t *testing.T) {
	t.Parallel()
	k := testKeys()
	clk, logs := newTestClock(), &logSink{}
	oldKey := newSigningKey("2031-01", "RS256", k.rsa1)
	newKey := newSigningKey("2031-03", "ES256", k.p256a)
	idp := newIdP(t, oldKey)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)
	wantRequests(t, idp, 1)

	idp.serve(t, oldKey, newKey)
	raw := newKey.sign(t, claimsAt(issA, clk.Now()), nil)
	// The set was fetched less than a cooldown ago: refuse at once, without a fetch.
	verifyFails(t, v, raw, ErrUnknownKey)
	wantRequests(t, idp, 1)

	clk.Advance(DefaultUnknownKIDCooldown)
	verifyOK(t, v, raw)
	wantRequests(t, idp, 2)

	// Both keys now verify without further fetches.
	verifyOK(t, v, newKey.sign(t, with(claimsAt(issA, clk.Now()), "jti", "2"), nil))
	verifyOK(t, v, oldKey.sign(t, claimsAt(issA, clk.Now()), nil))
	wantRequests(t, idp, 2)
}

func TestRemovedKeyStopsVerifyingAtTheNextFetch(t *testing.T) {
	t.Parallel()
	k := testKeys()
	clk, logs := newTestClock(), &logSink{}
	revoked := newSigningKey("revoked", "ES256", k.p256a)
	kept := newSigningKey("kept", "ES256", k.p256b)
	idp := newIdP(t, revoked, kept)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)

	exp := clk.Now().Add(24 * time.Hour).Unix()
	rawRevoked := revoked.sign(t, with(claimsAt(issA, clk.Now()), "exp", exp), nil)
	rawKept := kept.sign(t, with(claimsAt(issA, clk.Now()), "exp", exp), nil)
	first := verifyOK(t, v, rawRevoked)
	if again := verifyOK(t, v, rawRevoked); again != first {
		t.Fatal("second verification was not served from the cache")
	}
	keptTok := verifyOK(t, v, rawKept)

	idp.serve(t, kept)
	clk.Advance(DefaultUnknownKIDCooldown)
	// Any unknown kid makes the verifier fetch; the new set lacks the revoked key.
	verifyFails(t, v, kept.as("someone-else", "ES256").sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
	wantRequests(t, idp, 2)

	verifyFails(t, v, rawRevoked, ErrUnknownKey)
	if tok := verifyOK(t, v, rawKept); tok == keptTok {
		t.Error("a cached verification survived a change of the key set")
	}
}

func TestUnchangedKeySetKeepsCachedVerifications(t *testing.T) {
	t.Parallel()
	k := testKeys()
	clk, logs := newTestClock(), &logSink{}
	a := newSigningKey("a", "ES256", k.p256a)
	b := newSigningKey("b", "EdDSA", k.ed1)
	idp := newIdP(t, a, b)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)
	raw := a.sign(t, with(claimsAt(issA, clk.Now()), "exp", clk.Now().Add(24*time.Hour).Unix()), nil)
	tok := verifyOK(t, v, raw)

	for i, body := range [][]byte{jwksBody(t, a, b), jwksBody(t, b, a)} {
		idp.respond(http.StatusOK, body)
		clk.Advance(DefaultUnknownKIDCooldown)
		verifyFails(t, v, a.as(fmt.Sprint("unknown-", i), "ES256").sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
		if again := verifyOK(t, v, raw); again != tok {
			t.Fatalf("fetch %d of the same keys voided the cached verification", i+1)
		}
	}
	wantRequests(t, idp, 3)
}

func TestIdPOutageKeepsCachedKeysVerifying(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		down func(*testIdP)
	}{
		{"server error", func(p *testIdP) { p.respond(http.StatusServiceUnavailable, []byte("maintenance")) }},
		{"server gone", func(p *testIdP) { p.srv.Close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk, logs := newTestClock(), &logSink{}
			key := newSigningKey("k1", "ES256", testKeys().p256a)
			idp := newIdP(t, key)
			v := singleIssuer(t, idp, clk, logs, nil)
			waitReady(t, v)
			tc.down(idp)

			clk.Advance(6 * time.Hour)
			// An unknown kid makes the verifier try the IdP, which fails.
			verifyFails(t, v, key.as("k2", "ES256").sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
			if logs.count("jwks fetch failed") != 1 {
				t.Errorf("want one logged fetch failure, logs:\n%s", logs)
			}
			verifyOK(t, v, key.sign(t, claimsAt(issA, clk.Now()), nil))
			if ok, reason := v.Ready(); !ok {
				t.Errorf("Ready() = false (%s) during an outage shorter than max_stale", reason)
			}
		})
	}
}

func TestKeysOlderThanMaxStaleFailClosed(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	const maxStale = 2 * time.Hour
	v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.MaxStale = maxStale })
	waitReady(t, v)
	longLived := with(claimsAt(issA, clk.Now()), "exp", clk.Now().Add(48*time.Hour).Unix())
	cached := key.sign(t, longLived, nil)
	verifyOK(t, v, cached)

	idp.respond(http.StatusBadGateway, nil)
	clk.Advance(maxStale)
	verifyOK(t, v, cached)
	verifyOK(t, v, key.sign(t, claimsAt(issA, clk.Now()), nil))

	clk.Advance(time.Second)
	err := verifyFails(t, v, cached, ErrKeysUnavailable)
	if Reason(err) != "keys_unavailable" {
		t.Errorf("Reason = %q", Reason(err))
	}
	verifyFails(t, v, key.sign(t, claimsAt(issA, clk.Now()), nil), ErrKeysUnavailable)
	ok, reason := v.Ready()
	if ok || !strings.Contains(reason, issA) || !strings.Contains(reason, "max_stale") {
		t.Errorf("Ready() = %v, %q; want not ready, naming %s and max_stale", ok, reason, issA)
	}

	// The IdP recovers: the next request after the cooldown fetches and verification resumes.
	idp.serve(t, key)
	clk.Advance(DefaultUnknownKIDCooldown)
	verifyOK(t, v, cached)
	if ok, reason := v.Ready(); !ok {
		t.Errorf("Ready() = false after recovery: %s", reason)
	}
}

func TestBadJWKSResponsesKeepTheOldKeys(t *testing.T) {
	t.Parallel()
	k := testKeys()
	oldKey := newSigningKey("old", "ES256", k.p256a)
	newKey := newSigningKey("new", "ES256", k.p256b)
	tests := []struct {
		name   string
		status int
		body   func(t *testing.T) []byte
		limit  int64 // max_jwks_bytes
		logged string
	}{
		{name: "server error", status: http.StatusInternalServerError,
			body: func(*testing.T) []byte { return nil }, logged: "status 500"},
		{name: "not found", status: http.StatusNotFound,
			body: func(*testing.T) []byte { return []byte("{}") }, logged: "status 404"},
		{name: "HTML instead of JSON", status: http.StatusOK,
			body: func(*testing.T) []byte { return []byte("<html>login</html>") }, logged: "not a JWK Set"},
		{name: "truncated JSON", status: http.StatusOK, body: func(t *testing.T) []byte {
			b := jwksBody(t, newKey)
			return b[:len(b)/2]
		}, logged: "not a JWK Set"},
		{name: "empty key set", status: http.StatusOK,
			body: func(*testing.T) []byte { return []byte(`{"keys":[]}`) }, logged: "no usable signature key"},
		{name: "object without keys", status: http.StatusOK,
			body: func(*testing.T) []byte { return []byte(`{}`) }, logged: "no usable signature key"},
		{name: "only unusable keys", status: http.StatusOK, body: func(t *testing.T) []byte {
			return []byte(fmt.Sprintf(`{"keys":[{"kty":"oct","kid":"new","k":"c2VjcmV0"},%s]}`,
				mustJSON(t, newSigningKey("new", "RS256", k.rsa1024).jwk(t))))
		}, logged: "RSA key of 1024 bits is below the minimum of 2048"},
		{name: "streamed body larger than max_jwks_bytes", status: http.StatusOK, limit: 4096,
			body: func(t *testing.T) []byte {
				return append(jwksBody(t, oldKey, newKey), strings.Repeat(" ", 4096)...)
			}, logged: "body exceeds max_jwks_bytes 4096"},
		{name: "declared Content-Length larger than max_jwks_bytes", status: http.StatusOK, limit: 1024,
			body: func(t *testing.T) []byte {
				// Small enough for net/http to send a Content-Length instead of chunks.
				b := jwksBody(t, oldKey, newKey)
				return append(b, strings.Repeat(" ", 1900-len(b))...)
			}, logged: "body of 1900 bytes exceeds max_jwks_bytes 1024"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk, logs := newTestClock(), &logSink{}
			idp := newIdP(t, oldKey)
			v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.MaxJWKSBytes = tc.limit })
			waitReady(t, v)

			idp.respond(tc.status, tc.body(t))
			clk.Advance(DefaultUnknownKIDCooldown)
			verifyFails(t, v, newKey.sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
			wantRequests(t, idp, 2)
			if !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("logs do not mention %q:\n%s", tc.logged, logs)
			}
			verifyOK(t, v, oldKey.sign(t, claimsAt(issA, clk.Now()), nil))
			if ok, reason := v.Ready(); !ok {
				t.Errorf("Ready() = false (%s) after a bad response", reason)
			}
		})
	}
}

func TestUnknownKIDFloodFetchesOncePerCooldown(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)

	const n = 1000
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = key.as(fmt.Sprintf("flood-%04d", i), "ES256").sign(t, claimsAt(issA, clk.Now()), nil)
	}
	flood := func() (joined int) {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = v.Verify(context.Background(), tokens[i]) })
		}
		wg.Wait()
		for _, err := range errs {
			if !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("Verify error = %v, want ErrUnknownKey", err)
			}
			if strings.Contains(err.Error(), "freshly fetched") {
				joined++
			}
		}
		return joined
	}

	// Within the cooldown of the initial fetch: no fetch at all.
	if joined := flood(); joined != 0 {
		t.Errorf("%d requests saw a fetch within the cooldown", joined)
	}
	wantRequests(t, idp, 1)

	// After the cooldown: exactly one fetch, held open so that the flood piles up behind it.
	clk.Advance(DefaultUnknownKIDCooldown)
	release := idp.hold(t)
	done := make(chan int)
	go func() { done <- flood() }()
	polltest.Until(t, "the shared fetch reaches the IdP", func() bool { return idp.requests.Load() == 2 })
	release()
	if joined := <-done; joined == 0 {
		t.Error("no request waited for the shared fetch")
	}
	wantRequests(t, idp, 2)

	clk.Advance(DefaultUnknownKIDCooldown - time.Millisecond)
	flood()
	wantRequests(t, idp, 2)
}

func TestUnknownKIDWaitEndsAtTheRequestDeadline(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)
	clk.Advance(DefaultUnknownKIDCooldown)
	release := idp.hold(t)
	defer release()

	raw := key.as("k2", "ES256").sign(t, claimsAt(issA, clk.Now()), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := v.Verify(ctx, raw)
	if !errors.Is(err, ErrUnknownKey) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify error = %v, want ErrUnknownKey and context.DeadlineExceeded", err)
	}
	// The JWKS request is still held (fetch timeout 10s); the request gave up at its own deadline.
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Verify returned after %s", elapsed)
	}

	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := v.Verify(cancelled, raw); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a cancelled context = %v, want context.Canceled", err)
	}
	wantRequests(t, idp, 2)
}

func TestSuspiciousKIDsNeverCauseAFetch(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	v := singleIssuer(t, idp, clk, logs, nil)
	waitReady(t, v)
	clk.Advance(DefaultUnknownKIDCooldown)

	tests := []struct{ name, kid string }{
		{"kid of 257 bytes", strings.Repeat("a", 257)},
		{"kid of 4 KiB", strings.Repeat("b", 4096)},
		{"kid with NUL", "k\x001"},
		{"kid with newline", "k1\n"},
		{"kid with DEL", "k\x7f"},
		{"kid with a C1 control", "k\u0085"},
	}
	for _, tc := range tests {
		t.Run(tc.name+" is an unknown key without fetching", func(t *testing.T) {
			raw := key.as(tc.kid, "ES256").sign(t, claimsAt(issA, clk.Now()), nil)
			err := verifyFails(t, v, raw, ErrUnknownKey)
			if strings.Contains(err.Error(), tc.kid) {
				t.Errorf("error quotes the kid: %q", err)
			}
		})
	}
	wantRequests(t, idp, 1)
	// A kid of exactly 256 printable bytes is looked up (and fetched for) normally.
	verifyFails(t, v, key.as(strings.Repeat("c", 256), "ES256").sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
	wantRequests(t, idp, 2)
}

func TestInitialFetchIsRetriedWithBackoffUntilItSucceeds(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	idp.respond(http.StatusServiceUnavailable, nil)
	v := singleIssuer(t, idp, clk, logs, nil)

	polltest.Until(t, "three fetches failed", func() bool { return idp.requests.Load() >= 4 })
	if n := logs.count("jwks fetch failed"); n < 3 {
		t.Errorf("%d failures logged, want one per failed fetch:\n%s", n, logs)
	}
	ok, reason := v.Ready()
	if ok || !strings.Contains(reason, issA) || !strings.Contains(reason, "status 503") {
		t.Errorf("Ready() = %v, %q; want not ready, naming the issuer and the last error", ok, reason)
	}
	at := idp.arrivals()
	if first, third := at[1].Sub(at[0]), at[3].Sub(at[2]); third <= first {
		t.Errorf("retry gaps do not grow: first %s, third %s", first, third)
	}

	idp.serve(t, key)
	waitReady(t, v)
	verifyOK(t, v, key.sign(t, claimsAt(issA, clk.Now()), nil))
}

func TestBackoffGrowsExponentiallyWithinBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		failures int
		ceiling  time.Duration
		max      time.Duration
	}{
		{"first retry waits at most the base", 1, time.Hour, backoffBase},
		{"second retry waits at most twice the base", 2, time.Hour, 2 * backoffBase},
		{"fifth retry waits at most 16 times the base", 5, time.Hour, 16 * backoffBase},
		{"many failures are capped at the maximum", 40, time.Hour, backoffMax},
		{"the refresh interval caps the wait", 40, 5 * time.Second, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 100 {
				if d := backoff(tc.failures, tc.ceiling); d < tc.max/2 || d > tc.max {
					t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tc.failures, d, tc.max/2, tc.max)
				}
			}
		})
	}
}

func TestReadyNamesTheIssuerWithoutKeys(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idpA, idpB := newIdP(t, key), newIdP(t, key)
	release := idpB.hold(t)
	v := startVerifier(t, Config{
		Issuers: []Issuer{
			{Issuer: issA, JWKSURI: idpA.url(), Audiences: []string{"payments-api"}},
			{Issuer: issB, JWKSURI: idpB.url(), Audiences: []string{"payments-api"}},
		},
		Now:    clk.Now,
		Logger: logs.logger(),
	})
	polltest.Until(t, "issuer A has keys", func() bool { return v.issuers[issA].keys.snap.Load() != nil })
	ok, reason := v.Ready()
	if ok || !strings.Contains(reason, issB) || strings.Contains(reason, issA) {
		t.Errorf("Ready() = %v, %q; want not ready, naming only %s", ok, reason, issB)
	}
	release()
	waitReady(t, v)
	if _, reason := v.Ready(); reason != "" {
		t.Errorf("ready verifier gives reason %q", reason)
	}
}

func TestRequestWaitsForTheInitialFetch(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	release := idp.hold(t)
	v := singleIssuer(t, idp, clk, logs, nil)
	polltest.Until(t, "the initial fetch reaches the IdP", func() bool { return idp.requests.Load() == 1 })

	raw := key.sign(t, claimsAt(issA, clk.Now()), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := v.Verify(ctx, raw)
	if !errors.Is(err, ErrKeysUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify before any keys = %v, want ErrKeysUnavailable at the deadline", err)
	}
	done := make(chan error, 1)
	go func() { _, err := v.Verify(context.Background(), raw); done <- err }()
	release()
	if err := <-done; err != nil {
		t.Fatalf("Verify waiting for the initial fetch: %v", err)
	}
	wantRequests(t, idp, 1)
}

// TestCloseStopsEveryGoroutine is not parallel: it counts the goroutines of the whole process.
func TestCloseStopsEveryGoroutine(t *testing.T) {
	baseline := runtime.NumGoroutine()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	up, down, stuck := newIdP(t, key), newIdP(t, key), newIdP(t, key)
	down.respond(http.StatusInternalServerError, nil)
	release := stuck.hold(t)
	const issC = "https://idp-c.bank.example"
	v, err := NewVerifier(context.Background(), Config{
		Issuers: []Issuer{
			{Issuer: issA, JWKSURI: up.url(), Audiences: []string{"payments-api"}},
			{Issuer: issB, JWKSURI: down.url(), Audiences: []string{"payments-api"}},
			{Issuer: issC, JWKSURI: stuck.url(), Audiences: []string{"payments-api"}},
		},
		Now:    clk.Now,
		Logger: logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	polltest.Until(t, "every issuer was tried", func() bool {
		return v.issuers[issA].keys.snap.Load() != nil && down.requests.Load() >= 2 && stuck.requests.Load() == 1
	})
	verifyOK(t, v, key.sign(t, claimsAt(issA, clk.Now()), nil))
	waiting := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), key.sign(t, claimsAt(issC, clk.Now()), nil))
		waiting <- err
	}()

	closed := make(chan struct{})
	go func() { v.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while a JWKS request hung")
	}
	if err := <-waiting; !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("Verify waiting on a fetch cancelled by Close = %v, want ErrKeysUnavailable", err)
	}
	v.Close()

	// Cached keys still verify after Close, but nothing is fetched any more.
	clk.Advance(time.Hour)
	verifyOK(t, v, key.sign(t, claimsAt(issA, clk.Now()), nil))
	verifyFails(t, v, key.as("k2", "ES256").sign(t, claimsAt(issA, clk.Now()), nil), ErrUnknownKey)
	wantRequests(t, up, 1)

	release()
	for _, p := range []*testIdP{up, down, stuck} {
		p.srv.Close()
	}
	polltest.Until(t, fmt.Sprintf("goroutines return to the baseline of %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}

func TestCancellingTheConstructorContextStopsBackgroundWork(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	ctx, cancel := context.WithCancel(context.Background())
	v, err := NewVerifier(ctx, Config{
		Issuers: []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
		Now:     clk.Now,
		Logger:  logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, v)
	cancel()
	done := make(chan struct{})
	go func() { v.life.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("background goroutines still run after the constructor's context was cancelled")
	}
	v.Close()
}

func TestPeriodicRefreshPicksUpNewKeysWithoutRequests(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	k := testKeys()
	oldKey := newSigningKey("old", "ES256", k.p256a)
	newKey := newSigningKey("new", "EdDSA", k.ed1)
	idp := newIdP(t, oldKey)
	v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.RefreshInterval = 20 * time.Millisecond })
	waitReady(t, v)
	idp.serve(t, oldKey, newKey)
	polltest.Until(t, "two more scheduled fetches ran", func() bool { return idp.requests.Load() >= 3 })
	// The clock has not moved, so no request could have fetched (cooldown): only the schedule did.
	verifyOK(t, v, newKey.sign(t, claimsAt(issA, clk.Now()), nil))
}

func TestHungJWKSRequestIsAbandonedAfterFetchTimeout(t *testing.T) {
	t.Parallel()
	clk, logs := newTestClock(), &logSink{}
	key := newSigningKey("k1", "ES256", testKeys().p256a)
	idp := newIdP(t, key)
	idp.hold(t)
	v := singleIssuer(t, idp, clk, logs, func(c *Config) { c.FetchTimeout = 30 * time.Millisecond })
	polltest.Until(t, "the hung fetch is abandoned", func() bool { return logs.count("jwks fetch failed") >= 1 })
	if l := strings.ToLower(logs.String()); !strings.Contains(l, "deadline exceeded") && !strings.Contains(l, "timeout") {
		t.Errorf("the failure does not say it timed out:\n%s", logs)
	}
	if ok, _ := v.Ready(); ok {
		t.Error("ready without keys")
	}
}
