package response

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc/codes"

	"github.com/finauthz/authz/authz/policy"
)

// FuzzFromDecision drives a policy result end to end: a policy returns the fuzzed value as its decision, the
// policy engine parses it, and FromDecision turns it into a CheckResponse. Either the engine refuses the result
// (ErrInvalidResult), or the response passes Envoy's proto validation and says what the decision said.
// testdata/fuzz/FuzzFromDecision holds further seeds, among them headers longer than Envoy takes.
func FuzzFromDecision(f *testing.F) {
	e, err := policy.New(context.Background(), policy.Config{
		FS:    fstest.MapFS{"echo.rego": {Data: []byte("package envoy.authz\n\n# The decision is whatever the test sends.\nallow := input\n")}},
		Paths: []string{"."},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`true`,
		`false`,
		`null`,
		`{"allowed": true, "headers": {"x-subject": "alice", "X-Roles": ["a", "b"]}, "request_headers_to_remove": ["authorization"]}`,
		`{"allowed": true, "headers": {"x-a": "1\r\nx-b: 2"}}`,
		`{"allowed": true, "headers": {":authority": "evil.test", "host": "evil.test"}}`,
		`{"allowed": true, "response_headers_to_add": [{"set-cookie": "a=b"}], "query_parameters_to_set": {"a": "1%202"}, "query_parameters_to_remove": ["debug"]}`,
		`{"allowed": false, "http_status": 302, "headers": {"location": "https://bank.test/login"}, "body": "", "dynamic_metadata": {"reason": "x", "n": 1e400}}`,
		`{"allowed": false, "http_status": 99}`,
		`{"allowed": false, "http_status": 1e3, "dynamic_metadata": {"decision": "allow"}}`,
		`{"allowed": "true"}`,
		`{"allowed": true, "request_headers_to_remove": ["` + strings.Repeat("k", 16385) + `"]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		term, err := ast.ParseTerm(src)
		if err != nil || !term.IsGround() {
			return
		}
		if _, err := ast.JSON(term.Value); err != nil {
			return // not data (a reference such as A.B): no policy input or result can hold it
		}
		d, err := e.Eval(context.Background(), term.Value)
		if err != nil {
			if !errors.Is(err, policy.ErrInvalidResult) {
				t.Fatalf("Eval error %v does not wrap ErrInvalidResult", err)
			}
			return
		}
		resp := FromDecision(d)
		if err := resp.ValidateAll(); err != nil {
			t.Fatalf("response fails Envoy's proto validation: %v", err)
		}
		code := codes.Code(resp.GetStatus().GetCode())
		switch {
		case code == codes.OK:
			if !d.Allowed || resp.GetOkResponse() == nil {
				t.Fatalf("OK response for a decision with allowed=%v", d.Allowed)
			}
		case resp.GetDeniedResponse() == nil:
			t.Fatalf("status %v without a denied response", code)
		default:
			if s := resp.GetDeniedResponse().GetStatus().GetCode(); s < 200 || s > 599 {
				t.Fatalf("denied with HTTP status %d", s)
			}
		}
		if d.Allowed {
			for _, h := range resp.GetOkResponse().GetHeaders() {
				if k := h.GetHeader().GetKey(); k == "" || k[0] == ':' || strings.EqualFold(k, "host") {
					t.Fatalf("allowed response sets header %q", k)
				}
			}
		}
	})
}
