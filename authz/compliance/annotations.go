package compliance

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Framework is a compliance framework whose controls rules map to.
type Framework struct {
	// Key is the custom annotation key listing the framework's controls.
	Key string `json:"key"`
	// Name is how the matrix names the framework.
	Name string `json:"name"`
}

// DefaultFrameworks returns the frameworks every matrix knows, in the order
// the matrix lists them.
func DefaultFrameworks() []Framework {
	return []Framework{
		{Key: "pci_dss", Name: "PCI DSS"},
		{Key: "soc2", Name: "SOC 2"},
		{Key: "gdpr", Name: "GDPR"},
		{Key: "glba", Name: "GLBA"},
		{Key: "ccpa", Name: "CCPA"},
	}
}

// internalKey marks a helper that implements no control by itself.
const internalKey = "internal"

// control is one control of one framework, the framework by its index in
// options.frameworks so that controls sort in framework order.
type control struct {
	framework int
	id        string
}

// claim is what one METADATA block says about compliance.
type claim struct {
	controls []control
	internal bool
}

// policyRule is one rule definition of a policy module with what its
// annotations claim about it.
type policyRule struct {
	pkg      string
	name     string
	title    string
	file     string
	firstRow int
	lastRow  int
	controls []control
	internal bool
}

// readRules lists the rule definitions of the policy modules (tests and the
// modules holding them left out) with the controls their annotations map
// them to. It reports every invalid annotation, not just the first.
func readRules(modules map[string]*ast.Module, o *options) ([]*policyRule, error) {
	var policies []*ast.Module
	for _, m := range sortedModules(modules) {
		if !isTestModule(m.Package.Location.File) {
			policies = append(policies, m)
		}
	}
	set, errs := ast.BuildAnnotationSet(policies)
	if len(errs) > 0 {
		return nil, errs
	}

	claims := map[*ast.Annotations]claim{}
	var problems []error
	for _, ref := range set.Flatten() {
		c, err := o.readClaim(ref)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		claims[ref.Annotations] = c
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}

	var rules []*policyRule
	for _, m := range policies {
		for _, r := range m.Rules {
			if _, _, test := testName(r); test {
				continue
			}
			rules = append(rules, newPolicyRule(r, set.Chain(r), claims))
		}
	}
	return rules, nil
}

// newPolicyRule gathers the claims of r's annotation chain: controls from the
// rule and document scopes, where a mapping belongs; internal from any scope,
// so a package of helpers can be marked once.
func newPolicyRule(r *ast.Rule, chain ast.AnnotationsRefSet, claims map[*ast.Annotations]claim) *policyRule {
	pr := &policyRule{
		pkg:      r.Module.Package.Path.String(),
		name:     r.Head.Ref().GroundPrefix().String(),
		file:     r.Location.File,
		firstRow: r.Location.Row,
		lastRow:  lastRow(r),
	}
	for _, ref := range chain {
		a := ref.Annotations
		if a == nil {
			continue // Chain's stand-in for a rule without annotations
		}
		c := claims[a]
		pr.internal = pr.internal || c.internal
		if onRule(a.Scope) {
			pr.controls = append(pr.controls, c.controls...)
			if pr.title == "" {
				pr.title = strings.TrimSpace(a.Title)
			}
		}
	}
	slices.SortFunc(pr.controls, compareControls)
	pr.controls = slices.Compact(pr.controls)
	if len(pr.controls) > 0 {
		pr.internal = false // a rule that maps controls is no helper, whatever its package says
	}
	return pr
}

// lastRow is the last source row of r, its else branches included: a test
// that reaches only an else branch still exercises the rule.
func lastRow(r *ast.Rule) int {
	last := r.Location.Row
	for x := r; x != nil; x = x.Else {
		for _, loc := range []*ast.Location{x.Location, x.Head.Location} {
			if end, _ := loc.End(); end > last {
				last = end
			}
		}
		if n := len(x.Body); n > 0 {
			if end, _ := x.Body[n-1].Location.End(); end > last {
				last = end
			}
		}
	}
	return last
}

// onRule reports whether an annotation of scope applies to rules rather than
// to packages.
func onRule(scope string) bool {
	return scope == "rule" || scope == "document"
}

// readClaim reads the custom keys of one METADATA block.
func (o *options) readClaim(ref *ast.AnnotationsRef) (claim, error) {
	a := ref.Annotations
	fail := func(format string, args ...any) error {
		target := "package " + ref.Path.String()
		if onRule(a.Scope) {
			target = "rule " + ref.Path.String()
		}
		return fmt.Errorf("%s:%d: %s: %w: %s", a.Location.File, a.Location.Row, target, ErrInvalidAnnotation, fmt.Sprintf(format, args...))
	}

	var c claim
	var problems []error
	for _, key := range slices.Sorted(maps.Keys(a.Custom)) {
		value := a.Custom[key]
		if key == internalKey {
			b, ok := value.(bool)
			if !ok {
				problems = append(problems, fail("internal must be true or false (got %s)", describe(value)))
			}
			c.internal = b
			continue
		}
		if slices.Contains(o.extraKeys, key) {
			continue
		}
		fw := slices.IndexFunc(o.frameworks, func(f Framework) bool { return f.Key == key })
		if fw < 0 {
			problems = append(problems, fail("%s", o.unknownKey(key)))
			continue
		}
		if !onRule(a.Scope) {
			problems = append(problems, fail("%s controls belong on a rule (scope rule or document), not on a %s", key, a.Scope))
			continue
		}
		ids, err := controlIDs(value)
		if err != nil {
			problems = append(problems, fail("%s: %v", key, err))
			continue
		}
		for _, id := range ids {
			c.controls = append(c.controls, control{framework: fw, id: id})
		}
	}
	if c.internal && len(c.controls) > 0 {
		problems = append(problems, fail("internal: true contradicts the controls it lists"))
	}
	return c, errors.Join(problems...)
}

// controlIDs reads a framework's list of control ids. Ids must be strings:
// YAML reads 7.2 as a number and 8.10 as 8.1, which would cite the wrong
// control.
func controlIDs(value any) ([]string, error) {
	list, ok := value.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of control ids such as [\"7.2.1\"] (got %s)", describe(value))
	}
	if len(list) == 0 {
		return nil, errors.New("empty list of control ids")
	}
	ids := make([]string, 0, len(list))
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("control ids must be strings, quote them (got %s)", describe(v))
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, errors.New("empty control id")
		}
		ids = append(ids, s)
	}
	return ids, nil
}

// unknownKey explains an unknown custom key, naming the known key it most
// likely misspells.
func (o *options) unknownKey(key string) string {
	known := []string{internalKey}
	for _, f := range o.frameworks {
		known = append(known, f.Key)
	}
	known = append(known, o.extraKeys...)
	fold := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				return r
			}
			if r >= 'A' && r <= 'Z' {
				return r + 'a' - 'A'
			}
			return -1
		}, s)
	}
	for _, k := range known {
		if fold(k) == fold(key) {
			return fmt.Sprintf("unknown custom key %q (did you mean %q?)", key, k)
		}
	}
	return fmt.Sprintf("unknown custom key %q (known: %s)", key, strings.Join(known, ", "))
}

// describe names a YAML value's type and shows it, for error messages.
func describe(v any) string {
	switch v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return fmt.Sprintf("list %v", v)
	case map[string]any:
		return fmt.Sprintf("object %v", v)
	case nil:
		return "null"
	default:
		return fmt.Sprintf("number %v", v)
	}
}
