package token

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/finauthz/authz/authz/internal/clocktest"
	"github.com/finauthz/authz/authz/internal/polltest"
)

const (
	issA = "https://idp-a.bank.example"
	issB = "https://idp-b.bank.example/realms/retail"
)

// fixture is a verifier trusting two issuers, each with its own JWKS server.
type fixture struct {
	clk        *clocktest.Clock
	logs       *logSink
	idpA, idpB *testIdP
	v          *Verifier

	aRS, aRSNoAlg, aPS, aES, aECNoAlg, aES384, aES512, aEd signingKey
	bES                                                    signingKey
}

func newFixture(t testing.TB, mutate func(*Config)) *fixture {
	t.Helper()
	k := testKeys()
	f := &fixture{
		clk:      newTestClock(),
		logs:     &logSink{},
		aRS:      newSigningKey("a-rs", "RS256", k.rsa1),
		aRSNoAlg: newSigningKey("a-rs-noalg", "RS384", k.rsa1).withoutJWKAlg(),
		aPS:      newSigningKey("a-ps", "PS256", k.rsa2),
		aES:      newSigningKey("a-es", "ES256", k.p256a),
		aECNoAlg: newSigningKey("a-ec-noalg", "ES256", k.p256a).withoutJWKAlg(),
		aES384:   newSigningKey("a-es384", "ES384", k.p384),
		aES512:   newSigningKey("a-es512", "ES512", k.p521),
		aEd:      newSigningKey("a-ed", "EdDSA", k.ed1),
		bES:      newSigningKey("b-es", "ES256", k.p256b),
	}
	f.idpA = newIdP(t, f.aRS, f.aRSNoAlg, f.aPS, f.aES, f.aECNoAlg, f.aES384, f.aES512, f.aEd)
	f.idpB = newIdP(t, f.bES)
	cfg := Config{
		Issuers: []Issuer{
			{Issuer: issA, JWKSURI: f.idpA.url(), Audiences: []string{"payments-api"}},
			{Issuer: issB, JWKSURI: f.idpB.url(), Audiences: []string{"payments-api", "ledger"},
				Algorithms: []string{"ES256"}, Types: []string{"at+jwt"}},
		},
		Now:    f.clk.Now,
		Logger: f.logs.logger(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	f.v = startVerifier(t, cfg)
	waitReady(t, f.v)
	return f
}

func (f *fixture) claims(iss string) jwt.MapClaims { return claimsAt(iss, f.clk.Now()) }

func TestVerifyAcceptsEveryAsymmetricAlgorithm(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	tests := []struct {
		name string
		key  signingKey
	}{
		{"RS256 with a JWK published for RS256", f.aRS},
		{"RS384 with an RSA JWK without alg", f.aRSNoAlg.as("a-rs-noalg", "RS384")},
		{"RS512 with an RSA JWK without alg", f.aRSNoAlg.as("a-rs-noalg", "RS512")},
		{"PS256 with a JWK published for PS256", f.aPS},
		{"PS384 with an RSA JWK without alg", f.aRSNoAlg.as("a-rs-noalg", "PS384")},
		{"PS512 with an RSA JWK without alg", f.aRSNoAlg.as("a-rs-noalg", "PS512")},
		{"ES256 with a P-256 JWK", f.aES},
		{"ES256 with a P-256 JWK without alg", f.aECNoAlg},
		{"ES384 with a P-384 JWK", f.aES384},
		{"ES512 with a P-521 JWK", f.aES512},
		{"EdDSA with an Ed25519 JWK", f.aEd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := tc.key.sign(t, f.claims(issA), nil)
			tok, err := f.v.Verify(context.Background(), raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tok.Issuer != issA || tok.Subject != "alice" {
				t.Errorf("issuer, subject = %q, %q", tok.Issuer, tok.Subject)
			}
			if want := f.clk.Now().Add(time.Hour); !tok.Expiry.Equal(want) {
				t.Errorf("Expiry = %v, want %v", tok.Expiry, want)
			}
			for name, want := range map[string]string{"alg": tc.key.alg, "kid": tc.key.kid} {
				got, err := tok.Value().Find(ast.Ref{ast.StringTerm("header"), ast.StringTerm(name)})
				if err != nil || got.Compare(ast.String(want)) != 0 {
					t.Errorf("header %s = %v (%v), want %q", name, got, err, want)
				}
			}
		})
	}
}

func TestVerifyAcceptsWithinTheRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	now := f.clk.Now()
	leeway := DefaultLeeway - time.Second
	tests := []struct {
		name string
		raw  func() string
	}{
		{"exp just past but within leeway is accepted", func() string {
			return f.aES.sign(t, with(f.claims(issA), "exp", now.Add(-leeway).Unix(), "iat", now.Add(-time.Hour).Unix(), "nbf", nil), nil)
		}},
		{"nbf in the future within leeway is accepted", func() string {
			return f.aES.sign(t, with(f.claims(issA), "nbf", now.Add(leeway).Unix()), nil)
		}},
		{"iat in the future within leeway is accepted", func() string {
			return f.aES.sign(t, with(f.claims(issA), "iat", now.Add(leeway).Unix()), nil)
		}},
		{"nbf and iat may be absent", func() string {
			return f.aES.sign(t, with(f.claims(issA), "nbf", nil, "iat", nil), nil)
		}},
		{"aud array naming an accepted audience is accepted", func() string {
			return f.aES.sign(t, with(f.claims(issA), "aud", []string{"other", "payments-api"}), nil)
		}},
		{"second audience of an issuer is accepted", func() string {
			return f.bES.sign(t, with(f.claims(issB), "aud", "ledger"), map[string]any{"typ": "at+jwt"})
		}},
		{"typ at+jwt is accepted", func() string {
			return f.bES.sign(t, f.claims(issB), map[string]any{"typ": "at+jwt"})
		}},
		{"typ application/at+jwt is accepted as at+jwt", func() string {
			return f.bES.sign(t, f.claims(issB), map[string]any{"typ": "application/at+jwt"})
		}},
		{"typ is compared case-insensitively", func() string {
			return f.bES.sign(t, f.claims(issB), map[string]any{"typ": "AT+JWT"})
		}},
		{"token without kid is verified by a fitting key of its issuer", func() string {
			return f.aEd.sign(t, f.claims(issA), map[string]any{"kid": nil})
		}},
		{"typ is not required when the issuer lists no types", func() string {
			return f.aES.sign(t, f.claims(issA), map[string]any{"typ": nil})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.v.Verify(context.Background(), tc.raw()); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	now := f.clk.Now()
	beyond := DefaultLeeway + time.Second
	a := f.claims(issA)
	enc := base64.RawURLEncoding.EncodeToString
	valid := f.aES.sign(t, a, nil)
	parts := strings.Split(valid, ".")
	k := testKeys()

	tests := []struct {
		name   string
		raw    func() string
		want   error
		reason string
	}{
		{"token longer than max_token_bytes is too large", func() string {
			return strings.Repeat("a", DefaultMaxTokenBytes+1)
		}, ErrTooLarge, "token_too_large"},
		{"empty token is malformed", func() string { return "" }, ErrMalformed, "token_malformed"},
		{"two segments are malformed", func() string { return parts[0] + "." + parts[1] }, ErrMalformed, "token_malformed"},
		{"five segments (JWE) are malformed", func() string { return valid + ".x.y" }, ErrMalformed, "token_malformed"},
		{"header that is not base64url is malformed", func() string {
			return "!!!." + parts[1] + "." + parts[2]
		}, ErrMalformed, "token_malformed"},
		{"base64 padding is malformed", func() string {
			return parts[0] + "=." + parts[1] + "." + parts[2]
		}, ErrMalformed, "token_malformed"},
		{"header that is not JSON is malformed", func() string {
			return enc([]byte("not json")) + "." + parts[1] + "." + parts[2]
		}, ErrMalformed, "token_malformed"},
		{"payload that is not a JSON object is malformed", func() string {
			return parts[0] + "." + enc([]byte(`["a"]`)) + "." + parts[2]
		}, ErrMalformed, "token_malformed"},
		{"header without alg is malformed", func() string {
			return unsignedToken(t, map[string]any{"kid": "a-es"}, a, parts[2])
		}, ErrMalformed, "token_malformed"},
		{"alg HS256 is not allowed", func() string {
			return unsignedToken(t, map[string]any{"alg": "HS256", "kid": "a-rs"}, a, "c2ln")
		}, ErrAlgorithm, "algorithm_not_allowed"},
		{"unregistered alg is not allowed", func() string {
			return unsignedToken(t, map[string]any{"alg": "XS256", "kid": "a-rs"}, a, "c2ln")
		}, ErrAlgorithm, "algorithm_not_allowed"},
		{"alg allowed for another issuer only is not allowed", func() string {
			return f.aRS.as("b-es", "RS256").sign(t, f.claims(issB), map[string]any{"typ": "at+jwt"})
		}, ErrAlgorithm, "algorithm_not_allowed"},
		{"alg differing from the alg of the JWK is not allowed", func() string {
			return f.aRS.as("a-rs", "PS256").sign(t, a, nil)
		}, ErrAlgorithm, "algorithm_not_allowed"},
		{"RSA alg with an EC key is not allowed", func() string {
			return f.aRS.as("a-ec-noalg", "RS256").sign(t, a, nil)
		}, ErrAlgorithm, "algorithm_not_allowed"},
		{"ES384 with a P-256 key is not allowed", func() string {
			return f.aES384.as("a-ec-noalg", "ES384").sign(t, a, nil)
		}, ErrAlgorithm, "algorithm_not_allowed"},
		{"signature that does not verify is rejected", func() string {
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil {
				t.Fatal(err)
			}
			sig[len(sig)/2] ^= 0x01
			return parts[0] + "." + parts[1] + "." + enc(sig)
		}, ErrSignature, "bad_signature"},
		{"payload changed after signing is rejected", func() string {
			return parts[0] + "." + enc(mustJSON(t, with(a, "sub", "mallory"))) + "." + parts[2]
		}, ErrSignature, "bad_signature"},
		{"token of issuer A signed with issuer B's key under A's kid is rejected", func() string {
			return f.bES.as("a-es", "ES256").sign(t, a, nil)
		}, ErrSignature, "bad_signature"},
		{"token of issuer A signed with issuer B's key and kid is an unknown key", func() string {
			return f.bES.sign(t, a, nil)
		}, ErrUnknownKey, "unknown_key"},
		{"token without kid signed by another issuer's key is rejected", func() string {
			return f.bES.sign(t, a, map[string]any{"kid": nil})
		}, ErrSignature, "bad_signature"},
		{"issuer that is not configured is unknown", func() string {
			return f.aES.sign(t, with(a, "iss", "https://evil.example"), nil)
		}, ErrUnknownIssuer, "unknown_issuer"},
		{"issuer differing only in a trailing slash is unknown", func() string {
			return f.aES.sign(t, with(a, "iss", issA+"/"), nil)
		}, ErrUnknownIssuer, "unknown_issuer"},
		{"token without iss is of unknown issuer", func() string {
			return f.aES.sign(t, with(a, "iss", nil), nil)
		}, ErrUnknownIssuer, "unknown_issuer"},
		{"iss that is not a string is malformed", func() string {
			return f.aES.sign(t, with(a, "iss", 42), nil)
		}, ErrMalformed, "token_malformed"},
		{"kid not in the key set is an unknown key", func() string {
			return f.aES.as("a-es-2099", "ES256").sign(t, a, nil)
		}, ErrUnknownKey, "unknown_key"},
		{"kid longer than 256 bytes is an unknown key", func() string {
			return f.aES.as(strings.Repeat("k", 257), "ES256").sign(t, a, nil)
		}, ErrUnknownKey, "unknown_key"},
		{"kid with a control character is an unknown key", func() string {
			return f.aES.as("a-es\n", "ES256").sign(t, a, nil)
		}, ErrUnknownKey, "unknown_key"},
		{"kid that is not a string is malformed", func() string {
			return f.aES.sign(t, a, map[string]any{"kid": 7})
		}, ErrMalformed, "token_malformed"},
		{"token without exp is rejected", func() string {
			return f.aES.sign(t, with(a, "exp", nil), nil)
		}, ErrMissingExpiry, "token_missing_exp"},
		{"exp beyond leeway in the past is expired", func() string {
			return f.aES.sign(t, with(a, "exp", now.Add(-beyond).Unix(), "iat", now.Add(-time.Hour).Unix(), "nbf", nil), nil)
		}, ErrExpired, "token_expired"},
		{"nbf beyond leeway in the future is not yet valid", func() string {
			return f.aES.sign(t, with(a, "nbf", now.Add(beyond).Unix()), nil)
		}, ErrNotYetValid, "token_not_yet_valid"},
		{"iat beyond leeway in the future is issued in the future", func() string {
			return f.aES.sign(t, with(a, "iat", now.Add(beyond).Unix(), "nbf", nil), nil)
		}, ErrIssuedInFuture, "token_issued_in_future"},
		{"exp as a string is malformed", func() string {
			return f.aES.sign(t, with(a, "exp", fmt.Sprint(now.Add(time.Hour).Unix())), nil)
		}, ErrMalformed, "token_malformed"},
		{"exp after year 9999 is malformed", func() string {
			return f.aES.sign(t, with(a, "exp", json.Number("1e400")), nil)
		}, ErrMalformed, "token_malformed"},
		{"negative nbf is malformed", func() string {
			return f.aES.sign(t, with(a, "nbf", -1), nil)
		}, ErrMalformed, "token_malformed"},
		{"token without aud is rejected", func() string {
			return f.aES.sign(t, with(a, "aud", nil), nil)
		}, ErrAudience, "audience_mismatch"},
		{"aud of another service is rejected", func() string {
			return f.aES.sign(t, with(a, "aud", "ledger"), nil)
		}, ErrAudience, "audience_mismatch"},
		{"audience accepted by another issuer only is rejected", func() string {
			return f.aES.sign(t, with(a, "aud", []string{"ledger", "cards"}), nil)
		}, ErrAudience, "audience_mismatch"},
		{"aud that is a number is malformed", func() string {
			return f.aES.sign(t, with(a, "aud", 1), nil)
		}, ErrMalformed, "token_malformed"},
		{"missing typ is rejected when the issuer lists types", func() string {
			return f.bES.sign(t, f.claims(issB), nil)
		}, ErrType, "token_type_not_allowed"},
		{"typ JWT is rejected when the issuer wants at+jwt", func() string {
			return f.bES.sign(t, f.claims(issB), map[string]any{"typ": "JWT"})
		}, ErrType, "token_type_not_allowed"},
		{"crit header is malformed", func() string {
			return f.aES.sign(t, a, map[string]any{"crit": []string{"b64"}, "b64": false})
		}, ErrMalformed, "token_malformed"},
		{"RSA key below 2048 bits never verifies", func() string {
			return newSigningKey("a-rs", "RS256", k.rsa1024).sign(t, a, nil)
		}, ErrSignature, "bad_signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := tc.raw()
			tok, err := f.v.Verify(context.Background(), raw)
			if tok != nil {
				t.Errorf("Verify returned a token along with %v", err)
			}
			checkFailure(t, err, raw, tc.want, tc.reason)
		})
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyRejectsAlgNoneInAnySpelling(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		for _, sig := range []string{"", "c2lnbmF0dXJl"} {
			t.Run(fmt.Sprintf("alg %s with signature %q is not allowed", alg, sig), func(t *testing.T) {
				raw := unsignedToken(t, map[string]any{"alg": alg, "typ": "JWT", "kid": "a-rs"}, f.claims(issA), sig)
				_, err := f.v.Verify(context.Background(), raw)
				checkFailure(t, err, raw, ErrAlgorithm, "algorithm_not_allowed")
			})
		}
	}
}

func TestVerifyRejectsHS256SignedWithThePublicKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	pub := &testKeys().rsa1.PublicKey
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []struct {
		name   string
		secret []byte
	}{
		{"PEM public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})},
		{"PKCS#1 PEM public key", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})},
		{"DER public key", pkix},
		{"JWK JSON", mustJSON(t, f.aRS.jwk(t))},
		{"modulus bytes", pub.N.Bytes()},
	}
	for _, s := range secrets {
		for _, alg := range []*jwt.SigningMethodHMAC{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
			t.Run(fmt.Sprintf("%s signed with the %s is not allowed", alg.Alg(), s.name), func(t *testing.T) {
				tok := jwt.NewWithClaims(alg, f.claims(issA))
				tok.Header["kid"] = f.aRS.kid
				raw, err := tok.SignedString(s.secret)
				if err != nil {
					t.Fatal(err)
				}
				_, err = f.v.Verify(context.Background(), raw)
				checkFailure(t, err, raw, ErrAlgorithm, "algorithm_not_allowed")
			})
		}
	}
}

func TestVerifyNeverUsesKeysCarriedByTheToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	attacker := newSigningKey("a-es", "ES256", testKeys().p256b)
	keyServer := newIdP(t, attacker)

	cert := selfSignedCert(t, attacker)
	tests := []struct {
		name   string
		header map[string]any
		want   error
	}{
		{"jwk header with the signer's key is ignored", map[string]any{"jwk": attacker.jwk(t)}, ErrSignature},
		{"jwk header without kid is ignored", map[string]any{"jwk": attacker.jwk(t), "kid": nil}, ErrSignature},
		{"jku header is never fetched", map[string]any{"jku": keyServer.url()}, ErrSignature},
		{"jku header with an unknown kid is never fetched", map[string]any{"jku": keyServer.url(), "kid": "attacker"}, ErrUnknownKey},
		{"x5u header is never fetched", map[string]any{"x5u": keyServer.url(), "kid": nil}, ErrSignature},
		{"x5c header certificate is ignored", map[string]any{"x5c": []string{base64.StdEncoding.EncodeToString(cert)}}, ErrSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := attacker.sign(t, f.claims(issA), tc.header)
			_, err := f.v.Verify(context.Background(), raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify error = %v, want %v", err, tc.want)
			}
		})
	}
	if n := keyServer.requests.Load(); n != 0 {
		t.Errorf("the URL named in jku/x5u got %d requests, want 0", n)
	}
}

