package policy

import (
	"testing"
)

// benchPolicy is a small route-and-role policy of the kind the service runs:
// a data lookup by path, a method check, a role intersection, and an object
// result with identity headers and metadata.
const benchPolicy = `package envoy.authz

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\"}",
	"dynamic_metadata": {"reason": "no_matching_rule"},
}

claims := input.token.payload

route := data.envoy.authz.routes[input.parsed_path[0]]

allow := {
	"allowed": true,
	"headers": {"x-user-id": claims.sub, "x-roles": claims.roles},
	"request_headers_to_remove": ["authorization"],
	"dynamic_metadata": {"rule": route.name, "sub": claims.sub},
} if {
	input.attributes.request.http.method in route.methods
	some role in claims.roles
	role in route.roles
}
`

const benchData = `{"routes": {
	"accounts": {"name": "accounts-read", "methods": ["GET", "HEAD"], "roles": ["teller", "auditor"]},
	"payments": {"name": "payments-write", "methods": ["POST"], "roles": ["payments-officer"]}
}}`

func benchInput(method string, roles ...any) map[string]any {
	return map[string]any{
		"attributes": map[string]any{
			"request": map[string]any{"http": map[string]any{
				"method": method,
				"path":   "/accounts/123?expand=balances",
				"host":   "api.bank.example",
				"headers": map[string]any{
					":authority":    "api.bank.example",
					":method":       method,
					":path":         "/accounts/123?expand=balances",
					"authorization": "Bearer eyJ...",
					"user-agent":    "mobile/5.2",
					"x-request-id":  "7c1e9a52-7b61-4c1b-9c7e-5d0d0b1f2a33",
				},
			}},
			"source":      map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.1.2.3", "portValue": 51234}}},
			"destination": map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.1.9.9", "portValue": 8443}}},
		},
		"parsed_path":  []any{"accounts", "123"},
		"parsed_query": map[string]any{"expand": []any{"balances"}},
		"token": map[string]any{
			"header":  map[string]any{"alg": "RS256", "kid": "k1"},
			"payload": map[string]any{"iss": "https://idp.bank.example", "sub": "u-42", "roles": roles, "exp": 1900000000},
		},
	}
}

func BenchmarkEval(b *testing.B) {
	dir := writeFiles(b, b.TempDir(), map[string]string{
		"envoy/authz/policy.rego": benchPolicy,
		"envoy/authz/data.json":   benchData,
		"boolean/policy.rego":     "package boolean\n\nallow if input.attributes.request.http.method == \"GET\"\n",
	})
	tests := []struct {
		name  string
		query string
		input map[string]any
		allow bool
	}{
		{name: "object allow", input: benchInput("GET", "customer", "teller"), allow: true},
		{name: "object default deny", input: benchInput("DELETE", "teller"), allow: false},
		{name: "boolean allow", query: "data.boolean.allow", input: benchInput("GET"), allow: true},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			// Evaluation itself: the decision cache would answer every iteration after the first.
			e := newEngine(b, Config{Paths: []string{dir}, Query: tc.query, DecisionCacheSize: -1})
			input := mustInput(b, tc.input)
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				d, err := e.Eval(ctx, input)
				if err != nil || d.Allowed != tc.allow {
					b.Fatalf("Eval = %+v, %v", d, err)
				}
			}
		})
	}
}
