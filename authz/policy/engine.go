// Package policy loads, compiles and evaluates the Rego authorization policy
// and parses its result into a [Decision], following OPA-Envoy's result
// object. An [Engine] serves one prepared query and swaps in a new one on
// [Engine.Reload] without blocking evaluations.
package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/topdown/print"

	"github.com/finauthz/authz/authz/cache"
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
	// ValidationQuery, when set, is evaluated once when a revision has
	// compiled, before it serves: its value is a set (or array) of problem
	// messages, such as the route table errors of the shipped policies
	// (policies.ValidationQuery). A non-empty value refuses the revision with a
	// *ValidationError listing them: New fails, and Reload keeps the serving
	// revision. Like Query, it must be one expression, and some rule or data
	// document must define it.
	ValidationQuery string
	// StrictBuiltinErrors makes a builtin error (such as to_number("x"))
	// an evaluation error instead of an undefined expression, like
	// `opa eval --strict-builtin-errors`. Off by default, matching `opa test`.
	StrictBuiltinErrors bool
	// PartialEval selects when a revision's query is prepared from the residual
	// policy of partial evaluation rather than from the policy as written.
	// Partial evaluation (as `opa build --optimize` does for bundles) treats
	// the input as the only unknown: whatever depends on data alone, such as
	// loops over a route table, is computed once per revision, and each
	// request evaluates only what is left. Decisions are the same either way.
	// It pays off for policies written for it, and can cost more than it saves
	// for others (a rule it inlines at each reference is evaluated at each),
	// so by default it applies to policies that ask for it.
	PartialEval PartialEvalMode
	// DecisionCacheSize bounds the decisions remembered per revision (see
	// [Engine.Eval]): zero means DefaultDecisionCacheSize, negative turns the
	// cache off.
	DecisionCacheSize int
	// DecisionCacheTTL bounds how long a remembered decision is served; zero
	// means DefaultDecisionCacheTTL. Decisions are exact for as long as the
	// revision serves, so this only bounds the cache's memory over time. Each
	// decision lives between four fifths of it and all of it, so that the
	// decisions made together are not all evaluated again together.
	DecisionCacheTTL time.Duration
	// partialEvalTimeout and maxResidualRules override defaultPartialEvalTimeout
	// and defaultMaxResidualRules when positive (for tests).
	partialEvalTimeout time.Duration
	// now, when set, is the decision cache's clock (for tests); time.Now otherwise.
	now              func() time.Time
	maxResidualRules int
	// Logger receives reload events and the output of print() calls in
	// the policy (at debug level); slog.Default() when nil.
	Logger *slog.Logger
}

// PartialEvalMode is Config.PartialEval.
type PartialEvalMode int

const (
	// PartialEvalEntrypoints, the default, partially evaluates the query when
	// it refers to a rule or package annotated `entrypoint: true`: the
	// annotation with which `opa build --optimize` selects what to partially
	// evaluate.
	PartialEvalEntrypoints PartialEvalMode = iota
	// PartialEvalAlways partially evaluates every policy.
	PartialEvalAlways
	// PartialEvalNever prepares every policy as written.
	PartialEvalNever
)

// Engine evaluates the policy query against an input. It is safe for
// concurrent use; Reload swaps the policy without blocking Eval.
type Engine struct {
	cfg        Config
	query      ast.Body
	validation ast.Body // nil without Config.ValidationQuery
	logger     *slog.Logger

	memoStats MemoStats

	current  atomic.Pointer[snapshot]
	reloadMu sync.Mutex // serialises Reload so an older load never replaces a newer one
}

// snapshot is one loaded revision of the policy, immutable once published.
type snapshot struct {
	revision string
	files    int
	// prepared is the query evaluated for every request: prepared from the
	// residual policy of partial evaluation when partial is set, else from the
	// policy as written.
	prepared rego.PreparedEvalQuery
	partial  bool
	// residualRules is how many rules partial evaluation left; 0 when partial
	// is not set.
	residualRules int
	// written is the query prepared from the policy as written, kept when
	// partial is set to report evaluation errors: the residual policy's
	// expressions have lost their source locations.
	written rego.PreparedEvalQuery
	// deps are the input paths the prepared query's decision can depend on.
	deps inputDeps
	// memo remembers decisions; nil when the cache is off or deps.off says
	// why decisions cannot be remembered.
	memo *memo
}

