// Package server implements Envoy's envoy.service.auth.v3.Authorization service: it verifies the request's bearer
// token, builds the policy input, evaluates the policy and turns the decision into a CheckResponse.
//
// Every failure on that path denies (fail closed). A present but invalid token is answered with 401 here and never
// reaches the policy.
package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/finauthz/authz/authz/input"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/response"
	"github.com/finauthz/authz/authz/token"
)

// Verifier verifies a raw bearer token.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*token.Token, error)
}

// Evaluator evaluates the policy on an input document, which it reads through a Source so that a cached
// decision costs no more of the document than its key, and returns what derive made of the decision (the
// CheckResponse), remembered with a cached decision.
type Evaluator interface {
	EvalDerive(ctx context.Context, src policy.Source, derive func(*policy.Decision) any) (*policy.Decision, any, error)
}

// wireResponse is the CheckResponse of a decision and its protobuf encoding. The policy engine keeps it with a
// cached decision, so one response is sent for many checks: it is never modified once built.
//
// It is a protobuf message itself (the embedded CheckResponse's), so that a gRPC server without the codec of
// ServerOptions encodes it as the CheckResponse it holds.
type wireResponse struct {
	*authv3.CheckResponse
	wire []byte // nil if it could not be encoded; gRPC then encodes the response and reports the error
}

func responseOf(d *policy.Decision) any {
	resp := response.FromDecision(d)
	wire, err := proto.Marshal(resp)
	if err != nil {
		wire = nil
	}
	return &wireResponse{CheckResponse: resp, wire: wire}
}

// Config holds what a Server needs; Verifier and Policy are required.
type Config struct {
	Verifier Verifier
	Policy   Evaluator
	Input    input.Options
	Logger   *slog.Logger
	// Observer, when set, is told about every check (metrics, traces, decision logs).
	Observer Observer
	// AllowNonNormalizedPaths turns off the path check: by default a path that is not in the normal form Envoy
	// forwards (dot segments, "//", an encoded "/", "\" or control character, a ";" parameter, ...) is denied
	// with 400 and reason invalid_path before the token or the policy is looked at.
	AllowNonNormalizedPaths bool
	// MaxDenialLogsPerSecond bounds the "check denied" info lines; the denials over it are counted and reported
	// in one line with the next one logged. 0 (or below): every denial is logged.
	MaxDenialLogsPerSecond int
}

// Server answers Envoy's Check calls.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	verifier Verifier
	policy   Evaluator
	inputOpt input.Options
	rawPaths bool
	log      *slog.Logger
	health   *health.Server
	obs      Observer
	denials  denialBudget
}