func selfSignedCert(t testing.TB, k signingKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.priv.Public(), k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerifyKeepsLargeNumbersExact(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	const big = "123456789012345678901234567890"
	raw := f.aES.sign(t, with(f.claims(issA), "account", json.Number(big)), nil)
	tok, err := f.v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tok.Value().Find(ast.MustParseRef("x.payload.account")[1:])
	if err != nil {
		t.Fatal(err)
	}
	if want := ast.MustParseTerm(big).Value; got.Compare(want) != 0 {
		t.Errorf("value payload.account = %v, want %v", got, want)
	}
}

func TestTokenValueIsBuiltOnceWithHeaderAndPayload(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	raw := f.bES.sign(t, with(f.claims(issB), "scope", "payments:write", "amr", []string{"pwd", "otp"}),
		map[string]any{"typ": "at+jwt"})
	tok, err := f.v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	want := ast.MustParseTerm(fmt.Sprintf(`{
		"header": {"alg": "ES256", "kid": "b-es", "typ": "at+jwt"},
		"payload": {"iss": %q, "sub": "alice", "aud": "payments-api", "iat": %d, "nbf": %d, "exp": %d,
			"scope": "payments:write", "amr": ["pwd", "otp"]}
	}`, issB, f.clk.Now().Unix(), f.clk.Now().Unix(), f.clk.Now().Add(time.Hour).Unix())).Value
	if tok.Value().Compare(want) != 0 {
		t.Errorf("Value() = %v\nwant %v", tok.Value(), want)
	}
	if tok.Value() != tok.Value() {
		t.Error("Value() builds a new value on each call")
	}

	// Readers on many goroutines share the value: -race proves they do not write.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			again, err := f.v.Verify(context.Background(), raw)
			if err != nil {
				t.Error(err)
				return
			}
			_ = again.Value().String()
			_, _ = again.Value().Find(ast.MustParseRef("x.payload.amr")[1:])
		})
	}
	wg.Wait()
}

func TestErrorsNeverQuoteTheToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	a := f.claims(issA)
	secret := strings.Repeat("S3cr3tT0k3nM4t3r14l", 4)
	tokens := []string{
		f.aES.sign(t, with(a, "iss", secret), nil),
		f.aES.sign(t, with(a, "aud", secret), nil),
		f.aES.as(secret, "ES256").sign(t, a, nil),
		f.aES.sign(t, with(a, "exp", secret), nil),
		unsignedToken(t, map[string]any{"alg": secret}, a, "c2lnbmF0dXJl"),
		secret + "." + secret + "." + secret,
		secret,
	}
	for _, raw := range tokens {
		_, err := f.v.Verify(context.Background(), raw)
		if err == nil {
			t.Fatalf("Verify accepted %s", Fingerprint(raw))
		}
		leaksToken(t, err.Error(), raw)
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error quotes a whole token-controlled value: %q", err)
		}
	}
	leaksToken(t, f.logs.String(), strings.Join(tokens, "."))
}

func TestVerifyOverTLSWithTheServersClient(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	key := newSigningKey("tls-1", "ES256", testKeys().p256a)
	idp := newTLSIdP(t, key)
	v := startVerifier(t, Config{
		Issuers:    []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
		HTTPClient: idp.srv.Client(),
		Now:        clk.Now,
		Logger:     (&logSink{}).logger(),
	})
	waitReady(t, v)
	if _, err := v.Verify(context.Background(), key.sign(t, claimsAt(issA, clk.Now()), nil)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestDefaultClientVerifiesTLSCertificates(t *testing.T) {
	t.Parallel()
	key := newSigningKey("tls-1", "ES256", testKeys().p256a)
	idp := newTLSIdP(t, key)
	logs := &logSink{}
	v := startVerifier(t, Config{
		Issuers: []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
		Logger:  logs.logger(),
	})
	polltest.Until(t, "the fetch fails on the unknown certificate authority", func() bool {
		return strings.Contains(logs.String(), "certificate")
	})
	if ok, reason := v.Ready(); ok || !strings.Contains(reason, issA) {
		t.Errorf("Ready() = %v, %q; want not ready, naming %s", ok, reason, issA)
	}
	tr, ok := v.ownedTransport.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion < 0x0303 {
		t.Errorf("default transport does not require TLS 1.2 or later")
	}
}

func TestRedirectToPlainHTTPIsRefused(t *testing.T) {
	t.Parallel()
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://jwks.bank.example/keys", http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	logs := &logSink{}
	v := startVerifier(t, Config{
		Issuers:    []Issuer{{Issuer: issA, JWKSURI: redirector.URL + "/jwks", Audiences: []string{"payments-api"}}},
		HTTPClient: redirector.Client(),
		Logger:     logs.logger(),
	})
	polltest.Until(t, "the redirect is refused", func() bool {
		return strings.Contains(logs.String(), "refusing redirect")
	})
	if ok, _ := v.Ready(); ok {
		t.Error("verifier is ready although its only key source redirects to http")
	}
}

func TestReasonMapsEverySentinel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"no error has no reason", nil, ""},
		{"malformed", ErrMalformed, "token_malformed"},
		{"too large", ErrTooLarge, "token_too_large"},
		{"unknown issuer", ErrUnknownIssuer, "unknown_issuer"},
		{"unknown key", ErrUnknownKey, "unknown_key"},
		{"algorithm", ErrAlgorithm, "algorithm_not_allowed"},
		{"signature", ErrSignature, "bad_signature"},
		{"expired", ErrExpired, "token_expired"},
		{"not yet valid", ErrNotYetValid, "token_not_yet_valid"},
		{"issued in future", ErrIssuedInFuture, "token_issued_in_future"},
		{"missing exp", ErrMissingExpiry, "token_missing_exp"},
		{"audience", ErrAudience, "audience_mismatch"},
		{"type", ErrType, "token_type_not_allowed"},
		{"keys unavailable", ErrKeysUnavailable, "keys_unavailable"},
		{"wrapped sentinel keeps its reason", fmt.Errorf("check: %w", fail(ErrExpired, "exp is in the past")), "token_expired"},
		{"sentinel joined with a context error keeps its reason",
			fmt.Errorf("%w: refresh: %w", ErrUnknownKey, context.DeadlineExceeded), "unknown_key"},
		{"foreign error is an invalid token", errors.New("boom"), "invalid_token"},
		{"jwt's own error is an invalid token", jwt.ErrTokenExpired, "invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Reason(tc.err); got != tc.want {
				t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	clk := newTestClock()
	key := newSigningKey("fz", "ES256", testKeys().p256a)
	idp := newIdP(f, key)
	v := startVerifier(f, Config{
		Issuers: []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
		Now:     clk.Now,
		Logger:  (&logSink{}).logger(),
	})
	waitReady(f, v)
	good := key.sign(f, claimsAt(issA, clk.Now()), nil)
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := v.Verify(context.Background(), raw)
		if err != nil {
			if tok != nil {
				t.Fatal("token returned with an error")
			}
			if Reason(err) == "invalid_token" {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			leaksToken(t, err.Error(), raw)
			return
		}
		if tok.Issuer != issA || tok.Value() == nil {
			t.Fatalf("verified token is incomplete: %+v", tok)
		}
	})
}

