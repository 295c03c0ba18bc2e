package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// writeFiles writes files (slash-separated names relative to dir) and
// returns dir.
func writeFiles(t testing.TB, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func mustInput(t testing.TB, x any) ast.Value {
	t.Helper()
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestEvalParsesResult(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		result string // Rego expression assigned to allow
		want   Decision
	}{
		{name: "boolean true allows", result: `true`, want: Decision{Allowed: true}},
		{name: "boolean false denies", result: `false`, want: Decision{Allowed: false}},
		{name: "object with only allowed", result: `{"allowed": true}`, want: Decision{Allowed: true}},
		{
			name:   "headers object is sorted by name and lower-cased",
			result: `{"allowed": true, "headers": {"X-User": "alice", "X-Account": "acc-1"}}`,
			want:   Decision{Allowed: true, Headers: []Header{{"x-account", "acc-1"}, {"x-user", "alice"}}},
		},
		{
			name:   "header with an array of values gives one entry per value in order",
			result: `{"allowed": true, "headers": {"x-role": ["teller", "auditor"]}}`,
			want:   Decision{Allowed: true, Headers: []Header{{"x-role", "teller"}, {"x-role", "auditor"}}},
		},
		{
			name:   "header with a set of values is sorted",
			result: `{"allowed": true, "headers": {"x-role": {"teller", "auditor"}}}`,
			want:   Decision{Allowed: true, Headers: []Header{{"x-role", "auditor"}, {"x-role", "teller"}}},
		},
		{
			name:   "headers as an array of objects keep array order",
			result: `{"allowed": true, "headers": [{"x-b": "2"}, {"x-a": "1", "x-c": ["3", "4"]}]}`,
			want:   Decision{Allowed: true, Headers: []Header{{"x-b", "2"}, {"x-a", "1"}, {"x-c", "3"}, {"x-c", "4"}}},
		},
		{
			name:   "empty header value is kept",
			result: `{"allowed": true, "headers": {"x-empty": ""}}`,
			want:   Decision{Allowed: true, Headers: []Header{{"x-empty", ""}}},
		},
		{
			name:   "header value may contain tabs and non-ASCII text",
			result: `{"allowed": true, "headers": {"x-name": "Zoë\tB"}}`,
			want:   Decision{Allowed: true, Headers: []Header{{"x-name", "Zoë\tB"}}},
		},
		{
			name:   "request headers to remove from array are lower-cased",
			result: `{"allowed": true, "request_headers_to_remove": ["Authorization", "x-api-key"]}`,
			want:   Decision{Allowed: true, RequestHeadersToRemove: []string{"authorization", "x-api-key"}},
		},
		{
			name:   "request headers to remove from a set are sorted",
			result: `{"allowed": true, "request_headers_to_remove": {"x-b", "x-a"}}`,
			want:   Decision{Allowed: true, RequestHeadersToRemove: []string{"x-a", "x-b"}},
		},
		{
			name:   "response headers to add",
			result: `{"allowed": true, "response_headers_to_add": [{"X-Decision-Id": "d1"}]}`,
			want:   Decision{Allowed: true, ResponseHeadersToAdd: []Header{{"x-decision-id", "d1"}}},
		},
		{
			name:   "query parameters to set keep their case",
			result: `{"allowed": true, "query_parameters_to_set": {"Account": ["a%201", "b"], "tenant": "t-1"}}`,
			want:   Decision{Allowed: true, QueryParametersToSet: []Header{{"Account", "a%201"}, {"Account", "b"}, {"tenant", "t-1"}}},
		},
		{
			name:   "query parameters to set as an array of objects",
			result: `{"allowed": true, "query_parameters_to_set": [{"b": "2"}, {"a": "1"}]}`,
			want:   Decision{Allowed: true, QueryParametersToSet: []Header{{"b", "2"}, {"a", "1"}}},
		},
		{
			name:   "query parameters to remove",
			result: `{"allowed": true, "query_parameters_to_remove": ["debug", "Trace"]}`,
			want:   Decision{Allowed: true, QueryParametersToRemove: []string{"debug", "Trace"}},
		},
		{
			name:   "denied with status, body and headers",
			result: `{"allowed": false, "http_status": 429, "body": "slow down", "headers": {"Retry-After": "30"}}`,
			want:   Decision{Allowed: false, HTTPStatus: 429, Body: "slow down", Headers: []Header{{"retry-after", "30"}}},
		},
		{
			name:   "dynamic metadata keeps JSON values and turns sets into sorted arrays",
			result: `{"allowed": false, "dynamic_metadata": {"reason": "limit", "amount": 1500.5, "n": 3, "ok": false, "none": null, "tags": {"b", "a"}, "nested": {"list": [1, "x"]}}}`,
			want: Decision{Allowed: false, DynamicMetadata: map[string]any{
				"reason": "limit", "amount": json.Number("1500.5"), "n": json.Number("3"), "ok": false, "none": nil,
				"tags": []any{"a", "b"}, "nested": map[string]any{"list": []any{json.Number("1"), "x"}},
			}},
		},
		{
			name:   "unknown fields are ignored",
			result: `{"allowed": true, "note": 42}`,
			want:   Decision{Allowed: true},
		},
		{
			name:   "empty arrays give no entries",
			result: `{"allowed": true, "headers": [], "request_headers_to_remove": []}`,
			want:   Decision{Allowed: true, RequestHeadersToRemove: []string{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{
				"policy.rego": "package envoy.authz\n\nallow := " + tc.result + "\n",
			})
			e := newEngine(t, Config{Paths: []string{dir}})
			got, err := e.Eval(t.Context(), mustInput(t, map[string]any{}))
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			tc.want.Revision = e.Revision()
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("Eval =\n%#v\nwant\n%#v", *got, tc.want)
			}
		})
	}
}

