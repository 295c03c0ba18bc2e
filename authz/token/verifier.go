package token

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxKIDBytes bounds the kid header; longer kids, and kids with control characters, are never looked up
// or fetched for.
const maxKIDBytes = 256

// Verifier verifies JWTs against the key sets of its configured issuers. It is safe for concurrent use. It
// owns background goroutines that fetch and refresh the key sets; Close stops them.
type Verifier struct {
	issuers        map[string]*issuer
	order          []*issuer // configuration order, for Ready
	parser         *jwt.Parser
	algorithms     map[string]bool // union over issuers, for the parser and error classification
	maxTokenBytes  int
	cache          *verifyCache // nil when disabled
	hashBufs       sync.Pool    // *[]byte scratch space, so hashing a token for the cache does not allocate
	now            func() time.Time
	life           *lifecycle
	ownedTransport interface{ CloseIdleConnections() }
	closeOnce      sync.Once
	cacheHits      atomic.Uint64
	cacheMisses    atomic.Uint64
}

type issuer struct {
	name       string
	audiences  []string
	algorithms []string
	types      []string
	keys       *keySet
}

// NewVerifier validates cfg and returns a Verifier whose key sets are fetched in the background, one
// goroutine per issuer: at once (retried with exponential backoff until it succeeds), then every
// RefreshInterval. It does not wait for the first fetch; [Verifier.Ready] reports when every issuer has keys.
// The background work stops on Close or when ctx is cancelled.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("token config: %w", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	v := &Verifier{
		issuers:       make(map[string]*issuer, len(s.issuers)),
		algorithms:    make(map[string]bool),
		maxTokenBytes: s.maxTokenBytes,
		now:           s.now,
		life:          &lifecycle{ctx: lctx, cancel: cancel},
	}
	if s.ownedTransport != nil {
		v.ownedTransport = s.ownedTransport
	}
	v.hashBufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	if s.cacheSize > 0 {
		v.cache = newVerifyCache(s.cacheSize)
	}
	for _, is := range s.issuers {
		iss := &issuer{
			name:       is.issuer,
			audiences:  is.audiences,
			algorithms: is.algorithms,
			types:      is.types,
			keys:       newKeySet(is, s, v.life),
		}
		v.issuers[is.issuer] = iss
		v.order = append(v.order, iss)
		for _, alg := range is.algorithms {
			v.algorithms[alg] = true
		}
	}
	union := make([]string, 0, len(v.algorithms))
	for alg := range v.algorithms {
		union = append(union, alg)
	}
	slices.Sort(union)
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(union),
		jwt.WithJSONNumber(),
		jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(s.leeway),
		jwt.WithTimeFunc(s.now),
	)
	for _, iss := range v.order {
		v.life.goOwned(iss.keys.run)
	}
	return v, nil
}

// Close stops the background fetches and waits for their goroutines to return. Verify keeps working with the
// keys already fetched but never fetches again. Close is idempotent.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		v.life.close()
		if v.ownedTransport != nil {
			v.ownedTransport.CloseIdleConnections()
		}
	})
}

// Ready reports whether every issuer has a usable key set no older than MaxStale. When not, the reason names
// each issuer that is not ready and why.
func (v *Verifier) Ready() (bool, string) {
	now := v.now()
	var reasons []string
	for _, iss := range v.order {
		if r := iss.keys.notReady(now); r != "" {
			reasons = append(reasons, r)
		}
	}
	if len(reasons) > 0 {
		return false, strings.Join(reasons, "; ")
	}
	return true, ""
}

// CacheStats returns how many verifications the verification cache answered (hits) and how many it did not
// (misses) since NewVerifier. Tokens refused before the lookup (empty or too large) count as neither; both stay
// zero when the cache is disabled.
func (v *Verifier) CacheStats() (hits, misses uint64) {
	return v.cacheHits.Load(), v.cacheMisses.Load()
}

// KeySetAges returns, for each issuer that has keys, the time since its key set was last fetched
// successfully. Issuers still waiting for their first key set are absent.
func (v *Verifier) KeySetAges() map[string]time.Duration {
	now := v.now()
	ages := make(map[string]time.Duration, len(v.order))
	for _, iss := range v.order {
		if s := iss.keys.snap.Load(); s != nil {
			ages[iss.name] = now.Sub(s.fetchedAt)
		}
	}
	return ages
}

