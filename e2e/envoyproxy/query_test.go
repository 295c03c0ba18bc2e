package envoyproxy

import (
	"net/url"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestEditQuery(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		set    []*corev3.QueryParameter
		remove []string
		want   string
	}{
		{"no edits return the path unchanged", "/a?b=%zz&&c", nil, nil, "/a?b=%zz&&c"},
		{"set on a path without a query", "/a", []*corev3.QueryParameter{{Key: "k", Value: "v"}}, nil, "/a?k=v"},
		{"set with an empty key is ignored", "/a?x=1", []*corev3.QueryParameter{{Key: "", Value: "v"}}, nil, "/a?x=1"},
		{"empty parameters are dropped when the query is rebuilt", "/a?x=1&&y=2", nil, []string{"z"}, "/a?x=1&y=2"},
		{"a key without a value is matched", "/a?flag&x=1", nil, []string{"flag"}, "/a?x=1"},
		{"a key that does not decode is matched raw", "/a?%zz=1&x=1", nil, []string{"%zz"}, "/a?x=1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := editQuery(tc.path, tc.set, tc.remove); got != tc.want {
				t.Errorf("editQuery(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

// FuzzEditQuery checks on any client query that a set key ends up exactly once with its value, a removed key is
// gone, and the path before the query is untouched.
func FuzzEditQuery(f *testing.F) {
	f.Add("/p?a=1&b=2", "a", "x y", "b")
	f.Add("/p", "k", "", "j")
	f.Add("/p?%zz=1&a=%20", "a", "&=", "%zz")
	f.Add("/p?a&a=&a=1", "a", "v", "c")
	f.Fuzz(func(t *testing.T, path, setKey, setValue, removeKey string) {
		if !strings.HasPrefix(path, "/") || setKey == "" || setKey == removeKey {
			t.Skip()
		}
		got := editQuery(path, []*corev3.QueryParameter{{Key: setKey, Value: setValue}}, []string{removeKey})
		before, _, _ := strings.Cut(path, "?")
		gotPath, rawQuery, _ := strings.Cut(got, "?")
		if gotPath != before {
			t.Fatalf("path %q became %q", before, gotPath)
		}
		var values []string
		for part := range strings.SplitSeq(rawQuery, "&") {
			k, v, _ := strings.Cut(part, "=")
			if paramKey(part) == removeKey {
				t.Fatalf("removed key %q still in %q", removeKey, got)
			}
			if dk, err := url.QueryUnescape(k); err == nil && dk == setKey {
				dv, err := url.QueryUnescape(v)
				if err != nil {
					t.Fatalf("set value %q does not decode in %q", v, got)
				}
				values = append(values, dv)
			}
		}
		if len(values) != 1 || values[0] != setValue {
			t.Fatalf("set %q=%q gave %q (values %q)", setKey, setValue, got, values)
		}
	})
}
