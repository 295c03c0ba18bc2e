package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ErrUndefined reports that the policy query produced no result, for example
// because no package defines the queried rule and it has no default.
var ErrUndefined = errors.New("policy: result is undefined")

// ErrInvalidResult reports a result that does not have the shape of an
// OPA-Envoy result object. The wrapping error names the offending field.
var ErrInvalidResult = errors.New("policy: invalid result")

// Decision is the parsed result of one policy evaluation. It mirrors the
// result object of OPA-Envoy: a boolean result b is Decision{Allowed: b}.
//
// A Decision returned by [Engine.Eval] may be shared with other calls (the
// decision cache hands out the same one): read it, never modify it.
type Decision struct {
	// Allowed is the verdict.
	Allowed bool
	// Headers are added to the upstream request when allowed, or to the
	// local reply when denied. Names are lower-case.
	Headers []Header
	// RequestHeadersToRemove are lower-case header names removed from the
	// upstream request when allowed.
	RequestHeadersToRemove []string
	// ResponseHeadersToAdd are added to the downstream response when allowed.
	ResponseHeadersToAdd []Header
	// QueryParametersToSet are set on the upstream request when allowed.
	// Keys and values are already percent-encoded; they are case-sensitive.
	QueryParametersToSet []Header
	// QueryParametersToRemove are removed from the upstream request when
	// allowed.
	QueryParametersToRemove []string
	// HTTPStatus is the status of the local reply when denied; 0 when the
	// policy did not set one.
	HTTPStatus int
	// Body is the body of the local reply when denied.
	Body string
	// DynamicMetadata holds JSON values (nil, bool, json.Number, string,
	// []any, map[string]any) that Envoy stores as the filter's dynamic
	// metadata, for access logs and later filters.
	DynamicMetadata map[string]any
	// Revision is the revision of the policy that produced the decision
	// (see [Engine.Revision]), for decision logs.
	Revision string
}

// Header is a name/value pair: an HTTP header or a query parameter.
type Header struct {
	Key, Value string
}

// Keys of the result object, built once; terms are never mutated.
var (
	keyAllowed                 = ast.StringTerm("allowed")
	keyHeaders                 = ast.StringTerm("headers")
	keyRequestHeadersToRemove  = ast.StringTerm("request_headers_to_remove")
	keyResponseHeadersToAdd    = ast.StringTerm("response_headers_to_add")
	keyQueryParametersToSet    = ast.StringTerm("query_parameters_to_set")
	keyQueryParametersToRemove = ast.StringTerm("query_parameters_to_remove")
	keyHTTPStatus              = ast.StringTerm("http_status")
	keyBody                    = ast.StringTerm("body")
	keyDynamicMetadata         = ast.StringTerm("dynamic_metadata")
)

// parseDecision turns a query result into a Decision. Unknown fields of an
// object result are ignored, as OPA-Envoy does; every known field is checked,
// and any header or query parameter that Envoy would refuse or that could
// change the request's framing makes the whole result invalid (fail closed).
func parseDecision(v ast.Value) (*Decision, error) {
	switch r := v.(type) {
	case ast.Boolean:
		return &Decision{Allowed: bool(r)}, nil
	case ast.Object:
		return parseObject(r)
	default:
		return nil, wrongType("result", "boolean or object", v)
	}
}

func parseObject(obj ast.Object) (*Decision, error) {
	d := &Decision{}

	t := obj.Get(keyAllowed)
	if t == nil {
		return nil, fmt.Errorf("%w: result.allowed: required field is missing", ErrInvalidResult)
	}
	allowed, ok := t.Value.(ast.Boolean)
	if !ok {
		return nil, wrongType("result.allowed", "boolean", t.Value)
	}
	d.Allowed = bool(allowed)

	var err error
	if t := obj.Get(keyHeaders); t != nil {
		if d.Headers, err = parsePairs("result.headers", t.Value, headerPair); err != nil {
			return nil, err
		}
	}
	if t := obj.Get(keyRequestHeadersToRemove); t != nil {
		if d.RequestHeadersToRemove, err = parseNames("result.request_headers_to_remove", t.Value, headerPair); err != nil {
			return nil, err
		}
	}
	if t := obj.Get(keyResponseHeadersToAdd); t != nil {
		if d.ResponseHeadersToAdd, err = parsePairs("result.response_headers_to_add", t.Value, headerPair); err != nil {
			return nil, err
		}
	}
	if t := obj.Get(keyQueryParametersToSet); t != nil {
		if d.QueryParametersToSet, err = parsePairs("result.query_parameters_to_set", t.Value, queryPair); err != nil {
			return nil, err
		}
	}
	if t := obj.Get(keyQueryParametersToRemove); t != nil {
		if d.QueryParametersToRemove, err = parseNames("result.query_parameters_to_remove", t.Value, queryPair); err != nil {
			return nil, err
		}
	}
	if t := obj.Get(keyHTTPStatus); t != nil {
		n, ok := t.Value.(ast.Number)
		if !ok {
			return nil, wrongType("result.http_status", "number", t.Value)
		}
		code, ok := n.Int()
		if !ok || code < 100 || code > 599 {
			return nil, fmt.Errorf("%w: result.http_status: want integer 100-599, got %s", ErrInvalidResult, truncate(string(n)))
		}
		d.HTTPStatus = code
	}
	if t := obj.Get(keyBody); t != nil {
		s, ok := t.Value.(ast.String)
		if !ok {
			return nil, wrongType("result.body", "string", t.Value)
		}
		d.Body = string(s)
	}
	if t := obj.Get(keyDynamicMetadata); t != nil {
		md, ok := t.Value.(ast.Object)
		if !ok {
			return nil, wrongType("result.dynamic_metadata", "object", t.Value)
		}
		m, err := jsonObject("result.dynamic_metadata", md)
		if err != nil {
			return nil, err
		}
		d.DynamicMetadata = m
	}
	return d, nil
}

