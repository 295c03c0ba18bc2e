package response

import (
	"encoding/json"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/finauthz/authz/authz/policy"
)

const (
	overwrite = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	appendTo  = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
)

func header(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func text(m proto.Message) string {
	return prototext.MarshalOptions{Multiline: true}.Format(m)
}

func meta(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func okResponse(ok *authv3.OkHttpResponse, md *structpb.Struct) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: md,
	}
}

func deniedResponse(code codes.Code, denied *authv3.DeniedHttpResponse, md *structpb.Struct) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code)},
		HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
		DynamicMetadata: md,
	}
}

func TestFromDecision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    *policy.Decision
		want func(*testing.T) *authv3.CheckResponse
	}{
		{
			name: "boolean allow is OK with decision metadata and no mutations",
			d:    &policy.Decision{Allowed: true},
			want: func(t *testing.T) *authv3.CheckResponse {
				return okResponse(&authv3.OkHttpResponse{}, meta(t, map[string]any{"decision": "allow"}))
			},
		},
		{
			name: "allow carries every mutation and overwrites client headers",
			d: &policy.Decision{
				Allowed:                 true,
				Headers:                 []policy.Header{{Key: "x-user-id", Value: "u-42"}, {Key: "x-account", Value: "acc-1"}},
				RequestHeadersToRemove:  []string{"authorization", "cookie"},
				ResponseHeadersToAdd:    []policy.Header{{Key: "x-decision", Value: "d-1"}},
				QueryParametersToSet:    []policy.Header{{Key: "tenant", Value: "t-1"}},
				QueryParametersToRemove: []string{"debug"},
				// Ignored for allows.
				HTTPStatus: 418,
				Body:       "ignored",
			},
			want: func(t *testing.T) *authv3.CheckResponse {
				return okResponse(&authv3.OkHttpResponse{
					Headers:                 []*corev3.HeaderValueOption{header("x-user-id", "u-42", overwrite), header("x-account", "acc-1", overwrite)},
					HeadersToRemove:         []string{"authorization", "cookie"},
					ResponseHeadersToAdd:    []*corev3.HeaderValueOption{header("x-decision", "d-1", overwrite)},
					QueryParametersToSet:    []*corev3.QueryParameter{{Key: "tenant", Value: "t-1"}},
					QueryParametersToRemove: []string{"debug"},
				}, meta(t, map[string]any{"decision": "allow"}))
			},
		},
		{
			name: "repeated header name overwrites once and then appends every further value",
			d: &policy.Decision{Allowed: true, Headers: []policy.Header{
				{Key: "x-role", Value: "teller"}, {Key: "x-user-id", Value: "u-1"}, {Key: "x-role", Value: "auditor"}, {Key: "X-Role", Value: "viewer"},
			}},
			want: func(t *testing.T) *authv3.CheckResponse {
				return okResponse(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
					header("x-role", "teller", overwrite),
					header("x-user-id", "u-1", overwrite),
					header("x-role", "auditor", appendTo),
					header("X-Role", "viewer", appendTo),
				}}, meta(t, map[string]any{"decision": "allow"}))
			},
		},
		{
			name: "pseudo-headers, host and empty names are never emitted",
			d: &policy.Decision{
				Allowed:                true,
				Headers:                []policy.Header{{Key: ":path", Value: "/admin"}, {Key: "Host", Value: "evil"}, {Key: "", Value: "x"}, {Key: "x-ok", Value: "1"}},
				RequestHeadersToRemove: []string{":authority", "host", "", "x-api-key"},
				ResponseHeadersToAdd:   []policy.Header{{Key: "host", Value: "h"}},
				QueryParametersToSet:   []policy.Header{{Key: "", Value: "v"}},
			},
			want: func(t *testing.T) *authv3.CheckResponse {
				return okResponse(&authv3.OkHttpResponse{
					Headers:         []*corev3.HeaderValueOption{header("x-ok", "1", overwrite)},
					HeadersToRemove: []string{"x-api-key"},
				}, meta(t, map[string]any{"decision": "allow"}))
			},
		},
		{
			name: "allow merges decision into policy metadata without overwriting policy keys",
			d: &policy.Decision{Allowed: true, DynamicMetadata: map[string]any{
				"rule": "accounts-read", "limit": json.Number("1500.5"), "tags": []any{"a", true, nil}, "decision": "allow-step-up",
			}},
			want: func(t *testing.T) *authv3.CheckResponse {
				return okResponse(&authv3.OkHttpResponse{}, meta(t, map[string]any{
					"rule": "accounts-read", "limit": 1500.5, "tags": []any{"a", true, nil}, "decision": "allow-step-up",
				}))
			},
		},
		{
			name: "boolean deny is 403 with the policy_denied reason",
			d:    &policy.Decision{Allowed: false},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied,
					&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}},
					meta(t, map[string]any{"decision": "deny", "reason": ReasonPolicyDenied}))
			},
		},
		{
			name: "deny with custom status, headers and body",
			d: &policy.Decision{
				HTTPStatus: 429,
				Headers:    []policy.Header{{Key: "retry-after", Value: "30"}, {Key: "content-type", Value: "application/json"}},
				Body:       `{"error":"slow_down"}`,
				// Ignored for denies.
				RequestHeadersToRemove: []string{"authorization"},
			},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied, &authv3.DeniedHttpResponse{
					Status:  &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
					Headers: []*corev3.HeaderValueOption{header("retry-after", "30", overwrite), header("content-type", "application/json", overwrite)},
					Body:    `{"error":"slow_down"}`,
				}, meta(t, map[string]any{"decision": "deny", "reason": ReasonPolicyDenied}))
			},
		},
		{
			name: "deny keeps the policy's own reason",
			d:    &policy.Decision{DynamicMetadata: map[string]any{"reason": "amount_over_limit", "limit": json.Number("10000")}},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied,
					&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}},
					meta(t, map[string]any{"decision": "deny", "reason": "amount_over_limit", "limit": 10000}))
			},
		},
		{
			name: "deny with a redirect status",
			d:    &policy.Decision{HTTPStatus: 302, Headers: []policy.Header{{Key: "location", Value: "https://login.bank.example/"}}},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied, &authv3.DeniedHttpResponse{
					Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Found},
					Headers: []*corev3.HeaderValueOption{header("location", "https://login.bank.example/", overwrite)},
				}, meta(t, map[string]any{"decision": "deny", "reason": ReasonPolicyDenied}))
			},
		},
		{
			name: "deny with an informational status falls back to 403",
			d:    &policy.Decision{HTTPStatus: 100},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied,
					&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}},
					meta(t, map[string]any{"decision": "deny", "reason": ReasonPolicyDenied}))
			},
		},
		{
			name: "deny with a status Envoy does not define falls back to 403",
			d:    &policy.Decision{HTTPStatus: 418},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied,
					&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}},
					meta(t, map[string]any{"decision": "deny", "reason": ReasonPolicyDenied}))
			},
		},
		{
			name: "metadata values that are not JSON are left out",
			d:    &policy.Decision{DynamicMetadata: map[string]any{"ch": make(chan int), "ok": "yes"}},
			want: func(t *testing.T) *authv3.CheckResponse {
				return deniedResponse(codes.PermissionDenied,
					&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}},
					meta(t, map[string]any{"decision": "deny", "reason": ReasonPolicyDenied, "ok": "yes"}))
			},
		},
		{
			name: "nil decision fails closed",
			d:    nil,
			want: func(t *testing.T) *authv3.CheckResponse { return Error(ReasonNoDecision) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := FromDecision(tc.d)
			if want := tc.want(t); !proto.Equal(want, got) {
				t.Errorf("FromDecision =\n%s\nwant\n%s", text(got), text(want))
			}
			if err := got.ValidateAll(); err != nil {
				t.Errorf("response fails Envoy's proto validation: %v", err)
			}
		})
	}
}

