package policy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/finauthz/authz/authz/internal/stacktest"
	"github.com/finauthz/authz/policies"
)

// evalAt evaluates q for input at a fixed time and returns the query's value.
func evalAt(ctx context.Context, q rego.PreparedEvalQuery, input ast.Value, at time.Time) (ast.Value, error) {
	rs, err := q.Eval(ctx, rego.EvalParsedInput(input), rego.EvalTime(at))
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case ast.Value:
		return v, nil
	case bool:
		return ast.Boolean(v), nil
	default:
		return nil, fmt.Errorf("unexpected %T", v)
	}
}

// sameDecisions evaluates every input with the residual and the written query of
// the snapshot serving e, at time at, and reports any difference. It returns the
// results of the residual query.
func sameDecisions(t *testing.T, e *Engine, inputs []map[string]any, at time.Time) []ast.Value {
	t.Helper()
	s := e.current.Load()
	if !s.partial {
		t.Fatal("the policy was not partially evaluated")
	}
	out := make([]ast.Value, 0, len(inputs))
	for _, in := range inputs {
		v := mustInput(t, in)
		got, gotErr := evalAt(t.Context(), s.prepared, v, at)
		want, wantErr := evalAt(t.Context(), s.written, v, at)
		switch {
		case (gotErr != nil) != (wantErr != nil):
			t.Errorf("input %v at %v: residual error %v, written error %v", v, at, gotErr, wantErr)
		case got == nil && want == nil:
		case got == nil || want == nil || got.Compare(want) != 0:
			t.Errorf("input %v at %v:\nresidual %v\nwritten  %v", v, at, got, want)
		}
		out = append(out, got)
	}
	return out
}

func TestPartialEvaluationOfTheShippedPolicyDecidesAsWritten(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{FS: policies.FS, Paths: []string{"."}, Query: policies.Query, ValidationQuery: policies.ValidationQuery})
	seen := map[string]int{}
	for _, at := range corpusTimes {
		for _, d := range sameDecisions(t, e, corpus(400, at), at) {
			if _, ok := d.(ast.Object); !ok {
				t.Fatalf("decision %v is not an object", d)
			}
			seen[cmp.Or(metadataString(d, "reason"), "allowed")]++
		}
	}
	// The corpus is only evidence if it reaches every outcome.
	for _, outcome := range []string{
		"allowed", "route_not_found", "authentication_required", "mtls_required", "principal_not_allowed",
		"network_not_allowed", "device_posture", "risk_too_high", "insufficient_scope", "resource_not_granted",
		"step_up_required", "outside_business_hours",
	} {
		if seen[outcome] == 0 {
			t.Errorf("no input of the corpus was decided %s (%v)", outcome, seen)
		}
	}
	t.Logf("outcomes: %v", seen)
}

// TestResidualOfTheShippedPolicyGrowsLinearlyWithTheRouteTable guards the
// route selection of the shipped library: each route must add the same number
// of residual rules however many come before it. Selecting the first match
// through "no earlier route matches" had unrolled into one copy of every earlier
// route per route, so that partial evaluation of a table of 150 routes ran out
// of time and the service fell back to evaluating the policy as written.
func TestResidualOfTheShippedPolicyGrowsLinearlyWithTheRouteTable(t *testing.T) {
	t.Parallel()
	rules := map[int]int{}
	for _, n := range []int{0, 12, 24} {
		e := newEngine(t, Config{FS: withRoutes(t, n), Paths: []string{"."}, Query: policies.Query, ValidationQuery: policies.ValidationQuery})
		s := e.current.Load()
		if !s.partial {
			t.Fatalf("%d routes more: the policy was not partially evaluated", n)
		}
		rules[n] = s.residualRules
		at := corpusTimes[0]
		token := map[string]any{"sub": "alice", "scope": "accounts:read", "accounts": []any{"acc-123"}}
		decided := sameDecisions(t, e, []map[string]any{
			corpusInput("GET", "/accounts/acc-123", token, nil, nil, nil, nil, false, nil),
			corpusInput("GET", fmt.Sprintf("/extra%d/items/acc-123", max(n-1, 0)), token, nil, nil, nil, nil, false, nil),
			corpusInput("GET", fmt.Sprintf("/extra%d/items/acc-999", max(n-1, 0)), token, nil, nil, nil, nil, false, nil),
		}, at)
		if n > 0 {
			if got := metadataString(decided[1], "route"); got != fmt.Sprintf("extra%d.read", n-1) {
				t.Errorf("%d routes more: the last added route decided %v", n, decided[1])
			}
		}
	}
	first, second := rules[12]-rules[0], rules[24]-rules[12]
	t.Logf("residual rules: %v", rules)
	if first <= 0 || second > first+first/10 {
		t.Errorf("residual rules %v: the second 12 routes added %d, the first 12 added %d; want about as many", rules, second, first)
	}
}