// Verify checks a compact JWS and returns its decoded header and claims. The token's iss claim selects the
// issuer; the signature must verify with that issuer's keys using one of its algorithms, exp is required,
// exp, nbf and iat are checked with the configured leeway, and aud must name one of the issuer's audiences.
//
// An unknown kid may trigger one key set fetch per issuer per UnknownKIDCooldown, shared by all requests that
// need it; Verify never waits for it past ctx. Successful verifications are cached by the token's SHA-256
// until exp or until the issuer's keys change; so, for a minute, are failures no retry can undo (a bad
// signature, an expired token, an audience not accepted), so that a client replaying a bad token costs one
// signature check. Every error wraps exactly one sentinel of this package.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > v.maxTokenBytes {
		return nil, fail(ErrTooLarge, "token of %d bytes exceeds max_token_bytes %d", len(raw), v.maxTokenBytes)
	}
	if raw == "" {
		return nil, fail(ErrMalformed, "empty token")
	}
	now := v.now()
	sum := v.digest(raw)
	if v.cache != nil {
		if tok := v.cache.get(&sum, now); tok != nil {
			v.cacheHits.Add(1)
			return tok, nil
		}
		if err := v.cache.getFailure(&sum, now); err != nil {
			v.cacheHits.Add(1)
			return nil, err
		}
		v.cacheMisses.Add(1)
	}
	tok, used, err := v.verify(ctx, raw)
	if err != nil {
		if v.cache != nil {
			v.cache.putFailure(&sum, err, used, now)
		}
		return nil, err
	}
	tok.Digest = sum
	if v.cache != nil && now.Before(tok.Expiry) {
		v.cache.put(&sum, &cacheEntry{tok: tok, keys: used.keys, generation: used.generation}, now)
	}
	return tok, nil
}

// digest returns the SHA-256 of raw, the cache key (the cache never holds the token itself) and Token.Digest.
func (v *Verifier) digest(raw string) [sha256.Size]byte {
	bp := v.hashBufs.Get().(*[]byte)
	b := append((*bp)[:0], raw...)
	sum := sha256.Sum256(b)
	*bp = b
	v.hashBufs.Put(bp)
	return sum
}

// keysUsed records which issuer and key generation verified a token, for the cache.
type keysUsed struct {
	keys       *keySet
	generation uint64
}

// keyError carries a classified failure out of the jwt Keyfunc, whose errors jwt wraps with its own.
type keyError struct{ err error }

func (e *keyError) Error() string { return e.err.Error() }

func (v *Verifier) verify(ctx context.Context, raw string) (*Token, keysUsed, error) {
	var (
		used   keysUsed
		iss    *issuer
		claims = jwt.MapClaims{}
	)
	t, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		var (
			key any
			err error
		)
		iss, key, used, err = v.key(ctx, t, claims)
		if err != nil {
			return nil, &keyError{err}
		}
		return key, nil
	})
	if err != nil {
		// used names the keys consulted, if any, for the failure cache.
		return nil, used, v.classify(t, err)
	}
	if err := checkAudience(claims, iss.audiences); err != nil {
		return nil, used, err
	}
	tok, err := newToken(iss.name, t.Header, claims)
	if err != nil {
		return nil, keysUsed{}, err
	}
	return tok, used, nil
}