func TestHeadersLeaveDeprecatedAppendUnset(t *testing.T) {
	t.Parallel()
	responses := map[string]*authv3.CheckResponse{
		"allow":         FromDecision(&policy.Decision{Allowed: true, Headers: []policy.Header{{Key: "x-a", Value: "1"}, {Key: "x-a", Value: "2"}}, ResponseHeadersToAdd: []policy.Header{{Key: "x-b", Value: "1"}}}),
		"deny":          FromDecision(&policy.Decision{Headers: []policy.Header{{Key: "x-a", Value: "1"}}}),
		"invalid token": InvalidToken("token_expired"),
		"error":         Error("policy_error"),
	}
	for name, resp := range responses {
		var opts []*corev3.HeaderValueOption
		if ok := resp.GetOkResponse(); ok != nil {
			opts = append(append(opts, ok.GetHeaders()...), ok.GetResponseHeadersToAdd()...)
		}
		opts = append(opts, resp.GetDeniedResponse().GetHeaders()...)
		if len(opts) == 0 {
			t.Fatalf("%s: no headers to check", name)
		}
		for _, o := range opts {
			//lint:ignore SA1019 the test asserts that the deprecated field stays unset.
			if o.GetAppend() != nil {
				t.Errorf("%s: header %s sets the deprecated append field", name, o.GetHeader().GetKey())
			}
		}
	}
}

func TestInvalidToken(t *testing.T) {
	t.Parallel()
	got := InvalidToken("token_expired")
	want := deniedResponse(codes.Unauthenticated, &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
		Headers: []*corev3.HeaderValueOption{
			header("www-authenticate", `Bearer error="invalid_token"`, overwrite),
			header("content-type", "application/json", overwrite),
		},
		Body: `{"error":"invalid_token"}`,
	}, meta(t, map[string]any{"reason": "token_expired", "decision": "deny"}))
	if !proto.Equal(want, got) {
		t.Errorf("InvalidToken =\n%s\nwant\n%s", text(got), text(want))
	}
	if err := got.ValidateAll(); err != nil {
		t.Errorf("response fails Envoy's proto validation: %v", err)
	}
}

