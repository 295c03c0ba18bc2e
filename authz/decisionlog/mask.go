package decisionlog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/finauthz/authz/authz/telemetry"
	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

// DefaultMaskQuery is where OPA looks for the decision log mask rule.
const DefaultMaskQuery = "data.system.log.mask"

// alwaysErased are removed from every logged input, whatever the mask rule says: they carry credentials.
var alwaysErased = []string{
	"/input/attributes/request/http/headers/authorization",
	"/input/attributes/request/http/headers/proxy-authorization",
}

// subjectPointer is the token's subject in the input; it is hashed there too when subjects are hashed.
const subjectPointer = "/input/token/payload/sub"

// Masker names what to remove from a logged input.
type Masker interface {
	// Mask returns JSON pointers (RFC 6901) into event to remove from it. event is the decision as OPA's mask
	// rule sees it: {"input": ..., "result": {"allowed", "http_status", "reason", "route"}, "decision_id",
	// "path"}; only pointers under "/input" matter, since only the input is logged whole. revision is the
	// policy revision that decided.
	Mask(ctx context.Context, revision string, event ast.Value) ([]string, error)
}

// RegoMaskerConfig says where the mask rule is: the same files as the policy.
type RegoMaskerConfig struct {
	// Paths and FS are the policy's, as in policy.Config.
	Paths []string
	FS    fs.FS
	// Query is the mask rule; DefaultMaskQuery when empty. Undefined means nothing to mask.
	Query string
}

// RegoMasker evaluates a mask rule of the policy, as OPA does for its decision logs. The rule returns a set
// (or array) of JSON pointers, or of {"op": "remove", "path": pointer} objects:
//
//	package system.log
//
//	mask contains "/input/attributes/request/http/headers/x-api-key"
//
// It loads the policy files itself and loads them again when it sees a decision of another revision, so it
// follows policy reloads.
type RegoMasker struct {
	cfg   RegoMaskerConfig
	query ast.Body

	mu       sync.Mutex
	revision string
	prepared rego.PreparedEvalQuery
}

// NewRegoMasker loads the policy files and prepares the mask query.
func NewRegoMasker(ctx context.Context, cfg RegoMaskerConfig) (*RegoMasker, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("decisionlog: mask: no policy paths")
	}
	if cfg.Query == "" {
		cfg.Query = DefaultMaskQuery
	}
	q, err := ast.ParseBodyWithOpts(cfg.Query, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("decisionlog: mask query %q: %w", cfg.Query, err)
	}
	if cfg.FS != nil {
		paths := make([]string, len(cfg.Paths))
		for i, p := range cfg.Paths {
			paths[i] = path.Clean(p)
		}
		cfg.Paths = paths
	}
	m := &RegoMasker{cfg: cfg, query: q}
	if m.prepared, err = m.prepare(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *RegoMasker) prepare(ctx context.Context) (rego.PreparedEvalQuery, error) {
	res, err := loader.NewFileLoader().
		WithFS(m.cfg.FS).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered(m.cfg.Paths, skipFile)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("decisionlog: mask: load: %w", err)
	}
	opts := []func(*rego.Rego){
		rego.ParsedQuery(m.query),
		rego.Store(inmem.NewFromObject(res.Documents)),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for _, mod := range res.ParsedModules() {
		opts = append(opts, rego.ParsedModule(mod))
	}
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("decisionlog: mask: prepare %s: %w", m.cfg.Query, err)
	}
	return pq, nil
}

// skipFile leaves out what the policy engine leaves out: Rego tests and hidden files below the given paths.
func skipFile(_ string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if depth > 0 && strings.HasPrefix(name, ".") {
		return true
	}
	return !info.IsDir() && strings.HasSuffix(name, "_test.rego")
}

// Mask implements Masker.
func (m *RegoMasker) Mask(ctx context.Context, revision string, event ast.Value) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.revision == "":
		m.revision = revision
	case revision != "" && revision != m.revision:
		pq, err := m.prepare(ctx)
		if err != nil {
			return nil, err
		}
		m.prepared, m.revision = pq, revision
	}
	rs, err := m.prepared.Eval(ctx, rego.EvalParsedInput(event))
	if err != nil {
		return nil, fmt.Errorf("decisionlog: mask: evaluate %s: %w", m.cfg.Query, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	return maskPointers(rs[0].Expressions[0].Value)
}

// maskPointers reads a mask rule's value: a set or array of pointers or of {"op": "remove", "path": ...}.
// Anything else is an error, so that a rule meant to hide something that this reader does not understand
// withholds the input rather than logging it.
func maskPointers(v any) ([]string, error) {
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("decisionlog: mask: want a set or array of JSON pointers, got %T", v)
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		switch x := it.(type) {
		case string:
			out = append(out, x)
		case map[string]any:
			op, _ := x["op"].(string)
			p, _ := x["path"].(string)
			if op != "remove" || p == "" {
				return nil, fmt.Errorf("decisionlog: mask: unsupported entry %v (only {\"op\": \"remove\", \"path\": ...})", x)
			}
			out = append(out, p)
		default:
			return nil, fmt.Errorf("decisionlog: mask: want a JSON pointer, got %T", it)
		}
	}
	return out, nil
}

