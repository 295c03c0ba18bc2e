package policy

import (
	"fmt"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/finauthz/authz/policies"
)

func TestVirtualCache(t *testing.T) {
	t.Parallel()
	ref := ast.MustParseRef
	one, two := ast.IntNumberTerm(1), ast.IntNumberTerm(2)
	c := virtualCaches.New().(*virtualCache)

	get := func(r string) string {
		v, undefined := c.Get(ref(r))
		return fmt.Sprintf("%v %v", v, undefined)
	}
	tests := []struct {
		name string
		do   func()
		ref  string
		want string
	}{
		{name: "nothing recorded", ref: "data.a.b", want: "<nil> false"},
		{name: "recorded value", do: func() { c.Put(ref("data.a.b"), one) }, ref: "data.a.b", want: "1 false"},
		{name: "prefix of a recorded ref is not recorded", ref: "data.a", want: "<nil> false"},
		{name: "recorded undefined", do: func() { c.Put(ref("data.a.c"), nil) }, ref: "data.a.c", want: "<nil> true"},
		{name: "value replaced", do: func() { c.Put(ref("data.a.b"), two) }, ref: "data.a.b", want: "2 false"},
		{name: "a pushed frame starts empty", do: c.Push, ref: "data.a.b", want: "<nil> false"},
		{name: "a pushed frame records", do: func() { c.Put(ref("data.a.b"), one) }, ref: "data.a.b", want: "1 false"},
		{name: "popping returns to the frame below", do: c.Pop, ref: "data.a.b", want: "2 false"},
		{name: "reset forgets", do: c.reset, ref: "data.a.b", want: "<nil> false"},
	}
	for _, tc := range tests {
		if tc.do != nil {
			tc.do()
		}
		if got := get(tc.ref); got != tc.want {
			t.Errorf("%s: Get(%s) = %s, want %s", tc.name, tc.ref, got, tc.want)
		}
	}

	// Many children of one node are found through the hash index, across resets.
	for round := range 3 {
		for i := range 100 {
			c.Put(ast.Ref{ast.DefaultRootDocument, ast.StringTerm("f"), ast.IntNumberTerm(i)}, ast.IntNumberTerm(i+round))
		}
		for i := range 100 {
			v, _ := c.Get(ast.Ref{ast.DefaultRootDocument, ast.StringTerm("f"), ast.IntNumberTerm(i)})
			if v == nil || !v.Equal(ast.IntNumberTerm(i+round)) {
				t.Fatalf("round %d: Get(data.f[%d]) = %v", round, i, v)
			}
		}
		if n := len(c.Keys()); n != 100 {
			t.Errorf("round %d: %d keys, want 100", round, n)
		}
		c.reset()
	}
	c.Put(ref("data.x.y"), one)
	c.Put(ref("data.x"), two)
	keys := make([]string, 0, 2)
	for _, k := range c.Keys() {
		keys = append(keys, k.String())
	}
	slices.Sort(keys)
	if want := []string{"data.x", "data.x.y"}; !slices.Equal(keys, want) {
		t.Errorf("Keys = %v, want %v", keys, want)
	}
}

// TestVirtualCacheDecidesAsOPAsOwn evaluates the shipped policy's corpus with one
// reused cache, reset between evaluations as Eval does, and with OPA's own.
func TestVirtualCacheDecidesAsOPAsOwn(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{FS: policies.FS, Paths: []string{"."}, Query: policies.Query})
	s := e.current.Load()
	c := virtualCaches.New().(*virtualCache)
	for _, at := range corpusTimes {
		for _, in := range corpus(100, at) {
			v := mustInput(t, in)
			for _, q := range []rego.PreparedEvalQuery{s.prepared, s.written} {
				want, wantErr := evalAt(t.Context(), q, v, at)
				rs, gotErr := q.Eval(t.Context(), rego.EvalParsedInput(v), rego.EvalTime(at), rego.EvalVirtualCache(c))
				c.reset()
				var got ast.Value
				if len(rs) > 0 {
					got = rs[0].Expressions[0].Value.(ast.Value)
				}
				if (gotErr != nil) != (wantErr != nil) || (got == nil) != (want == nil) || (got != nil && got.Compare(want) != 0) {
					t.Fatalf("input %v at %v:\npooled cache %v %v\nOPA's cache  %v %v", v, at, got, gotErr, want, wantErr)
				}
			}
		}
	}
}
