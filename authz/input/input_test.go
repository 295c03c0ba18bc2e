package input

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// checkRequest returns a CheckRequest carrying h, the minimum Build accepts.
func checkRequest(h *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: h},
	}}
}

func jsonPost(body string) *authv3.AttributeContext_HttpRequest {
	return &authv3.AttributeContext_HttpRequest{
		Method:  "POST",
		Path:    "/v1/payments",
		Headers: map[string]string{"content-type": "application/json"},
		Body:    body,
	}
}

func multipartBody(boundary string, parts ...[3]string) string {
	var b strings.Builder
	for _, p := range parts { // name, content-type, content
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=%q\r\n", boundary, p[0])
		if p[1] != "" {
			fmt.Fprintf(&b, "Content-Type: %s\r\n", p[1])
		}
		fmt.Fprintf(&b, "\r\n%s\r\n", p[2])
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.String()
}

func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth-1) + `{}` + strings.Repeat(`}`, depth-1)
}

// buildCase is one input document expectation.
type buildCase struct {
	name  string
	req   *authv3.CheckRequest
	tok   ast.Value
	opts  Options
	want  map[string]string // input key -> expected value, as a JSON/Rego literal
	unset []string          // input keys that must be absent
}

func runBuildCases(t *testing.T, tests []buildCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := Build(tc.req, tc.tok, tc.opts)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			obj := v.(ast.Object)
			for _, k := range []string{"attributes", "parsed_path", "parsed_query", "parsed_body", "truncated_body", "version"} {
				if obj.Get(ast.StringTerm(k)) == nil {
					t.Errorf("input.%s is missing", k)
				}
			}
			for k, lit := range tc.want {
				got := obj.Get(ast.StringTerm(k))
				want := ast.MustParseTerm(lit)
				if got == nil {
					t.Errorf("input.%s is missing, want %v", k, want)
					continue
				}
				if got.Value.Compare(want.Value) != 0 {
					t.Errorf("input.%s = %v, want %v", k, got, want)
				}
			}
			for _, k := range tc.unset {
				if got := obj.Get(ast.StringTerm(k)); got != nil {
					t.Errorf("input.%s = %v, want absent", k, got)
				}
			}
			assertValidJSON(t, v)
		})
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	token := ast.MustParseTerm(`{"header": {"alg": "ES256"}, "payload": {"sub": "alice", "scope": "payments:write"}}`).Value
	runBuildCases(t, []buildCase{
		{
			name: "token is added when given",
			req:  checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/"}),
			tok:  token,
			want: map[string]string{"token": `{"header": {"alg": "ES256"}, "payload": {"sub": "alice", "scope": "payments:write"}}`},
		},
		{
			name:  "token is absent when not given",
			req:   checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/"}),
			unset: []string{"token", "source_principal"},
		},
		{
			name: "source principal is copied to source_principal as OPA-Envoy does",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source:  &authv3.AttributeContext_Peer{Principal: "spiffe://bank.example/ns/edge/sa/bff"},
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/"}},
			}},
			want: map[string]string{"source_principal": `"spiffe://bank.example/ns/edge/sa/bff"`},
		},
		{
			name: "version names ext_authz v3 and protojson",
			req:  checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/"}),
			want: map[string]string{"version": `{"ext_authz": "v3", "encoding": "protojson"}`},
		},
		{
			name: "invalid UTF-8 in header names and values is repaired",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"x-a\xff": "v\xfe", "x-a\xfe": "w"},
			}),
			want: map[string]string{"parsed_path": `[""]`},
		}})
}

