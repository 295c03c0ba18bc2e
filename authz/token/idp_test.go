package token

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/finauthz/authz/authz/internal/clocktest"
	"github.com/finauthz/authz/authz/internal/polltest"
)

// keyPool holds keys generated once per test binary: RSA generation is slow, above all under -race.
type keyPool struct {
	rsa1, rsa2, rsa3 *rsa.PrivateKey
	rsa1024          *rsa.PrivateKey
	p256a, p256b     *ecdsa.PrivateKey
	p384, p521       *ecdsa.PrivateKey
	ed1, ed2         ed25519.PrivateKey
}

var testKeys = sync.OnceValue(func() keyPool {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	genRSA := func(bits int) *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		must(err)
		return k
	}
	genEC := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		must(err)
		return k
	}
	genEd := func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		must(err)
		return k
	}
	return keyPool{
		rsa1: genRSA(2048), rsa2: genRSA(2048), rsa3: genRSA(2048), rsa1024: genRSA(1024),
		p256a: genEC(elliptic.P256()), p256b: genEC(elliptic.P256()),
		p384: genEC(elliptic.P384()), p521: genEC(elliptic.P521()),
		ed1: genEd(), ed2: genEd(),
	}
})

// signingKey is a private key, the alg it signs with and how its public half is published.
type signingKey struct {
	kid    string
	alg    string // JWS alg of the tokens it signs
	jwkAlg string // alg published in the JWK; "" publishes none
	priv   crypto.Signer
}

func newSigningKey(kid, alg string, priv crypto.Signer) signingKey {
	return signingKey{kid: kid, alg: alg, jwkAlg: alg, priv: priv}
}

// withoutJWKAlg publishes the key with no alg member.
func (k signingKey) withoutJWKAlg() signingKey { k.jwkAlg = ""; return k }

// as returns the same key material under another kid or alg.
func (k signingKey) as(kid, alg string) signingKey { k.kid, k.alg = kid, alg; return k }

func (k signingKey) jwk(t testing.TB) jwkset.JWKMarshal {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.ALG(k.jwkAlg), USE: jwkset.UseSig},
	})
	if err != nil {
		t.Fatalf("jwk for %s: %v", k.kid, err)
	}
	m := j.Marshal()
	if k.jwkAlg == "" {
		m.ALG = ""
	}
	return m
}

// sign signs claims with the key. Header entries are added to the JOSE header; a nil value removes one.
func (k signingKey) sign(t testing.TB, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	m := jwt.GetSigningMethod(k.alg)
	if m == nil {
		t.Fatalf("no signing method %s", k.alg)
	}
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = k.kid
	for name, v := range header {
		if v == nil {
			delete(tok.Header, name)
		} else {
			tok.Header[name] = v
		}
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatalf("sign with %s: %v", k.kid, err)
	}
	return s
}

func jwksBody(t testing.TB, keys ...signingKey) []byte {
	t.Helper()
	doc := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		doc.Keys = append(doc.Keys, k.jwk(t))
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unsignedToken assembles a compact JWS from a header, claims and a raw signature segment.
func unsignedToken(t testing.TB, header map[string]any, claims jwt.MapClaims, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "." + sig
}

// testIdP is a JWKS endpoint on a real HTTP server whose answers a test can change.
type testIdP struct {
	srv      *httptest.Server
	requests atomic.Int64

	mu     sync.Mutex
	status int
	body   []byte
	gate   chan struct{} // while non-nil, requests wait for it to close
	times  []time.Time   // arrival of each request
}

func newIdP(t testing.TB, keys ...signingKey) *testIdP {
	return startIdP(t, false, keys...)
}

func newTLSIdP(t testing.TB, keys ...signingKey) *testIdP {
	return startIdP(t, true, keys...)
}

func startIdP(t testing.TB, useTLS bool, keys ...signingKey) *testIdP {
	t.Helper()
	p := &testIdP{status: http.StatusOK, body: jwksBody(t, keys...)}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serveHTTP))
	// Handshake failures are what some tests provoke.
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testIdP) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.mu.Lock()
	p.times = append(p.times, time.Now())
	gate, status, body := p.gate, p.status, p.body
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		p.mu.Lock()
		status, body = p.status, p.body
		p.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (p *testIdP) arrivals() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.times...)
}

func (p *testIdP) url() string { return p.srv.URL + "/.well-known/jwks.json" }

func (p *testIdP) serve(t testing.TB, keys ...signingKey) {
	p.respond(http.StatusOK, jwksBody(t, keys...))
}

func (p *testIdP) respond(status int, body []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.body = status, body
}

// hold makes requests wait until the returned release is called (also called at cleanup).
func (p *testIdP) hold(t testing.TB) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gate := make(chan struct{})
	p.gate = gate
	var once sync.Once
	release = func() {
		once.Do(func() {
			p.mu.Lock()
			p.gate = nil
			p.mu.Unlock()
			close(gate)
		})
	}
	t.Cleanup(release)
	return release
}

// newTestClock is the verifier's Config.Now, moved by hand.
func newTestClock() *clocktest.Clock {
	return clocktest.New(time.Date(2031, 3, 14, 9, 26, 53, 0, time.UTC))
}

// logSink collects log output for assertions.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (s *logSink) count(substr string) int {
	return strings.Count(s.String(), substr)
}

// claimsAt returns valid claims for issuer iss at now.
func claimsAt(iss string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": iss,
		"sub": "alice",
		"aud": "payments-api",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		name := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, name)
		} else {
			out[name] = kv[i+1]
		}
	}
	return out
}

// startVerifier builds a verifier that the test closes at cleanup.
func startVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// waitReady waits until every issuer has keys and no key set fetch is in flight. Keys are published a moment
// before their fetch is marked finished, and a test that acts in that moment (an unknown kid, an outage) would
// join the finished fetch instead of starting the one it means to observe.
func waitReady(t testing.TB, v *Verifier) {
	t.Helper()
	polltest.Until(t, "the verifier is ready with no fetch in flight", func() bool {
		if ok, _ := v.Ready(); !ok {
			return false
		}
		for _, iss := range v.order {
			iss.keys.mu.Lock()
			busy := iss.keys.inflight != nil
			iss.keys.mu.Unlock()
			if busy {
				return false
			}
		}
		return true
	})
}

var sentinels = []error{
	ErrMalformed, ErrTooLarge, ErrUnknownIssuer, ErrUnknownKey, ErrAlgorithm, ErrSignature, ErrExpired,
	ErrNotYetValid, ErrIssuedInFuture, ErrMissingExpiry, ErrAudience, ErrType, ErrKeysUnavailable,
}

// checkFailure asserts that err wraps want and no other sentinel, maps to reason, and does not quote the
// token.
func checkFailure(t testing.TB, err error, raw string, want error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify succeeded, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %q does not wrap %v", err, want)
	}
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("error %q wraps %d sentinels, want exactly 1", err, n)
	}
	if got := Reason(err); got != reason {
		t.Errorf("Reason = %q, want %q", got, reason)
	}
	leaksToken(t, err.Error(), raw)
}

// leaksToken fails if text contains the token or a sizeable piece of any of its segments.
func leaksToken(t testing.TB, text, raw string) {
	t.Helper()
	if len(raw) >= 8 && strings.Contains(text, raw) {
		t.Errorf("text contains the raw token: %q", text)
	}
	for _, seg := range strings.Split(raw, ".") {
		if len(seg) >= 16 && strings.Contains(text, seg[:16]) {
			t.Errorf("text contains a token segment: %q", text)
		}
	}
}
