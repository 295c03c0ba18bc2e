package decisionlog

import (
	"context"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestParsePointer(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"/input/attributes/request/http/headers/x-api-key", []string{"input", "attributes", "request", "http", "headers", "x-api-key"}, false},
		{"/input/a~1b/c~0d", []string{"input", "a/b", "c~d"}, false},
		{"/input/list/0", []string{"input", "list", "0"}, false},
		{"", nil, false},
		{"input/x", nil, true},
	}
	for _, tc := range tests {
		got, err := parsePointer(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parsePointer(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestMaskerFollowsPolicyRevisions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, dir, "mask.rego", "package system.log\nmask contains \"/input/a\"\n")
	m, err := NewRegoMasker(ctx, RegoMaskerConfig{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	event := ast.MustParseTerm(`{"input": {"a": 1, "b": 2}}`).Value
	mask := func(revision string) []string {
		t.Helper()
		got, err := m.Mask(ctx, revision, event)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := mask("r1"); !slices.Equal(got, []string{"/input/a"}) {
		t.Fatalf("mask = %v, want [/input/a]", got)
	}
	writeFile(t, dir, "mask.rego", "package system.log\nmask contains \"/input/b\"\n")
	if got := mask("r1"); !slices.Equal(got, []string{"/input/a"}) {
		t.Errorf("mask = %v for the same revision, want the rule it was prepared with", got)
	}
	if got := mask("r2"); !slices.Equal(got, []string{"/input/b"}) {
		t.Errorf("mask = %v after a new revision, want the new rule's [/input/b]", got)
	}
}

func TestMaskerWithoutARuleMasksNothing(t *testing.T) {
	m, err := NewRegoMasker(context.Background(), RegoMaskerConfig{
		FS: fstest.MapFS{"p/authz.rego": {Data: []byte("package envoy.authz\nallow := true\n")}}, Paths: []string{"p"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Mask(context.Background(), "r1", ast.MustParseTerm(`{"input": {}}`).Value)
	if err != nil || len(got) != 0 {
		t.Errorf("Mask = %v, %v; want nothing", got, err)
	}
}

func TestMaskerRefusesABrokenPolicy(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "mask.rego", "package system.log\nmask contains\n")
	if _, err := NewRegoMasker(context.Background(), RegoMaskerConfig{Paths: []string{dir}}); err == nil {
		t.Error("a policy that does not parse was accepted")
	}
}

func TestNumbersThatMayBeCardNumbersAreMasked(t *testing.T) {
	w := walker{}
	v := w.value(ast.MustParseTerm(`{"card": 4111111111111111, "amount": 1500.25, "n": 7}`).Value, nil)
	f := v.GetStructValue().GetFields()
	if got := f["card"].GetStringValue(); got != "****1111" {
		t.Errorf("card = %v, want ****1111", f["card"])
	}
	if f["amount"].GetNumberValue() != 1500.25 || f["n"].GetNumberValue() != 7 {
		t.Errorf("ordinary numbers changed: %v", f)
	}
}