func TestEvalRefusesInvalidResult(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		result  string
		wantMsg string
	}{
		{"string result", `"yes"`, "result: want boolean or object, got string"},
		{"array result", `[true]`, "result: want boolean or object, got array"},
		{"missing allowed", `{"headers": {}}`, "result.allowed: required field is missing"},
		{"allowed as string", `{"allowed": "true"}`, "result.allowed: want boolean, got string"},
		{"headers as number", `{"allowed": true, "headers": 1}`, "result.headers: want object or array, got number"},
		{"headers array holding a string", `{"allowed": true, "headers": [{"a": "b"}, "c"]}`, "result.headers[1]: want object, got string"},
		{"header value as number", `{"allowed": true, "headers": {"x-n": 1}}`, `result.headers["x-n"]: want string or array of strings, got number`},
		{"header value array holding a number", `{"allowed": true, "headers": [{"x-n": ["1", 2]}]}`, `result.headers[0]["x-n"][1]: want string, got number`},
		{"header with a non-string key", `{"allowed": true, "headers": {1: "a"}}`, "result.headers: want string keys, got number key 1"},
		{"header name with a space", `{"allowed": true, "headers": {"x user": "a"}}`, `result.headers: invalid header name "x user"`},
		{"pseudo-header name", `{"allowed": true, "headers": {":path": "/admin"}}`, `result.headers: invalid header name ":path"`},
		{"empty header name", `{"allowed": true, "headers": {"": "a"}}`, `result.headers: invalid header name ""`},
		{"header value with CRLF", `{"allowed": true, "headers": {"x-user": "a\r\nx-admin: true"}}`, `result.headers["x-user"]: invalid header value`},
		{"header value with NUL", `{"allowed": true, "headers": {"x-user": "a\u0000"}}`, `result.headers["x-user"]: invalid header value`},
		{"header value with bare LF in response headers", `{"allowed": true, "response_headers_to_add": {"x-a": "a\nb"}}`, `result.response_headers_to_add["x-a"]: invalid header value`},
		{"headers to remove as object", `{"allowed": true, "request_headers_to_remove": {"a": "b"}}`, "result.request_headers_to_remove: want array of strings, got object"},
		{"headers to remove holding a number", `{"allowed": true, "request_headers_to_remove": ["a", 1]}`, "result.request_headers_to_remove[1]: want string, got number"},
		{"headers to remove holding a pseudo-header", `{"allowed": true, "request_headers_to_remove": [":authority"]}`, `result.request_headers_to_remove[0]: invalid header name ":authority"`},
		{"query parameter value with an ampersand", `{"allowed": true, "query_parameters_to_set": {"a": "1&admin=true"}}`, `result.query_parameters_to_set["a"]: query parameter value is not percent-encoded`},
		{"query parameter value with a bad escape", `{"allowed": true, "query_parameters_to_set": {"a": "%zz"}}`, `result.query_parameters_to_set["a"]: query parameter value is not percent-encoded`},
		{"query parameter with an empty name", `{"allowed": true, "query_parameters_to_set": {"": "1"}}`, `result.query_parameters_to_set: query parameter name "" is not percent-encoded`},
		{"query parameters to set as string", `{"allowed": true, "query_parameters_to_set": "a=1"}`, "result.query_parameters_to_set: want object or array, got string"},
		{"query parameter to remove with a hash", `{"allowed": true, "query_parameters_to_remove": ["a#b"]}`, `result.query_parameters_to_remove[0]: query parameter name "a#b" is not percent-encoded`},
		{"status as string", `{"allowed": false, "http_status": "403"}`, "result.http_status: want number, got string"},
		{"status above 599", `{"allowed": false, "http_status": 700}`, "result.http_status: want integer 100-599, got 700"},
		{"status below 100", `{"allowed": false, "http_status": 99}`, "result.http_status: want integer 100-599, got 99"},
		{"status with a fraction", `{"allowed": false, "http_status": 403.5}`, "result.http_status: want integer 100-599, got 403.5"},
		{"body as object", `{"allowed": false, "body": {"error": "x"}}`, "result.body: want string, got object"},
		{"dynamic metadata as array", `{"allowed": false, "dynamic_metadata": ["a"]}`, "result.dynamic_metadata: want object, got array"},
		{"dynamic metadata with a non-string key", `{"allowed": false, "dynamic_metadata": {"a": {1: 2}}}`, "result.dynamic_metadata: want string keys, got number key 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{
				"policy.rego": "package envoy.authz\n\nallow := " + tc.result + "\n",
			})
			e := newEngine(t, Config{Paths: []string{dir}})
			d, err := e.Eval(t.Context(), mustInput(t, map[string]any{}))
			if !errors.Is(err, ErrInvalidResult) {
				t.Fatalf("Eval = %+v, %v; want ErrInvalidResult", d, err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestEvalRefusesMultipleResults(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"policy.rego": "package envoy.authz\n\nallow contains {\"allowed\": true}\n\nallow contains {\"allowed\": true, \"body\": \"x\"}\n",
	})
	e := newEngine(t, Config{Paths: []string{dir}, Query: "data.envoy.authz.allow[_]"})
	_, err := e.Eval(t.Context(), mustInput(t, map[string]any{}))
	if !errors.Is(err, ErrInvalidResult) || !strings.Contains(err.Error(), "has 2 results, want 1") {
		t.Fatalf("Eval error = %v, want ErrInvalidResult for 2 results", err)
	}
}

func TestEvalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy string
		strict bool
		check  func(*testing.T, error)
	}{
		{
			name:   "undefined result is ErrUndefined",
			policy: "package envoy.authz\n\nallow if input.user == \"admin\"\n",
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrUndefined) {
					t.Errorf("error = %v, want ErrUndefined", err)
				}
			},
		},
		{
			name:   "conflicting values of a complete rule are an evaluation error",
			policy: "package envoy.authz\n\nallow := true if input.a\n\nallow := false if input.b\n",
			check: func(t *testing.T, err error) {
				var te *topdown.Error
				if !errors.As(err, &te) || te.Code != topdown.ConflictErr {
					t.Errorf("error = %v, want a wrapped topdown conflict error", err)
				}
				if errors.Is(err, ErrUndefined) || errors.Is(err, ErrInvalidResult) {
					t.Errorf("evaluation error %v must not be a result error", err)
				}
			},
		},
		{
			name:   "builtin error in strict mode is an evaluation error",
			policy: "package envoy.authz\n\ndefault allow := false\n\nallow if to_number(input.amount) > 10\n",
			strict: true,
			check: func(t *testing.T, err error) {
				var te *topdown.Error
				if !errors.As(err, &te) || te.Code != topdown.BuiltinErr {
					t.Errorf("error = %v, want a wrapped topdown builtin error", err)
				}
				if msg := err.Error(); strings.Contains(msg, "lots") || !strings.Contains(msg, "eval_builtin_error at ") {
					t.Errorf("error %q: want the code and location without input values", msg)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{"policy.rego": tc.policy})
			e := newEngine(t, Config{Paths: []string{dir}, StrictBuiltinErrors: tc.strict})
			d, err := e.Eval(t.Context(), mustInput(t, map[string]any{"a": true, "b": true, "amount": "lots"}))
			if err == nil {
				t.Fatalf("Eval = %+v, want error", d)
			}
			tc.check(t, err)
		})
	}
}

