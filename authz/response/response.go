// Package response turns policy decisions, token failures and internal
// errors into Envoy ext_authz CheckResponses: OK with header mutations, or a
// denied local reply.
//
// Every function returns a newly built response that the caller owns and
// may change; none of its parts are shared with other responses.
//
// Dynamic metadata (emitted under the ext_authz filter's namespace, for
// access logs and later filters) always says why:
//
//	allowed by the policy   {"decision": "allow", ...policy keys}
//	denied by the policy    {"decision": "deny", "reason": "policy_denied", ...policy keys}
//	InvalidToken(reason)    {"decision": "deny", "reason": reason}
//	Error(reason)           {"decision": "deny", "reason": reason}
//	BadRequest(reason)      {"decision": "deny", "reason": reason}
//
// Keys the policy sets in dynamic_metadata win, so a policy can give its own
// "reason" for a deny.
package response

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/finauthz/authz/authz/policy"
)

// ReasonPolicyDenied is the dynamic metadata reason of a policy deny whose
// dynamic_metadata has no "reason" of its own.
const ReasonPolicyDenied = "policy_denied"

// ReasonNoDecision is the reason FromDecision gives when called without a
// decision.
const ReasonNoDecision = "policy_no_decision"

// ReasonInvalidResult is the reason FromDecision gives to a decision whose
// headers Envoy cannot take.
const ReasonInvalidResult = "policy_invalid_result"

// maxHeaderBytes is Envoy's limit on a header name and on a header value in
// a HeaderValue (envoy/config/core/v3/base.proto).
const maxHeaderBytes = 16384

const (
	keyDecision = "decision"
	keyReason   = "reason"

	contentTypeJSON = "application/json"

	// RFC 6750 §3: the resource server names the failure in
	// WWW-Authenticate; the description stays out so nothing internal leaks.
	bearerInvalidToken = `Bearer error="invalid_token"`
	bodyInvalidToken   = `{"error":"invalid_token"}`
	bodyAccessDenied   = `{"error":"access_denied"}`
	bodyBadRequest     = `{"error":"invalid_request"}`
)

// FromDecision returns the CheckResponse for a policy decision.
//
// Allowed: gRPC status OK and an OkHttpResponse carrying the decision's
// header and query parameter mutations. Denied: PERMISSION_DENIED and a
// local reply with the decision's status (403 when unset, or when it is not
// a final status Envoy knows), headers and body. A nil decision fails
// closed with Error(ReasonNoDecision).
//
// Headers carry an explicit append_action: the first header of a name
// overwrites whatever the client sent under that name, so a client can never
// pass its own copy of an identity header upstream; further values of the
// same name are added after it. Pseudo-headers, host and empty names are
// never emitted. A header Envoy cannot take (longer than 16 KiB, or with
// NUL, CR or LF) fails closed with Error(ReasonInvalidResult): cutting or
// dropping it could let the client's own copy of that header through.
func FromDecision(d *policy.Decision) *authv3.CheckResponse {
	if d == nil {
		return Error(ReasonNoDecision)
	}
	if !sendable(d.Headers) || !sendable(d.ResponseHeadersToAdd) {
		return Error(ReasonInvalidResult)
	}
	if d.Allowed {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:                 headerOptions(d.Headers),
				HeadersToRemove:         headerNames(d.RequestHeadersToRemove),
				ResponseHeadersToAdd:    headerOptions(d.ResponseHeadersToAdd),
				QueryParametersToSet:    queryParameters(d.QueryParametersToSet),
				QueryParametersToRemove: queryNames(d.QueryParametersToRemove),
			}},
			DynamicMetadata: metadata(d.DynamicMetadata, "allow", ""),
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: denyStatus(d.HTTPStatus)},
			Headers: headerOptions(d.Headers),
			Body:    d.Body,
		}},
		DynamicMetadata: metadata(d.DynamicMetadata, "deny", ReasonPolicyDenied),
	}
}

// InvalidToken returns the response for a request whose bearer token was
// refused: gRPC UNAUTHENTICATED and a 401 local reply with
// WWW-Authenticate: Bearer error="invalid_token" (RFC 6750 §3.1). The
// reason (such as "token_expired") goes to dynamic metadata only, never to
// the client.
func InvalidToken(reason string) *authv3.CheckResponse {
	return localReply(codes.Unauthenticated, typev3.StatusCode_Unauthorized, bodyInvalidToken, reason,
		policy.Header{Key: "www-authenticate", Value: bearerInvalidToken})
}

// Error returns the fail-closed response for a request that could not be
// decided (policy error, undefined result, dependency unavailable):
// PERMISSION_DENIED and a 403 local reply with a generic JSON body. The
// reason goes to dynamic metadata only.
func Error(reason string) *authv3.CheckResponse {
	return localReply(codes.PermissionDenied, typev3.StatusCode_Forbidden, bodyAccessDenied, reason)
}

