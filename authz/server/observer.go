package server

import (
	"context"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/token"
)

// Observer watches checks, for metrics, traces and decision logs. Both methods run on the request path: they
// must be quick and must never block, whatever happens downstream of them.
type Observer interface {
	// CheckStart is called when a check begins. The context it returns is used for the rest of the check, so
	// it can carry a trace span to the verifier and the policy.
	CheckStart(ctx context.Context, req *authv3.CheckRequest) context.Context
	// CheckDone is called once per CheckStart, when the answer is known, with the context CheckStart
	// returned. The server never changes info afterwards, so an Observer may keep it; it must not modify it.
	CheckDone(ctx context.Context, info *CheckInfo)
}

// CheckInfo is what the server knows about one check when it answers.
type CheckInfo struct {
	Request  *authv3.CheckRequest
	Start    time.Time
	Duration time.Duration
	// Token is the verified bearer token; nil when the request carried none or it failed verification.
	Token *token.Token
	// Input is the policy input; nil when the check ended before the policy. Its Value builds the whole
	// document if the policy did not need it (a cached decision), so call it only when it is needed.
	Input policy.Source
	// Decision is the policy's decision; nil when the policy was not consulted or failed.
	Decision *policy.Decision
	// Response is the answer sent to Envoy; nil when Err is set.
	Response *authv3.CheckResponse
	// Err is the gRPC status error of an abandoned check (its context ended); Envoy applies its own failure
	// policy then.
	Err error

	wire *wireResponse // Response with its encoding, as remembered with the decision
}

// The decisions an Observer sees, from Outcome.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
	DecisionError = "error"
)

// Outcome summarises what Envoy was told: decision is DecisionAllow, DecisionDeny or DecisionError; reason is
// the reason in the response's dynamic metadata for a deny, the gRPC code in snake case for an error, and ""
// for an allow; httpStatus is 200 for an allow, the local reply's status for a deny, and 0 for an error.
func (c *CheckInfo) Outcome() (decision, reason string, httpStatus int) {
	if c.Err != nil || c.Response == nil {
		switch status.Code(c.Err) {
		case codes.Canceled:
			return DecisionError, "canceled", 0
		case codes.DeadlineExceeded:
			return DecisionError, "deadline_exceeded", 0
		case codes.ResourceExhausted:
			return DecisionError, "resource_exhausted", 0
		case codes.Unavailable:
			return DecisionError, "unavailable", 0
		}
		return DecisionError, "internal", 0
	}
	if codes.Code(c.Response.GetStatus().GetCode()) == codes.OK {
		return DecisionAllow, "", 200
	}
	reason = c.Response.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
	httpStatus = int(c.Response.GetDeniedResponse().GetStatus().GetCode())
	if httpStatus == 0 {
		// Envoy answers a denied check without a status with 403.
		httpStatus = 403
	}
	return DecisionDeny, reason, httpStatus
}

// Serving reports whether the health service answers SERVING for the server as a whole (service ""), as
// Envoy's and Kubernetes' gRPC health checks see it.
func (s *Server) Serving() bool {
	resp, err := s.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}
