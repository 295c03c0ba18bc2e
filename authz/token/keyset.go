package token

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff of the background fetch after failures: base, doubled per failure, capped at backoffMax and at
// the refresh interval, with equal jitter so that replicas do not hammer a recovering IdP in step.
const (
	backoffBase = 250 * time.Millisecond
	backoffMax  = 2 * time.Minute
)

var (
	errCooldown = errors.New("a key set fetch ran less than unknown_kid_cooldown ago")
	errClosed   = errors.New("verifier closed")
)

// keySnapshot is one published state of an issuer's keys. Snapshots are immutable and swapped atomically,
// so verification never locks.
type keySnapshot struct {
	*keyMaterial
	// generation changes when the usable keys change; cached verifications of an older generation are void.
	generation uint64
	bodyHash   [sha256.Size]byte
	fetchedAt  time.Time // last successful fetch, by Config.Now
}

// lifecycle owns the goroutines of a Verifier.
type lifecycle struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// goOwned runs f in a goroutine that Close waits for, unless the verifier is closed.
func (l *lifecycle) goOwned(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.ctx.Err() != nil {
		return false
	}
	l.wg.Go(f)
	return true
}

func (l *lifecycle) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
}

// flight is one JWKS fetch; everyone who needs a fetch while it runs waits for it instead of starting another.
// It does what singleflight.DoChan would, except that the fetch runs in a goroutine the verifier owns, so
// Close can wait for it, and that starting it and the cooldown bookkeeping share one lock.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
}

// keySet holds one issuer's keys and fetches them: on a schedule in the background, and on demand (bounded
// by the cooldown) when a request meets an unknown kid or finds the keys missing or too old.
type keySet struct {
	issuer   string
	uri      string
	logURI   string
	client   *http.Client
	maxBytes int64
	cooldown time.Duration
	maxStale time.Duration
	refresh  time.Duration
	timeout  time.Duration
	now      func() time.Time
	log      *slog.Logger
	onFetch  func(issuer string, err error)
	life     *lifecycle

	snap atomic.Pointer[keySnapshot]

	mu          sync.Mutex
	inflight    *flight
	lastAttempt time.Time // start of the last fetch, by Config.Now
	lastErr     error
	failures    int // consecutive failed fetches
}

func newKeySet(is issuerSettings, s settings, life *lifecycle) *keySet {
	return &keySet{
		issuer:   is.issuer,
		uri:      is.jwksURI.String(),
		logURI:   is.jwksURI.Redacted(),
		client:   s.httpClient,
		maxBytes: s.maxJWKSBytes,
		cooldown: s.unknownKIDCooldown,
		maxStale: s.maxStale,
		refresh:  s.refreshInterval,
		timeout:  s.fetchTimeout,
		now:      s.now,
		log:      s.logger.With(slog.String("issuer", is.issuer), slog.String("jwks_uri", is.jwksURI.Redacted())),
		onFetch:  s.onFetch,
		life:     life,
	}
}

// run fetches the key set at once, then every refresh interval; after a failure it retries with
// exponential backoff. It returns when the verifier closes.
func (ks *keySet) run() {
	ctx := ks.life.ctx
	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		ks.mu.Lock()
		f := ks.startLocked(ks.now())
		ks.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-f.done:
		}
		next := ks.refresh
		if f.err != nil {
			failures++
			next = backoff(failures, ks.refresh)
		} else {
			failures = 0
		}
		timer.Reset(next)
	}
}

func backoff(failures int, ceiling time.Duration) time.Duration {
	d := backoffBase << min(failures-1, 20)
	d = min(d, backoffMax, ceiling)
	return d/2 + rand.N(d/2+1)
}

// startLocked returns the fetch in flight, or starts one. ks.mu must be held.
func (ks *keySet) startLocked(now time.Time) *flight {
	if ks.inflight != nil {
		return ks.inflight
	}
	f := &flight{done: make(chan struct{})}
	if !ks.life.goOwned(func() { ks.fly(f) }) {
		f.err = errClosed
		close(f.done)
		return f
	}
	ks.inflight = f
	ks.lastAttempt = now
	return f
}

func (ks *keySet) fly(f *flight) {
	err := ks.fetch(ks.life.ctx)
	ks.mu.Lock()
	ks.inflight = nil
	ks.lastErr = err
	if err != nil {
		ks.failures++
	} else {
		ks.failures = 0
	}
	failures := ks.failures
	ks.mu.Unlock()

	if ks.onFetch != nil && ks.life.ctx.Err() == nil {
		ks.onFetch(ks.issuer, err)
	}
	if err != nil && ks.life.ctx.Err() == nil {
		attrs := []slog.Attr{slog.String("error", err.Error()), slog.Int("consecutive_failures", failures)}
		if s := ks.snap.Load(); s != nil {
			// The previous keys stay in use until max_stale.
			attrs = append(attrs, slog.Duration("keys_age", ks.now().Sub(s.fetchedAt)))
		}
		ks.log.LogAttrs(ks.life.ctx, slog.LevelWarn, "jwks fetch failed", attrs...)
	}
	f.err = err
	close(f.done)
}