// withRoutes is the shipped policy library with n more routes at the front of
// its table, GET /extra<k>/items/{item_id} granted by the accounts claim.
func withRoutes(t *testing.T, n int) fstest.MapFS {
	t.Helper()
	var extra strings.Builder
	for k := range n {
		fmt.Fprintf(&extra, `
    - id: extra%d.read
      methods: [GET]
      path: /extra%d/items/{item_id}
      scopes:
        all_of: [accounts:read]
      grants:
        - param: item_id
          claim: accounts
      data_fields: [id]
`, k, k)
	}
	return stacktest.Policies(t, extra.String())
}

// metadataString is the string under key in a decision's dynamic metadata: the
// reason of a denial, the route of an allow. It is "" when there is none.
func metadataString(d ast.Value, key string) string {
	obj, ok := d.(ast.Object)
	if !ok {
		return ""
	}
	md := obj.Get(ast.StringTerm("dynamic_metadata"))
	if md == nil {
		return ""
	}
	mdObj, ok := md.Value.(ast.Object)
	if !ok {
		return ""
	}
	if v := mdObj.Get(ast.StringTerm(key)); v != nil {
		if s, ok := v.Value.(ast.String); ok {
			return string(s)
		}
	}
	return ""
}

// TestPartialEvaluationDecidesAsWritten runs OPA-Envoy style policies through
// both preparations: the residual policy must decide every input as the policy
// as written does, including builtins that read the clock, networks and regular
// expressions, defaults, else chains, functions, comprehensions and with.
func TestPartialEvaluationDecidesAsWritten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy string
		data   string
		inputs []map[string]any
	}{
		{
			name: "boolean result from data lookups, regex and networks",
			policy: `package envoy.authz

default allow := false

allow if {
	some rule in data.rules
	input.method in rule.methods
	regex.match(rule.path, input.path)
	net.cidr_contains(rule.cidr, input.peer)
}
`,
			data: `{"rules": [{"methods": ["GET"], "path": "^/accounts/[a-z0-9-]+$", "cidr": "10.0.0.0/8"}, {"methods": ["POST"], "path": "^/payments$", "cidr": "0.0.0.0/0"}]}`,
			inputs: []map[string]any{
				{"method": "GET", "path": "/accounts/acc-1", "peer": "10.1.2.3"},
				{"method": "GET", "path": "/accounts/acc-1", "peer": "192.168.0.1"},
				{"method": "GET", "path": "/accounts/ACC", "peer": "10.1.2.3"},
				{"method": "POST", "path": "/payments", "peer": "203.0.113.1"},
				{"method": "POST", "path": "/payments", "peer": "not-an-ip"},
				{},
			},
		},
		{
			name: "result object with the clock, else and functions",
			policy: `package envoy.authz

default allow := {"allowed": false, "http_status": 403}

hour := time.clock([time.now_ns(), data.zone])[0]

tier(amount) := "high" if amount > data.limit
else := "low"

allow := {
	"allowed": true,
	"headers": {"x-tier": tier(input.amount), "x-hour": format_int(hour, 10)},
	"dynamic_metadata": {"open": hour >= 8},
} if {
	input.user in data.users
}
`,
			data: `{"zone": "Europe/London", "limit": 1000, "users": ["alice", "bob"]}`,
			inputs: []map[string]any{
				{"user": "alice", "amount": 10},
				{"user": "bob", "amount": 5000},
				{"user": "mallory", "amount": 1},
				{"user": "alice"},
			},
		},
		{
			name: "comprehensions, with and negation over input",
			policy: `package envoy.authz

granted := {s | some s in split(input.scope, " ")} & {s | some s in data.scopes}

denied if count(granted) == 0

denied if "admin" in input.roles with input.roles as object.get(input, "roles", [])

default allow := false

allow if not denied
`,
			data: `{"scopes": ["read", "write"]}`,
			inputs: []map[string]any{
				{"scope": "read other"},
				{"scope": "other"},
				{"scope": "write", "roles": []any{"admin"}},
				{"scope": 7},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{"envoy/authz/policy.rego": tc.policy, "data.json": tc.data})
			e := newEngine(t, Config{Paths: []string{dir}, PartialEval: PartialEvalAlways})
			for _, at := range corpusTimes {
				sameDecisions(t, e, tc.inputs, at)
			}
		})
	}
}

