package compliance

import (
	"context"
	"maps"
	"slices"
	"testing"
	"testing/fstest"
)

func TestTestsExercisingRule(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"p.rego": {Data: []byte(`package p

# METADATA
# custom: {pci_dss: ["1"]}
a if input.x == 1

# METADATA
# custom: {pci_dss: ["2"]}
b if input.y == 2

# METADATA
# custom: {pci_dss: ["3"]}
c := "gold" if {
	input.tier == "gold"
}
else := "other"

# METADATA
# custom: {pci_dss: ["4"]}
d if helper

# METADATA
# custom: {internal: true}
helper if input.z == 3

# METADATA
# custom: {pci_dss: ["5"]}
e if input.w == 4

# METADATA
# custom: {pci_dss: ["6"]}
f if e

# METADATA
# custom: {pci_dss: ["7"]}
g(n) := n * 2
`)},
		"p_test.rego": {Data: []byte(`package p_test

import data.p

test_a if p.a with input as {"x": 1}

test_a_indexed_away if not p.a with input as {"x": 2}

test_b if p.b with input as {"y": 2}

test_c_other if p.c == "other" with input as {"tier": "silver"}

test_d if p.d with input as {"z": 3}

test_f_with_e_replaced if p.f with p.e as true

test_nothing if 1 + 1 == 2
`)},
		"p2_test.rego": {Data: []byte(`package p_test

import data.p

test_a if p.a with input as {"x": 1}

test_g if p.g(2) == 4
`)},
	}
	m, err := GenerateFS(context.Background(), fsys)
	if err != nil {
		t.Fatalf("GenerateFS: %v", err)
	}
	got := map[string][]string{}
	for _, req := range m.Requirements {
		for _, r := range req.Rules {
			got[r.Name] = r.Tests
		}
	}

	tests := []struct {
		name  string
		rule  string
		tests []string
	}{
		// Not test_b, whose run evaluated b alone, nor test_a_indexed_away,
		// whose input the rule indexer kept out of a's body. Two tests of
		// one name in one package: the tester numbers the second.
		{"each test is credited with the rules it evaluated, not those of others", "a", []string{"data.p_test.test_a", "data.p_test.test_a#01"}},
		{"a rule evaluated by one test only lists that test", "b", []string{"data.p_test.test_b"}},
		{"reaching only the else branch exercises the rule", "c", []string{"data.p_test.test_c_other"}},
		{"a rule whose body calls an internal helper is exercised", "d", []string{"data.p_test.test_d"}},
		{"a rule replaced with `with` is not exercised", "e", []string{}},
		{"the rule around a replaced one is exercised", "f", []string{"data.p_test.test_f_with_e_replaced"}},
		{"a function is exercised by a call", "g", []string{"data.p_test.test_g"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.Equal(got[tc.rule], tc.tests) {
				t.Errorf("tests of %s = %q, want %q", tc.rule, got[tc.rule], tc.tests)
			}
		})
	}
	if want := []string{"a", "b", "c", "d", "e", "f", "g"}; !slices.Equal(slices.Sorted(maps.Keys(got)), want) {
		t.Errorf("mapped rules = %q, want %q", slices.Sorted(maps.Keys(got)), want)
	}
}