// refreshForRequest waits for the fetch in flight, or starts one unless a fetch started within the
// cooldown, in which case it returns errCooldown at once. It never waits past ctx.
func (ks *keySet) refreshForRequest(ctx context.Context) error {
	now := ks.now()
	ks.mu.Lock()
	f := ks.inflight
	if f == nil {
		if !ks.lastAttempt.IsZero() && now.Sub(ks.lastAttempt) < ks.cooldown {
			ks.mu.Unlock()
			return errCooldown
		}
		f = ks.startLocked(now)
	}
	ks.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// usable returns the current keys if they are fresh enough. Otherwise it tries one shared fetch (bounded by
// the cooldown and ctx) and fails with ErrKeysUnavailable if the keys are still missing or too old.
func (ks *keySet) usable(ctx context.Context) (*keySnapshot, error) {
	if s := ks.snap.Load(); s != nil && !ks.stale(s, ks.now()) {
		return s, nil
	}
	ferr := ks.refreshForRequest(ctx)
	s := ks.snap.Load()
	if s != nil && !ks.stale(s, ks.now()) {
		return s, nil
	}
	if ferr == nil {
		ferr = errors.New("no usable keys after the fetch")
	}
	if s == nil {
		return nil, fmt.Errorf("%w: issuer %s has no key set yet: %w", ErrKeysUnavailable, quote(ks.issuer), ferr)
	}
	return nil, fmt.Errorf("%w: keys of issuer %s were last fetched %s ago, more than max_stale %s: %w",
		ErrKeysUnavailable, quote(ks.issuer), ks.now().Sub(s.fetchedAt).Round(time.Second), ks.maxStale, ferr)
}

func (ks *keySet) stale(s *keySnapshot, now time.Time) bool {
	return now.Sub(s.fetchedAt) > ks.maxStale
}

// current reports whether a verification made with the keys of generation gen still stands at now.
func (ks *keySet) current(gen uint64, now time.Time) bool {
	s := ks.snap.Load()
	return s != nil && s.generation == gen && !ks.stale(s, now)
}

// notReady explains why the issuer cannot verify tokens, or returns "".
func (ks *keySet) notReady(now time.Time) string {
	ks.mu.Lock()
	lastErr := ks.lastErr
	ks.mu.Unlock()
	suffix := ""
	if lastErr != nil {
		suffix = "; last fetch error: " + lastErr.Error()
	}
	s := ks.snap.Load()
	switch {
	case s == nil:
		return fmt.Sprintf("issuer %q: no usable key set fetched yet from %s%s", ks.issuer, ks.logURI, suffix)
	case ks.stale(s, now):
		return fmt.Sprintf("issuer %q: keys were last fetched %s ago, more than max_stale %s%s",
			ks.issuer, now.Sub(s.fetchedAt).Round(time.Second), ks.maxStale, suffix)
	}
	return ""
}

// fetch GETs the JWKS and publishes it if it has usable keys. On any error the previous keys stay.
func (ks *keySet) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ks.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.uri, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("unexpected HTTP status %d", resp.StatusCode)
	}
	if resp.ContentLength > ks.maxBytes {
		return fmt.Errorf("body of %d bytes exceeds max_jwks_bytes %d", resp.ContentLength, ks.maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, ks.maxBytes+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > ks.maxBytes {
		return fmt.Errorf("body exceeds max_jwks_bytes %d", ks.maxBytes)
	}
	return ks.install(ctx, body)
}

// install parses a JWKS body and publishes it. An unchanged body only renews the age of the current keys.
func (ks *keySet) install(ctx context.Context, body []byte) error {
	bodyHash := sha256.Sum256(body)
	prev := ks.snap.Load()
	if prev != nil && prev.bodyHash == bodyHash {
		next := *prev
		next.fetchedAt = ks.now()
		ks.snap.Store(&next)
		return nil
	}
	m, notes, err := parseJWKS(body)
	for _, n := range notes {
		ks.log.LogAttrs(ctx, slog.LevelWarn, "jwks key skipped or restricted",
			slog.String("kid", truncate(n.kid, 64)), slog.String("reason", n.reason))
	}
	if err != nil {
		return err
	}
	next := &keySnapshot{keyMaterial: m, generation: 1, bodyHash: bodyHash, fetchedAt: ks.now()}
	if prev != nil {
		next.generation = prev.generation
		if prev.fingerprint != m.fingerprint {
			next.generation++
		}
	}
	ks.snap.Store(next)
	if prev == nil || prev.generation != next.generation {
		ks.log.LogAttrs(ctx, slog.LevelInfo, "jwks loaded",
			slog.Int("keys", len(m.all)), slog.Uint64("generation", next.generation))
	}
	return nil
}
