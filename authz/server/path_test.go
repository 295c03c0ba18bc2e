package server

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/finauthz/authz/e2e/envoyproxy"
)

func TestPathProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		path string
		bad  bool
	}{
		{"root is normal", "/", false},
		{"plain path is normal", "/accounts/acc-1/transactions", false},
		{"query is not examined", "/accounts?from=../..&x=%00;y", false},
		{"trailing slash is kept by Envoy", "/accounts/", false},
		{"encoded ordinary characters are normal", "/customers/alice%20smith/%41%e2%82%ac", false},
		{"encoded semicolon is data", "/accounts/a%3Bb", false},
		{"three dots are an ordinary segment", "/files/...", false},
		{"dot inside a segment is ordinary", "/files/a.json", false},
		{"dot-dot segment", "/accounts/../admin/x", true},
		{"dot segment", "/accounts/acc-1/./transactions", true},
		{"final dot-dot segment", "/accounts/..", true},
		{"percent-encoded dot-dot", "/accounts/%2e%2e/admin", true},
		{"upper-case percent-encoded dot-dot", "/accounts/%2E%2E/admin", true},
		{"half-encoded dot-dot", "/accounts/.%2e/admin", true},
		{"percent-encoded dot", "/accounts/%2e/x", true},
		{"leading double slash", "//admin/x", true},
		{"inner double slash", "/accounts//acc-1", true},
		{"path parameter", "/accounts;param/acc-1", true},
		{"Tomcat traversal", "/accounts/..;/admin", true},
		{"encoded slash", "/accounts%2facc-1", true},
		{"upper-case encoded slash", "/accounts%2Facc-1", true},
		{"encoded backslash", "/accounts%5cacc-1", true},
		{"raw backslash", `/accounts\acc-1`, true},
		{"backslash traversal", `/accounts\..\admin`, true},
		{"encoded NUL", "/accounts/acc-1%00", true},
		{"encoded newline", "/accounts/acc-1%0d%0ax", true},
		{"encoded C1 control", "/accounts/%c2%85", true},
		{"raw NUL", "/accounts/acc-1\x00", true},
		{"raw escape", "/accounts/\x1b[31m", true},
		{"raw DEL", "/accounts/\x7f", true},
		{"encoded bytes that are not UTF-8", "/accounts/%ff%fe", true},
		{"raw non-ASCII", "/caf\u00e9", true},
		{"raw invalid UTF-8", "/accounts/\xff", true},
		{"malformed escape", "/accounts/%zz", true},
		{"truncated escape", "/accounts/%2", true},
		{"fragment", "/accounts#x", true},
		{"empty path", "", true},
		{"relative path", "accounts/acc-1", true},
		{"asterisk form", "*", true},
		{"absolute form", "https://api.bank.test/accounts", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			why := pathProblem(tc.path)
			if (why != "") != tc.bad {
				t.Fatalf("pathProblem(%q) = %q, want a problem: %v", tc.path, why, tc.bad)
			}
			if strings.Contains(why, tc.path) && tc.path != "" {
				t.Errorf("reason %q quotes the path", why)
			}
		})
	}
}

// FuzzPathProblem checks that every path the guard accepts is one that Envoy's normalisation leaves unchanged
// and that the policy's segments hold no separator or control character.
func FuzzPathProblem(f *testing.F) {
	// The path settings of envoy/sidecar.yaml and envoy/gateway.yaml.
	sidecar := envoyproxy.Config{RejectEscapedSlashes: true, NormalizePath: true, MergeSlashes: true}
	for _, seed := range []string{
		"/", "/accounts/acc-1", "/accounts/../admin", "/a/%2e%2E/b", "//x", `/a\b`, "/a;b", "/a%2fb",
		"/a%00", "/%ff", "/a/./b?x=/../", "/caf%C3%A9", "/a/",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if pathProblem(p) != "" {
			return
		}
		path, _, _ := strings.Cut(p, "?")
		if got, ok := sidecar.NormalizedPath(path); !ok || got != path {
			t.Fatalf("accepted %q, which Envoy rejects or forwards as %q", path, got)
		}
		for seg := range strings.SplitSeq(path[1:], "/") {
			dec, err := url.PathUnescape(seg)
			if err != nil {
				t.Fatalf("accepted %q with a segment that does not decode", path)
			}
			if dec == "." || dec == ".." || strings.ContainsAny(dec, `/\`) || strings.Contains(seg, ";") {
				t.Fatalf("accepted %q with segment %q", path, dec)
			}
			if !utf8.ValidString(dec) {
				t.Fatalf("accepted %q whose segment is not UTF-8 once decoded", path)
			}
			for _, r := range dec {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("accepted %q with a control character", path)
				}
			}
		}
	})
}