func TestBuiltinErrorWithoutStrictModeIsUndefined(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"policy.rego": "package envoy.authz\n\ndefault allow := false\n\nallow if to_number(input.amount) > 10\n",
	})
	e := newEngine(t, Config{Paths: []string{dir}})
	d, err := e.Eval(t.Context(), mustInput(t, map[string]any{"amount": "lots"}))
	if err != nil || d.Allowed {
		t.Fatalf("Eval = %+v, %v; want the default deny", d, err)
	}
}

func TestEvalHonoursContext(t *testing.T) {
	t.Parallel()
	// Nine million iterations: far longer than the deadline below.
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"policy.rego": `package envoy.authz

default allow := false

allow if {
	some i in numbers.range(1, 3000)
	some j in numbers.range(1, 3000)
	i * j == -1
}
`,
	})
	e := newEngine(t, Config{Paths: []string{dir}})
	input := mustInput(t, map[string]any{})

	t.Run("cancelled context is not evaluated", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := e.Eval(ctx, input); !errors.Is(err, context.Canceled) {
			t.Fatalf("Eval error = %v, want context.Canceled", err)
		}
	})
	t.Run("deadline stops a running evaluation", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := e.Eval(ctx, input)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Eval error = %v, want context.DeadlineExceeded", err)
		}
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Errorf("Eval returned %v after the deadline", elapsed)
		}
	})
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	good := "package envoy.authz\n\ndefault allow := false\n"
	tests := []struct {
		name    string
		files   map[string]string
		paths   []string // relative to the temp dir; the dir itself when nil
		query   string
		wantMsg string
	}{
		{name: "no paths", paths: []string{}, wantMsg: "no paths"},
		{name: "missing path", paths: []string{"missing"}, wantMsg: "no such file"},
		{name: "syntax error", files: map[string]string{"p.rego": "package envoy.authz\n\nallow if {\n"}, wantMsg: "rego_parse_error"},
		{name: "rego v0 syntax", files: map[string]string{"p.rego": "package envoy.authz\n\nallow { true }\n"}, wantMsg: "rego_parse_error"},
		{name: "unsafe variable", files: map[string]string{"p.rego": "package envoy.authz\n\nallow if x > 1\n"}, wantMsg: "rego_unsafe_var_error"},
		{name: "invalid data file", files: map[string]string{"p.rego": good, "data.json": "{"}, wantMsg: "data.json"},
		{
			name:    "rule and data at the same path",
			files:   map[string]string{"p.rego": good, "envoy/authz/data.json": `{"allow": true}`},
			wantMsg: "conflict",
		},
		{name: "query with a syntax error", files: map[string]string{"p.rego": good}, query: "data.envoy.[", wantMsg: "query"},
		{name: "query with two expressions", files: map[string]string{"p.rego": good}, query: "data.envoy.authz.allow; true", wantMsg: "want one expression, got 2"},
		{
			name:    "query that nothing defines",
			files:   map[string]string{"p.rego": "package envoy.authz_v2\n\ndefault allow := false\n"},
			wantMsg: "query data.envoy.authz.allow: no rule or data document defines it",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), tc.files)
			paths := []string{dir}
			if tc.paths != nil {
				paths = paths[:0]
				for _, p := range tc.paths {
					paths = append(paths, filepath.Join(dir, p))
				}
			}
			_, err := New(t.Context(), Config{Paths: paths, Query: tc.query, Logger: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("New error = %v, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestQueryDefinedByDataIsAccepted(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"envoy/authz/data.json": `{"allow": {"allowed": false, "body": "maintenance"}}`,
	})
	e := newEngine(t, Config{Paths: []string{dir}})
	d, err := e.Eval(t.Context(), mustInput(t, map[string]any{}))
	if err != nil || d.Allowed || d.Body != "maintenance" {
		t.Fatalf("Eval = %+v, %v; want the data document's deny", d, err)
	}
}

