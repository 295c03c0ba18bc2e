package input

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// partialBodyHeader is set to "true" by Envoy when allow_partial_message let
// it forward a body cut at max_request_bytes.
// https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/ext_authz/v3/ext_authz.proto#envoy-v3-api-msg-extensions-filters-http-ext-authz-v3-buffersettings
const partialBodyHeader = "x-envoy-auth-partial-body"

var errContentLength = errors.New("invalid content-length")

// parseBody returns parsed_body and truncated_body, following OPA-Envoy:
//
//   - a partial body (x-envoy-auth-partial-body: true) is not parsed: null, true;
//   - the content-type picks the parser, by substring as OPA-Envoy matches it:
//     "application/json", "application/x-www-form-urlencoded",
//     "multipart/form-data"; anything else (gRPC included: we have no
//     descriptors to decode it with), an empty body or no content-type: null;
//   - a body shorter than its content-length was truncated: null, true;
//   - so is a body longer than Options.MaxBodyBytes;
//   - a body that does not parse is an error, and so is a content-length
//     that is not a number (both fail the request in OPA-Envoy).
func parseBody(b *builder, h *authv3.AttributeContext_HttpRequest, opts Options) (*ast.Term, bool, error) {
	if v, _ := header(h, partialBodyHeader); v == "true" {
		return ast.InternedNullTerm, true, nil
	}
	ct, ok := header(h, "content-type")
	if !ok {
		return ast.InternedNullTerm, false, nil
	}
	var parse func(b *builder, body, contentType string, opts Options) (ast.Value, error)
	switch {
	case strings.Contains(ct, "application/json"):
		parse = func(b *builder, body, _ string, opts Options) (ast.Value, error) {
			return parseJSON(b, body, opts.MaxJSONDepth)
		}
	case strings.Contains(ct, "application/grpc"):
		return ast.InternedNullTerm, false, nil
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		parse = func(b *builder, body, _ string, _ Options) (ast.Value, error) { return parseQuery(b, body) }
	case strings.Contains(ct, "multipart/form-data"):
		parse = parseMultipart
	default:
		return ast.InternedNullTerm, false, nil
	}

	var body string
	if raw := h.GetRawBody(); len(raw) > 0 {
		body = string(raw)
	} else {
		body = h.GetBody()
	}
	if body == "" {
		return ast.InternedNullTerm, false, nil
	}
	if cl, ok := header(h, "content-length"); ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrInvalidBody, errContentLength)
		}
		if n != -1 && n > int64(len(body)) {
			return ast.InternedNullTerm, true, nil
		}
	}
	if len(body) > opts.MaxBodyBytes {
		return ast.InternedNullTerm, true, nil
	}
	v, err := parse(b, body, ct, opts)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrInvalidBody, err)
	}
	return b.term(v), false, nil
}

// header looks a request header up in headers, where Envoy puts them by
// default, or in header_map when encode_raw_headers moved them there.
// OPA-Envoy reads only headers, so it parses no body in the second case.
func header(h *authv3.AttributeContext_HttpRequest, name string) (string, bool) {
	if hs := h.GetHeaders(); len(hs) > 0 {
		v, ok := hs[name]
		return v, ok
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if raw := hv.GetRawValue(); len(raw) > 0 {
				return string(raw), true
			}
			return hv.GetValue(), true
		}
	}
	return "", false
}

// parseMultipart decodes multipart/form-data into name -> array of values,
// as OPA-Envoy does: a part declared application/json is parsed, any other
// part is its text; parts without a form name are skipped; a content-type
// without a boundary gives null.
func parseMultipart(b *builder, body, contentType string, opts Options) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.Null{}, nil
	}
	var pairs []pair
	mr := multipart.NewReader(strings.NewReader(body), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		var v *ast.Term
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			jv, err := parseJSON(b, string(data), opts.MaxJSONDepth)
			if err != nil {
				return nil, err
			}
			v = b.term(jv)
		} else {
			v = b.str(string(data))
		}
		pairs = append(pairs, pair{name, v})
	}
	return group(b, pairs), nil
}