// assertValidJSON checks that the input serialises (decision logs do) and
// reads back to the same value.
func assertValidJSON(t *testing.T, v ast.Value) {
	t.Helper()
	x, err := ast.JSON(v)
	if err != nil {
		t.Fatalf("ast.JSON: %v", err)
	}
	bs := util.MustMarshalJSON(x)
	var back any
	if err := util.UnmarshalJSON(bs, &back); err != nil {
		t.Fatalf("input does not read back as JSON: %v", err)
	}
	if ast.MustInterfaceToValue(back).Compare(v) != 0 {
		t.Errorf("input changes through JSON:\n got %s\nwant %v", bs, v)
	}
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		opts Options
		want error
	}{
		{"nil request is invalid", nil, Options{}, ErrInvalidRequest},
		{"request without attributes is invalid", &authv3.CheckRequest{}, Options{}, ErrInvalidRequest},
		{"request without http attributes is invalid", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{},
		}}, Options{}, ErrInvalidRequest},
		{"bad escape in the path is a path error", checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/a%zzb"}), Options{}, ErrInvalidPath},
		{"bad escape in the query is a path error", checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/a?x=%g1"}), Options{}, ErrInvalidPath},
		{"semicolon in the query is a path error as in OPA-Envoy", checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/a?x=1;y=2"}), Options{}, ErrInvalidPath},
		{"query with more than 10000 parameters is a path error", checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/a?" + strings.Repeat("x&", maxQueryParams)}), Options{}, ErrInvalidPath},
		{"invalid JSON body is a body error as in OPA-Envoy", checkRequest(jsonPost(`{"amount": }`)), Options{}, ErrInvalidBody},
		{"JSON body with trailing data is a body error", checkRequest(jsonPost(`{} {}`)), Options{}, ErrInvalidBody},
		{"JSON body followed by null is a body error (OPA-Envoy ignores the rest)", checkRequest(jsonPost(`{"amount": 1} null {"amount": 1000000}`)), Options{}, ErrInvalidBody},
		{"white-space JSON body is a body error", checkRequest(jsonPost(" \n")), Options{}, ErrInvalidBody},
		{"JSON body deeper than MaxJSONDepth is a body error", checkRequest(jsonPost(nested(DefaultMaxJSONDepth + 1))), Options{}, ErrInvalidBody},
		{"MaxJSONDepth is capped at encoding/json's 10000", checkRequest(jsonPost(strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1))), Options{MaxJSONDepth: 1 << 30}, ErrInvalidBody},
		{"JSON body deeper than a custom MaxJSONDepth is a body error", checkRequest(jsonPost(`[[[1]]]`)), Options{MaxJSONDepth: 2}, ErrInvalidBody},
		{"JSON number OPA cannot hold is a body error", checkRequest(jsonPost(`{"amount": 1e999999999}`)), Options{}, ErrInvalidBody},
		{"non-numeric content-length is a body error as in OPA-Envoy", checkRequest(&authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{"content-type": "application/json", "content-length": "ten"},
			Body:    `{}`,
		}), Options{}, ErrInvalidBody},
		{"malformed form body is a body error", checkRequest(&authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{"content-type": "application/x-www-form-urlencoded"},
			Body:    "a=%zz",
		}), Options{}, ErrInvalidBody},
		{"malformed multipart body is a body error", checkRequest(&authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{"content-type": "multipart/form-data; boundary=xyz"},
			Body:    "--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno closing boundary",
		}), Options{}, ErrInvalidBody},
		{"invalid JSON in a multipart part is a body error", checkRequest(&authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{"content-type": "multipart/form-data; boundary=xyz"},
			Body:    multipartBody("xyz", [3]string{"meta", "application/json", `{"kind": `}),
		}), Options{}, ErrInvalidBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := Build(tc.req, nil, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Build = %v, %v; want error %v", v, err, tc.want)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("error %v does not wrap ErrInvalidRequest", err)
			}
		})
	}
}

// TestBuildConcurrently shares nothing mutable between requests: run it
// with -race.
func TestBuildConcurrently(t *testing.T) {
	t.Parallel()
	reqs := []*authv3.CheckRequest{typicalRequest(), jsonRequest(), checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/"})}
	want := make([]string, len(reqs))
	for i, req := range reqs {
		v, err := Build(req, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = v.String()
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 50 {
				k := (g + i) % len(reqs)
				v, err := Build(reqs[k], nil, Options{})
				if err == nil && v.String() != want[k] {
					err = fmt.Errorf("request %d: input differs between runs", k)
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestBuildRejectsTokenHoldingNilPointer(t *testing.T) {
	t.Parallel()
	var tok *ast.Array // an ast.Value holding a nil pointer
	_, err := Build(checkRequest(&authv3.AttributeContext_HttpRequest{Path: "/"}), tok, Options{})
	if !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("Build = %v, want an error wrapping ErrInvalidRequest", err)
	}
}

func TestBuildErrorsDoNotQuoteTheBody(t *testing.T) {
	t.Parallel()
	const secret = "4111111111111111"
	_, err := Build(checkRequest(jsonPost(`{"pan": "`+secret+`", }`)), nil, Options{})
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v: want an error that does not quote the body", err)
	}
}

// typicalRequest is what an API gateway sends for a GET: ten headers, a path
// with three segments and two query parameters, no body.
func typicalRequest() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.1.2.3", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 53124}},
		}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.9.8.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8443}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:     "8412293471622361012",
			Method: "GET",
			Headers: map[string]string{
				":authority":        "api.bank.example",
				":method":           "GET",
				":path":             "/v1/accounts/ACC-42?from=2026-01-01&limit=50",
				":scheme":           "https",
				"accept":            "application/json",
				"authorization":     "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
				"user-agent":        "bank-app/7.4 (iOS 19.1)",
				"x-request-id":      "0b6a1f5e-5c1e-4f0e-9a55-8f6f1b2f1c11",
				"x-forwarded-for":   "203.0.113.7",
				"x-forwarded-proto": "https",
			},
			Path:     "/v1/accounts/ACC-42?from=2026-01-01&limit=50",
			Host:     "api.bank.example",
			Scheme:   "https",
			Protocol: "HTTP/2",
		}},
	}}
}