// layoutPolicy reads data from each place the loader can put it.
const layoutPolicy = `package envoy.authz

allow := {
	"allowed": true,
	"headers": {
		"x-limit": format_int(data.envoy.authz.limits[input.role], 10),
		"x-region": data.region,
		"x-tier": data.envoy.authz.settings.tier,
		"x-prefixed": data.extra.cfg.mode,
	},
}
`

func TestDataFilesLandWhereOPALoaderPutsThem(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	policies := writeFiles(t, filepath.Join(root, "policies"), map[string]string{
		"envoy/authz/policy.rego":   layoutPolicy,
		"envoy/authz/limits.json":   `{"limits": {"teller": 1000}}`,
		"envoy/authz/settings.yaml": "settings:\n  tier: gold\n",
		"data.json":                 `{"region": "eu-west"}`,
		// Tests are for opa test, not for serving: this one would not compile
		// together with the policy.
		"envoy/authz/policy_test.rego": "package envoy.authz\n\nallow := false\n",
		// Hidden directories, like a ConfigMap's ..data, are skipped.
		"..2024_01_01/envoy/authz/policy.rego": layoutPolicy,
		".git/data.json":                       `{"region": "elsewhere"}`,
	})
	extra := writeFiles(t, filepath.Join(root, "extra"), map[string]string{"mode.json": `{"mode": "strict"}`})

	e := newEngine(t, Config{Paths: []string{policies, "extra.cfg:" + filepath.Join(extra, "mode.json")}})
	d, err := e.Eval(t.Context(), mustInput(t, map[string]any{"role": "teller"}))
	if err != nil {
		t.Fatalf("Eval: %v", err)
	}
	want := []Header{{"x-limit", "1000"}, {"x-prefixed", "strict"}, {"x-region", "eu-west"}, {"x-tier", "gold"}}
	if !reflect.DeepEqual(d.Headers, want) {
		t.Errorf("headers = %v, want %v", d.Headers, want)
	}
}

func TestPoliciesFromFS(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"policies/envoy/authz/policy.rego": {Data: []byte(layoutPolicy)},
		"policies/envoy/authz/limits.json": {Data: []byte(`{"limits": {"teller": 7}, "settings": {"tier": "silver"}}`)},
		"policies/data.json":               {Data: []byte(`{"region": "eu-central"}`)},
		"policies/envoy/authz/x_test.rego": {Data: []byte("not rego at all")},
		"extra/mode.json":                  {Data: []byte(`{"mode": "audit"}`)},
	}
	tests := []struct {
		name  string
		paths []string
	}{
		{name: "clean paths", paths: []string{"policies", "extra.cfg:extra/mode.json"}},
		{name: "paths with dot and trailing slash are cleaned", paths: []string{"./policies/", "extra.cfg:./extra/mode.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEngine(t, Config{FS: fsys, Paths: tc.paths})
			d, err := e.Eval(t.Context(), mustInput(t, map[string]any{"role": "teller"}))
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			want := []Header{{"x-limit", "7"}, {"x-prefixed", "audit"}, {"x-region", "eu-central"}, {"x-tier", "silver"}}
			if !reflect.DeepEqual(d.Headers, want) {
				t.Errorf("headers = %v, want %v", d.Headers, want)
			}
		})
	}
}