const (
	// partialNamespace is the package under which partial evaluation places
	// the residual policy; unlike OPA's default, "partial", no policy is
	// likely to use it.
	partialNamespace = "__authz_partial__"
	// defaultPartialEvalTimeout bounds partial evaluation, which computes at
	// load everything that depends on data alone, even what only some rare
	// request would reach; past it the policy is evaluated as written.
	defaultPartialEvalTimeout = 10 * time.Second
	// defaultMaxResidualRules bounds the residual policy. Partial evaluation
	// unrolls loops over data; a policy that nests such loops could unroll
	// into more rules than evaluating it as written costs.
	defaultMaxResidualRules = 20000
)

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
	query, err := parseQuery("query", cfg.Query)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, query: query, logger: cfg.Logger}
	if cfg.ValidationQuery != "" {
		if e.validation, err = parseQuery("validation query", cfg.ValidationQuery); err != nil {
			return nil, err
		}
	}
	if e.logger == nil {
		e.logger = slog.Default()
	}
	s, err := e.build(ctx)
	if err != nil {
		return nil, err
	}
	e.current.Store(s)
	e.logger.LogAttrs(ctx, slog.LevelInfo, "policy loaded",
		slog.String("revision", s.revision), slog.Int("files", s.files), slog.String("query", cfg.Query),
		slog.Bool("partial_eval", s.partial), slog.Int("residual_rules", s.residualRules), s.memoAttr())
	return e, nil
}

// parseQuery parses a query of one expression.
func parseQuery(what, query string) (ast.Body, error) {
	body, err := ast.ParseBodyWithOpts(query, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("policy: %s %q: %w", what, query, err)
	}
	if len(body) != 1 {
		return nil, fmt.Errorf("policy: %s %q: want one expression, got %d", what, query, len(body))
	}
	return body, nil
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

// Source is an input document that the engine can read in parts: a
// decision served from the decision cache needs only the values at the
// paths its key is made of. Lookup and Value must agree: Lookup(p) is the
// value Value() holds at p, nil where it holds none.
type Source interface {
	// Lookup returns the value at path, which starts below input.
	Lookup(path ast.Ref) ast.Value
	// Value returns the whole document.
	Value() ast.Value
}

// valueSource is the Source of a built document.
type valueSource struct{ v ast.Value }

func (s valueSource) Lookup(path ast.Ref) ast.Value {
	if len(path) == 0 {
		return s.v
	}
	v, err := s.v.Find(path)
	if err != nil {
		return nil
	}
	return v
}

func (s valueSource) Value() ast.Value { return s.v }

// Eval evaluates the query with input and parses the result; it is
// EvalSource of the document input.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (*Decision, error) {
	return e.EvalSource(ctx, valueSource{input})
}

// EvalSource evaluates the query with the input document of src and parses
// the result. The error wraps ErrUndefined or ErrInvalidResult for results
// that are not a decision; any other error is an evaluation error: it wraps
// ctx.Err() when ctx stopped the evaluation, else OPA's *topdown.Error, whose
// message (which may quote input values) its own message leaves out.
//
// Decisions are remembered per revision (Config.DecisionCacheSize): when the
// revision's decisions can depend only on the input values at known paths
// (see analyseInput), an evaluation that called no non-deterministic builtin
// is stored under the SHA-256 of those values, and a later input with the
// same values there gets the same decision without an evaluation, reading
// nothing else of src.
func (e *Engine) EvalSource(ctx context.Context, src Source) (*Decision, error) {
	d, _, err := e.EvalDerive(ctx, src, nil)
	return d, err
}