// key selects the verification key for a parsed, not yet verified token: the issuer named by iss, an
// algorithm that issuer allows, an accepted typ, then the key by kid from that issuer's set only. Header
// parameters that carry or point to keys (jwk, jku, x5c, x5u) are never read.
func (v *Verifier) key(ctx context.Context, t *jwt.Token, claims jwt.MapClaims) (*issuer, any, keysUsed, error) {
	var none keysUsed
	name, ok := claims["iss"].(string)
	if !ok {
		if _, present := claims["iss"]; present {
			return nil, nil, none, fail(ErrMalformed, "iss claim is not a string")
		}
		return nil, nil, none, fail(ErrUnknownIssuer, "token has no iss claim")
	}
	iss := v.issuers[name]
	if iss == nil {
		return nil, nil, none, fail(ErrUnknownIssuer, "issuer %s is not configured", quote(name))
	}
	alg := t.Method.Alg()
	if !slices.Contains(iss.algorithms, alg) {
		return nil, nil, none, fail(ErrAlgorithm, "alg %s is not allowed for issuer %s", quoteAlg(alg), quote(name))
	}
	if len(iss.types) > 0 {
		typ, _ := t.Header["typ"].(string)
		if typ == "" || !slices.Contains(iss.types, normaliseType(typ)) {
			return nil, nil, none, fail(ErrType, "typ header %s is not accepted for issuer %s", quote(typ), quote(name))
		}
	}
	// RFC 7515 §4.1.11: a recipient must reject a token whose critical extensions it does not understand,
	// and this package understands none.
	if _, present := t.Header["crit"]; present {
		return nil, nil, none, fail(ErrMalformed, "crit header names extensions this verifier does not support")
	}
	if err := checkClaimTypes(claims); err != nil {
		return nil, nil, none, err
	}
	kid, hasKID, err := headerKID(t.Header)
	if err != nil {
		return nil, nil, none, err
	}

	snap, err := iss.keys.usable(ctx)
	if err != nil {
		return nil, nil, none, err
	}
	if !hasKID {
		keys := snap.keysFor(alg)
		if len(keys) == 0 {
			return nil, nil, none, fail(ErrUnknownKey, "token has no kid and issuer %s has no key for alg %s", quote(name), quoteAlg(alg))
		}
		return iss, jwt.VerificationKeySet{Keys: keys}, keysUsed{iss.keys, snap.generation}, nil
	}
	if _, known := snap.kids[kid]; !known {
		ferr := iss.keys.refreshForRequest(ctx)
		if s := iss.keys.snap.Load(); s != nil {
			snap = s
		}
		if _, known = snap.kids[kid]; !known {
			if ferr != nil {
				return nil, nil, none, fmt.Errorf("%w: kid %s is not in the key set of issuer %s: %w",
					ErrUnknownKey, quote(kid), quote(name), ferr)
			}
			return nil, nil, none, fail(ErrUnknownKey, "kid %s is not in the freshly fetched key set of issuer %s", quote(kid), quote(name))
		}
	}
	key, err := snap.lookup(t)
	if err != nil {
		// The kid is known, so keyfunc failed on the JWK's alg, which differs from the token's.
		return nil, nil, none, fail(ErrAlgorithm, "key %s of issuer %s is published for another alg than %s", quote(kid), quote(name), quoteAlg(alg))
	}
	if !keyFits(alg, key) {
		return nil, nil, none, fail(ErrAlgorithm, "key %s of issuer %s cannot verify alg %s", quote(kid), quote(name), quoteAlg(alg))
	}
	return iss, key, keysUsed{iss.keys, snap.generation}, nil
}

// headerKID returns the kid header. A kid that is too long or holds control characters is an unknown key
// at once, so that forged kids cannot make the verifier fetch.
func headerKID(h map[string]any) (string, bool, error) {
	v, present := h["kid"]
	if !present {
		return "", false, nil
	}
	kid, ok := v.(string)
	if !ok {
		return "", false, fail(ErrMalformed, "kid header is not a string")
	}
	if kid == "" {
		return "", false, nil
	}
	if len(kid) > maxKIDBytes {
		return "", false, fail(ErrUnknownKey, "kid of %d bytes is longer than %d", len(kid), maxKIDBytes)
	}
	for _, r := range kid {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", false, fail(ErrUnknownKey, "kid contains control characters")
		}
	}
	return kid, true, nil
}

// classify maps a jwt parse error to this package's sentinels.
func (v *Verifier) classify(t *jwt.Token, err error) error {
	if ke, ok := errors.AsType[*keyError](err); ok {
		return ke.err
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fail(ErrMalformed, "%s", strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": "))
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// Raised before the Keyfunc runs: alg missing, or not a registered signing method.
		alg, ok := headerAlg(t)
		if !ok {
			return fail(ErrMalformed, "alg header is missing or not a string")
		}
		return fail(ErrAlgorithm, "alg %s is not supported", quoteAlg(alg))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// jwt reports an alg outside WithValidMethods with this error too.
		if alg, ok := headerAlg(t); ok && !v.algorithms[alg] {
			return fail(ErrAlgorithm, "alg %s is not allowed", quoteAlg(alg))
		}
		return fail(ErrSignature, "signature does not verify with the issuer's key")
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		switch {
		case errors.Is(err, jwt.ErrInvalidType):
			return fail(ErrMalformed, "a time claim has the wrong type")
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			return fail(ErrMissingExpiry, "token has no exp claim")
		case errors.Is(err, jwt.ErrTokenExpired):
			return fail(ErrExpired, "exp is in the past")
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return fail(ErrNotYetValid, "nbf is in the future")
		case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			return fail(ErrIssuedInFuture, "iat is in the future")
		}
	}
	return fail(ErrMalformed, "token rejected by the JWT parser")
}

func headerAlg(t *jwt.Token) (string, bool) {
	if t == nil {
		return "", false
	}
	alg, ok := t.Header["alg"].(string)
	return alg, ok
}