func TestRevision(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"envoy/authz/policy.rego": "package envoy.authz\n\ndefault allow := false\n",
		"data.json":               `{"a": 1}`,
	}
	a := newEngine(t, Config{Paths: []string{writeFiles(t, t.TempDir(), files)}})
	b := newEngine(t, Config{Paths: []string{writeFiles(t, t.TempDir(), files)}})
	if a.Revision() != b.Revision() {
		t.Errorf("same files in two directories: revisions %s and %s differ", a.Revision(), b.Revision())
	}
	if len(a.Revision()) != 16 {
		t.Errorf("revision %q: want 16 hex digits", a.Revision())
	}
	fsys := fstest.MapFS{}
	for name, content := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(content)}
	}
	if c := newEngine(t, Config{FS: fsys, Paths: []string{"."}}); c.Revision() != a.Revision() {
		t.Errorf("same files in an fs.FS: revision %s, want %s", c.Revision(), a.Revision())
	}

	changed := map[string]string{
		"envoy/authz/policy.rego": files["envoy/authz/policy.rego"],
		"data.json":               `{"a": 2}`,
	}
	if c := newEngine(t, Config{Paths: []string{writeFiles(t, t.TempDir(), changed)}}); c.Revision() == a.Revision() {
		t.Errorf("changed data kept revision %s", c.Revision())
	}
	moved := map[string]string{
		"envoy/authz/policy.rego": files["envoy/authz/policy.rego"],
		"envoy/data.json":         files["data.json"],
	}
	if c := newEngine(t, Config{Paths: []string{writeFiles(t, t.TempDir(), moved)}}); c.Revision() == a.Revision() {
		t.Errorf("data moved to another data path kept revision %s", c.Revision())
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	const (
		allowPolicy = "package envoy.authz\n\nallow := true\n"
		denyPolicy  = "package envoy.authz\n\nallow := {\"allowed\": false, \"http_status\": 451}\n"
	)
	tests := []struct {
		name         string
		files        map[string]string // written before Reload
		remove       string            // removed before Reload
		wantErr      string
		wantAllowed  bool
		wantRevision func(old, cur string) bool
	}{
		{
			name:         "new good policy is swapped in",
			files:        map[string]string{"policy.rego": denyPolicy},
			wantAllowed:  false,
			wantRevision: func(old, cur string) bool { return old != cur },
		},
		{
			name:         "identical content keeps the revision",
			files:        map[string]string{"policy.rego": allowPolicy},
			wantAllowed:  true,
			wantRevision: func(old, cur string) bool { return old == cur },
		},
		{
			name:         "syntax error keeps the old policy serving",
			files:        map[string]string{"policy.rego": "package envoy.authz\n\nallow := {\n"},
			wantErr:      "rego_parse_error",
			wantAllowed:  true,
			wantRevision: func(old, cur string) bool { return old == cur },
		},
		{
			name:         "compile error keeps the old policy serving",
			files:        map[string]string{"policy.rego": "package envoy.authz\n\nallow if unknown_function(1)\n"},
			wantErr:      "rego_type_error",
			wantAllowed:  true,
			wantRevision: func(old, cur string) bool { return old == cur },
		},
		{
			name:         "renamed package keeps the old policy serving",
			files:        map[string]string{"policy.rego": "package envoy.authz2\n\nallow := false\n"},
			wantErr:      "no rule or data document defines it",
			wantAllowed:  true,
			wantRevision: func(old, cur string) bool { return old == cur },
		},
		{
			name:         "deleted policy keeps the old policy serving",
			remove:       "policy.rego",
			wantErr:      "no rule or data document defines it",
			wantAllowed:  true,
			wantRevision: func(old, cur string) bool { return old == cur },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, t.TempDir(), map[string]string{"policy.rego": allowPolicy})
			e := newEngine(t, Config{Paths: []string{dir}})
			old := e.Revision()

			writeFiles(t, dir, tc.files)
			if tc.remove != "" {
				if err := os.Remove(filepath.Join(dir, tc.remove)); err != nil {
					t.Fatal(err)
				}
			}
			err := e.Reload(t.Context())
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Reload: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Reload error = %v, want it to mention %q", err, tc.wantErr)
			}

			d, err := e.Eval(t.Context(), mustInput(t, map[string]any{}))
			if err != nil {
				t.Fatalf("Eval after Reload: %v", err)
			}
			if d.Allowed != tc.wantAllowed {
				t.Errorf("Allowed = %v, want %v", d.Allowed, tc.wantAllowed)
			}
			if cur := e.Revision(); !tc.wantRevision(old, cur) {
				t.Errorf("revision went from %s to %s", old, cur)
			}
			if d.Revision != e.Revision() {
				t.Errorf("decision revision %s, engine revision %s", d.Revision, e.Revision())
			}
		})
	}
}

