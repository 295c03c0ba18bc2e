package compliance

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// rows flattens the requirements into one line per requirement and rule:
// "PCI DSS 7.2.1 | allow@authz.rego:19 | test_a test_b", test names without
// their package.
func rows(m *Matrix) []string {
	var out []string
	for _, req := range m.Requirements {
		for _, r := range req.Rules {
			out = append(out, fmt.Sprintf("%s | %s@%s | %s", req, r.Name, r.Location(), shortTests(r.Tests)))
		}
	}
	return out
}

// gaps flattens the gaps into "kind name@file:line requirements".
func gaps(m *Matrix) []string {
	var out []string
	for _, g := range m.Gaps {
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s@%s %s", g.Kind, g.Rule.Name, g.Rule.Location(), strings.Join(g.Requirements, ", "))))
	}
	return out
}

func shortTests(tests []string) string {
	short := make([]string, len(tests))
	for i, t := range tests {
		short[i] = t[strings.LastIndex(t, ".")+1:]
	}
	return strings.Join(short, " ")
}

func TestGenerateFixture(t *testing.T) {
	t.Parallel()
	m := fixtureMatrix(t)

	wantRows := []string{
		// Both allow definitions start with input.method == "GET", so the
		// auditor's test evaluates a line of the teller's rule too.
		"PCI DSS 7.2.1 | allow@authz.rego:19 | test_auditor_reads_any_account test_teller_cannot_read_account_of_other_branch test_teller_reads_account_of_own_branch",
		"PCI DSS 7.2.1 | allow@authz.rego:30 | test_auditor_reads_any_account",
		// Only a request no definition allows falls back to the default.
		"PCI DSS 7.2.5 | allow@authz.rego:12 | test_teller_cannot_read_account_of_other_branch",
		"PCI DSS 8.3.1 | allow@authz.rego:19 | test_auditor_reads_any_account test_teller_cannot_read_account_of_other_branch test_teller_reads_account_of_own_branch",
		"PCI DSS 10.2.1 | allow@authz.rego:30 | test_auditor_reads_any_account",
		"SOC 2 CC6.1 | allow@authz.rego:19 | test_auditor_reads_any_account test_teller_cannot_read_account_of_other_branch test_teller_reads_account_of_own_branch",
		"SOC 2 CC6.1 | allow@authz.rego:30 | test_auditor_reads_any_account",
		// A document-scope mapping covers every definition of deny; the
		// rule indexer keeps the POST test away from the DELETE one.
		"GDPR 5(1)(c) | deny@authz.rego:41 | test_write_outside_hours_is_denied",
		"GDPR 5(1)(c) | deny@authz.rego:46 | ",
		"GLBA 314.4(c)(1) | deny@authz.rego:41 | test_write_outside_hours_is_denied",
		"GLBA 314.4(c)(1) | deny@authz.rego:46 | ",
		// Its only test is a todo_test_, which does not run.
		"CCPA 1798.100(c) | export_allowed@authz.rego:52 | ",
	}
	if got := rows(m); !slices.Equal(got, wantRows) {
		t.Errorf("requirements:\n got %q\nwant %q", got, wantRows)
	}

	// is_teller (internal: true) and lib.same_branch (its package is
	// internal) are no gaps.
	wantGaps := []string{
		"unmapped audit_fields@authz.rego:64",
		"unmapped obligations@authz.rego:66",
		"untested deny@authz.rego:46 GDPR 5(1)(c), GLBA 314.4(c)(1)",
		"untested export_allowed@authz.rego:52 CCPA 1798.100(c)",
	}
	if got := gaps(m); !slices.Equal(got, wantGaps) {
		t.Errorf("gaps:\n got %q\nwant %q", got, wantGaps)
	}

	if got, want := m.Requirements[0].Rules[0].Title, "Tellers read accounts of their own branch"; got != want {
		t.Errorf("title = %q, want %q", got, want)
	}
	if got, want := m.Requirements[0].Rules[0].Tests[0], "data.fixture.authz_test.test_auditor_reads_any_account"; got != want {
		t.Errorf("test name = %q, want %q", got, want)
	}
	if got, want := m.Gaps[0].Rule.Path(), "data.fixture.authz.audit_fields"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	t.Parallel()
	a, b := fixtureMatrix(t), fixtureMatrix(t)
	var wa, wb strings.Builder
	if err := a.Write(&wa, FormatJSON); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(&wb, FormatJSON); err != nil {
		t.Fatal(err)
	}
	if wa.String() != wb.String() {
		t.Error("two runs over the same policies wrote different matrices")
	}
}

// policy is a one-module policy tree with its test module.
func policy(rego, test string) fstest.MapFS {
	fsys := fstest.MapFS{"p.rego": {Data: []byte(rego)}}
	if test != "" {
		fsys["p_test.rego"] = &fstest.MapFile{Data: []byte(test)}
	}
	return fsys
}

func TestGenerateRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		dir     string       // a fixture under testdata, or
		fsys    fstest.MapFS // a tree built here
		opts    []Option
		wantErr error
		want    []string // substrings of the error
	}{
		{
			name:    "misspelt framework key names file, rule and the key it misspells",
			dir:     "typo",
			wantErr: ErrInvalidAnnotation,
			want:    []string{"policy.rego:3: rule data.fixture.typo.allow", `unknown custom key "pci-dss" (did you mean "pci_dss"?)`},
		},
		{
			name:    "unknown key lists the known ones",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   iso: [\"A.9\"]\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{"p.rego:3: rule data.p.allow", `unknown custom key "iso" (known: internal, pci_dss, soc2, gdpr, glba, ccpa)`},
		},
		{
			name:    "unquoted control id is rejected, since YAML reads it as a number",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   pci_dss: [\"7.2.1\", 8.10]\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{"p.rego:3: rule data.p.allow", "pci_dss: control ids must be strings, quote them (got number 8.1)"},
		},
		{
			name:    "control ids given as a string instead of a list",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   soc2: CC6.1\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{`soc2: want a list of control ids such as ["7.2.1"] (got string "CC6.1")`},
		},
		{
			name:    "empty list of control ids",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   gdpr: []\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{"gdpr: empty list of control ids"},
		},
		{
			name:    "controls on a package would map no rule",
			fsys:    policy("# METADATA\n# custom:\n#   glba: [\"314.4(c)(1)\"]\npackage p\n\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{"p.rego:1: package data.p", "glba controls belong on a rule (scope rule or document), not on a package"},
		},
		{
			name:    "internal rule cannot list controls",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   internal: true\n#   ccpa: [\"1798.100(c)\"]\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{"internal: true contradicts the controls it lists"},
		},
		{
			name:    "internal must be a boolean",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   internal: \"yes\"\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{`internal must be true or false (got string "yes")`},
		},
		{
			name:    "every invalid annotation is reported at once",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   pcidss: [\"7.2.1\"]\na := true\n\n# METADATA\n# custom:\n#   Soc2: [\"CC6.1\"]\nb := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want: []string{
				`p.rego:3: rule data.p.a: invalid compliance annotation: unknown custom key "pcidss" (did you mean "pci_dss"?)`,
				`p.rego:8: rule data.p.b: invalid compliance annotation: unknown custom key "Soc2" (did you mean "soc2"?)`,
			},
		},
		{
			name:    "extra key is an error unless accepted",
			fsys:    policy("package p\n\n# METADATA\n# custom:\n#   owner: payments\n#   soc2: [\"CC6.1\"]\nallow := true\n", ""),
			wantErr: ErrInvalidAnnotation,
			want:    []string{`unknown custom key "owner"`},
		},
		{
			name:    "failing test names the test and its location",
			fsys:    policy("package p\n\nallow if input.ok\n", "package p_test\n\nimport data.p\n\ntest_ok if p.allow with input as {\"ok\": false}\n"),
			wantErr: ErrTestFailed,
			want:    []string{"p_test.rego:5: data.p_test.test_ok: rego test failed"},
		},
		{
			name:    "erroring test is a failure with the error",
			fsys:    policy("package p\n\nf(_) := 1\n\nf(_) := 2\n", "package p_test\n\nimport data.p\n\ntest_f if p.f(0) == 1\n"),
			wantErr: ErrTestFailed,
			want:    []string{"data.p_test.test_f: rego test failed: ", "eval_conflict_error"},
		},
		{
			name:    "every failing test is reported",
			fsys:    policy("package p\n\nallow := false\n", "package p_test\n\nimport data.p\n\ntest_a if p.allow\n\ntest_b if p.allow\n"),
			wantErr: ErrTestFailed,
			want:    []string{"data.p_test.test_a", "data.p_test.test_b"},
		},
		{
			name:    "tree without rego",
			fsys:    fstest.MapFS{"data.json": {Data: []byte("{}")}},
			wantErr: ErrNoPolicies,
		},
		{
			name: "parse error names the file",
			fsys: policy("package p\n\nallow if {\n", ""),
			want: []string{"p.rego:4", "rego_parse_error"},
		},
		{
			name: "compile error names the file",
			fsys: policy("package p\n\nallow if x == 1\n", ""),
			want: []string{"p.rego:3", "var x is unsafe"},
		},
		{
			name:    "framework key already taken",
			fsys:    policy("package p\n", ""),
			opts:    []Option{WithFramework("pci_dss", "PCI")},
			wantErr: ErrInvalidOption,
		},
		{
			name:    "framework name already taken",
			fsys:    policy("package p\n", ""),
			opts:    []Option{WithFramework("pci", "PCI DSS")},
			wantErr: ErrInvalidOption,
		},
		{
			name:    "extra key cannot hide internal",
			fsys:    policy("package p\n", ""),
			opts:    []Option{WithExtraKeys("internal")},
			wantErr: ErrInvalidOption,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var err error
			if tc.dir != "" {
				_, err = Generate(context.Background(), filepath.Join("testdata", tc.dir), tc.opts...)
			} else {
				_, err = GenerateFS(context.Background(), tc.fsys, tc.opts...)
			}
			if err == nil {
				t.Fatal("Generate succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %q is not %q", err, tc.wantErr)
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestGenerateOptions(t *testing.T) {
	t.Parallel()
	fsys := policy(`package p

# METADATA
# custom:
#   owner: payments
#   iso27001: ["A.9.4.1"]
allow if input.ok
`, `package p_test

import data.p

test_ok if p.allow with input as {"ok": true}
`)
	m, err := GenerateFS(context.Background(), fsys, WithFramework("iso27001", "ISO/IEC 27001"), WithExtraKeys("owner"))
	if err != nil {
		t.Fatalf("GenerateFS: %v", err)
	}
	if got, want := rows(m), []string{"ISO/IEC 27001 A.9.4.1 | allow@p.rego:7 | test_ok"}; !slices.Equal(got, want) {
		t.Errorf("requirements = %q, want %q", got, want)
	}
	if got, want := m.Frameworks[len(m.Frameworks)-1], (Framework{Key: "iso27001", Name: "ISO/IEC 27001"}); got != want {
		t.Errorf("last framework = %+v, want %+v", got, want)
	}
	if len(m.Gaps) != 0 {
		t.Errorf("gaps = %q, want none", gaps(m))
	}
}

func TestGenerateStopsWhenContextIsCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Generate(ctx, filepath.Join("testdata", "policies"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
