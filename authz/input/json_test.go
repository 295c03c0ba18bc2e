package input

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// referenceJSON is how OPA-Envoy turns a JSON body into a value, except
// that it also rejects a document followed by "null" and anything after it
// ("{}null{]"). OPA's util.UnmarshalJSON lets that through (its check for
// trailing data reads one more token, and null is the nil token); we do not,
// so that the policy and the upstream cannot read a body differently.
func referenceJSON(s string) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON([]byte(s), &x); err != nil {
		return nil, err
	}
	if !json.Valid([]byte(s)) {
		return nil, errors.New("trailing data")
	}
	return ast.InterfaceToValue(x)
}

// assertJSONLikeReference checks that parseJSON accepts what the reference
// accepts, rejects what it rejects, and gives the same value, number text
// included.
func assertJSONLikeReference(t *testing.T, s string) {
	t.Helper()
	want, werr := referenceJSON(s)
	got, gerr := parseJSON(&builder{}, s, maxJSONDepth)
	switch {
	case werr != nil && gerr == nil:
		t.Fatalf("parseJSON(%q) = %v; reference fails with %v", s, got, werr)
	case werr == nil && gerr != nil:
		t.Fatalf("parseJSON(%q) fails with %v; reference gives %v", s, gerr, want)
	case werr == nil && (got.Compare(want) != 0 || got.String() != want.String()):
		t.Fatalf("parseJSON(%q)\n got %v\nwant %v", s, got, want)
	}
}

var jsonCases = []string{
	// values
	`{}`, `[]`, `""`, `0`, `-0`, `7`, `-12`, `1.5`, `1.5e+10`, `1E-2`, `0.0`, `1e0`, `-0.0e-0`,
	`123456789012345678901234567890`, `1e400`, `1e999999999`, `-1e-999999999`, `1e100000`,
	`true`, `false`, `null`,
	` \t\n\r{"a" : [ 1 , 2 ] } ` + "\n",
	`{"a":{"b":{"c":[{"d":null}]}}}`,
	`[1,"two",true,null,{"x":[]},[[]]]`,
	// strings
	`"plain"`, `"caf\u00e9"`, `"café"`, `"日本語 🏦"`, `"\"\\\/\b\f\n\r\t"`, `"\u0000"`, `"\u2028"`,
	`"\ud83c\udfe6"`, `"\ud83c"`, `"\ud83c\u0041"`, `"\udfe6\ud83c"`, `"\ud83c\ud83c\udfe6"`, `"\uD83C\uDFE6"`,
	`"\ud83c\u00"`, `"\ud83c\x"`,
	"\"\xff\"", "\"a\xc3\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"ok\xe2\x82\"",
	"\"a\x01\"", "\"a\x7f\"", "\"\t\"",
	// duplicate keys: the last one wins
	`{"a":1,"a":2}`, `{"a":1,"b":2,"a":{"c":3}}`,
	`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":"again"}`,
	`{"":1,"":2}`,
	"{" + strings.Repeat(`"a":1,"b":[],`, 20) + `"a":{"c":"last"}}`,
	// strings that share a slot in the parser's cache of recent strings
	`{"axb":1,"ayb":2,"axb":3}`, `["axb","ayb","axb","ayb"]`, `[{"id":"x1"},{"id":"x1"},{"di":"x1"}]`,
	// not JSON
	``, ` `, `01`, `-01`, `1.`, `.5`, `-`, `+1`, `1e`, `1e+`, `0x10`, `NaN`, `Infinity`, `tru`, `nul`, `True`,
	`{"a":1,}`, `[1,]`, `[,1]`, `{"a" 1}`, `{"a":1 "b":2}`, `{a:1}`, `{'a':1}`, `{"a"}`, `{1:2}`,
	`[1] [2]`, `{} x`, `1 2`, `"a" "b"`, `"unterminated`, `{"a":`, `[`, `{`, `]`, `}`, `"\x"`, `"\u12"`,
	`"\`, "\xef\xbb\xbf{}", "{}\x00", `// comment`,
	`0null0`, `{}null`, `{} null {]`, `[1] null`,
}

func TestParseJSONMatchesReference(t *testing.T) {
	t.Parallel()
	for _, s := range jsonCases {
		assertJSONLikeReference(t, s)
	}
}

func TestParseJSONDepth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		doc      string
		maxDepth int
		ok       bool
	}{
		{"scalars have no depth", `1`, 1, true},
		{"one object is depth one", `{"a":1}`, 1, true},
		{"array in object is depth two", `{"a":[1]}`, 1, false},
		{"object in object in array is depth three", `[[1],[2],{"a":{}}]`, 2, false},
		{"siblings do not add up", `[[1],[2],{"a":1}]`, 2, true},
		{"64 nested objects pass the default", nested(DefaultMaxJSONDepth), DefaultMaxJSONDepth, true},
		{"65 nested objects fail the default", nested(DefaultMaxJSONDepth + 1), DefaultMaxJSONDepth, false},
		{"deep arrays fail", strings.Repeat("[", 100) + strings.Repeat("]", 100), DefaultMaxJSONDepth, false},
		{"encoding/json's own limit holds", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), maxJSONDepth, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseJSON(&builder{}, tc.doc, tc.maxDepth)
			if (err == nil) != tc.ok {
				t.Fatalf("parseJSON(depth %d) error = %v, want ok=%t", tc.maxDepth, err, tc.ok)
			}
			var se *jsonSyntaxError
			if err != nil && !errors.As(err, &se) {
				t.Fatalf("error %v is not a *jsonSyntaxError", err)
			}
		})
	}
}

// TestParseJSONRepeatedKeysCostLinearTime guards against a quadratic path:
// ast.Object.Insert rehashes the whole object for every replaced key, so a
// 1 MiB body of one repeated key once took many seconds.
func TestParseJSONRepeatedKeysCostLinearTime(t *testing.T) {
	t.Parallel()
	doc := "{" + strings.Repeat(`"k":1,`, 150000) + `"k":2}`
	start := time.Now()
	v, err := parseJSON(&builder{}, doc, DefaultMaxJSONDepth)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("parsing %d repeated keys took %v", 150000, elapsed)
	}
	if want := ast.MustParseTerm(`{"k": 2}`).Value; v.Compare(want) != 0 {
		t.Errorf("got %v, want %v", v, want)
	}
}

func TestParseJSONUnclosedDeepDocumentMatchesReference(t *testing.T) {
	t.Parallel()
	assertJSONLikeReference(t, strings.Repeat("[", maxJSONDepth+5))
	assertJSONLikeReference(t, strings.Repeat(`{"a":`, 50)+`1`+strings.Repeat("}", 50))
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range jsonCases {
		f.Add(s)
	}
	f.Add(jsonRequest().Attributes.Request.Http.Body)
	f.Fuzz(func(t *testing.T, s string) {
		assertJSONLikeReference(t, s)
	})
}
