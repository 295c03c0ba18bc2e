// Package input builds the policy input document for an Envoy ext_authz v3
// CheckRequest, in the shape OPA-Envoy gives it, so that policies written for
// OPA-Envoy run unchanged.
package input

import (
	"errors"
	"fmt"
	"reflect"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Defaults applied by Build to zero or negative Options fields.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultMaxJSONDepth = 64
)

// maxJSONDepth caps Options.MaxJSONDepth at encoding/json's own nesting limit,
// which is where OPA-Envoy stops too; it also bounds the parser's recursion.
const maxJSONDepth = 10000

// Sentinel errors. Every error Build returns wraps ErrInvalidRequest; the
// finer ones let the caller name the reason it denies the request with.
var (
	// ErrInvalidRequest means the CheckRequest cannot be turned into input
	// (nil, no attributes.request.http, or a part that cannot be represented).
	ErrInvalidRequest = errors.New("invalid check request")
	// ErrInvalidPath means the path or its query string cannot be decoded.
	// It wraps ErrInvalidRequest.
	ErrInvalidPath = fmt.Errorf("%w: malformed path", ErrInvalidRequest)
	// ErrInvalidBody means a body whose content-type OPA-Envoy parses (JSON,
	// form, multipart) cannot be parsed, or nests deeper than
	// Options.MaxJSONDepth. It wraps ErrInvalidRequest.
	ErrInvalidBody = fmt.Errorf("%w: malformed body", ErrInvalidRequest)
)

// Options bound the work Build does on the request body. The zero value is
// ready to use.
type Options struct {
	// MaxBodyBytes is the largest body parsed into parsed_body. A larger body
	// is left unparsed and reported as Envoy reports a body it cut short:
	// parsed_body is null and truncated_body is true, so a policy that already
	// guards against truncated bodies covers this case too.
	// Zero or negative means DefaultMaxBodyBytes.
	MaxBodyBytes int

	// MaxJSONDepth is the deepest nesting of arrays and objects accepted in a
	// JSON body (or JSON multipart part). A deeper body is an ErrInvalidBody
	// error, not an unparsed body: a policy that looks for a field to deny on
	// must not be bypassed by burying the body in brackets. Zero or negative
	// means DefaultMaxJSONDepth; values above 10000 are capped there.
	MaxJSONDepth int
}

func (o Options) withDefaults() Options {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxJSONDepth <= 0 {
		o.MaxJSONDepth = DefaultMaxJSONDepth
	}
	if o.MaxJSONDepth > maxJSONDepth {
		o.MaxJSONDepth = maxJSONDepth
	}
	return o
}

var (
	keyAttributes      = ast.StringTerm("attributes")
	keyParsedPath      = ast.StringTerm("parsed_path")
	keyParsedQuery     = ast.StringTerm("parsed_query")
	keyParsedBody      = ast.StringTerm("parsed_body")
	keyTruncatedBody   = ast.StringTerm("truncated_body")
	keyVersion         = ast.StringTerm("version")
	keySourcePrincipal = ast.StringTerm("source_principal")
	keyToken           = ast.StringTerm("token")

	// versionTerm is shared by every input; policies only read it.
	versionTerm = ast.ObjectTerm(
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
	)
)

// Build returns the input document for req:
//
//   - attributes: req.attributes as OPA-Envoy's protojson encoding presents it
//     (lowerCamelCase names, int64 as strings, RFC 3339 timestamps, enums by
//     name, bytes in base64, zero values omitted);
//   - parsed_path, parsed_query: the request path split into unescaped
//     segments, and the query string as name -> array of values;
//   - parsed_body, truncated_body: the body parsed by content-type (JSON,
//     form, multipart) or null, and whether Envoy (or MaxBodyBytes) cut it;
//   - version: {"ext_authz": "v3", "encoding": "protojson"};
//   - source_principal: attributes.source.principal, when set (as OPA-Envoy);
//   - token: tok, when tok is not nil.
//
// The body is taken from raw_body when Envoy sent it (pack_as_bytes), else
// from body. Errors wrap ErrInvalidRequest; the caller should deny.
//
// Inputs share immutable terms (field names, version, empty values) with
// each other: read the result, never modify it in place.
func Build(req *authv3.CheckRequest, tok ast.Value, opts Options) (ast.Value, error) {
	s, err := NewSource(req, tok, opts)
	if err != nil {
		return nil, err
	}
	return s.Value(), nil
}

func isNilPointer(v ast.Value) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
