package envoyproxy

import (
	"net/url"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// editQuery applies query_parameters_to_set and then query_parameters_to_remove to the query of path (a :path
// value), as the ext_authz filter does. Keys are compared decoded and case-sensitively. A set replaces every
// parameter of its key with one, where the first of them stood, or appends it; a remove drops every parameter of
// its key. Parameters neither touches keep their bytes; a query left empty loses its "?".
func editQuery(path string, toSet []*corev3.QueryParameter, toRemove []string) string {
	if len(toSet) == 0 && len(toRemove) == 0 {
		return path
	}
	p, rawQuery, _ := strings.Cut(path, "?")
	var params []string
	if rawQuery != "" {
		for part := range strings.SplitSeq(rawQuery, "&") {
			if part != "" {
				params = append(params, part)
			}
		}
	}
	for _, qp := range toSet {
		key := qp.GetKey()
		if key == "" {
			continue
		}
		encoded := url.QueryEscape(key) + "=" + url.QueryEscape(qp.GetValue())
		out := params[:0:0]
		placed := false
		for _, part := range params {
			if paramKey(part) != key {
				out = append(out, part)
				continue
			}
			if !placed {
				out = append(out, encoded)
				placed = true
			}
		}
		if !placed {
			out = append(out, encoded)
		}
		params = out
	}
	for _, key := range toRemove {
		out := params[:0:0]
		for _, part := range params {
			if paramKey(part) != key {
				out = append(out, part)
			}
		}
		params = out
	}
	if len(params) == 0 {
		return p
	}
	return p + "?" + strings.Join(params, "&")
}

// paramKey is the decoded key of one raw key[=value] parameter; a key that does not decode is compared raw.
func paramKey(part string) string {
	k, _, _ := strings.Cut(part, "=")
	if d, err := url.QueryUnescape(k); err == nil {
		return d
	}
	return k
}
