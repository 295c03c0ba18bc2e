package service

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// signer is one key of a test identity provider.
type signer struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

func newSigner(t testing.TB, kid, alg string) signer {
	t.Helper()
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case "RS256", "PS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no test key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, method: jwt.GetSigningMethod(alg), priv: priv}
}

func (s signer) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, claims)
	tok.Header["kid"] = s.kid
	raw, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// idp is a real HTTP JWKS endpoint whose key set, availability and request count the test controls.
type idp struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu      sync.Mutex
	keys    []signer
	failing bool
}

func newIDP(t testing.TB, keys ...signer) *idp {
	p := &idp{keys: keys}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) serve(w http.ResponseWriter, r *http.Request) {
	p.hits.Add(1)
	p.mu.Lock()
	keys, failing := p.keys, p.failing
	p.mu.Unlock()
	if failing {
		http.Error(w, "identity provider unavailable", http.StatusServiceUnavailable)
		return
	}
	store := jwkset.NewMemoryStorage()
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.ALG(k.method.Alg()), USE: jwkset.UseSig},
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = store.KeyWrite(r.Context(), jwk)
	}
	b, err := store.JSONPublic(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (p *idp) set(failing bool, keys ...signer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failing = failing
	if keys != nil {
		p.keys = keys
	}
}

func (p *idp) jwksURI() string { return p.srv.URL + "/.well-known/jwks.json" }

// harness is a running service with a gRPC client.
type harness struct {
	auth   authv3.AuthorizationClient
	health healthpb.HealthClient
	cancel context.CancelFunc
	done   chan error
}

// startService runs the service configured by yaml with testdata/policy.rego copied beside it.
func startService(t testing.TB, yaml string) *harness {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("testdata", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return startServiceIn(t, yaml, dir, Options{})
}

// startServiceIn runs the service configured by yaml, relative paths resolved against dir, and connects a client.
func startServiceIn(t testing.TB, yaml, dir string, opts Options) *harness {
	t.Helper()
	return startObserved(t, yaml, dir, opts).harness
}

func (h *harness) stop(t testing.TB) {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("service did not stop within 10s of cancel")
	}
}

func (h *harness) status(t testing.TB) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := h.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetStatus()
}

