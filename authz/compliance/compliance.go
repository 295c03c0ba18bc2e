// Package compliance builds the compliance matrix of the Rego policies: which
// framework controls (PCI DSS, SOC 2, GDPR, GLBA, CCPA) each rule implements,
// as its METADATA annotations declare, and which Rego tests exercise each rule,
// as OPA's coverage tracer measures when every test runs on its own.
//
// A rule declares its controls under the custom key of its METADATA block, in
// rule or document scope:
//
//	# METADATA
//	# title: Tellers may read accounts of their branch
//	# custom:
//	#   pci_dss: ["7.2.1", "8.3.1"]
//	#   soc2: ["CC6.1"]
//	allow if { ... }
//
// A helper that implements no control by itself says so with
// custom: {internal: true}, in rule, document, package or subpackages scope.
// Every other rule without a control, and every rule with controls that no
// test exercises, is a gap of the matrix.
package compliance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

var (
	// ErrInvalidAnnotation is wrapped by every error about the compliance keys
	// of a METADATA block: an unknown key, a control id that is not a string,
	// controls on a package.
	ErrInvalidAnnotation = errors.New("invalid compliance annotation")

	// ErrTestFailed is wrapped by the error for each Rego test that fails or
	// errors: a matrix citing failing tests as evidence would certify nothing.
	ErrTestFailed = errors.New("rego test failed")

	// ErrNoPolicies is returned when the policy tree holds no Rego module.
	ErrNoPolicies = errors.New("no rego policies")

	// ErrUnknownFormat is returned by [Matrix.Write] for a format it cannot
	// write.
	ErrUnknownFormat = errors.New("unknown format")

	// ErrInvalidOption is returned for a [Framework] or extra key that
	// collides with another key or is empty.
	ErrInvalidOption = errors.New("invalid compliance option")
)

// Option configures [Generate].
type Option func(*options)

type options struct {
	frameworks []Framework
	extraKeys  []string
}

// WithFramework adds a framework beyond [DefaultFrameworks]: rules map to its
// controls under key, and the matrix names it name.
func WithFramework(key, name string) Option {
	return func(o *options) { o.frameworks = append(o.frameworks, Framework{Key: key, Name: name}) }
}

// WithExtraKeys accepts custom keys that carry no control mapping (say an
// owner or a severity) instead of rejecting them as typos.
func WithExtraKeys(keys ...string) Option {
	return func(o *options) { o.extraKeys = append(o.extraKeys, keys...) }
}

func newOptions(opts []Option) (*options, error) {
	o := &options{frameworks: DefaultFrameworks()}
	for _, opt := range opts {
		opt(o)
	}
	keys := map[string]bool{internalKey: true}
	names := map[string]bool{}
	for _, f := range o.frameworks {
		switch {
		case f.Key == "" || strings.TrimSpace(f.Name) == "":
			return nil, fmt.Errorf("%w: framework %q %q: key and name must not be empty", ErrInvalidOption, f.Key, f.Name)
		case keys[f.Key]:
			return nil, fmt.Errorf("%w: framework key %q is already taken", ErrInvalidOption, f.Key)
		case names[f.Name]:
			return nil, fmt.Errorf("%w: framework name %q is already taken", ErrInvalidOption, f.Name)
		}
		keys[f.Key] = true
		names[f.Name] = true
	}
	for _, k := range o.extraKeys {
		if k == "" || keys[k] {
			return nil, fmt.Errorf("%w: extra key %q is empty or already taken", ErrInvalidOption, k)
		}
		keys[k] = true
	}
	return o, nil
}

// Generate builds the matrix of the policy tree rooted at dir, as `opa test
// dir` would load it: Rego modules, and JSON or YAML data documents, which the
// tests may read. Locations in the matrix are relative to dir, so the matrix
// does not depend on where it was generated.
//
// The custom keys a METADATA block may carry are the framework keys (see
// [DefaultFrameworks] and [WithFramework]), internal, and those passed to
// [WithExtraKeys]; any other key is an error naming the file and rule, so that
// a misspelt framework cannot silently drop a mapping.
//
// Generate fails when a module does not parse or compile, an annotation is
// invalid (errors.Is [ErrInvalidAnnotation]) or a Rego test fails
// (errors.Is [ErrTestFailed]); the error lists every problem found.
func Generate(ctx context.Context, dir string, opts ...Option) (*Matrix, error) {
	m, err := GenerateFS(ctx, os.DirFS(dir), opts...)
	if err != nil {
		return nil, fmt.Errorf("policies %s: %w", dir, err)
	}
	return m, nil
}

// GenerateFS is [Generate] for a policy tree rooted at the root of fsys.
func GenerateFS(ctx context.Context, fsys fs.FS, opts ...Option) (*Matrix, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	loaded, err := loader.NewFileLoader().
		WithFS(fsys).
		WithProcessAnnotation(true).
		Filtered([]string{"."}, skipHidden)
	if err != nil {
		return nil, err
	}
	modules := loaded.ParsedModules()
	if len(modules) == 0 {
		return nil, ErrNoPolicies
	}

	rules, err := readRules(modules, o)
	if err != nil {
		return nil, err
	}
	runs, err := runTests(ctx, modules, inmem.NewFromObject(loaded.Documents))
	if err != nil {
		return nil, err
	}
	return buildMatrix(o.frameworks, rules, runs), nil
}

// skipHidden leaves out dot files and folders (.git, .manifest, editor
// files), which `opa test` would try to load as data or policy.
func skipHidden(path string, info fs.FileInfo, depth int) bool {
	return depth > 0 && strings.HasPrefix(info.Name(), ".")
}

// isTestModule reports whether file holds Rego tests, whose rules are
// evidence for the matrix rather than entries of it.
func isTestModule(file string) bool {
	return strings.HasSuffix(file, "_test.rego")
}

// sortedModules returns the modules in file order, so that everything built
// from them comes out the same on every run.
func sortedModules(modules map[string]*ast.Module) []*ast.Module {
	names := slices.Sorted(maps.Keys(modules))
	out := make([]*ast.Module, len(names))
	for i, name := range names {
		out[i] = modules[name]
	}
	return out
}
