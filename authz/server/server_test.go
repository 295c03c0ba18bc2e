package server

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/authz/internal/stacktest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/token"
	"github.com/finauthz/authz/policies"
)

// fixture is a Server wired to the shipped policies and a verifier that trusts a development issuer served by a
// real HTTP JWKS endpoint.
type fixture struct {
	srv *Server
	iss *devissuer.Issuer
}

func newFixture(tb testing.TB, cacheSize int) *fixture {
	tb.Helper()
	return newFixtureWith(tb, cacheSize, 0)
}

// newFixtureWith is newFixture with the policy's decision cache size too (-1: off).
func newFixtureWith(tb testing.TB, cacheSize, decisionCacheSize int) *fixture {
	tb.Helper()
	return newFixtureOf(tb, policies.FS, cacheSize, decisionCacheSize)
}

// newFixtureOf is newFixtureWith with the policy library in fsys.
func newFixtureOf(tb testing.TB, fsys fs.FS, cacheSize, decisionCacheSize int) *fixture {
	tb.Helper()
	iss, jwksURI := stacktest.Issuer(tb)
	v := stacktest.Verifier(tb, jwksURI, func(c *token.Config) { c.CacheSize = cacheSize })
	e, err := policy.New(context.Background(), policy.Config{
		FS: fsys, Paths: []string{"."}, ValidationQuery: policies.ValidationQuery,
		DecisionCacheSize: decisionCacheSize, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{Verifier: v, Policy: e})
	if err != nil {
		tb.Fatal(err)
	}
	return &fixture{srv: s, iss: iss}
}

func (f *fixture) mint(tb testing.TB, sub string) string {
	tb.Helper()
	return stacktest.Mint(tb, f.iss, devissuer.Claims{
		Subject: sub, Scope: "accounts:read transactions:read",
		Extra: map[string]any{"accounts": []string{"acc-123", "acc-456"}},
	})
}

// transactionsRequest is a typical check: a customer listing transactions of a consented account, with the
// headers an edge Envoy forwards.
func transactionsRequest(tb testing.TB, raw string) *authv3.CheckRequest {
	tb.Helper()
	return transactionsRequestID(tb, raw, 0)
}

// transactionsRequestID is transactionsRequest with its own request id and trace context, as every request
// through Envoy has.
func transactionsRequestID(tb testing.TB, raw string, id int) *authv3.CheckRequest {
	tb.Helper()
	req, err := envoyreq.New(envoyreq.Request{
		URL: "https://api.bank.test/accounts/acc-123/transactions?from=2026-01-01&limit=50",
		Headers: []string{
			"authorization: Bearer " + raw,
			"accept: application/json",
			"user-agent: bank-app/7.1 (iOS 19)",
			"x-forwarded-for: 203.0.113.7",
			"x-forwarded-proto: https",
			"x-device-posture: managed",
			fmt.Sprintf("traceparent: 00-4bf92f3577b34da6a3ce929d%011x-00f067aa0ba902b7-01", id),
		},
		Source:    "203.0.113.7:53122",
		RequestID: fmt.Sprintf("9f6c1d2e-2c7b-4e0a-9d6a-%012x", id),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return req
}

func TestCheckAllowsAGrantedRequestWithTheShippedPolicies(t *testing.T) {
	f := newFixture(t, 0)
	resp, err := f.srv.Check(context.Background(), transactionsRequest(t, f.mint(t, "alice")))
	if err != nil {
		t.Fatal(err)
	}
	if code := codes.Code(resp.GetStatus().GetCode()); code != codes.OK {
		t.Fatalf("status = %v (%v), want OK", code, resp.GetDynamicMetadata())
	}
}

func TestCheckFailsClosed(t *testing.T) {
	f := newFixture(t, 0)
	t.Run("a cancelled call returns the context's gRPC status, never an allow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := f.srv.Check(ctx, transactionsRequest(t, f.mint(t, "alice")))
		if status.Code(err) != codes.Canceled {
			t.Fatalf("err = %v, want Canceled", err)
		}
	})
	t.Run("a request without HTTP attributes is denied", func(t *testing.T) {
		resp, err := f.srv.Check(context.Background(), &authv3.CheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetDeniedResponse() == nil || codes.Code(resp.GetStatus().GetCode()) == codes.OK {
			t.Fatalf("resp = %v, want a deny", resp)
		}
		if r := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); r != "invalid_request" {
			t.Errorf("reason = %q, want invalid_request", r)
		}
	})
}

func TestNewRequiresItsDependencies(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a verifier and a policy succeeded")
	}
}

// BenchmarkCheck measures one Check in-process with the shipped policies: "cached" repeats one token (the
// common case: a client reuses its access token), "fresh" mints a distinct token per iteration so every check
// verifies a signature.
// BenchmarkCheck measures one Check in-process with the shipped policies. Every request has its own request id
// and trace context, as through Envoy, so a decision served from the decision cache is one the policy's key says
// applies to a request it has not seen.
func BenchmarkCheck(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		f := newFixture(b, 0)
		benchmarkRequests(b, f, requestsWithIDs(b, f.mint(b, "alice"), 1024))
	})
	b.Run("cached-decision-cache-off", func(b *testing.B) {
		f := newFixtureWith(b, 0, -1)
		benchmarkRequests(b, f, requestsWithIDs(b, f.mint(b, "alice"), 1024))
	})
	// fresh: nothing cached, a signature verified and the policy evaluated on every check.
	b.Run("fresh", func(b *testing.B) {
		f := newFixtureWith(b, -1, -1)
		reqs := make([]*authv3.CheckRequest, 512)
		for i := range reqs {
			reqs[i] = transactionsRequestID(b, f.mint(b, fmt.Sprintf("user-%d", i)), i)
		}
		benchmarkRequests(b, f, reqs)
	})
	b.Run("cached-parallel", func(b *testing.B) {
		f := newFixture(b, 0)
		reqs := requestsWithIDs(b, f.mint(b, "alice"), 1024)
		ctx := context.Background()
		var next atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req := reqs[next.Add(1)%uint64(len(reqs))]
				if resp, err := f.srv.Check(ctx, req); err != nil || resp.GetStatus().GetCode() != 0 {
					b.Errorf("check: %v", err)
					return
				}
			}
		})
	})
}

func requestsWithIDs(tb testing.TB, raw string, n int) []*authv3.CheckRequest {
	reqs := make([]*authv3.CheckRequest, n)
	for i := range reqs {
		reqs[i] = transactionsRequestID(tb, raw, i)
	}
	return reqs
}

// benchmarkRequests checks reqs in turn; every one must be allowed.
func benchmarkRequests(b *testing.B, f *fixture, reqs []*authv3.CheckRequest) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		resp, err := f.srv.Check(ctx, reqs[i%len(reqs)])
		if err != nil || resp.GetStatus().GetCode() != 0 {
			b.Fatalf("check: %v %v", err, resp.GetDynamicMetadata())
		}
		i++
	}
}