// BadRequest returns the response for a request refused before any
// decision because it is malformed (a path not in the form Envoy forwards):
// INVALID_ARGUMENT and a 400 local reply with a generic JSON body (RFC 6750
// §3.1 invalid_request). The reason goes to dynamic metadata only; nothing
// of the request is echoed.
func BadRequest(reason string) *authv3.CheckResponse {
	return localReply(codes.InvalidArgument, typev3.StatusCode_BadRequest, bodyBadRequest, reason)
}

// localReply is a denial that the service answers itself, before or instead of a policy decision: a JSON body
// that says nothing of the request, and the reason in dynamic metadata only.
func localReply(code codes.Code, httpStatus typev3.StatusCode, body, reason string, extra ...policy.Header) *authv3.CheckResponse {
	headers := append(extra, policy.Header{Key: "content-type", Value: contentTypeJSON})
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpStatus},
			Headers: headerOptions(headers),
			Body:    body,
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			keyDecision: structpb.NewStringValue("deny"),
			keyReason:   structpb.NewStringValue(reason),
		}},
	}
}

// denyStatus is the status of a denied local reply: the policy's when it
// is a final (non-1xx) status of Envoy's StatusCode enum, else 403.
func denyStatus(code int) typev3.StatusCode {
	if code >= 200 && code <= 599 {
		if _, ok := typev3.StatusCode_name[int32(code)]; ok {
			return typev3.StatusCode(code)
		}
	}
	return typev3.StatusCode_Forbidden
}

// sendable reports whether every header fits Envoy's HeaderValue
// constraints.
func sendable(hs []policy.Header) bool {
	for _, h := range hs {
		if len(h.Key) > maxHeaderBytes || len(h.Value) > maxHeaderBytes ||
			strings.ContainsAny(h.Key, "\x00\r\n") || strings.ContainsAny(h.Value, "\x00\r\n") {
			return false
		}
	}
	return true
}

// emittable reports whether a header name may be sent to Envoy: Envoy
// refuses to touch pseudo-headers and host, which would make the request
// malformed or re-route it.
func emittable(name string) bool {
	return name != "" && name[0] != ':' && !strings.EqualFold(name, "host")
}

// headerOptions builds HeaderValueOptions, allocating the messages in
// blocks. The first header of a name is OVERWRITE_IF_EXISTS_OR_ADD, so it
// replaces any client-sent value; later ones of the same name are
// APPEND_IF_EXISTS_OR_ADD, so a multi-valued header keeps every value. The
// deprecated append field stays unset, so Envoy honours append_action.
func headerOptions(hs []policy.Header) []*corev3.HeaderValueOption {
	n := 0
	for _, h := range hs {
		if emittable(h.Key) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	opts := make([]corev3.HeaderValueOption, n)
	vals := make([]corev3.HeaderValue, n)
	out := make([]*corev3.HeaderValueOption, 0, n)
	for _, h := range hs {
		if !emittable(h.Key) {
			continue
		}
		i := len(out)
		vals[i].Key, vals[i].Value = h.Key, h.Value
		opts[i].Header = &vals[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		for _, prev := range out {
			if strings.EqualFold(prev.Header.Key, h.Key) {
				opts[i].AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
				break
			}
		}
		out = append(out, &opts[i])
	}
	return out
}

func headerNames(names []string) []string {
	var out []string
	for _, name := range names {
		if emittable(name) {
			if out == nil {
				out = make([]string, 0, len(names))
			}
			out = append(out, name)
		}
	}
	return out
}

func queryParameters(ps []policy.Header) []*corev3.QueryParameter {
	n := 0
	for _, p := range ps {
		if p.Key != "" {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	params := make([]corev3.QueryParameter, n)
	out := make([]*corev3.QueryParameter, 0, n)
	for _, p := range ps {
		if p.Key == "" {
			continue
		}
		i := len(out)
		params[i].Key, params[i].Value = p.Key, p.Value
		out = append(out, &params[i])
	}
	return out
}

func queryNames(names []string) []string {
	var out []string
	for _, name := range names {
		if name != "" {
			if out == nil {
				out = make([]string, 0, len(names))
			}
			out = append(out, name)
		}
	}
	return out
}

// metadata converts the policy's dynamic metadata and adds the decision
// and, if given, the reason, unless the policy set those keys itself.
// Values that are not JSON values (only possible for a Decision not made by
// package policy) are left out.
func metadata(m map[string]any, decision, reason string) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(m)+2)
	for k, v := range m {
		if pv, err := structpb.NewValue(v); err == nil {
			fields[k] = pv
		}
	}
	if _, ok := fields[keyDecision]; !ok {
		fields[keyDecision] = structpb.NewStringValue(decision)
	}
	if _, ok := fields[keyReason]; !ok && reason != "" {
		fields[keyReason] = structpb.NewStringValue(reason)
	}
	return &structpb.Struct{Fields: fields}
}
