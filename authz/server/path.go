package server

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// pathProblem says why p, a CheckRequest's path with its query, is not in the form Envoy forwards with the
// settings envoy/sidecar.yaml requires (normalize_path, merge_slashes, path_with_escaped_slashes_action:
// REJECT_REQUEST), or returns "" when it is. Such a path means Envoy is not configured as required, or a
// client reached this service some other way; either way the application may read the path differently from
// the policy (a Servlet container drops ";params", Windows servers read "\" as "/", some frameworks decode
// "%2F" before routing), so the request is refused instead of decided.
//
// The query is not examined here: it does not select the resource and input.Build validates it.
// The reasons are fixed strings that never quote the path.
func pathProblem(p string) string {
	path, _, _ := strings.Cut(p, "?")
	if path == "" || path[0] != '/' {
		return "not an absolute path"
	}
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c < 0x20 || c == 0x7f:
			return "control character"
		case c >= 0x80:
			// Envoy's path canonicaliser percent-encodes bytes outside ASCII.
			return "raw non-ASCII byte"
		case c == '\\':
			// normalize_path reads "\" as "/".
			return "backslash"
		case c == ';':
			return "path parameter"
		case c == '#':
			return "fragment"
		}
	}
	rest := path[1:]
	for {
		seg, next, more := strings.Cut(rest, "/")
		if why := segmentProblem(seg, more); why != "" {
			return why
		}
		if !more {
			return ""
		}
		rest = next
	}
}

// segmentProblem checks one segment; notLast is false for the segment after the final "/", which may be empty
// (a trailing slash, or the root path).
func segmentProblem(seg string, notLast bool) string {
	if seg == "" {
		if notLast {
			return "empty segment" // "//", which merge_slashes removes
		}
		return ""
	}
	if !strings.Contains(seg, "%") {
		if seg == "." || seg == ".." {
			return "dot segment" // RFC 3986 §5.2.4, resolved by normalize_path
		}
		return ""
	}
	dec, err := url.PathUnescape(seg)
	switch {
	case err != nil:
		return "malformed percent-encoding"
	case dec == "." || dec == "..":
		return "percent-encoded dot segment"
	case strings.ContainsAny(dec, `/\`):
		// Refused by path_with_escaped_slashes_action: REJECT_REQUEST.
		return "percent-encoded slash or backslash"
	case !utf8.ValidString(dec):
		return "percent-encoded bytes are not UTF-8"
	}
	for _, r := range dec {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "percent-encoded control character"
		}
	}
	return ""
}
