package policy_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/authz/input"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/token"
	"github.com/finauthz/authz/policies"
)

// The benchmarks below compare two ways of deciding the same request: a customer
// listing the transactions of a consented account (GET /accounts/acc-123/transactions
// with scope transactions:read and acc-123 in the accounts claim), answered with the
// same identity headers and removals. The CheckRequest, the ES256 token and the input
// document are built as the server builds them (envoyreq, devissuer, input.Build).

// baselinePolicy is the common way of writing an Envoy ext_authz policy: the policy
// verifies the bearer token itself with io.jwt.decode_verify against a JWKS held in
// data, then checks the route, the scope and the account grant.
const baselinePolicy = `package envoy.authz

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"access_denied\"}",
}

bearer := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, 7, -1)
}

verified := [header, payload] if {
	[valid, header, payload] := io.jwt.decode_verify(bearer, {
		"cert": data.authn.jwks,
		"iss": data.authn.issuer,
		"aud": data.authn.audience,
	})
	valid
}

claims := verified[1]

scopes := {s | some s in split(claims.scope, " ")}

allow := {
	"allowed": true,
	"headers": {
		"x-subject": claims.sub,
		"x-client-id": claims.client_id,
		"x-scopes": "transactions:read",
		"x-data-fields": "id,amount,currency,booked_at",
	},
	"request_headers_to_remove": [
		"authorization", "x-auth-request-email", "x-auth-request-user", "x-forwarded-access-token",
		"x-forwarded-client-cert", "x-forwarded-email", "x-forwarded-user", "x-jwt-payload",
		"x-remote-user", "x-user-id",
	],
	"dynamic_metadata": {"route": "transactions.list"},
} if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "accounts"
	account_id := input.parsed_path[1]
	input.parsed_path[2] == "transactions"
	count(input.parsed_path) == 3
	"transactions:read" in scopes
	account_id in claims.accounts
}
`

// benchRequest is what the two benchmarks decide: the request, the raw token in its
// authorization header, and the token as the verifier hands it to the policy.
type benchRequest struct {
	check *authv3.CheckRequest
	token ast.Value
	jwks  string
}

func newBenchRequest(b *testing.B) benchRequest {
	b.Helper()
	iss, err := devissuer.Open(filepath.Join(b.TempDir(), "key.pem"))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := iss.Mint(devissuer.Claims{
		Subject: "alice", Scope: "accounts:read transactions:read",
		Extra: map[string]any{"accounts": []string{"acc-123", "acc-456"}},
		TTL:   time.Hour,
	}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	check, err := envoyreq.New(envoyreq.Request{
		URL: "https://api.bank.test/accounts/acc-123/transactions?from=2026-01-01&limit=50",
		Headers: []string{
			"authorization: Bearer " + raw,
			"accept: application/json",
			"user-agent: bank-app/7.1 (iOS 19)",
			"x-forwarded-for: 203.0.113.7",
			"x-forwarded-proto: https",
			"x-device-posture: managed",
			"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		},
		Source:    "203.0.113.7:53122",
		RequestID: "9f6c1d2e-2c7b-4e0a-9d6a-3f1f5c1d2e7b",
	})
	if err != nil {
		b.Fatal(err)
	}

	// Verify the token the way the server does, to get the value it puts in the input.
	jwks := httptest.NewServer(iss.Handler())
	b.Cleanup(jwks.Close)
	v, err := token.NewVerifier(b.Context(), token.Config{
		Issuers: []token.Issuer{{
			Issuer: devissuer.IssuerURL, JWKSURI: jwks.URL + devissuer.JWKSPath,
			Audiences: []string{devissuer.Audience}, Algorithms: []string{"ES256"},
		}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	deadline := time.Now().Add(5 * time.Second)
	for ok, _ := v.Ready(); !ok; ok, _ = v.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("verifier not ready within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tok, err := v.Verify(b.Context(), raw)
	if err != nil {
		b.Fatal(err)
	}
	return benchRequest{check: check, token: tok.Value(), jwks: string(iss.JWKS())}
}

// benchDecide evaluates in with e until b is done, checking the decision each time.
func benchDecide(b *testing.B, e *policy.Engine, in ast.Value) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		d, err := e.Eval(ctx, in)
		if err != nil || !d.Allowed || len(d.Headers) != 4 {
			b.Fatalf("Eval = %+v, %v", d, err)
		}
	}
}

// BenchmarkBaselineDecodeVerify is the common way: the policy verifies the ES256
// token (io.jwt.decode_verify, JWKS in data) on every request. No inter-query
// cache is configured, so every evaluation verifies the signature.
func BenchmarkBaselineDecodeVerify(b *testing.B) {
	req := newBenchRequest(b)
	dir := b.TempDir()
	data, err := ast.InterfaceToValue(map[string]any{"authn": map[string]any{
		"jwks": req.jwks, "issuer": devissuer.IssuerURL, "audience": devissuer.Audience,
	}})
	if err != nil {
		b.Fatal(err)
	}
	for name, content := range map[string]string{"policy.rego": baselinePolicy, "data.json": data.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	e, err := policy.New(b.Context(), policy.Config{Paths: []string{dir}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	in, err := input.Build(req.check, nil, input.Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchDecide(b, e, in)
}

// BenchmarkShippedPolicy is our way: the service has verified the token (and caches
// the verification), and the shipped policies decide on the verified claims.
func BenchmarkShippedPolicy(b *testing.B) {
	req := newBenchRequest(b)
	e, err := policy.New(b.Context(), policy.Config{
		FS: policies.FS, Paths: []string{"."}, Query: policies.Query,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	in, err := input.Build(req.check, req.token, input.Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchDecide(b, e, in)
}