// input returns the logged input and the pointers erased from it.
func (r recorder) input(ctx context.Context, rec *authzv1.DecisionLog, in ast.Value) (*structpb.Struct, []string) {
	pointers := slices.Clone(alwaysErased)
	if r.opts.Masker != nil {
		extra, err := r.opts.Masker.Mask(ctx, rec.PolicyRevision, r.event(rec, in))
		if err != nil {
			r.log.LogAttrs(ctx, slog.LevelWarn, "decision log mask failed: input withheld", slog.String("error", err.Error()))
			return nil, []string{"/input"}
		}
		pointers = append(pointers, extra...)
	}
	tree := &maskNode{}
	for _, p := range pointers {
		segs, err := parsePointer(p)
		if err != nil {
			r.log.LogAttrs(ctx, slog.LevelWarn, "decision log mask names a bad pointer: input withheld", slog.String("error", err.Error()))
			return nil, []string{"/input"}
		}
		if len(segs) == 0 || segs[0] != "input" {
			continue // outside the input: nothing else is logged whole
		}
		if len(segs) == 1 {
			return nil, []string{"/input"}
		}
		tree.add(segs[1:], p).remove = true
	}
	if r.opts.HashSubject {
		segs, _ := parsePointer(subjectPointer)
		if n := tree.add(segs[1:], subjectPointer); !n.remove {
			n.hash = r.opts.SubjectSalt
		}
	}
	w := walker{}
	v := w.value(in, tree)
	s := v.GetStructValue()
	if s == nil {
		return nil, []string{"/input"}
	}
	slices.Sort(w.erased)
	return s, slices.Compact(w.erased)
}

// event is what the mask rule sees as input.
func (r recorder) event(rec *authzv1.DecisionLog, in ast.Value) ast.Value {
	result := ast.NewObject(
		ast.Item(ast.StringTerm("allowed"), ast.BooleanTerm(rec.Decision == authzv1.Decision_DECISION_ALLOW)),
		ast.Item(ast.StringTerm("http_status"), ast.IntNumberTerm(int(rec.HttpStatus))),
		ast.Item(ast.StringTerm("reason"), ast.StringTerm(rec.Reason)),
		ast.Item(ast.StringTerm("route"), ast.StringTerm(rec.Route)),
	)
	return ast.NewObject(
		ast.Item(ast.StringTerm("input"), ast.NewTerm(in)),
		ast.Item(ast.StringTerm("result"), ast.NewTerm(result)),
		ast.Item(ast.StringTerm("decision_id"), ast.StringTerm(rec.DecisionId)),
		ast.Item(ast.StringTerm("path"), ast.StringTerm(r.opts.DecisionPath)),
	)
}

// parsePointer splits an RFC 6901 JSON pointer into its unescaped reference tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("JSON pointer %q does not start with /", p)
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return segs, nil
}

// maskNode is one step of the pointers to remove: a trie over reference tokens.
type maskNode struct {
	children map[string]*maskNode
	pointer  string // the pointer that ends here
	remove   bool
	hash     []byte // replace a string value with its HMAC keyed with hash
}

func (n *maskNode) add(segs []string, pointer string) *maskNode {
	for _, s := range segs {
		if n.children == nil {
			n.children = make(map[string]*maskNode)
		}
		next := n.children[s]
		if next == nil {
			next = &maskNode{}
			n.children[s] = next
		}
		n = next
	}
	n.pointer = pointer
	return n
}

func (n *maskNode) child(key string) *maskNode {
	if n == nil {
		return nil
	}
	return n.children[key]
}

// walker converts an input to protobuf values, leaving out what the trie removes and masking card-number-like
// digit runs and tokens in every key and string.
type walker struct {
	erased []string
}

func (w *walker) value(v ast.Value, n *maskNode) *structpb.Value {
	switch x := v.(type) {
	case ast.Null:
		return structpb.NewNullValue()
	case ast.Boolean:
		return structpb.NewBoolValue(bool(x))
	case ast.Number:
		// A number long enough to be a card number is logged as its masked digits.
		lit := string(x)
		if digits(lit) >= 13 {
			return structpb.NewStringValue(telemetry.Redact(lit))
		}
		f, ok := x.Float64()
		if !ok {
			return structpb.NewStringValue(lit)
		}
		return structpb.NewNumberValue(f)
	case ast.String:
		if n != nil && n.hash != nil {
			return structpb.NewStringValue(hashSubject(n.hash, string(x)))
		}
		return structpb.NewStringValue(telemetry.Redact(string(x)))
	case *ast.Array:
		list := make([]*structpb.Value, 0, x.Len())
		for i := range x.Len() {
			if c := n.child(strconv.Itoa(i)); c != nil && c.remove {
				w.erased = append(w.erased, c.pointer)
				continue
			}
			list = append(list, w.value(x.Elem(i).Value, n.child(strconv.Itoa(i))))
		}
		return structpb.NewListValue(&structpb.ListValue{Values: list})
	case ast.Set:
		// A set is logged as its sorted array, as OPA writes it in JSON.
		return w.value(x.Sorted(), n)
	case ast.Object:
		fields := make(map[string]*structpb.Value, x.Len())
		x.Foreach(func(k, val *ast.Term) {
			key, ok := k.Value.(ast.String)
			if !ok {
				key = ast.String(k.Value.String())
			}
			c := n.child(string(key))
			if c != nil && c.remove {
				w.erased = append(w.erased, c.pointer)
				return
			}
			fields[telemetry.Redact(string(key))] = w.value(val.Value, c)
		})
		return structpb.NewStructValue(&structpb.Struct{Fields: fields})
	}
	return structpb.NewStringValue(telemetry.Redact(v.String()))
}

func digits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if '0' <= s[i] && s[i] <= '9' {
			n++
		}
	}
	return n
}
