package telemetry

import "github.com/finauthz/authz/authz/response"

// ReasonOther is the reason label of a deny whose reason is not in the allow-list.
const ReasonOther = "other"

// ReasonNone is the reason label of an allowed check.
const ReasonNone = "none"

// knownReasons are the deny reasons that may appear as label values. The set is fixed so that a policy (or a
// policy bug) can never create unbounded series: any other reason is counted as "other".
var knownReasons = []string{
	// authz/server, before the policy.
	"invalid_request", "invalid_path",
	// authz/token, via token.Reason.
	"token_malformed", "token_too_large", "unknown_issuer", "unknown_key", "algorithm_not_allowed",
	"bad_signature", "token_expired", "token_not_yet_valid", "token_issued_in_future", "token_missing_exp",
	"audience_mismatch", "token_type_not_allowed", "keys_unavailable", "invalid_token",
	// authz/server and authz/response, around the policy.
	"policy_error", "policy_undefined", "policy_invalid_result", response.ReasonPolicyDenied, response.ReasonNoDecision,
	// The shipped policy library (policies/README.md, "Deny reasons").
	"route_not_found", "route_invalid", "authentication_required", "mtls_required", "principal_not_allowed",
	"network_not_allowed", "device_posture", "risk_too_high", "insufficient_scope", "resource_not_granted",
	"step_up_required", "outside_business_hours",
	// Abandoned checks (server.CheckInfo.Outcome).
	"canceled", "deadline_exceeded", "resource_exhausted", "unavailable", "internal",
}