// TestEvalDuringReload evaluates from many goroutines while another one
// keeps swapping between two policies whose answer depends on both their
// code and their data: every answer must be exactly one policy's.
func TestEvalDuringReload(t *testing.T) {
	t.Parallel()
	policy := func(name string) map[string]string {
		return map[string]string{
			"envoy/authz/policy.rego": `package envoy.authz

allow := {
	"allowed": true,
	"headers": {"x-policy": "` + name + `", "x-data": data.which},
	"dynamic_metadata": {"policy": "` + name + `"},
}
`,
			"data.json": `{"which": "` + name + `"}`,
		}
	}
	dir := writeFiles(t, t.TempDir(), policy("a"))
	e := newEngine(t, Config{Paths: []string{dir}})
	revA := e.Revision()
	want := map[string]*Decision{}
	for _, name := range []string{"a", "b"} {
		writeFiles(t, dir, policy(name))
		if err := e.Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
		d, err := e.Eval(t.Context(), mustInput(t, map[string]any{}))
		if err != nil {
			t.Fatal(err)
		}
		want[d.Revision] = d
	}
	if len(want) != 2 || want[revA] == nil {
		t.Fatalf("setup: want two distinct revisions, got %v", want)
	}

	const (
		readers = 8
		reloads = 40
	)
	input := mustInput(t, map[string]any{})
	done := make(chan struct{})
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			// Every reader evaluates at least once, however early the reloads end.
			for {
				d, err := e.Eval(context.Background(), input)
				if err != nil {
					errs <- err
					return
				}
				if w := want[d.Revision]; w == nil || !reflect.DeepEqual(d, w) {
					errs <- errors.New("mixed or unknown decision: " + formatDecision(d))
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	wg.Go(func() {
		defer close(done)
		for i := range reloads {
			writeFiles(t, dir, policy([]string{"a", "b"}[i%2]))
			if err := e.Reload(context.Background()); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func formatDecision(d *Decision) string {
	b, _ := json.Marshal(d)
	return string(b)
}

func TestPrintGoesToDebugLog(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"policy.rego": "package envoy.authz\n\nallow if {\n\tprint(\"role is\", input.role)\n\tinput.role == \"teller\"\n}\n",
	})
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEngine(t, Config{Paths: []string{dir}, Logger: logger})
	if _, err := e.Eval(t.Context(), mustInput(t, map[string]any{"role": "teller"})); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, `msg="policy print" message="role is teller"`) {
		t.Errorf("log does not show the print output:\n%s", out)
	}
}
