package policies_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"testing"
	// Business-hours tests resolve Europe/London; embedding the zone database keeps
	// them independent of the host's zoneinfo.
	_ "time/tzdata"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/finauthz/authz/policies"
)

// load reads the embedded library as a loader rooted at policies.FS does: every
// Rego and data file, Rego v1, annotations processed.
func load(t *testing.T) *loader.Result {
	t.Helper()
	result, err := loader.NewFileLoader().
		WithFS(policies.FS).
		WithProcessAnnotation(true).
		WithRegoVersion(ast.RegoV1).
		All([]string{"."})
	if err != nil {
		t.Fatalf("load policies.FS: %v", err)
	}
	return result
}

func TestRegoTestsPass(t *testing.T) {
	t.Parallel()
	result := load(t)

	ch, err := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithStrict(true)).
		SetStore(inmem.NewFromObject(result.Documents)).
		SetModules(result.ParsedModules()).
		RunTests(context.Background(), nil)
	if err != nil {
		t.Fatalf("run rego tests: %v", err)
	}

	ran := 0
	for r := range ch {
		ran++
		switch {
		case r.Error != nil:
			t.Errorf("%s.%s (%s): error: %v", r.Package, r.Name, r.Location, r.Error)
		case r.Fail:
			t.Errorf("%s.%s (%s): failed", r.Package, r.Name, r.Location)
		case r.Skip:
			t.Errorf("%s.%s (%s): skipped", r.Package, r.Name, r.Location)
		}
	}
	if ran == 0 {
		t.Fatal("no rego tests ran")
	}
	t.Logf("%d rego tests ran", ran)
}