// EvalDerive is EvalSource that also returns derive(d) for the decision d:
// what the caller makes of a decision (its CheckResponse) is remembered with
// it, so that a decision served from the cache comes with it. derive must be
// a pure function of the decision, and its result is shared by every caller
// served the decision: treat it as read-only. A nil derive derives nil.
func (e *Engine) EvalDerive(ctx context.Context, src Source, derive func(*Decision) any) (*Decision, any, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("policy: evaluate %s: %w", e.cfg.Query, err)
	}
	s := e.current.Load()
	var (
		key  cache.Key
		now  time.Time
		memo = s.memo != nil && s.memo.key(src, &key)
	)
	if memo {
		now = e.now()
		if entry, ok := s.memo.get(&key, now); ok {
			e.memoStats.Hits.Add(1)
			derived := entry.derived
			if derived == nil && derive != nil {
				derived = derive(entry.d) // stored by a caller without derive
			}
			return entry.d, derived, nil
		}
	}
	input := src.Value()
	// OPA would start a goroutine per evaluation to watch ctx; AfterFunc
	// only runs one if ctx is actually cancelled while evaluating.
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancel.Cancel)
	vc := virtualCaches.Get().(*virtualCache)
	ndb := ndbCaches.Get().(builtins.NDBCache)
	rs, err := s.prepared.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalMetrics(metrics.NoOp()),
		rego.EvalExternalCancel(cancel),
		rego.EvalVirtualCache(vc),
		rego.EvalNDBuiltinCache(ndb))
	vc.reset()
	if err != nil && s.partial && ctx.Err() == nil {
		// Errors are rare; evaluating the policy as written reports them at
		// the rule that raised them. Whatever it decides is not remembered:
		// the key is made of what the residual policy reads.
		memo = false
		rs, err = s.written.Eval(ctx,
			rego.EvalParsedInput(input),
			rego.EvalMetrics(metrics.NoOp()),
			rego.EvalExternalCancel(cancel),
			rego.EvalVirtualCache(vc))
		vc.reset()
	}
	virtualCaches.Put(vc)
	// A decision that read the clock, the network or randomness holds for
	// this evaluation only.
	deterministic := len(ndb) == 0
	clear(ndb)
	ndbCaches.Put(ndb)
	stop()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && topdown.IsCancel(err) {
			return nil, nil, fmt.Errorf("policy: evaluate %s: %w", e.cfg.Query, ctxErr)
		}
		return nil, nil, &evalError{query: e.cfg.Query, err: err}
	}
	switch {
	case len(rs) == 0:
		return nil, nil, ErrUndefined
	case len(rs) > 1:
		// A query such as data.x[_] can bind several values; a decision
		// must be one.
		return nil, nil, fmt.Errorf("%w: query %s has %d results, want 1", ErrInvalidResult, e.cfg.Query, len(rs))
	}
	var v ast.Value
	switch x := rs[0].Expressions[0].Value.(type) {
	case ast.Value:
		v = x
	case bool:
		// A query that is not a plain term, such as x == y, yields true.
		v = ast.Boolean(x)
	default:
		return nil, nil, fmt.Errorf("%w: result: unexpected %T", ErrInvalidResult, x)
	}
	d, err := parseDecision(v)
	if err != nil {
		return nil, nil, err
	}
	d.Revision = s.revision
	var derived any
	if derive != nil {
		derived = derive(d)
	}
	switch {
	case memo && deterministic:
		e.memoStats.Misses.Add(1)
		s.memo.put(&key, d, derived, src, now)
	case s.memo != nil:
		e.memoStats.Uncacheable.Add(1)
	}
	return d, derived, nil
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
		slog.String("revision", s.revision), slog.String("previous", old.revision), slog.Int("files", s.files),
		slog.Bool("partial_eval", s.partial), slog.Int("residual_rules", s.residualRules), s.memoAttr())
	return nil
}

// memoAttr describes the revision's decision cache for the load log: the
// input paths its keys hash, or why it is off.
func (s *snapshot) memoAttr() slog.Attr {
	switch {
	case s.deps.off != "":
		return slog.String("decision_cache", "off: "+s.deps.off)
	case s.memo == nil:
		return slog.String("decision_cache", "off")
	}
	paths := make([]string, len(s.deps.paths))
	for i, p := range s.deps.paths {
		paths[i] = p.String()
	}
	return slog.Any("decision_cache_keys", paths)
}

// Revision returns a short hex SHA-256 of the names and contents of the
// files of the serving policy. Identical content has the same revision.
func (e *Engine) Revision() string {
	return e.current.Load().revision
}