// BenchmarkVerify measures one verification per algorithm, with the cache off (every call verifies the
// signature) and on (the service sees the same token on every call).
func BenchmarkVerify(b *testing.B) {
	k := testKeys()
	keys := []signingKey{
		newSigningKey("rs256", "RS256", k.rsa1),
		newSigningKey("ps256", "PS256", k.rsa2),
		newSigningKey("es256", "ES256", k.p256a),
		newSigningKey("es384", "ES384", k.p384),
		newSigningKey("eddsa", "EdDSA", k.ed1),
	}
	idp := newIdP(b, keys...)
	for _, mode := range []struct {
		name  string
		cache int
	}{{"fresh", -1}, {"cached", 0}} {
		clk := newTestClock()
		v := startVerifier(b, Config{
			Issuers:   []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
			CacheSize: mode.cache,
			Now:       clk.Now,
			Logger:    (&logSink{}).logger(),
		})
		waitReady(b, v)
		for _, key := range keys {
			raw := key.sign(b, with(claimsAt(issA, clk.Now()), "scope", "payments:read payments:write"), nil)
			b.Run(key.alg+"/"+mode.name, func(b *testing.B) {
				b.ReportAllocs()
				ctx := context.Background()
				for b.Loop() {
					if _, err := v.Verify(ctx, raw); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkVerifyCachedParallel(b *testing.B) {
	clk := newTestClock()
	key := newSigningKey("es256", "ES256", testKeys().p256a)
	idp := newIdP(b, key)
	v := startVerifier(b, Config{
		Issuers: []Issuer{{Issuer: issA, JWKSURI: idp.url(), Audiences: []string{"payments-api"}}},
		Now:     clk.Now,
		Logger:  (&logSink{}).logger(),
	})
	waitReady(b, v)
	tokens := make([]string, 64)
	for i := range tokens {
		tokens[i] = key.sign(b, with(claimsAt(issA, clk.Now()), "jti", fmt.Sprint(i)), nil)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := v.Verify(context.Background(), tokens[i%len(tokens)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func TestLeewayAndTokenLimitAreConfigurable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) {
		c.Leeway = time.Second
		c.MaxTokenBytes = 1024
	})
	now := f.clk.Now()
	past := with(f.claims(issA), "exp", now.Add(-2*time.Second).Unix(), "iat", now.Add(-time.Hour).Unix(), "nbf", nil)
	raw := f.aES.sign(t, past, nil)
	checkFailure(t, verifyErr(f.v, raw), raw, ErrExpired, "token_expired")

	big := f.aES.sign(t, with(f.claims(issA), "pad", strings.Repeat("p", 1024)), nil)
	checkFailure(t, verifyErr(f.v, big), big, ErrTooLarge, "token_too_large")
}

func TestVerifyReadsTheClientID(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	tests := []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"client_id (RFC 9068)", with(f.claims(issA), "client_id", "tpp-7", "azp", "other"), "tpp-7"},
		{"azp when there is no client_id", with(f.claims(issA), "azp", "tpp-8"), "tpp-8"},
		{"neither", f.claims(issA), ""},
		{"a client_id that is not a string falls back to azp", with(f.claims(issA), "client_id", 7, "azp", "tpp-9"), "tpp-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := f.v.Verify(context.Background(), f.aES.sign(t, tt.claims, nil))
			if err != nil {
				t.Fatal(err)
			}
			if tok.ClientID != tt.want {
				t.Errorf("ClientID = %q, want %q", tok.ClientID, tt.want)
			}
		})
	}
}
