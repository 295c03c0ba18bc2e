package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits bounds the work that Check calls may cause: how many run at once and for how long. Either bound fails
// the call with a gRPC error, which Envoy answers with its status_on_error (fail closed) unless the filter is
// configured with failure_mode_allow.
type Limits struct {
	// MaxConcurrent is how many checks may be in progress at once across all connections. A check beyond it fails
	// at once with RESOURCE_EXHAUSTED rather than waiting: Envoy's ext_authz timeout would expire in a queue anyway,
	// and a queue grows without bound under overload. Zero means no bound.
	MaxConcurrent int
	// Timeout bounds a check whose deadline is absent or later. Envoy's ext_authz timeout arrives as the gRPC
	// deadline and wins when shorter; either ends the check with DEADLINE_EXCEEDED. Zero means no bound.
	Timeout time.Duration
	// OnReject, when set, is called for each check refused by MaxConcurrent (for a metric).
	OnReject func()
	// Logger receives at most one warning per rejectLogInterval while checks are refused.
	Logger *slog.Logger
}

// rejectLogInterval spaces the warnings about refused checks: under overload one per refused check would add to it.
const rejectLogInterval = 10 * time.Second

// LimitChecks returns a unary interceptor that applies l to Authorization/Check calls. Other methods (health,
// reflection) are not limited: a health probe must still answer while checks are refused.
func LimitChecks(l Limits) grpc.UnaryServerInterceptor {
	lim := &limiter{Limits: l}
	if lim.Logger == nil {
		lim.Logger = slog.New(slog.DiscardHandler)
	}
	return lim.intercept
}

type limiter struct {
	Limits
	inFlight atomic.Int64
	rejected atomic.Int64 // refused since the last warning
	lastWarn atomic.Int64 // unix nanoseconds of the last warning
}

func (l *limiter) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod != authv3.Authorization_Check_FullMethodName {
		return handler(ctx, req)
	}
	if l.MaxConcurrent > 0 {
		if l.inFlight.Add(1) > int64(l.MaxConcurrent) {
			l.inFlight.Add(-1)
			l.reject(ctx)
			return nil, status.Error(codes.ResourceExhausted, "too many checks in progress")
		}
		defer l.inFlight.Add(-1)
	}
	if l.Timeout > 0 {
		// Envoy's deadline is usually the shorter one: a context and timer of our own would only cost.
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > l.Timeout {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, l.Timeout)
			defer cancel()
		}
	}
	return handler(ctx, req)
}

func (l *limiter) reject(ctx context.Context) {
	if l.OnReject != nil {
		l.OnReject()
	}
	n := l.rejected.Add(1)
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(rejectLogInterval) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l.rejected.Add(-n)
	l.Logger.LogAttrs(ctx, slog.LevelWarn, "checks refused: max_concurrent_checks reached",
		slog.Int("max_concurrent_checks", l.MaxConcurrent), slog.Int64("refused", n))
}