func TestPartialEvaluationFallsBackToThePolicyAsWritten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		cfg     Config
		wantLog string
	}{
		{
			name:  "when it is disabled",
			files: map[string]string{"policy.rego": "package envoy.authz\n\nallow if input.user in data.users\n", "data.json": `{"users": ["alice"]}`},
			cfg:   Config{PartialEval: PartialEvalNever},
		},
		{
			name:  "when the policy does not ask for it",
			files: map[string]string{"policy.rego": "package envoy.authz\n\nallow if input.user in data.users\n", "data.json": `{"users": ["alice"]}`},
		},
		{
			name: "when it takes too long",
			files: map[string]string{"policy.rego": `package envoy.authz

allow if {
	input.user == "alice"
	count([i | some i in numbers.range(1, 2000000)]) > 0
}
`},
			cfg:     Config{PartialEval: PartialEvalAlways, partialEvalTimeout: time.Millisecond},
			wantLog: "took longer than 1ms",
		},
		{
			name: "when it leaves too many rules",
			files: map[string]string{
				"policy.rego": "package envoy.authz\n\nallow if {\n\tsome user in data.users\n\tinput.user == user\n}\n",
				"data.json":   `{"users": ["alice", "bob", "carol", "dave"]}`,
			},
			cfg:     Config{PartialEval: PartialEvalAlways, maxResidualRules: 2},
			wantLog: "more than 2",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			cfg := tc.cfg
			cfg.Paths = []string{writeFiles(t, t.TempDir(), tc.files)}
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			e := newEngine(t, cfg)
			if e.current.Load().partial {
				t.Fatal("the residual policy is serving")
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log %q does not mention %q", logs.String(), tc.wantLog)
			}
			d, err := e.Eval(t.Context(), mustInput(t, map[string]any{"user": "alice"}))
			if err != nil || !d.Allowed {
				t.Fatalf("Eval = %+v, %v; want allowed", d, err)
			}
		})
	}
}

func TestPartialEvaluationAppliesToEntrypoints(t *testing.T) {
	t.Parallel()
	const rule = "allow if input.user in data.users\n"
	tests := []struct {
		name    string
		policy  string
		mode    PartialEvalMode
		partial bool
	}{
		{name: "package annotated as entrypoint", policy: "# METADATA\n# entrypoint: true\npackage envoy.authz\n\n" + rule, partial: true},
		{name: "rule annotated as entrypoint", policy: "package envoy.authz\n\n# METADATA\n# entrypoint: true\n" + rule, partial: true},
		{name: "another package annotated as entrypoint", policy: "package envoy.authz\n\n" + rule + "\n# METADATA\n# entrypoint: true\nother := 1\n"},
		{name: "no annotation", policy: "package envoy.authz\n\n" + rule},
		{name: "no annotation, always", policy: "package envoy.authz\n\n" + rule, mode: PartialEvalAlways, partial: true},
		{name: "entrypoint, never", policy: "# METADATA\n# entrypoint: true\npackage envoy.authz\n\n" + rule, mode: PartialEvalNever},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{"policy.rego": tc.policy, "data.json": `{"users": ["alice"]}`})
			e := newEngine(t, Config{Paths: []string{dir}, PartialEval: tc.mode})
			if got := e.current.Load().partial; got != tc.partial {
				t.Errorf("partially evaluated = %v, want %v", got, tc.partial)
			}
			d, err := e.Eval(t.Context(), mustInput(t, map[string]any{"user": "alice"}))
			if err != nil || !d.Allowed {
				t.Fatalf("Eval = %+v, %v; want allowed", d, err)
			}
		})
	}
}

func TestPartialEvaluationErrorsNameTheRule(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"policy.rego": "package envoy.authz\n\ndefault allow := false\n\nallow if to_number(input.amount) > data.limit\n",
		"data.json":   `{"limit": 10}`,
	})
	e := newEngine(t, Config{Paths: []string{dir}, StrictBuiltinErrors: true, PartialEval: PartialEvalAlways})
	_, err := e.Eval(t.Context(), mustInput(t, map[string]any{"amount": "lots"}))
	if msg := fmt.Sprint(err); !strings.Contains(msg, "eval_builtin_error at ") || !strings.Contains(msg, "policy.rego:5") || strings.Contains(msg, "lots") {
		t.Errorf("error %q: want the code and the rule's location, without input values", msg)
	}
}