// pairKind selects the rules for names and values of a Header.
type pairKind int

const (
	headerPair pairKind = iota // HTTP field: lower-cased token name, value without CTLs
	queryPair                  // query parameter: percent-encoded name and value, case kept
)

// parsePairs accepts the shapes OPA-Envoy accepts for headers: an object of
// name to string or to array of strings, or an array of such objects. Sets
// count as arrays (they are arrays once OPA-Envoy turns them into JSON).
// Object keys come in sorted order, so the result is deterministic.
func parsePairs(field string, v ast.Value, kind pairKind) ([]Header, error) {
	switch x := v.(type) {
	case ast.Object:
		return appendObjectPairs(nil, field, -1, x, kind)
	case *ast.Array:
		var out []Header
		var err error
		for i := range x.Len() {
			if out, err = appendElemPairs(out, field, i, x.Elem(i).Value, kind); err != nil {
				return nil, err
			}
		}
		return out, nil
	case ast.Set:
		var out []Header
		var err error
		for i, t := range x.Slice() {
			if out, err = appendElemPairs(out, field, i, t.Value, kind); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, wrongType(field, "object or array", v)
	}
}

func appendElemPairs(dst []Header, field string, i int, v ast.Value, kind pairKind) ([]Header, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wrongType(fmt.Sprintf("%s[%d]", field, i), "object", v)
	}
	return appendObjectPairs(dst, field, i, obj, kind)
}

