// Package stacktest assembles, for tests, the real parts a check goes through before the server: a development
// issuer whose key set is served over HTTP, a token verifier that trusts it, and the shipped policy library with
// routes of a test's own.
package stacktest

import (
	"context"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/authz/internal/polltest"
	"github.com/finauthz/authz/authz/token"
	"github.com/finauthz/authz/policies"
)

// Issuer opens a development issuer with a new key in a temporary directory and serves its key set over HTTP
// until the test ends. It returns the issuer and the URL of its key set.
func Issuer(tb testing.TB) (iss *devissuer.Issuer, jwksURI string) {
	tb.Helper()
	iss, err := devissuer.Open(filepath.Join(tb.TempDir(), "key.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	jwks := httptest.NewServer(iss.Handler())
	tb.Cleanup(jwks.Close)
	return iss, jwks.URL + devissuer.JWKSPath
}

// Verifier returns a verifier that trusts the development issuer whose key set is at jwksURI (ES256, the
// development audience), once it has fetched that key set. It logs nowhere, so that benchmark output stays
// parseable; tune, when not nil, adjusts the configuration first (a Logger included). The verifier is closed
// when the test ends.
func Verifier(tb testing.TB, jwksURI string, tune func(*token.Config)) *token.Verifier {
	tb.Helper()
	cfg := token.Config{
		Issuers: []token.Issuer{{
			Issuer: devissuer.IssuerURL, JWKSURI: jwksURI,
			Audiences: []string{devissuer.Audience}, Algorithms: []string{"ES256"},
		}},
		Logger: slog.New(slog.DiscardHandler),
	}
	if tune != nil {
		tune(&cfg)
	}
	v, err := token.NewVerifier(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(v.Close)
	polltest.Until(tb, "the verifier is ready", func() bool { ok, _ := v.Ready(); return ok })
	return v
}

// Mint signs a token with claims, issued now, or fails the test.
func Mint(tb testing.TB, iss *devissuer.Issuer, claims devissuer.Claims) string {
	tb.Helper()
	raw, err := iss.Mint(claims, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// Request is the CheckRequest Envoy sends for a GET of url with the given "name: value" headers, and the
// request ID "req-1".
func Request(tb testing.TB, url string, headers ...string) *authv3.CheckRequest {
	tb.Helper()
	req, err := envoyreq.New(envoyreq.Request{URL: url, Headers: headers, RequestID: "req-1"})
	if err != nil {
		tb.Fatal(err)
	}
	return req
}

// Policies is the shipped policy library (policies.FS) with routes put at the front of its route table: YAML list
// items indented as in routes.yaml ("    - id: ...").
func Policies(tb testing.TB, routes string) fstest.MapFS {
	tb.Helper()
	fsys := fstest.MapFS{}
	err := fs.WalkDir(policies.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(policies.FS, path)
		fsys[path] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	head, tail, ok := strings.Cut(string(fsys["routes.yaml"].Data), "  routes:\n")
	if !ok {
		tb.Fatal("routes.yaml has no routes: list")
	}
	fsys["routes.yaml"].Data = []byte(head + "  routes:\n" + routes + tail)
	return fsys
}
