package input

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

func TestBuildBody(t *testing.T) {
	t.Parallel()
	runBuildCases(t, []buildCase{
		{
			name: "JSON body is parsed",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Path:    "/v1/payments",
				Headers: map[string]string{"content-type": "application/json; charset=utf-8"},
				Body:    `{"amount": 125.50, "to": "ACC-7", "tags": ["a"], "memo": null, "urgent": false}`,
			}),
			want: map[string]string{
				"parsed_body":    `{"amount": 125.50, "to": "ACC-7", "tags": ["a"], "memo": null, "urgent": false}`,
				"truncated_body": `false`,
			},
		},
		{
			name: "JSON raw_body is parsed when Envoy packs the body as bytes",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/json"},
				RawBody: []byte(`[1, "two"]`),
			}),
			want: map[string]string{"parsed_body": `[1, "two"]`, "truncated_body": `false`},
		},
		{
			name: "raw_body is preferred over body",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/json"},
				Body:    `{"from": "body"}`,
				RawBody: []byte(`{"from": "raw_body"}`),
			}),
			want: map[string]string{"parsed_body": `{"from": "raw_body"}`},
		},
		{
			name: "form body is parsed like a query string",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/x-www-form-urlencoded"},
				Body:    "grant_type=client_credentials&scope=a+b&scope=c",
			}),
			want: map[string]string{"parsed_body": `{"grant_type": ["client_credentials"], "scope": ["a b", "c"]}`, "truncated_body": `false`},
		},
		{
			name: "multipart body keeps text parts and parses JSON parts",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": `multipart/form-data; boundary="xyz"`},
				Body: multipartBody("xyz",
					[3]string{"meta", "application/json", `{"kind": "statement"}`},
					[3]string{"note", "", "hello"},
					[3]string{"note", "text/plain", "again"}),
			}),
			want: map[string]string{"parsed_body": `{"meta": [{"kind": "statement"}], "note": ["hello", "again"]}`},
		},
		{
			name: "multipart content-type without boundary leaves body null",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "multipart/form-data"},
				Body:    "--x\r\n",
			}),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "body Envoy marked partial is not parsed and reported truncated",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "true"},
				Body:    `{"amount": 1`,
			}),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `true`},
		},
		{
			name: "partial-body header false does not stop parsing",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "false"},
				Body:    `{"amount": 1}`,
			}),
			want: map[string]string{"parsed_body": `{"amount": 1}`, "truncated_body": `false`},
		},
		{
			name: "body shorter than content-length is reported truncated",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/json", "content-length": "4096"},
				Body:    `{"amount": 1`,
			}),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `true`},
		},
		{
			name: "content-length -1 does not mean truncated",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/json", "content-length": "-1"},
				Body:    `true`,
			}),
			want: map[string]string{"parsed_body": `true`, "truncated_body": `false`},
		},
		{
			name: "body over MaxBodyBytes is not parsed and reported truncated",
			req:  checkRequest(jsonPost(`{"amount": 1000000, "memo": "padding padding"}`)),
			opts: Options{MaxBodyBytes: 16},
			want: map[string]string{"parsed_body": `null`, "truncated_body": `true`},
		},
		{
			name: "JSON nested exactly MaxJSONDepth deep is parsed",
			req:  checkRequest(jsonPost(nested(DefaultMaxJSONDepth))),
			want: map[string]string{"truncated_body": `false`},
		},
		{
			name: "JSON content-type with empty body gives null, not an error",
			req:  checkRequest(jsonPost("")),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "body without content-type is not parsed",
			req:  checkRequest(&authv3.AttributeContext_HttpRequest{Body: `{"a": 1}`}),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "body of an unsupported content-type is not parsed",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "text/plain"},
				Body:    `{"a": 1}`,
			}),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "gRPC body is not parsed",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				Headers: map[string]string{"content-type": "application/grpc"},
				RawBody: []byte{0, 0, 0, 0, 2, 8, 1},
			}),
			want: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "headers sent only in header_map still select the body parser",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: ":path", RawValue: []byte("/x")},
					{Key: "Content-Type", RawValue: []byte("application/json")},
				}},
				Body: `{"a": 1}`,
			}),
			want: map[string]string{"parsed_body": `{"a": 1}`},
		},
		{
			name: "header_map values (not raw) are read too",
			req: checkRequest(&authv3.AttributeContext_HttpRequest{
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: "content-type", Value: "application/x-www-form-urlencoded"},
					{Key: "x-envoy-auth-partial-body", Value: "false"},
				}},
				Body: "a=1",
			}),
			want: map[string]string{"parsed_body": `{"a": ["1"]}`, "truncated_body": `false`},
		},
	})
}