func (h *harness) waitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.status(t) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("service not SERVING within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "api.bank.test", ":scheme": "https"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.1.2.3", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-1", Method: method, Path: path, Host: "api.bank.test", Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

func (h *harness) check(t testing.TB, method, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.auth.Check(ctx, checkRequest(method, path, headers))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func bearer(raw string) map[string]string { return map[string]string{"authorization": "Bearer " + raw} }

// outcome summarises a CheckResponse for assertions.
type outcome struct {
	code    codes.Code
	status  int
	headers map[string]string // OK: headers set upstream; denied: headers sent to the client
	removed []string
	reason  string
	body    string
}

func summarise(r *authv3.CheckResponse) outcome {
	o := outcome{code: codes.Code(r.GetStatus().GetCode()), headers: map[string]string{}}
	if ok := r.GetOkResponse(); ok != nil {
		o.status = 200
		for _, h := range ok.GetHeaders() {
			o.headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		o.removed = ok.GetHeadersToRemove()
	}
	if d := r.GetDeniedResponse(); d != nil {
		o.status = int(d.GetStatus().GetCode())
		for _, h := range d.GetHeaders() {
			o.headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		o.body = d.GetBody()
	}
	if f := r.GetDynamicMetadata().GetFields()["reason"]; f != nil {
		o.reason = f.GetStringValue()
	}
	return o
}

const issuerA, issuerB = "https://idp-a.bank.test", "https://idp-b.bank.test"

func serviceYAML(a, b *idp, cooldown string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
grace_period: 5s
policy:
  paths: [policy.rego]
jwt:
  unknown_kid_cooldown: %s
  issuers:
    - issuer: %s
      jwks_uri: %s
      audiences: [payments-api]
      algorithms: [RS256, ES256, EdDSA]
    - issuer: %s
      jwks_uri: %s
      audiences: [ledger-api]
`, cooldown, issuerA, a.jwksURI(), issuerB, b.jwksURI())
}

func claims(iss, aud, sub string, mutate ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": iss, "aud": aud, "sub": sub, "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func TestCheckVerifiesTokensAndEvaluatesPolicy(t *testing.T) {
	rsaKey, ecKey, edKey := newSigner(t, "rsa-1", "RS256"), newSigner(t, "ec-1", "ES256"), newSigner(t, "ed-1", "EdDSA")
	bKey := newSigner(t, "b-1", "RS256")
	a, b := newIDP(t, rsaKey, ecKey, edKey), newIDP(t, bKey)
	h := startService(t, serviceYAML(a, b, "1h"))
	h.waitServing(t)

	good := claims(issuerA, "payments-api", "alice")
	hs256 := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, good)
		tok.Header["kid"] = "rsa-1"
		raw, err := tok.SignedString([]byte("rsa public key used as a secret"))
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}()
	algNone := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, good)
		tok.Header["kid"] = "rsa-1"
		raw, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}()
	tamper := func(raw string) string { // change one character in the middle of the signature
		i := strings.LastIndexByte(raw, '.') + 10
		c := byte('A')
		if raw[i] == 'A' {
			c = 'B'
		}
		return raw[:i] + string(c) + raw[i+1:]
	}
	unknownKid := newSigner(t, "not-published", "RS256")

	tests := []struct {
		name       string
		method     string
		path       string
		headers    map[string]string
		wantStatus int
		wantReason string
		wantHeader map[string]string
	}{
		{"RS256 token is verified and reaches the policy", "GET", "/accounts/acc-1?q=a&q=b", bearer(rsaKey.sign(t, good)), 200, "",
			map[string]string{"x-subject": "alice", "x-alg": "RS256", "x-issuer": issuerA, "x-path": "accounts/acc-1", "x-method": "GET", "x-query-q": "a,b", "x-version": "v3"}},
		{"ES256 token is verified", "GET", "/x", bearer(ecKey.sign(t, good)), 200, "", map[string]string{"x-alg": "ES256"}},
		{"EdDSA token is verified", "GET", "/x", bearer(edKey.sign(t, good)), 200, "", map[string]string{"x-alg": "EdDSA"}},
		{"bearer scheme is case-insensitive", "GET", "/x", map[string]string{"authorization": "bEaReR " + rsaKey.sign(t, good)}, 200, "", nil},
		{"second issuer's token verifies against its own keys", "GET", "/x", bearer(bKey.sign(t, claims(issuerB, "ledger-api", "bob"))), 200, "", map[string]string{"x-subject": "bob"}},
		{"no token reaches the policy without input.token", "GET", "/public/fx", nil, 200, "", map[string]string{"x-public": "yes"}},
		{"no token on a private path is denied by the policy", "GET", "/private", nil, 403, "authentication_required", nil},
		{"token in the query string is ignored", "GET", "/private?access_token=" + rsaKey.sign(t, good), nil, 403, "authentication_required", nil},
		{"bad signature is 401", "GET", "/public/fx", bearer(tamper(rsaKey.sign(t, good))), 401, "bad_signature", nil},
		{"unknown kid is 401", "GET", "/public/fx", bearer(unknownKid.sign(t, good)), 401, "unknown_key", nil},
		{"alg none is 401", "GET", "/public/fx", bearer(algNone), 401, "algorithm_not_allowed", nil},
		{"HS256 is 401", "GET", "/public/fx", bearer(hs256), 401, "algorithm_not_allowed", nil},
		{"PS256 not in the issuer's algorithms is 401", "GET", "/x", bearer(signer{kid: "rsa-1", method: jwt.SigningMethodPS256, priv: rsaKey.priv}.sign(t, good)), 401, "", nil},
		{"expired token is 401", "GET", "/x", bearer(rsaKey.sign(t, claims(issuerA, "payments-api", "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }))), 401, "token_expired", nil},
		{"nbf in the future beyond leeway is 401", "GET", "/x", bearer(rsaKey.sign(t, claims(issuerA, "payments-api", "alice", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }))), 401, "token_not_yet_valid", nil},
		{"iat in the future beyond leeway is 401", "GET", "/x", bearer(rsaKey.sign(t, claims(issuerA, "payments-api", "alice", func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }))), 401, "token_issued_in_future", nil},
		{"missing exp is 401", "GET", "/x", bearer(rsaKey.sign(t, claims(issuerA, "payments-api", "alice", func(c jwt.MapClaims) { delete(c, "exp") }))), 401, "token_missing_exp", nil},
		{"unconfigured iss is 401", "GET", "/x", bearer(rsaKey.sign(t, claims("https://evil.test", "payments-api", "alice"))), 401, "unknown_issuer", nil},
		{"wrong aud is 401", "GET", "/x", bearer(rsaKey.sign(t, claims(issuerA, "other-api", "alice"))), 401, "audience_mismatch", nil},
		{"issuer B's token signed with issuer A's key is 401", "GET", "/x", bearer(signer{kid: "b-1", method: jwt.SigningMethodRS256, priv: rsaKey.priv}.sign(t, claims(issuerB, "ledger-api", "mallory"))), 401, "bad_signature", nil},
		{"issuer A's token signed with issuer B's key is 401", "GET", "/x", bearer(signer{kid: "rsa-1", method: jwt.SigningMethodRS256, priv: bKey.priv}.sign(t, good)), 401, "bad_signature", nil},
		{"malformed token is 401", "GET", "/public/fx", bearer("not.a.jwt"), 401, "token_malformed", nil},
		{"empty bearer token is 401", "GET", "/public/fx", map[string]string{"authorization": "Bearer "}, 401, "token_malformed", nil},
		{"two merged authorization headers are 401", "GET", "/public/fx", map[string]string{"authorization": "Bearer " + rsaKey.sign(t, good) + ",Bearer " + rsaKey.sign(t, good)}, 401, "token_malformed", nil},
		{"token over max_token_bytes is 401", "GET", "/public/fx", bearer(rsaKey.sign(t, claims(issuerA, "payments-api", "alice", func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 9000) }))), 401, "token_too_large", nil},
		{"wrong result shape fails closed with 403", "GET", "/shape", nil, 403, "policy_invalid_result", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := summarise(h.check(t, tc.method, tc.path, tc.headers))
			if got.status != tc.wantStatus {
				t.Fatalf("status = %d (reason %q), want %d", got.status, got.reason, tc.wantStatus)
			}
			if tc.wantReason != "" && got.reason != tc.wantReason {
				t.Errorf("reason = %q, want %q", got.reason, tc.wantReason)
			}
			for k, v := range tc.wantHeader {
				if got.headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, got.headers[k], v)
				}
			}
			switch tc.wantStatus {
			case 401:
				if got.code != codes.Unauthenticated {
					t.Errorf("grpc status = %v, want Unauthenticated", got.code)
				}
				if w := got.headers["www-authenticate"]; w != `Bearer error="invalid_token"` {
					t.Errorf("www-authenticate = %q", w)
				}
				if strings.Contains(got.body, "eyJ") {
					t.Errorf("deny body leaks token material: %q", got.body)
				}
			case 403:
				if got.code != codes.PermissionDenied {
					t.Errorf("grpc status = %v, want PermissionDenied", got.code)
				}
			case 200:
				if got.code != codes.OK {
					t.Errorf("grpc status = %v, want OK", got.code)
				}
			}
		})
	}
}

func TestUndefinedDecisionFailsClosed(t *testing.T) {
	k := newSigner(t, "k", "ES256")
	p := newIDP(t, k)
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/undefined.rego")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "undefined.rego"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\npolicy: {paths: [%s]}\njwt:\n  issuers:\n    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}\n",
		filepath.Join(dir, "undefined.rego"), issuerA, p.jwksURI())
	h := startService(t, yaml)
	h.waitServing(t)
	if got := summarise(h.check(t, "GET", "/defined", nil)); got.status != 200 {
		t.Errorf("boolean true decision: status %d, want 200", got.status)
	}
	got := summarise(h.check(t, "GET", "/other", nil))
	if got.status != 403 || got.reason != "policy_undefined" {
		t.Errorf("undefined decision: status %d reason %q, want 403 policy_undefined", got.status, got.reason)
	}
}

func TestHealthWaitsForFirstJWKSFetch(t *testing.T) {
	k := newSigner(t, "k", "ES256")
	a, b := newIDP(t, k), newIDP(t, newSigner(t, "kb", "ES256"))
	a.set(true) // IdP down at start
	h := startService(t, serviceYAML(a, b, "1h"))
	// The verifier retries with backoff; wait until it has tried at least twice while the IdP is down.
	deadline := time.Now().Add(10 * time.Second)
	for a.hits.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("JWKS fetch not retried within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := h.status(t); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health with an issuer's JWKS never fetched = %v, want NOT_SERVING", st)
	}
	a.set(false)
	h.waitServing(t)
	if got := summarise(h.check(t, "GET", "/x", bearer(k.sign(t, claims(issuerA, "payments-api", "alice"))))); got.status != 200 {
		t.Fatalf("after the IdP came up: status %d reason %q, want 200", got.status, got.reason)
	}
}

func TestKeyRotationOutageAndUnknownKidFlood(t *testing.T) {
	old := newSigner(t, "2026-01", "ES256")
	a, b := newIDP(t, old), newIDP(t, newSigner(t, "kb", "ES256"))
	const cooldown = 300 * time.Millisecond
	h := startService(t, serviceYAML(a, b, cooldown.String()))
	h.waitServing(t)
	allowed := func(s signer, sub string) bool {
		return summarise(h.check(t, "GET", "/x", bearer(s.sign(t, claims(issuerA, "payments-api", sub))))).status == 200
	}
	if !allowed(old, "alice") {
		t.Fatal("token signed with the published key was not allowed")
	}

	t.Run("a key published by the IdP verifies within one cooldown without restart", func(t *testing.T) {
		next := newSigner(t, "2026-02", "ES256")
		a.set(false, old, next)
		deadline := time.Now().Add(cooldown + 2*time.Second)
		for !allowed(next, "bob") {
			if time.Now().After(deadline) {
				t.Fatal("new key not accepted within one cooldown")
			}
			time.Sleep(cooldown / 4)
		}
	})

	t.Run("cached keys keep verifying while the IdP is down", func(t *testing.T) {
		a.set(true)
		for i := range 5 {
			if !allowed(old, fmt.Sprintf("carol-%d", i)) {
				t.Fatal("cached key stopped verifying during the outage")
			}
		}
		a.set(false)
	})

	t.Run("a flood of unknown kids fetches at most once per cooldown", func(t *testing.T) {
		time.Sleep(cooldown) // let any earlier refetch budget recover: the flood starts a fresh cooldown window
		before := a.hits.Load()
		start := time.Now()
		var wg sync.WaitGroup
		var non401 atomic.Int64
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := signer{kid: fmt.Sprintf("unknown-%d", i), method: old.method, priv: old.priv}
				if got := summarise(h.check(t, "GET", "/x", bearer(s.sign(t, claims(issuerA, "payments-api", "eve"))))); got.status != 401 {
					non401.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		fetches := a.hits.Load() - before
		windows := int64(elapsed/cooldown) + 1
		if non401.Load() != 0 {
			t.Errorf("%d tokens with unknown kids were not rejected with 401", non401.Load())
		}
		if fetches > windows {
			t.Errorf("200 unknown kids caused %d JWKS fetches in %v, want at most %d (one per %v)", fetches, elapsed, windows, cooldown)
		}
		t.Logf("200 unknown kids: %d JWKS fetches in %v", fetches, elapsed)
	})
}