// compileMu serialises the compilation and preparation of every engine in the process: OPA's query compiler
// rewrites terms in place, including shared interned ones (v1/ast/transform.go guards only interned strings), so
// two compilations at once race on them.
var compileMu sync.Mutex

// build loads, compiles and prepares a snapshot. During a reload (some
// snapshot is serving) it returns nil, nil when the content is unchanged.
func (e *Engine) build(ctx context.Context) (*snapshot, error) {
	compileMu.Lock()
	defer compileMu.Unlock()
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
	if err := checkDefined("query", compiler, files.documents, e.query); err != nil {
		return nil, err
	}
	if e.validation != nil {
		if err := e.validate(ctx, compiler, store, files); err != nil {
			return nil, err
		}
	}

	s := &snapshot{revision: files.revision, files: files.count}
	if s.prepared, err = e.prepare(ctx, compiler, store, files.revision, false); err != nil {
		return nil, err
	}
	s.deps = analyseInput(compiler, e.query)
	if !e.partialEval(compiler) {
		return e.withMemo(s), nil
	}
	residual, deps, rules, err := e.prepareResidual(ctx, store, files)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("policy: prepare %s: %w", e.cfg.Query, ctxErr)
		}
		e.logger.LogAttrs(ctx, slog.LevelWarn, "policy: partial evaluation failed, evaluating the policy as written",
			slog.String("revision", files.revision), slog.String("error", err.Error()))
		return e.withMemo(s), nil
	}
	s.written, s.prepared, s.partial, s.deps, s.residualRules = s.prepared, residual, true, deps, rules
	return e.withMemo(s), nil
}

// withMemo gives s its decision cache.
func (e *Engine) withMemo(s *snapshot) *snapshot {
	size := e.cfg.DecisionCacheSize
	if size == 0 {
		size = DefaultDecisionCacheSize
	}
	s.memo = newMemo(s.deps, size, cmp.Or(e.cfg.DecisionCacheTTL, DefaultDecisionCacheTTL), &e.memoStats)
	return s
}

func (e *Engine) now() time.Time {
	if e.cfg.now != nil {
		return e.cfg.now()
	}
	return time.Now()
}

// DecisionCache returns the lookup counters of the decision cache.
func (e *Engine) DecisionCache() *MemoStats { return &e.memoStats }

// partialEval reports whether the configuration asks to partially evaluate
// the compiled policy.
func (e *Engine) partialEval(compiler *ast.Compiler) bool {
	switch e.cfg.PartialEval {
	case PartialEvalAlways:
		return true
	case PartialEvalNever:
		return false
	}
	term, ok := e.query[0].Terms.(*ast.Term)
	if !ok {
		return false
	}
	ref, ok := term.Value.(ast.Ref)
	if !ok {
		return false
	}
	for _, a := range compiler.GetAnnotationSet().Flatten() {
		if !a.Annotations.Entrypoint {
			continue
		}
		var path ast.Ref
		switch {
		case a.Annotations.Scope == "package" && a.GetPackage() != nil:
			path = a.GetPackage().Path
		case a.GetRule() != nil:
			path = a.GetRule().Ref().GroundPrefix()
		}
		if path != nil && ref.HasPrefix(path) {
			return true
		}
	}
	return false
}

// prepareResidual partially evaluates the query, within its time and size
// bounds, and prepares the residual policy; rules is the residual policy's
// size. Partial evaluation adds the residual policy to the compiler, so it
// gets a compiler of its own.
func (e *Engine) prepareResidual(ctx context.Context, store storage.Store, files *bundleFiles) (_ rego.PreparedEvalQuery, _ inputDeps, rules int, _ error) {
	timeout := cmp.Or(e.cfg.partialEvalTimeout, defaultPartialEvalTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	compiler, err := compile(ctx, store, files.modules)
	if err != nil {
		return rego.PreparedEvalQuery{}, inputDeps{}, 0, err
	}
	prepared, err := e.prepare(ctx, compiler, store, files.revision, true)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return rego.PreparedEvalQuery{}, inputDeps{}, 0, fmt.Errorf("policy: partial evaluation took longer than %v", timeout)
		}
		return rego.PreparedEvalQuery{}, inputDeps{}, 0, err
	}
	limit := cmp.Or(e.cfg.maxResidualRules, defaultMaxResidualRules)
	rules = residualRules(compiler)
	if rules > limit {
		return rego.PreparedEvalQuery{}, inputDeps{}, 0, fmt.Errorf("policy: partial evaluation left %d rules, more than %d", rules, limit)
	}
	return prepared, analyseInput(compiler, residualQuery), rules, nil
}

