package policy_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/authz/input"
	"github.com/finauthz/authz/authz/internal/stacktest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/token"
	"github.com/finauthz/authz/policies"
)

// The benchmarks below compare two ways of deciding the same request: a customer
// listing the transactions of a consented account (GET /accounts/acc-123/transactions
// with scope transactions:read and acc-123 in the accounts claim), answered with the
// same identity headers and removals. Both start from the CheckRequest, as the server
// does, and every request has its own request id and trace context, as through Envoy.

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

// benchRequest is what the benchmarks decide: the requests (one per request id), the
// raw token in their authorization header, the verifier the server would use, and the
// issuer's JWKS for the baseline's data.
type benchRequest struct {
	checks   []*authv3.CheckRequest
	raw      string
	verifier *token.Verifier
	jwks     string
}

func newBenchRequest(b *testing.B) benchRequest {
	b.Helper()
	iss, jwksURI := stacktest.Issuer(b)
	raw, err := iss.Mint(devissuer.Claims{
		Subject: "alice", Scope: "accounts:read transactions:read",
		Extra: map[string]any{"accounts": []string{"acc-123", "acc-456"}},
		TTL:   time.Hour,
	}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	checks := make([]*authv3.CheckRequest, 1024)
	for i := range checks {
		checks[i], err = envoyreq.New(envoyreq.Request{
			URL: "https://api.bank.test/accounts/acc-123/transactions?from=2026-01-01&limit=50",
			Headers: []string{
				"authorization: Bearer " + raw,
				"accept: application/json",
				"user-agent: bank-app/7.1 (iOS 19)",
				"x-forwarded-for: 203.0.113.7",
				"x-forwarded-proto: https",
				"x-device-posture: managed",
				fmt.Sprintf("traceparent: 00-4bf92f3577b34da6a3ce929d%011x-00f067aa0ba902b7-01", i),
			},
			Source:    "203.0.113.7:53122",
			RequestID: fmt.Sprintf("9f6c1d2e-2c7b-4e0a-9d6a-%012x", i),
		})
		if err != nil {
			b.Fatal(err)
		}
	}

	// Verify the token the way the server does, to get the value it puts in the input.
	v := stacktest.Verifier(b, jwksURI, nil)
	if _, err := v.Verify(b.Context(), raw); err != nil {
		b.Fatal(err)
	}
	return benchRequest{checks: checks, raw: raw, verifier: v, jwks: string(iss.JWKS())}
}

// verifiedThen decides a request the service's way: it verifies the bearer token
// with the request's verifier (a hit in its cache), then evaluates e on the input
// with the verified token.
func verifiedThen(req benchRequest, e *policy.Engine) func(context.Context, *authv3.CheckRequest) (*policy.Decision, error) {
	return func(ctx context.Context, check *authv3.CheckRequest) (*policy.Decision, error) {
		raw, _, err := token.FromAuthorization(check.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"])
		if err != nil {
			return nil, err
		}
		tok, err := req.verifier.Verify(ctx, raw)
		if err != nil {
			return nil, err
		}
		src, err := input.NewSource(check, tok.Value(), input.Options{})
		if err != nil {
			return nil, err
		}
		return e.EvalSource(ctx, src)
	}
}

// benchDecide decides the requests in turn with decide until b is done, checking the
// decision each time.
func benchDecide(b *testing.B, req benchRequest, decide func(context.Context, *authv3.CheckRequest) (*policy.Decision, error)) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		d, err := decide(ctx, req.checks[i%len(req.checks)])
		if err != nil || !d.Allowed || len(d.Headers) != 4 {
			b.Fatalf("decision = %+v, %v", d, err)
		}
		i++
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
	benchDecide(b, req, func(ctx context.Context, check *authv3.CheckRequest) (*policy.Decision, error) {
		in, err := input.Build(check, nil, input.Options{})
		if err != nil {
			return nil, err
		}
		return e.Eval(ctx, in)
	})
}

// BenchmarkBaselinePolicyOnVerifiedClaims is the baseline's policy with its
// io.jwt.decode_verify replaced by the claims the service verified (a hit in its
// verification cache), evaluated every time (decision cache off): how much of the
// lead over the baseline comes from verifying outside the policy, before any
// decision is remembered.
func BenchmarkBaselinePolicyOnVerifiedClaims(b *testing.B) {
	req := newBenchRequest(b)
	start := strings.Index(baselinePolicy, "verified := [header, payload] if {")
	end := strings.Index(baselinePolicy, "claims := verified[1]\n")
	if start < 0 || end < 0 {
		b.Fatal("the baseline policy no longer verifies the token as this benchmark expects")
	}
	rewritten := baselinePolicy[:start] + "claims := input.token.payload\n" + baselinePolicy[end+len("claims := verified[1]\n"):]
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rewritten), 0o644); err != nil {
		b.Fatal(err)
	}
	e, err := policy.New(b.Context(), policy.Config{Paths: []string{dir}, DecisionCacheSize: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	benchDecide(b, req, verifiedThen(req, e))
}

// BenchmarkShippedPolicy is our way: the service verifies the token (a hit in its
// verification cache), and the shipped policies decide on the verified claims; the
// decision cache serves requests whose key values it has seen (the first request
// here). With the decision cache off, the policy is evaluated every time.
func BenchmarkShippedPolicy(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
	}{{"decision-cache", 0}, {"decision-cache-off", -1}} {
		b.Run(tc.name, func(b *testing.B) {
			req := newBenchRequest(b)
			e, err := policy.New(b.Context(), policy.Config{
				FS: policies.FS, Paths: []string{"."}, Query: policies.Query,
				DecisionCacheSize: tc.size, Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			benchDecide(b, req, verifiedThen(req, e))
		})
	}
}