// appendObjectPairs appends the pairs of one object; i is its index in an
// enclosing array, or -1. Field names in errors are only built on failure.
func appendObjectPairs(dst []Header, field string, i int, obj ast.Object, kind pairKind) ([]Header, error) {
	if dst == nil {
		dst = make([]Header, 0, obj.Len())
	}
	err := obj.Iter(func(k, v *ast.Term) error {
		ks, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("%w: %s: want string keys, got %s key %s", ErrInvalidResult, elemName(field, i), ast.ValueName(k.Value), truncate(k.String()))
		}
		name, err := checkName(elemName, field, i, string(ks), kind)
		if err != nil {
			return err
		}
		switch val := v.Value.(type) {
		case ast.String:
			if err := checkValue(field, i, name, string(val), kind); err != nil {
				return err
			}
			dst = append(dst, Header{Key: name, Value: string(val)})
		case *ast.Array:
			for j := range val.Len() {
				if dst, err = appendValue(dst, field, i, name, j, val.Elem(j).Value, kind); err != nil {
					return err
				}
			}
		case ast.Set:
			for j, t := range val.Slice() {
				if dst, err = appendValue(dst, field, i, name, j, t.Value, kind); err != nil {
					return err
				}
			}
		default:
			return wrongType(keyName(field, i, name), "string or array of strings", v.Value)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return dst, nil
}

func appendValue(dst []Header, field string, i int, name string, j int, v ast.Value, kind pairKind) ([]Header, error) {
	s, ok := v.(ast.String)
	if !ok {
		return nil, wrongType(fmt.Sprintf("%s[%d]", keyName(field, i, name), j), "string", v)
	}
	if err := checkValue(field, i, name, string(s), kind); err != nil {
		return nil, err
	}
	return append(dst, Header{Key: name, Value: string(s)}), nil
}

// parseNames accepts an array (or set) of names to remove.
func parseNames(field string, v ast.Value, kind pairKind) ([]string, error) {
	var terms []*ast.Term
	switch x := v.(type) {
	case *ast.Array:
		terms = make([]*ast.Term, x.Len())
		for i := range terms {
			terms[i] = x.Elem(i)
		}
	case ast.Set:
		terms = x.Slice()
	default:
		return nil, wrongType(field, "array of strings", v)
	}
	out := make([]string, 0, len(terms))
	for i, t := range terms {
		s, ok := t.Value.(ast.String)
		if !ok {
			return nil, wrongType(fmt.Sprintf("%s[%d]", field, i), "string", t.Value)
		}
		name, err := checkName(indexName, field, i, string(s), kind)
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

// checkName validates a header name (returned lower-cased) or a query
// parameter name (returned as is). where names the position for errors.
func checkName(where func(string, int) string, field string, i int, name string, kind pairKind) (string, error) {
	switch kind {
	case headerPair:
		// RFC 9110 §5.1: a field name is a token. This also refuses
		// pseudo-headers (":path") and the empty name.
		if !isToken(name) {
			return "", fmt.Errorf("%w: %s: invalid header name %s", ErrInvalidResult, where(field, i), truncate(fmt.Sprintf("%q", name)))
		}
		return strings.ToLower(name), nil
	default:
		if name == "" || !isQueryEncoded(name) {
			return "", fmt.Errorf("%w: %s: query parameter name %s is not percent-encoded", ErrInvalidResult, where(field, i), truncate(fmt.Sprintf("%q", name)))
		}
		return name, nil
	}
}

// checkValue validates a header or query parameter value. Values may carry
// claims, so errors never include them.
func checkValue(field string, i int, name, value string, kind pairKind) error {
	switch kind {
	case headerPair:
		// RFC 9110 §5.5: field values are visible characters, SP and HTAB;
		// CR, LF and NUL would split or truncate the header (RFC 9110 §5.5,
		// RFC 9113 §8.2.1), other controls are refused by HTTP/2 peers.
		if !isFieldValue(value) {
			return fmt.Errorf("%w: %s: invalid header value (control character)", ErrInvalidResult, keyName(field, i, name))
		}
	default:
		if !isQueryEncoded(value) {
			return fmt.Errorf("%w: %s: query parameter value is not percent-encoded", ErrInvalidResult, keyName(field, i, name))
		}
	}
	return nil
}

// isToken reports whether s is an RFC 9110 §5.6.2 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isFieldValue reports whether s has no control characters other than HTAB.
func isFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// isQueryEncoded reports whether s is already encoded the way Envoy expects
// for query_parameters_to_set: Envoy splices keys and values into the path
// verbatim, so an "&" or "#" would add parameters or cut the query. This is
// the check of Envoy's PercentEncoding::queryParameterIsUrlEncoded
// (x-www-form-urlencoded: only ALPHA, DIGIT, "*", "-", ".", "_" stay literal).
func isQueryEncoded(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '*', c == '-', c == '.', c == '_':
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// jsonObject converts a metadata object to Go JSON values. Sets become
// arrays in sorted order, as they do in OPA's JSON output.
func jsonObject(field string, obj ast.Object) (map[string]any, error) {
	m := make(map[string]any, obj.Len())
	err := obj.Iter(func(k, v *ast.Term) error {
		ks, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("%w: %s: want string keys, got %s key %s", ErrInvalidResult, field, ast.ValueName(k.Value), truncate(k.String()))
		}
		x, err := jsonValue(field, v.Value)
		if err != nil {
			return err
		}
		m[string(ks)] = x
		return nil
	})
	return m, err
}

func jsonValue(field string, v ast.Value) (any, error) {
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case ast.Boolean:
		return bool(x), nil
	case ast.Number:
		return json.Number(x), nil
	case ast.String:
		return string(x), nil
	case *ast.Array:
		out := make([]any, x.Len())
		for i := range out {
			e, err := jsonValue(field, x.Elem(i).Value)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	case ast.Set:
		terms := x.Slice()
		out := make([]any, len(terms))
		for i, t := range terms {
			e, err := jsonValue(field, t.Value)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	case ast.Object:
		return jsonObject(field, x)
	default:
		return nil, wrongType(field, "JSON value", v)
	}
}

func wrongType(field, want string, got ast.Value) error {
	return fmt.Errorf("%w: %s: want %s, got %s", ErrInvalidResult, field, want, ast.ValueName(got))
}

// elemName names the i-th object of an array field, or the field itself.
func elemName(field string, i int) string {
	if i < 0 {
		return field
	}
	return fmt.Sprintf("%s[%d]", field, i)
}

// indexName names the i-th element of an array field.
func indexName(field string, i int) string {
	return fmt.Sprintf("%s[%d]", field, i)
}

// keyName names the entry for key in an object of a pairs field.
func keyName(field string, i int, key string) string {
	return fmt.Sprintf("%s[%s]", elemName(field, i), truncate(fmt.Sprintf("%q", key)))
}

// truncate bounds policy-controlled text quoted in errors.
func truncate(s string) string {
	limit := 64
	if len(s) <= limit {
		return s
	}
	for limit > 0 && !utf8.RuneStart(s[limit]) {
		limit--
	}
	return s[:limit] + "..."
}