// residualQuery is the query OPA prepares from the residual policy.
var residualQuery = ast.MustParseBody("data." + partialNamespace + ".__result__")

// prepare prepares the query, after partial evaluation when partial is set.
func (e *Engine) prepare(ctx context.Context, compiler *ast.Compiler, store storage.Store, revision string, partial bool) (rego.PreparedEvalQuery, error) {
	opts := []func(*rego.Rego){
		rego.ParsedQuery(e.query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(e.cfg.StrictBuiltinErrors),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{logger: e.logger, revision: revision}),
		// Hand back the result as AST: parseDecision reads it directly,
		// sparing a conversion to Go values on every evaluation.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }),
	}
	var prepareOpts []rego.PrepareOption
	if partial {
		// The input is the unknown; data and the rules over it are known.
		opts = append(opts, rego.PartialNamespace(partialNamespace), rego.Unknowns([]string{"input"}))
		prepareOpts = append(prepareOpts, rego.WithPartialEval())
	}
	prepared, err := rego.New(opts...).PrepareForEval(ctx, prepareOpts...)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("policy: prepare %s: %w", e.cfg.Query, err)
	}
	return prepared, nil
}

// residualRules counts the rules partial evaluation added to the compiler.
func residualRules(compiler *ast.Compiler) int {
	n := 0
	for _, m := range compiler.Modules {
		if len(m.Package.Path) > 1 && m.Package.Path[1].Equal(ast.StringTerm(partialNamespace)) {
			n += len(m.Rules)
		}
	}
	return n
}

// validate evaluates the validation query and refuses the revision when it
// reports problems.
func (e *Engine) validate(ctx context.Context, compiler *ast.Compiler, store storage.Store, files *bundleFiles) error {
	if err := checkDefined("validation query", compiler, files.documents, e.validation); err != nil {
		return err
	}
	rs, err := rego.New(
		rego.ParsedQuery(e.validation),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(e.cfg.StrictBuiltinErrors),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{logger: e.logger, revision: files.revision}),
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }),
	).Eval(ctx)
	if err != nil {
		return fmt.Errorf("policy: validation query %s: %w", e.cfg.ValidationQuery, err)
	}
	switch {
	case len(rs) == 0:
		return fmt.Errorf("policy: validation query %s: undefined", e.cfg.ValidationQuery)
	case len(rs) > 1:
		return fmt.Errorf("policy: validation query %s: %d results, want 1", e.cfg.ValidationQuery, len(rs))
	}
	value, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok {
		value = ast.Boolean(true) // a comparison such as data.x == 1
	}
	var terms []*ast.Term
	switch v := value.(type) {
	case ast.Set:
		terms = v.Slice()
	case *ast.Array:
		for i := range v.Len() {
			terms = append(terms, v.Elem(i))
		}
	default:
		return fmt.Errorf("policy: validation query %s: want a set or array of problems, got %s", e.cfg.ValidationQuery, ast.ValueName(value))
	}
	if len(terms) == 0 {
		return nil
	}
	problems := make([]string, len(terms))
	for i, t := range terms {
		if s, ok := t.Value.(ast.String); ok {
			problems[i] = string(s)
		} else {
			problems[i] = t.String()
		}
	}
	slices.Sort(problems)
	return &ValidationError{Query: e.cfg.ValidationQuery, Problems: problems}
}

// ValidationError refuses a revision whose Config.ValidationQuery reported
// problems.
type ValidationError struct {
	Query    string   // the validation query
	Problems []string // its messages, sorted
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("policy: validation query %s: %d problem(s): %s", e.Query, len(e.Problems), strings.Join(e.Problems, "; "))
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
func checkDefined(what string, compiler *ast.Compiler, documents map[string]any, query ast.Body) error {
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
	return fmt.Errorf("policy: %s %s: no rule or data document defines it", what, ref)
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