// jsonRequest is typicalRequest turned into a POST with a 2 KB JSON body.
func jsonRequest() *authv3.CheckRequest {
	req := typicalRequest()
	h := req.Attributes.Request.Http
	h.Method, h.Headers[":method"] = "POST", "POST"
	h.Headers["content-type"] = "application/json"
	var b strings.Builder
	b.WriteString(`{"debtor": {"iban": "DE89370400440532013000", "name": "Alice Example"}, "payments": [`)
	for i := 0; b.Len() < 1900; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id": "p-%04d", "amount": %d.25, "currency": "EUR", "creditor": {"iban": "FR7630006000011234567890189", "bic": "AGRIFRPP"}, "instant": %t}`, i, 100+i, i%2 == 0)
	}
	b.WriteString(`]}`)
	h.Body = b.String()
	h.Headers["content-length"] = fmt.Sprint(len(h.Body))
	h.Size = int64(len(h.Body))
	return req
}

func BenchmarkBuild(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"typical", typicalRequest()},
		{"json_2KB", jsonRequest()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(bc.req, nil, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		// What a protojson round trip costs for the attributes alone, for
		// comparison; parsed_* are not included.
		b.Run(bc.name+"_protojson_reference", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bs, err := protojson.Marshal(bc.req)
				if err != nil {
					b.Fatal(err)
				}
				var x any
				if err := util.UnmarshalJSON(bs, &x); err != nil {
					b.Fatal(err)
				}
				if _, err := ast.InterfaceToValue(x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzBuild feeds Build arbitrary CheckRequests (from protobuf wire bytes)
// with a fuzzed path, content-type and body laid over them. Build must not
// panic; its errors must wrap ErrInvalidRequest; and whenever protojson can
// marshal the request, attributes must be exactly protojson's.
func FuzzBuild(f *testing.F) {
	seeds := []*authv3.CheckRequest{typicalRequest(), jsonRequest(), {}}
	for i, req := range seeds {
		wire, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire, "/v1/accounts/ACC%2042?limit=5&tag=a&tag=b", "application/json", []byte(`{"amount": 1.5, "to": ["x"]}`), uint8(i))
	}
	f.Add([]byte{}, "/token", "application/x-www-form-urlencoded", []byte("grant_type=password&scope=a+b"), uint8(0x12))
	f.Add([]byte{}, "/upload", "multipart/form-data; boundary=b", []byte(multipartBody("b", [3]string{"m", "application/json", `{"k": [1]}`})), uint8(0x22))
	f.Add([]byte{}, "/a%zz?x=1;y", "application/json", []byte(`{"a": `), uint8(0x4))
	f.Add([]byte{}, "/\xff%FF", "application/json", []byte("[[[[[[[[1]]]]]]]]"), uint8(0x8))

	f.Fuzz(func(t *testing.T, wire []byte, path, contentType string, body []byte, flags uint8) {
		req := &authv3.CheckRequest{}
		if err := proto.Unmarshal(wire, req); err != nil {
			req.Reset()
		}
		if flags&1 == 0 {
			if req.GetAttributes().GetRequest().GetHttp() == nil {
				req.Attributes = &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
					Http: &authv3.AttributeContext_HttpRequest{},
				}}
			}
			h := req.Attributes.Request.Http
			h.Path = path
			if h.Headers == nil {
				h.Headers = map[string]string{}
			}
			h.Headers["content-type"] = contentType
			if flags&2 != 0 {
				h.RawBody = body
			} else {
				h.Body = string(body)
			}
			if flags&4 != 0 {
				h.Headers[partialBodyHeader] = "true"
			}
			if flags&8 != 0 {
				h.Headers["content-length"] = fmt.Sprint(len(body) + int(flags>>6) - 1)
			}
		}
		opts := Options{MaxBodyBytes: 64 + 256*int(flags>>4), MaxJSONDepth: int(flags >> 4)}

		v, err := Build(req, nil, opts)
		want, perr := protojsonAttributes(req)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			if perr == nil && !errors.Is(err, ErrInvalidPath) && !errors.Is(err, ErrInvalidBody) &&
				req.GetAttributes().GetRequest().GetHttp() != nil {
				t.Fatalf("Build fails with %v where protojson succeeds", err)
			}
			return
		}
		obj := v.(ast.Object)
		for _, k := range []string{"attributes", "parsed_path", "parsed_query", "parsed_body", "truncated_body", "version"} {
			if obj.Get(ast.StringTerm(k)) == nil {
				t.Fatalf("input.%s is missing", k)
			}
		}
		if perr == nil {
			got := obj.Get(ast.StringTerm("attributes")).Value
			if got.Compare(want) != 0 || got.String() != want.String() {
				t.Fatalf("attributes differ from protojson\n got: %v\nwant: %v", got, want)
			}
		}
		assertValidJSON(t, v)
		assertLookupsMatch(t, req, opts, v, 32) // a sample: every lookup parses the request again
	})
}