// New returns a Server. Its health status starts NOT_SERVING; see WatchReadiness.
func New(cfg Config) (*Server, error) {
	if cfg.Verifier == nil || cfg.Policy == nil {
		return nil, errors.New("server: Verifier and Policy are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		verifier: cfg.Verifier,
		policy:   cfg.Policy,
		inputOpt: cfg.Input,
		rawPaths: cfg.AllowNonNormalizedPaths,
		log:      log,
		health:   health.NewServer(),
		obs:      cfg.Observer,
		denials:  denialBudget{perSecond: int64(cfg.MaxDenialLogsPerSecond)},
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// Register adds the Authorization service, the standard gRPC health service and reflection to gs.
func (s *Server) Register(gs *grpc.Server) {
	gs.RegisterService(&authorizationService, s)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
}

// WatchReadiness polls ready every interval and mirrors it into the health service until ctx ends. Each change is
// logged with the reason ready gives.
func (s *Server) WatchReadiness(ctx context.Context, ready func() (bool, string), interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last, first := false, true
	for {
		ok, why := ready()
		if ok != last || first {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ok {
				st = healthpb.HealthCheckResponse_SERVING
				s.log.Info("ready: serving")
			} else {
				s.log.Warn("not ready", slog.String("why", why))
			}
			s.health.SetServingStatus("", st)
			last, first = ok, false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Shutdown marks every service NOT_SERVING so that health-checking clients stop sending new checks.
func (s *Server) Shutdown() { s.health.Shutdown() }

// Check implements envoy.service.auth.v3.Authorization.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	resp, _, err := s.serve(ctx, req)
	return resp, err
}

// serve runs one check between the observer's calls. wire is the response with its encoding when it was
// remembered with the decision.
func (s *Server) serve(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, wire *wireResponse, err error) {
	if s.obs == nil {
		var info CheckInfo
		resp, err = s.check(ctx, req, &info)
		return resp, info.wire, err
	}
	info := &CheckInfo{Request: req, Start: time.Now()}
	ctx = s.obs.CheckStart(ctx, req)
	resp, err = s.check(ctx, req, info)
	info.Duration, info.Response, info.Err = time.Since(info.Start), resp, err
	s.obs.CheckDone(ctx, info)
	return resp, info.wire, err
}

// check decides; it records what it learns along the way in info.
func (s *Server) check(ctx context.Context, req *authv3.CheckRequest, info *CheckInfo) (*authv3.CheckResponse, error) {
	if err := ctx.Err(); err != nil {
		// Envoy has given up on this check already; its status_on_error applies.
		return nil, status.FromContextError(err).Err()
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil {
		s.deny(ctx, "invalid_request", nil)
		return response.Error("invalid_request"), nil
	}
	if !s.rawPaths {
		if why := pathProblem(httpReq.GetPath()); why != "" {
			s.deny(ctx, "invalid_path", httpReq, slog.String("why", why))
			return response.BadRequest("invalid_path"), nil
		}
	}

	var tokValue ast.Value
	raw, present, err := token.FromAuthorization(httpReq.GetHeaders()["authorization"])
	if err == nil && present {
		var tok *token.Token
		tok, err = s.verifier.Verify(ctx, raw)
		if err == nil {
			tokValue = tok.Value()
			info.Token = tok
		}
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, status.FromContextError(ctxErr).Err()
		}
		reason := token.Reason(err)
		s.deny(ctx, reason, httpReq, slog.String("token", token.Fingerprint(raw)), slog.String("error", err.Error()))
		return response.InvalidToken(reason), nil
	}

	in, err := input.NewSource(req, tokValue, s.inputOpt)
	if err != nil {
		s.deny(ctx, "invalid_request", httpReq, slog.String("error", err.Error()))
		return response.Error("invalid_request"), nil
	}
	if info.Token != nil {
		in.SetExpires(info.Token.Expiry)
		in.SetTokenDigest(&info.Token.Digest)
	}
	info.Input = in
	d, derived, err := s.policy.EvalDerive(ctx, in, responseOf)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, status.FromContextError(ctxErr).Err()
		}
		reason := "policy_error"
		switch {
		case errors.Is(err, policy.ErrUndefined):
			reason = "policy_undefined"
		case errors.Is(err, policy.ErrInvalidResult):
			reason = "policy_invalid_result"
		}
		s.log.LogAttrs(ctx, slog.LevelError, "policy evaluation failed", slog.String("reason", reason), slog.String("error", err.Error()))
		s.deny(ctx, reason, httpReq)
		return response.Error(reason), nil
	}
	info.Decision = d
	if !d.Allowed && s.log.Enabled(ctx, slog.LevelInfo) {
		reason, _ := d.DynamicMetadata["reason"].(string)
		if reason == "" {
			reason = "policy_denied"
		}
		s.deny(ctx, reason, httpReq)
	}
	w := derived.(*wireResponse)
	info.wire = w
	return w.CheckResponse, nil
}

// deny logs one line per denied check, within the budget of MaxDenialLogsPerSecond: the reason and the request's
// method and id, never a token or header value.
func (s *Server) deny(ctx context.Context, reason string, r *authv3.AttributeContext_HttpRequest, attrs ...slog.Attr) {
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	ok, dropped := s.denials.take(time.Now())
	if !ok {
		return
	}
	if dropped > 0 {
		s.log.LogAttrs(ctx, slog.LevelInfo, "check denials not logged", slog.Int64("count", dropped),
			slog.Int64("max_denial_logs_per_second", s.denials.perSecond))
	}
	attrs = append(attrs, slog.String("reason", reason))
	if r != nil {
		attrs = append(attrs, slog.String("method", r.GetMethod()), slog.String("request_id", r.GetId()))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "check denied", attrs...)
}