func TestRegoFilesAreFormatted(t *testing.T) {
	t.Parallel()
	files := regoFiles(t)
	for _, name := range files {
		src, err := fs.ReadFile(policies.FS, name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		formatted, err := format.SourceWithOpts(name, src, format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Errorf("format %s: %v", name, err)
			continue
		}
		if !bytes.Equal(src, formatted) {
			t.Errorf("%s is not formatted; run opa fmt -w policies/", name)
		}
	}
}

func TestRegoCompilesInStrictMode(t *testing.T) {
	t.Parallel()
	c := ast.NewCompiler().WithStrict(true)
	if c.Compile(load(t).ParsedModules()); c.Failed() {
		t.Fatalf("strict compile: %v", c.Errors)
	}
}

// TestRulesCarryAnnotations holds every policy rule to the annotation contract that
// the control-mapping tooling reads: a rule-scoped METADATA block with a title, a
// description, and custom keys naming controls, or internal: true.
func TestRulesCarryAnnotations(t *testing.T) {
	t.Parallel()
	controls := []string{"pci_dss", "soc2", "gdpr", "glba", "ccpa"}

	modules := load(t).ParsedModules()
	set, errs := ast.BuildAnnotationSet(slices.Collect(maps.Values(modules)))
	if errs != nil {
		t.Fatalf("build annotation set: %v", errs)
	}

	checked := 0
	for name, module := range modules {
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		for _, rule := range module.Rules {
			checked++
			where := rule.Location.String()
			scoped := set.GetRuleScope(rule)
			if len(scoped) != 1 {
				t.Errorf("%s %s: want one rule-scoped METADATA block, got %d", where, rule.Head.Ref(), len(scoped))
				continue
			}
			a := scoped[0]
			if a.Title == "" || a.Description == "" {
				t.Errorf("%s %s: title and description are required", where, rule.Head.Ref())
			}
			mapped := 0
			for key, value := range a.Custom {
				switch {
				case key == "internal":
					if value != true {
						t.Errorf("%s %s: internal must be true", where, rule.Head.Ref())
					}
				case slices.Contains(controls, key):
					ids, ok := value.([]any)
					if !ok || len(ids) == 0 {
						t.Errorf("%s %s: %s must list control ids", where, rule.Head.Ref(), key)
					}
					mapped++
				default:
					t.Errorf("%s %s: unknown custom key %q", where, rule.Head.Ref(), key)
				}
			}
			_, internal := a.Custom["internal"]
			if internal == (mapped > 0) {
				t.Errorf("%s %s: map to controls or mark internal: true, not both or neither", where, rule.Head.Ref())
			}
		}
	}
	if checked == 0 {
		t.Fatal("no rules checked")
	}
}

// TestQueryIsAnEntrypoint keeps the annotation that has the policy engine partially
// evaluate the policy at load (README.md, Evaluation cost).
func TestQueryIsAnEntrypoint(t *testing.T) {
	t.Parallel()
	query := ast.MustParseRef(policies.Query)
	for _, module := range load(t).ParsedModules() {
		if !query.HasPrefix(module.Package.Path) {
			continue
		}
		for _, a := range module.Annotations {
			if a.Scope == "package" && a.Entrypoint {
				return
			}
		}
	}
	t.Fatalf("no package of %s is annotated entrypoint: true", policies.Query)
}

func TestShippedRouteTableIsValid(t *testing.T) {
	t.Parallel()
	problems := eval(t, policies.ValidationQuery, nil)
	if list, ok := problems.([]any); !ok || len(list) != 0 {
		t.Fatalf("%s = %v, want an empty set", policies.ValidationQuery, problems)
	}
}

func TestQueryDecidesEveryRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		input   map[string]any
		allowed bool
		status  int
	}{
		{
			name:    "public route is allowed without a token",
			input:   request("GET", "/fx/rates"),
			allowed: true,
		},
		{
			name:   "protected route without a token is challenged with 401",
			input:  request("GET", "/accounts"),
			status: 401,
		},
		{
			name:   "unknown route is denied with 403",
			input:  request("GET", "/nowhere"),
			status: 403,
		},
		{
			name:   "empty input is denied",
			input:  map[string]any{},
			status: 403,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			decision, ok := eval(t, policies.Query, tc.input).(map[string]any)
			if !ok {
				t.Fatalf("%s is not an object", policies.Query)
			}
			if decision["allowed"] != tc.allowed {
				t.Errorf("allowed = %v, want %v", decision["allowed"], tc.allowed)
			}
			if status := fmt.Sprint(decision["http_status"]); !tc.allowed && status != fmt.Sprint(tc.status) {
				t.Errorf("http_status = %s, want %d", status, tc.status)
			}
		})
	}
}

// eval evaluates query against the embedded policy modules (tests left out) and
// the route table.
func eval(t *testing.T, query string, input any) any {
	t.Helper()
	result := load(t)
	opts := []func(*rego.Rego){
		rego.Query(query),
		rego.Store(inmem.NewFromObject(result.Documents)),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for name, module := range result.ParsedModules() {
		if !strings.HasSuffix(name, "_test.rego") {
			opts = append(opts, rego.ParsedModule(module))
		}
	}
	if input != nil {
		opts = append(opts, rego.Input(input))
	}
	rs, err := rego.New(opts...).Eval(context.Background())
	if err != nil {
		t.Fatalf("eval %s: %v", query, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("eval %s: undefined", query)
	}
	return rs[0].Expressions[0].Value
}

func request(method, path string) map[string]any {
	segments := []any{}
	for s := range strings.SplitSeq(strings.TrimPrefix(path, "/"), "/") {
		segments = append(segments, s)
	}
	return map[string]any{
		"attributes": map[string]any{
			"request": map[string]any{"http": map[string]any{
				"method":  method,
				"path":    path,
				"headers": map[string]any{},
			}},
			"source": map[string]any{"address": map[string]any{"socketAddress": map[string]any{
				"address":   "203.0.113.10",
				"portValue": 52100,
			}}},
		},
		"parsed_path": segments,
	}
}

func regoFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := fs.WalkDir(policies.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".rego") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatalf("walk policies.FS: %v", err)
	}
	if len(files) == 0 {
		t.Fatal("policies.FS holds no .rego files")
	}
	return files
}
