package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

var (
	checkInfo  = &grpc.UnaryServerInfo{FullMethod: authv3.Authorization_Check_FullMethodName}
	healthInfo = &grpc.UnaryServerInfo{FullMethod: healthpb.Health_Check_FullMethodName}
)

func TestLimitChecksRefusesBeyondMaxConcurrent(t *testing.T) {
	t.Parallel()
	var rejects atomic.Int64
	intercept := LimitChecks(Limits{MaxConcurrent: 2, OnReject: func() { rejects.Add(1) }})
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	blocking := func(ctx context.Context, _ any) (any, error) {
		entered <- struct{}{}
		<-release
		return "ok", nil
	}
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := intercept(context.Background(), nil, checkInfo, blocking)
			done <- err
		}()
	}
	<-entered
	<-entered

	_, err := intercept(context.Background(), nil, checkInfo, blocking)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third concurrent check: %v, want RESOURCE_EXHAUSTED", err)
	}
	if rejects.Load() != 1 {
		t.Errorf("OnReject called %d times, want 1", rejects.Load())
	}
	health, err := intercept(context.Background(), nil, healthInfo, func(context.Context, any) (any, error) { return "serving", nil })
	if err != nil || health != "serving" {
		t.Errorf("health check while checks are refused: %v %v, want it answered", health, err)
	}

	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("admitted check: %v", err)
		}
	}
	if _, err := intercept(context.Background(), nil, checkInfo, func(context.Context, any) (any, error) { return "ok", nil }); err != nil {
		t.Fatalf("check after the others finished: %v, want admitted", err)
	}
}

func TestLimitChecksBoundsTheDeadline(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	intercept := LimitChecks(Limits{MaxConcurrent: 1, Timeout: timeout})
	tests := []struct {
		name     string
		incoming time.Duration // 0: no deadline
		want     time.Duration
	}{
		{"no incoming deadline gets check_timeout", 0, timeout},
		{"a shorter incoming deadline is kept", 100 * time.Millisecond, 100 * time.Millisecond},
		{"a longer incoming deadline is cut to check_timeout", time.Hour, timeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.incoming > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.incoming)
				defer cancel()
			}
			start := time.Now()
			_, err := intercept(ctx, nil, checkInfo, func(ctx context.Context, _ any) (any, error) {
				d, ok := ctx.Deadline()
				if !ok {
					t.Fatal("handler ran without a deadline")
				}
				if got := d.Sub(start); got > tc.want+50*time.Millisecond || got < tc.want-50*time.Millisecond {
					t.Errorf("deadline in %v, want %v", got, tc.want)
				}
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// Other methods keep the deadline they came with.
	_, _ = intercept(context.Background(), nil, healthInfo, func(ctx context.Context, _ any) (any, error) {
		if _, ok := ctx.Deadline(); ok {
			t.Error("health call got a deadline")
		}
		return nil, nil
	})
}
