package compliance

import (
	"cmp"
	"path/filepath"
	"slices"
	"strconv"
)

// Matrix maps each compliance requirement to the rules implementing it and
// the tests exercising those rules, and lists the gaps. Every list is sorted,
// so a matrix generated twice from the same policies is the same.
type Matrix struct {
	// Frameworks are the frameworks the matrix covers, in the order it lists
	// them, including those no rule maps to.
	Frameworks []Framework `json:"frameworks"`
	// Requirements are sorted by framework, then by control id in natural
	// order (7.2.1 before 7.10).
	Requirements []Requirement `json:"requirements"`
	// Gaps are sorted by kind, then by rule.
	Gaps []Gap `json:"gaps"`
}

// Requirement is one control of one framework and the rules implementing it.
type Requirement struct {
	// Framework is the framework's name, such as "PCI DSS".
	Framework string `json:"framework"`
	// Control is the control id within the framework, such as "7.2.1".
	Control string `json:"control"`
	// Rules are sorted by package, name and location.
	Rules []Rule `json:"rules"`
}

// String returns the requirement as auditors cite it: "PCI DSS 7.2.1".
func (r Requirement) String() string {
	return r.Framework + " " + r.Control
}

// Rule is one rule definition of the policies (a rule with several
// definitions, such as incremental deny rules, appears once per definition).
type Rule struct {
	// Package is the rule's package path, such as "data.envoy.authz".
	Package string `json:"package"`
	// Name is the rule's name within the package, such as "allow".
	Name string `json:"name"`
	// Title is the title of the rule's METADATA block, if any.
	Title string `json:"title,omitempty"`
	// File is the file defining the rule, relative to the policy root.
	File string `json:"file"`
	// Line is where the definition starts in File.
	Line int `json:"line"`
	// Tests are the Rego tests exercising the rule, sorted, each named as
	// `opa test` names it ("data.envoy.authz_test.test_teller_reads_account").
	Tests []string `json:"tests"`
}

// Path returns the rule's full path, such as "data.envoy.authz.allow".
func (r Rule) Path() string {
	return r.Package + "." + r.Name
}

// Location returns "file:line".
func (r Rule) Location() string {
	return r.File + ":" + strconv.Itoa(r.Line)
}

// GapKind says what a gap lacks.
type GapKind string

const (
	// GapUnmapped is a rule neither mapped to a control nor marked internal.
	GapUnmapped GapKind = "unmapped"
	// GapUntested is a rule mapped to controls that no test exercises.
	GapUntested GapKind = "untested"
)

// Gap is a rule the matrix cannot vouch for.
type Gap struct {
	Kind GapKind `json:"kind"`
	Rule Rule    `json:"rule"`
	// Requirements are, for an untested rule, the requirements it maps to,
	// such as "PCI DSS 7.2.1".
	Requirements []string `json:"requirements,omitempty"`
}

// buildMatrix joins the rules' claims with the tests' coverage.
func buildMatrix(frameworks []Framework, rules []*policyRule, runs []testRun) *Matrix {
	m := &Matrix{
		Frameworks:   slices.Clone(frameworks),
		Requirements: []Requirement{},
		Gaps:         []Gap{},
	}
	byControl := map[control][]Rule{}
	for _, pr := range rules {
		// Slashes on every OS, so the matrix is the same wherever it is generated.
		r := Rule{Package: pr.pkg, Name: pr.name, Title: pr.title, File: filepath.ToSlash(pr.file), Line: pr.firstRow, Tests: []string{}}
		switch {
		case len(pr.controls) == 0 && !pr.internal:
			m.Gaps = append(m.Gaps, Gap{Kind: GapUnmapped, Rule: r})
		case len(pr.controls) > 0:
			for _, t := range runs {
				if t.exercises(pr) {
					r.Tests = append(r.Tests, t.name)
				}
			}
			slices.Sort(r.Tests)
			r.Tests = slices.Compact(r.Tests)
			for _, c := range pr.controls {
				byControl[c] = append(byControl[c], r)
			}
			if len(r.Tests) == 0 {
				g := Gap{Kind: GapUntested, Rule: r}
				for _, c := range pr.controls {
					g.Requirements = append(g.Requirements, frameworks[c.framework].Name+" "+c.id)
				}
				m.Gaps = append(m.Gaps, g)
			}
		}
	}

	controls := make([]control, 0, len(byControl))
	for c := range byControl {
		controls = append(controls, c)
	}
	slices.SortFunc(controls, compareControls)
	for _, c := range controls {
		rs := byControl[c]
		slices.SortFunc(rs, compareRules)
		m.Requirements = append(m.Requirements, Requirement{Framework: frameworks[c.framework].Name, Control: c.id, Rules: rs})
	}
	slices.SortFunc(m.Gaps, func(a, b Gap) int {
		return cmp.Or(cmp.Compare(gapOrder(a.Kind), gapOrder(b.Kind)), compareRules(a.Rule, b.Rule))
	})
	return m
}

func gapOrder(k GapKind) int {
	if k == GapUnmapped {
		return 0
	}
	return 1
}

func compareRules(a, b Rule) int {
	return cmp.Or(
		cmp.Compare(a.Package, b.Package),
		cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.File, b.File),
		cmp.Compare(a.Line, b.Line),
	)
}

func compareControls(a, b control) int {
	return cmp.Or(cmp.Compare(a.framework, b.framework), compareIDs(a.id, b.id))
}

// compareIDs orders control ids naturally: runs of digits compare as
// numbers, so 7.2.1 < 7.10 and CC6.2 < CC6.10; ties fall back to bytes.
func compareIDs(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if isDigit(a[i]) && isDigit(b[j]) {
			si, sj := i, j
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			na, nb := trimZeros(a[si:i]), trimZeros(b[sj:j])
			if c := cmp.Or(cmp.Compare(len(na), len(nb)), cmp.Compare(na, nb)); c != 0 {
				return c
			}
			continue
		}
		if c := cmp.Compare(a[i], b[j]); c != 0 {
			return c
		}
		i++
		j++
	}
	return cmp.Or(cmp.Compare(len(a)-i, len(b)-j), cmp.Compare(a, b))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func trimZeros(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}
