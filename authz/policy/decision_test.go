package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// FuzzParseDecision checks that any result is either refused with
// ErrInvalidResult or gives only mutations that are safe to hand to Envoy.
func FuzzParseDecision(f *testing.F) {
	for _, seed := range []string{
		`true`,
		`"allow"`,
		`{"allowed": true, "headers": {"X-User": ["a", "b"]}, "request_headers_to_remove": {"authorization"}}`,
		`{"allowed": true, "headers": [{"x-a": "1"}, {"x-b": "2\r\nx-c: 3"}]}`,
		`{"allowed": true, "query_parameters_to_set": [{"a": "1%202"}], "query_parameters_to_remove": ["b"]}`,
		`{"allowed": false, "http_status": 401, "body": "{}", "dynamic_metadata": {"reason": "x", "n": [1, {"a": null}]}}`,
		`{"allowed": false, "http_status": 1e3}`,
		`{"allowed": true, "headers": {":path": "/"}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		term, err := ast.ParseTerm(src)
		if err != nil || !term.IsGround() {
			return
		}
		d, err := parseDecision(term.Value)
		if err != nil {
			if !errors.Is(err, ErrInvalidResult) {
				t.Fatalf("error %v does not wrap ErrInvalidResult", err)
			}
			return
		}
		for _, h := range append(append([]Header(nil), d.Headers...), d.ResponseHeadersToAdd...) {
			if h.Key == "" || h.Key != strings.ToLower(h.Key) || strings.ContainsAny(h.Key, ": \t\r\n\x00") {
				t.Errorf("header name %q accepted", h.Key)
			}
			if strings.ContainsAny(h.Value, "\r\n\x00") {
				t.Errorf("header value %q accepted", h.Value)
			}
		}
		for _, name := range d.RequestHeadersToRemove {
			if name == "" || strings.ContainsAny(name, ": \t\r\n\x00") {
				t.Errorf("header name to remove %q accepted", name)
			}
		}
		for _, p := range d.QueryParametersToSet {
			if p.Key == "" || strings.ContainsAny(p.Key+p.Value, "&=#?/+ \r\n\x00") {
				t.Errorf("query parameter %q=%q accepted", p.Key, p.Value)
			}
		}
		if d.HTTPStatus != 0 && (d.HTTPStatus < 100 || d.HTTPStatus > 599) {
			t.Errorf("status %d accepted", d.HTTPStatus)
		}
	})
}

func BenchmarkParseDecision(b *testing.B) {
	result := ast.MustParseTerm(`{
		"allowed": true,
		"headers": {"x-user-id": "u-42", "x-roles": ["customer", "teller"]},
		"request_headers_to_remove": ["authorization"],
		"dynamic_metadata": {"rule": "accounts-read", "sub": "u-42"},
	}`).Value
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseDecision(result); err != nil {
			b.Fatal(err)
		}
	}
}
