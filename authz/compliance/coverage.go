package compliance

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
)

// testRun is one passing Rego test and the source it evaluated.
type testRun struct {
	name    string                   // data.<package>.<test>, as `opa test` names it
	covered map[string][]cover.Range // by file
}

// exercises reports whether the test evaluated at least one expression or
// head of r, that is, covered one of its lines.
func (t testRun) exercises(r *policyRule) bool {
	for _, rng := range t.covered[r.file] {
		if rng.Start.Row <= r.lastRow && rng.End.Row >= r.firstRow {
			return true
		}
	}
	return false
}

// runTests runs the Rego tests among modules with OPA's tester and returns,
// per test, the lines it covered. A cover.Cover accumulates over everything it
// traces, so each test runs on its own under a tracer of its own.
func runTests(ctx context.Context, modules map[string]*ast.Module, store storage.Store) ([]testRun, error) {
	// The first run compiles the modules with the tester's own stages (such as
	// renaming duplicate test names) and passes the verdict on the suite.
	compiler := ast.NewCompiler().
		WithCapabilities(ast.CapabilitiesForThisVersion()).
		WithEnablePrintStatements(true)
	results, err := collect(ctx, tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules))
	if err != nil {
		return nil, err
	}
	var failed []error
	for _, r := range results {
		if !r.Skip && !r.Pass() {
			failed = append(failed, testFailure(r))
		}
	}
	if len(failed) > 0 {
		return nil, errors.Join(failed...)
	}

	// Without modules to compile, a runner reuses the compiled ones; the
	// prefix selects exactly one test.
	var runs []testRun
	for _, ref := range testRefs(compiler) {
		cov := cover.New()
		results, err := collect(ctx, tester.NewRunner().
			SetCompiler(compiler).
			SetStore(store).
			SetPrefixMatchers(ref).
			SetCoverageQueryTracer(cov).
			SetCoverageRuns([]cover.Kind{})) // the extra passes only explain lines not covered
		if err != nil {
			return nil, err
		}
		if len(results) != 1 {
			return nil, fmt.Errorf("test %s: selected %d tests, want 1", ref, len(results))
		}
		if r := results[0]; !r.Pass() {
			// It passed in the first run: the test depends on something
			// other than its input, such as time.
			return nil, fmt.Errorf("%w (passed in the first run)", testFailure(r))
		}
		run := testRun{name: results[0].Package + "." + results[0].Name, covered: map[string][]cover.Range{}}
		for file, fr := range cov.Report(nil).Files {
			run.covered[file] = fr.Covered
		}
		runs = append(runs, run)
	}
	return runs, nil
}

// collect runs the runner's tests and waits for all their results.
func collect(ctx context.Context, runner *tester.Runner) ([]*tester.Result, error) {
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return nil, err
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	// A cancelled run stops early and leaves tests out; it proves nothing.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// testRefs returns the path of each test in the compiled modules, in file
// order, as the tester's prefix matchers compare it.
func testRefs(compiler *ast.Compiler) []ast.Ref {
	var refs []ast.Ref
	for _, m := range sortedModules(compiler.Modules) {
		for _, r := range m.Rules {
			if name, skipped, ok := testName(r); ok && !skipped {
				refs = append(refs, m.Package.Path.Extend(name))
			}
		}
	}
	return refs
}

// testName returns the leading part of r's path that makes r a test, as the
// tester finds it, and whether the tester skips it (todo_test_); ok is false
// for a rule that is no test.
func testName(r *ast.Rule) (name ast.Ref, skipped, ok bool) {
	prefix := r.Head.Ref().GroundPrefix()
	for i, t := range prefix {
		var s string
		switch v := t.Value.(type) {
		case ast.Var:
			s = string(v)
		case ast.String:
			s = string(v)
		}
		if strings.HasPrefix(s, tester.TestPrefix) {
			return prefix[:i+1], false, true
		}
		if strings.HasPrefix(s, tester.SkipTestPrefix) {
			return prefix[:i+1], true, true
		}
	}
	return nil, false, false
}

// testFailure describes a failed or erroring test result.
func testFailure(r *tester.Result) error {
	where := ""
	if r.Location != nil {
		where = fmt.Sprintf("%s:%d: ", r.Location.File, r.Location.Row)
	}
	if r.Error != nil {
		return fmt.Errorf("%s%s.%s: %w: %v", where, r.Package, r.Name, ErrTestFailed, r.Error)
	}
	return fmt.Errorf("%s%s.%s: %w", where, r.Package, r.Name, ErrTestFailed)
}