func TestError(t *testing.T) {
	t.Parallel()
	got := Error("jwks_unavailable")
	want := deniedResponse(codes.PermissionDenied, &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		Headers: []*corev3.HeaderValueOption{header("content-type", "application/json", overwrite)},
		Body:    `{"error":"access_denied"}`,
	}, meta(t, map[string]any{"decision": "deny", "reason": "jwks_unavailable"}))
	if !proto.Equal(want, got) {
		t.Errorf("Error =\n%s\nwant\n%s", text(got), text(want))
	}
	if err := got.ValidateAll(); err != nil {
		t.Errorf("response fails Envoy's proto validation: %v", err)
	}
}

func TestBadRequest(t *testing.T) {
	t.Parallel()
	got := BadRequest("invalid_path")
	want := deniedResponse(codes.InvalidArgument, &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_BadRequest},
		Headers: []*corev3.HeaderValueOption{header("content-type", "application/json", overwrite)},
		Body:    `{"error":"invalid_request"}`,
	}, meta(t, map[string]any{"decision": "deny", "reason": "invalid_path"}))
	if !proto.Equal(want, got) {
		t.Errorf("BadRequest =\n%s\nwant\n%s", text(got), text(want))
	}
	if err := got.ValidateAll(); err != nil {
		t.Errorf("response fails Envoy's proto validation: %v", err)
	}
}

func TestFromDecisionFailsClosedOnHeadersEnvoyCannotTake(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("v", 16385)
	tests := []struct {
		name string
		d    *policy.Decision
	}{
		{"an allow setting a header value over 16 KiB is denied", &policy.Decision{Allowed: true, Headers: []policy.Header{{Key: "x-subject", Value: long}}}},
		{"an allow setting a header name over 16 KiB is denied", &policy.Decision{Allowed: true, Headers: []policy.Header{{Key: "x-" + long, Value: "1"}}}},
		{"an allow adding a response header over 16 KiB is denied", &policy.Decision{Allowed: true, ResponseHeadersToAdd: []policy.Header{{Key: "x-a", Value: long}}}},
		{"an allow setting a header value with CR LF is denied", &policy.Decision{Allowed: true, Headers: []policy.Header{{Key: "x-a", Value: "1\r\nx-subject: admin"}}}},
		{"a deny with a header value over 16 KiB stays a deny", &policy.Decision{HTTPStatus: 401, Headers: []policy.Header{{Key: "www-authenticate", Value: long}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := FromDecision(tc.d)
			if err := got.ValidateAll(); err != nil {
				t.Fatalf("response fails Envoy's proto validation: %v", err)
			}
			if !proto.Equal(got, Error(ReasonInvalidResult)) {
				t.Errorf("FromDecision =\n%s\nwant Error(%q)", text(got), ReasonInvalidResult)
			}
		})
	}
	exact := &policy.Decision{Allowed: true, Headers: []policy.Header{{Key: "x-a", Value: long[1:]}}}
	if got := FromDecision(exact); got.GetOkResponse() == nil || got.ValidateAll() != nil {
		t.Errorf("a header value of exactly 16 KiB was not allowed through: %s", text(got))
	}
}

func TestResponsesAreNotShared(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		build func() *authv3.CheckResponse
	}{
		{"invalid token", func() *authv3.CheckResponse { return InvalidToken("token_expired") }},
		{"error", func() *authv3.CheckResponse { return Error("policy_error") }},
		{"bad request", func() *authv3.CheckResponse { return BadRequest("invalid_path") }},
		{"decision", func() *authv3.CheckResponse {
			return FromDecision(&policy.Decision{Headers: []policy.Header{{Key: "x-a", Value: "1"}}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			first := tc.build()
			pristine := proto.Clone(first)
			first.GetDeniedResponse().Headers[0].Header.Value = "changed"
			first.GetDeniedResponse().Body = "changed"
			first.DynamicMetadata.Fields["reason"] = structpb.NewStringValue("changed")
			if second := tc.build(); !proto.Equal(second, pristine) {
				t.Errorf("changing one response changed the next:\n%v", second)
			}
		})
	}
}

func BenchmarkFromDecision(b *testing.B) {
	tests := []struct {
		name string
		d    *policy.Decision
	}{
		{name: "boolean allow", d: &policy.Decision{Allowed: true}},
		{name: "allow with identity headers", d: &policy.Decision{
			Allowed:                true,
			Headers:                []policy.Header{{Key: "x-user-id", Value: "u-42"}, {Key: "x-roles", Value: "customer"}, {Key: "x-roles", Value: "teller"}},
			RequestHeadersToRemove: []string{"authorization"},
			DynamicMetadata:        map[string]any{"rule": "accounts-read", "sub": "u-42"},
		}},
		{name: "deny with body", d: &policy.Decision{
			HTTPStatus:      403,
			Headers:         []policy.Header{{Key: "content-type", Value: "application/json"}},
			Body:            `{"error":"forbidden"}`,
			DynamicMetadata: map[string]any{"reason": "no_matching_rule"},
		}},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if FromDecision(tc.d) == nil {
					b.Fatal("nil response")
				}
			}
		})
	}
	b.Run("invalid token", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			InvalidToken("token_expired")
		}
	})
	b.Run("error", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Error("policy_error")
		}
	})
}
