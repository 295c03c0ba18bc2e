package policy

import (
	"fmt"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// inputDeps is what a revision's decision can depend on in the input: the
// values at paths, each a ground reference starting at input. A decision is
// then a function of those values, the revision's data, and the results of
// non-deterministic builtins (which Engine.Eval detects per evaluation).
type inputDeps struct {
	// paths are sorted and free of overlaps: no path is a prefix of another.
	// A path of length 1 is the whole input.
	paths []ast.Ref
	// off, when not empty, says why decisions of the revision are never
	// memoized.
	off string
}

// clockBuiltins read the clock without being marked non-deterministic (the
// evaluation's record of non-deterministic calls misses them): x509 chain
// verification checks validity periods against the current time. A revision
// reaching one has its decisions never memoized.
var clockBuiltins = map[string]bool{
	ast.CryptoX509ParseAndVerifyCertificates.Name:            true,
	ast.CryptoX509ParseAndVerifyCertificatesWithOptions.Name: true,
}

// objectGet is the builtin the shipped library reads input with: object.get
// with a constant path reads exactly that path.
var objectGet = ast.ObjectGet.Ref()

// analyseInput finds the input paths that the rules reachable from query
// read. It is conservative: a reference into input with a variable part
// depends on everything below the constant part before it, and input used as
// a whole value (passed to a function, assigned, or walked) is the whole
// input. A `with` that replaces input or data turns memoization off, since
// references under it do not read the request's input.
func analyseInput(compiler *ast.Compiler, query ast.Body) inputDeps {
	var a inputAnalysis
	seen := map[util.T]struct{}{}
	var queue []*ast.Rule
	enqueue := func(r *ast.Rule) {
		for ; r != nil; r = r.Else {
			if _, ok := seen[r]; !ok {
				seen[r] = struct{}{}
				queue = append(queue, r)
			}
		}
	}
	a.aliases = inputAliases(query)
	a.visit(query)
	ast.WalkRefs(query, func(ref ast.Ref) bool {
		for _, r := range compiler.GetRulesDynamicWithOpts(ref, ast.RulesOptions{IncludeHiddenModules: true}) {
			enqueue(r)
		}
		return false
	})
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		a.aliases = inputAliases(r)
		a.visit(r.Head)
		a.visit(r.Body)
		for dep := range compiler.Graph.Dependencies(r) {
			if dr, ok := dep.(*ast.Rule); ok {
				enqueue(dr)
			}
		}
	}
	if a.off != "" {
		return inputDeps{off: a.off}
	}
	return inputDeps{paths: minimalPaths(a.paths)}
}

type inputAnalysis struct {
	paths []ast.Ref
	off   string
	// aliases are the variables of the rule being visited that are bound
	// to the whole input: partial evaluation rewrites object.get(input, p, d)
	// into v = input; object.get(v, p, d).
	aliases ast.VarSet
}

// inputAliases returns the variables x binds to the whole input.
func inputAliases(x any) ast.VarSet {
	var vs ast.VarSet
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if v, ok := aliasOf(e); ok {
			if vs == nil {
				vs = ast.NewVarSet()
			}
			vs.Add(v)
		}
		return false
	})
	return vs
}

// aliasOf returns v for an expression v = input (or input = v, v := input).
func aliasOf(e *ast.Expr) (ast.Var, bool) {
	if len(e.With) > 0 || e.Negated || !(e.IsEquality() || e.IsAssignment()) {
		return "", false
	}
	l, r := e.Operand(0), e.Operand(1)
	if isInput(l) {
		l, r = r, l
	}
	v, ok := l.Value.(ast.Var)
	if !ok || !isInput(r) {
		return "", false
	}
	return v, true
}

// visit records the input paths x reads.
func (a *inputAnalysis) visit(x any) {
	ast.NewGenericVisitor(func(x any) bool {
		switch x := x.(type) {
		case *ast.With:
			if t, ok := x.Target.Value.(ast.Ref); ok && (t.HasPrefix(ast.InputRootRef) || t.HasPrefix(ast.DefaultRootRef)) {
				a.off = fmt.Sprintf("the policy replaces %v with `with` at %v", t, x.Location)
			}
		case *ast.Expr:
			if _, ok := aliasOf(x); ok {
				return true
			}
			if x.IsCall() {
				a.call(x.Operator(), x.Location)
			}
			if terms, ok := x.Terms.([]*ast.Term); ok && a.objectGet(terms) {
				for _, w := range x.With {
					a.visit(w)
				}
				return true
			}
		case ast.Call:
			if len(x) > 0 {
				if op, ok := x[0].Value.(ast.Ref); ok {
					a.call(op, x[0].Location)
				}
			}
			return a.objectGet(x)
		case ast.Ref:
			if x.HasPrefix(ast.InputRootRef) {
				a.paths = append(a.paths, x.ConstantPrefix())
				for _, t := range x[1:] {
					a.visit(t)
				}
				return true
			}
		case ast.Var:
			if x.Equal(ast.InputRootDocument.Value) || a.aliases.Contains(x) {
				a.paths = append(a.paths, ast.InputRootRef)
			}
		}
		return false
	}).Walk(x)
}

// call turns memoization off at a call of a builtin that reads the clock.
func (a *inputAnalysis) call(op ast.Ref, loc *ast.Location) {
	if name := op.String(); clockBuiltins[name] {
		a.off = fmt.Sprintf("the policy calls %s, which reads the clock, at %v", name, loc)
	}
}

// objectGet records the path of object.get(input, path, default) when path is
// constant, visits the other operands, and reports whether it did; any other
// call is left to the generic walk.
func (a *inputAnalysis) objectGet(terms []*ast.Term) bool {
	if len(terms) < 4 || terms[0].Value.Compare(objectGet) != 0 || !a.isInput(terms[1]) {
		return false
	}
	path := ast.InputRootRef.Copy()
	switch p := terms[2].Value.(type) {
	case ast.String:
		path = append(path, terms[2])
	case *ast.Array:
		complete := true
		p.Foreach(func(t *ast.Term) {
			if complete && ast.IsScalar(t.Value) {
				path = append(path, t)
			} else {
				complete = false
			}
		})
		if !complete {
			// A computed element: everything below the constant part.
			path = path.ConstantPrefix()
		}
	default:
		return false
	}
	a.paths = append(a.paths, path)
	for _, t := range terms[2:] {
		a.visit(t)
	}
	return true
}

// isInput reports whether t is the whole input: the variable input, or the
// reference the compiler resolves it to.
func isInput(t *ast.Term) bool {
	switch v := t.Value.(type) {
	case ast.Var:
		return v.Equal(ast.InputRootDocument.Value)
	case ast.Ref:
		return v.Equal(ast.InputRootRef)
	}
	return false
}

// isInput reports whether t is the whole input or an alias of it.
func (a *inputAnalysis) isInput(t *ast.Term) bool {
	if v, ok := t.Value.(ast.Var); ok && a.aliases.Contains(v) {
		return true
	}
	return isInput(t)
}

// minimalPaths sorts paths and drops every path below another one.
func minimalPaths(paths []ast.Ref) []ast.Ref {
	slices.SortFunc(paths, func(x, y ast.Ref) int { return x.Compare(y) })
	out := paths[:0]
	for _, p := range paths {
		if n := len(out); n > 0 && p.HasPrefix(out[n-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}
