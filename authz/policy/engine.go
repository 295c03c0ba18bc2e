// Package policy loads, compiles and evaluates the Rego authorization policy
// and parses its result into a [Decision], following OPA-Envoy's result
// object. An [Engine] serves one prepared query and swaps in a new one on
// [Engine.Reload] without blocking evaluations.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// DefaultQuery is the query evaluated when Config.Query is empty; it is
// OPA-Envoy's default decision path.
const DefaultQuery = "data.envoy.authz.allow"

// Config configures an Engine.
type Config struct {
	// Paths are .rego, .json, .yaml and .yml files or directories, loaded
	// like `opa eval -d`: data files below a directory land at the data
	// path of their sub-directory. "a.b:path" loads path under data.a.b.
	// Files ending in _test.rego, and hidden files and directories inside
	// a given directory, are skipped.
	Paths []string
	// FS, when set, resolves Paths inside it (for policies embedded with
	// go:embed); otherwise Paths name files of the operating system.
	FS fs.FS
	// Query is the Rego query whose value is the decision; DefaultQuery
	// when empty. It must be one expression, and when it is a reference
	// into data some rule or data document must define it.
	Query string
	// StrictBuiltinErrors makes a builtin error (such as to_number("x"))
	// an evaluation error instead of an undefined expression, like
	// `opa eval --strict-builtin-errors`. Off by default, matching `opa test`.
	StrictBuiltinErrors bool
	// Logger receives reload events and the output of print() calls in
	// the policy (at debug level); slog.Default() when nil.
	Logger *slog.Logger
}

// Engine evaluates the policy query against an input. It is safe for
// concurrent use; Reload swaps the policy without blocking Eval.
type Engine struct {
	cfg    Config
	query  ast.Body
	logger *slog.Logger

	current  atomic.Pointer[snapshot]
	reloadMu sync.Mutex // serialises Reload so an older load never replaces a newer one
}

// snapshot is one loaded revision of the policy, immutable once published.
type snapshot struct {
	revision string
	files    int
	prepared rego.PreparedEvalQuery
}

// New loads, compiles and prepares the policy, and returns an Engine
// ready to evaluate it.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("policy: no paths to load")
	}
	cfg.Paths = cleanPaths(cfg.FS, cfg.Paths)
	if cfg.Query == "" {
		cfg.Query = DefaultQuery
	}
	query, err := ast.ParseBodyWithOpts(cfg.Query, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("policy: query %q: %w", cfg.Query, err)
	}
	if len(query) != 1 {
		return nil, fmt.Errorf("policy: query %q: want one expression, got %d", cfg.Query, len(query))
	}
	e := &Engine{cfg: cfg, query: query, logger: cfg.Logger}
	if e.logger == nil {
		e.logger = slog.Default()
	}
	s, err := e.build(ctx)
	if err != nil {
		return nil, err
	}
	e.current.Store(s)
	e.logger.LogAttrs(ctx, slog.LevelInfo, "policy loaded",
		slog.String("revision", s.revision), slog.Int("files", s.files), slog.String("query", cfg.Query))
	return e, nil
}

// cleanPaths copies paths, and makes them valid fs.FS names (no "./" or
// trailing "/") when they are resolved in fsys, keeping any "a.b:" prefix.
func cleanPaths(fsys fs.FS, paths []string) []string {
	out := slices.Clone(paths)
	if fsys == nil {
		return out
	}
	for i, p := range paths {
		prefix, name := loader.SplitPrefix(p)
		out[i] = path.Clean(name)
		if len(prefix) > 0 {
			out[i] = p[:len(p)-len(name)] + out[i]
		}
	}
	return out
}

// Eval evaluates the query with input and parses the result. The error
// wraps ErrUndefined or ErrInvalidResult for results that are not a
// decision; any other error is an evaluation error: it wraps ctx.Err() when
// ctx stopped the evaluation, else OPA's *topdown.Error, whose message
// (which may quote input values) its own message leaves out.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (*Decision, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policy: evaluate %s: %w", e.cfg.Query, err)
	}
	s := e.current.Load()
	// OPA would start a goroutine per evaluation to watch ctx; AfterFunc
	// only runs one if ctx is actually cancelled while evaluating.
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancel.Cancel)
	rs, err := s.prepared.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalMetrics(metrics.NoOp()),
		rego.EvalExternalCancel(cancel))
	stop()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && topdown.IsCancel(err) {
			return nil, fmt.Errorf("policy: evaluate %s: %w", e.cfg.Query, ctxErr)
		}
		return nil, &evalError{query: e.cfg.Query, err: err}
	}
	switch {
	case len(rs) == 0:
		return nil, ErrUndefined
	case len(rs) > 1:
		// A query such as data.x[_] can bind several values; a decision
		// must be one.
		return nil, fmt.Errorf("%w: query %s has %d results, want 1", ErrInvalidResult, e.cfg.Query, len(rs))
	}
	var v ast.Value
	switch x := rs[0].Expressions[0].Value.(type) {
	case ast.Value:
		v = x
	case bool:
		// A query that is not a plain term, such as x == y, yields true.
		v = ast.Boolean(x)
	default:
		return nil, fmt.Errorf("%w: result: unexpected %T", ErrInvalidResult, x)
	}
	d, err := parseDecision(v)
	if err != nil {
		return nil, err
	}
	d.Revision = s.revision
	return d, nil
}

