package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/internal/stacktest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/response"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/token"
)

// stack is a real verifier (trusting a development issuer served over HTTP) and a real policy engine with
// testdata/policy.rego.
type stack struct {
	iss      *devissuer.Issuer
	verifier *token.Verifier
	policy   *policy.Engine
}

func newStack(tb testing.TB, onFetch func(string, error)) *stack {
	tb.Helper()
	iss, jwksURI := stacktest.Issuer(tb)
	v := stacktest.Verifier(tb, jwksURI, func(c *token.Config) { c.OnFetch = onFetch })
	e, err := policy.New(context.Background(), policy.Config{Paths: []string{"testdata/policy.rego"}})
	if err != nil {
		tb.Fatal(err)
	}
	return &stack{iss: iss, verifier: v, policy: e}
}

// server returns a Server over the stack with the given observer, verifier and evaluator wrappers.
func (s *stack) server(tb testing.TB, obs server.Observer, v server.Verifier, e server.Evaluator) *server.Server {
	tb.Helper()
	if v == nil {
		v = s.verifier
	}
	if e == nil {
		e = s.policy
	}
	srv, err := server.New(server.Config{Verifier: v, Policy: e, Observer: obs})
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

func (s *stack) mint(tb testing.TB, sub string) string {
	tb.Helper()
	return stacktest.Mint(tb, s.iss, devissuer.Claims{
		Subject: sub, Scope: "accounts:read transactions:read", ClientID: "bank-app",
		Extra: map[string]any{"accounts": []string{"acc-123"}},
	})
}

// get fetches url and returns the status and body.
func get(tb testing.TB, h http.Handler, path string, header ...string) (int, string) {
	tb.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// sample returns the value of the sample line that starts with series ("name{labels}"), or "" when absent.
func sample(exposition, series string) string {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			value, _, _ := strings.Cut(rest, " ")
			return value
		}
	}
	return ""
}

// checkInfo is an allowed check of req.
func checkInfo(req *authv3.CheckRequest) *server.CheckInfo {
	return &server.CheckInfo{
		Request:  req,
		Start:    time.Now(),
		Duration: time.Millisecond,
		Response: response.FromDecision(&policy.Decision{Allowed: true}),
	}
}