func TestValidationQuery(t *testing.T) {
	t.Parallel()
	const policy = `package envoy.authz

allow if input.user in data.users

users := count(data.users)

problems contains sprintf("user %v is not lower case", [u]) if {
	some u in data.users
	u != lower(u)
}
`
	tests := []struct {
		name         string
		data         string
		query        string
		wantProblems []string
		wantErr      string
	}{
		{name: "no problems serve the policy", data: `{"users": ["alice"]}`, query: "data.envoy.authz.problems"},
		{
			name:         "problems refuse the policy and are listed",
			data:         `{"users": ["Bob", "alice", "Al"]}`,
			query:        "data.envoy.authz.problems",
			wantProblems: []string{"user Al is not lower case", "user Bob is not lower case"},
		},
		{name: "an undefined validation query refuses the policy", data: `{"users": []}`, query: "data.envoy.authz.checks", wantErr: "no rule or data document defines it"},
		{name: "a validation query that is not a collection refuses the policy", data: `{"users": []}`, query: "data.envoy.authz.users", wantErr: "want a set or array"},
		{name: "a validation query undefined at evaluation refuses the policy", data: `{"users": []}`, query: "data.envoy.authz.allow", wantErr: "undefined"},
		{name: "a validation query that does not parse", data: `{"users": []}`, query: "data.envoy.[", wantErr: "validation query"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{"policy.rego": policy, "data.json": tc.data})
			_, err := New(t.Context(), Config{Paths: []string{dir}, ValidationQuery: tc.query, Logger: slog.New(slog.DiscardHandler)})
			var ve *ValidationError
			switch {
			case tc.wantProblems != nil:
				if !errors.As(err, &ve) || !slices.Equal(ve.Problems, tc.wantProblems) || ve.Query != tc.query {
					t.Fatalf("New error = %#v, want a ValidationError with %q", err, tc.wantProblems)
				}
				if !strings.Contains(err.Error(), "2 problem(s): user Al is not lower case; user Bob") {
					t.Errorf("error %q does not list the problems", err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New error = %v, want it to mention %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestReloadKeepsServingWhenValidationFails(t *testing.T) {
	t.Parallel()
	files := map[string]string{}
	for _, name := range []string{"routes.yaml", "envoy/authz/authz.rego", "authz/lib/routing/routing.rego", "authz/lib/routing/validation.rego",
		"authz/lib/request/request.rego", "authz/lib/identity/identity.rego", "authz/lib/grants/grants.rego",
		"authz/lib/zerotrust/zerotrust.rego", "authz/lib/stepup/stepup.rego", "authz/lib/minimize/minimize.rego"} {
		b, err := policies.FS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	dir := writeFiles(t, t.TempDir(), files)
	e := newEngine(t, Config{Paths: []string{dir}, ValidationQuery: policies.ValidationQuery})
	old := e.Revision()

	// A misspelt requirement would drop the scope check of accounts.list.
	files["routes.yaml"] = strings.Replace(files["routes.yaml"], "      scopes:\n        all_of: [accounts:read]\n      data_fields: [id, currency, nickname, account_type]",
		"      scope:\n        all_of: [accounts:read]\n      data_fields: [id, currency, nickname, account_type]", 1)
	writeFiles(t, dir, files)
	err := e.Reload(t.Context())
	var ve *ValidationError
	if !errors.As(err, &ve) || !slices.Contains(ve.Problems, "routes[0] (accounts.list): scope: unknown field") {
		t.Fatalf("Reload error = %v, want the unknown field reported", err)
	}
	if e.Revision() != old {
		t.Errorf("revision went from %s to %s", old, e.Revision())
	}
	in := corpusInput("GET", "/accounts", map[string]any{"sub": "alice", "scope": "payments:read"}, nil, nil, nil, nil, false, nil)
	d, err := e.Eval(t.Context(), mustInput(t, in))
	if err != nil || d.Allowed || d.DynamicMetadata["reason"] != "insufficient_scope" {
		t.Fatalf("Eval = %+v, %v; want the serving table to deny insufficient_scope", d, err)
	}
}