// evalError is an evaluation error. Its message gives the code and policy
// location of an OPA error but not OPA's message, which can quote input
// values such as header contents (to_number: parsing "..."); the full
// *topdown.Error stays available through errors.As.
type evalError struct {
	query string
	err   error
}

func (e *evalError) Error() string {
	var te *topdown.Error
	if !errors.As(e.err, &te) {
		return fmt.Sprintf("policy: evaluate %s: %v", e.query, e.err)
	}
	if te.Location != nil {
		return fmt.Sprintf("policy: evaluate %s: %s at %s", e.query, te.Code, te.Location)
	}
	return fmt.Sprintf("policy: evaluate %s: %s", e.query, te.Code)
}

func (e *evalError) Unwrap() error { return e.err }

// Reload re-reads the paths, compiles and prepares the policy, and then
// swaps it in. On any error the policy in use keeps serving and the error
// is returned. Content identical to the serving revision is not compiled
// again.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	old := e.current.Load()
	s, err := e.build(ctx)
	if err != nil {
		return err
	}
	if s == nil {
		return nil // unchanged
	}
	e.current.Store(s)
	e.logger.LogAttrs(ctx, slog.LevelInfo, "policy reloaded",
		slog.String("revision", s.revision), slog.String("previous", old.revision), slog.Int("files", s.files))
	return nil
}

// Revision returns a short hex SHA-256 of the names and contents of the
// files of the serving policy. Identical content has the same revision.
func (e *Engine) Revision() string {
	return e.current.Load().revision
}

// build loads, compiles and prepares a snapshot. During a reload (some
// snapshot is serving) it returns nil, nil when the content is unchanged.
func (e *Engine) build(ctx context.Context) (*snapshot, error) {
	files, err := loadFiles(e.cfg.FS, e.cfg.Paths)
	if err != nil {
		return nil, err
	}
	if cur := e.current.Load(); cur != nil && cur.revision == files.revision {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policy: load: %w", err)
	}

	// Every revision gets its own store, written once here and only read
	// afterwards, so evaluations never wait on a writer. Reads return AST
	// values, which spares a conversion on every data lookup.
	store := inmem.NewFromObjectWithOpts(files.documents, inmem.OptReturnASTValuesOnRead(true))
	compiler, err := compile(ctx, store, files.modules)
	if err != nil {
		return nil, err
	}
	if err := checkDefined(compiler, files.documents, e.query); err != nil {
		return nil, err
	}

	r := rego.New(
		rego.ParsedQuery(e.query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(e.cfg.StrictBuiltinErrors),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{logger: e.logger, revision: files.revision}),
		// Hand back the result as AST: parseDecision reads it directly,
		// sparing a conversion to Go values on every evaluation.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }),
	)
	prepared, err := r.PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: prepare %s: %w", e.cfg.Query, err)
	}
	return &snapshot{revision: files.revision, files: files.count, prepared: prepared}, nil
}

func compile(ctx context.Context, store storage.Store, modules map[string]*ast.Module) (*ast.Compiler, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: compile: %w", err)
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(true).
		// A rule and a data document at the same path is an error, as in
		// OPA itself.
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
	compiler.Compile(modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("policy: compile: %w", compiler.Errors)
	}
	return compiler, nil
}

// checkDefined refuses a policy in which nothing defines the queried
// reference: it could only ever be undefined, which would deny every
// request. This catches a renamed package before it is swapped in.
func checkDefined(compiler *ast.Compiler, documents map[string]any, query ast.Body) error {
	term, ok := query[0].Terms.(*ast.Term)
	if !ok {
		return nil
	}
	ref, ok := term.Value.(ast.Ref)
	if !ok || !ref.HasPrefix(ast.DefaultRootRef) {
		return nil
	}
	if len(compiler.GetRules(ref)) > 0 || dataDefines(documents, ref[1:]) {
		return nil
	}
	return fmt.Errorf("policy: query %s: no rule or data document defines it", ref)
}

// dataDefines reports whether the documents hold a value at path, or path
// is not a plain sequence of keys and so cannot be checked statically.
func dataDefines(documents map[string]any, path ast.Ref) bool {
	var node any = documents
	for _, t := range path {
		key, ok := t.Value.(ast.String)
		if !ok {
			return true
		}
		obj, ok := node.(map[string]any)
		if !ok {
			return false
		}
		if node, ok = obj[string(key)]; !ok {
			return false
		}
	}
	return true
}

// printHook sends the policy's print() output to the logger.
type printHook struct {
	logger   *slog.Logger
	revision string
}

func (h printHook) Print(pctx print.Context, msg string) error {
	ctx := pctx.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if !h.logger.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	attrs := []slog.Attr{slog.String("message", msg), slog.String("revision", h.revision)}
	if pctx.Location != nil {
		attrs = append(attrs, slog.String("location", pctx.Location.String()))
	}
	h.logger.LogAttrs(ctx, slog.LevelDebug, "policy print", attrs...)
	return nil
}
