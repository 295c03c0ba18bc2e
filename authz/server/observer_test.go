package server

import (
	"context"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/authz/internal/polltest"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	starts int
	done   []*CheckInfo
	ctxOK  []bool
}

type startKey struct{}

func (r *recorder) CheckStart(ctx context.Context, _ *authv3.CheckRequest) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts++
	return context.WithValue(ctx, startKey{}, true)
}

func (r *recorder) CheckDone(ctx context.Context, info *CheckInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = append(r.done, info)
	r.ctxOK = append(r.ctxOK, ctx.Value(startKey{}) == true)
}

func TestObserverSeesEveryCheckOnce(t *testing.T) {
	f := newFixture(t, 0)
	raw := f.mint(t, "alice")
	notGranted, err := envoyreq.New(envoyreq.Request{
		URL:     "https://api.bank.test/accounts/acc-999/transactions",
		Headers: []string{"authorization: Bearer " + raw},
	})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name         string
		ctx          context.Context
		req          *authv3.CheckRequest
		wantDecision string
		wantReason   string
		wantStatus   int
		wantToken    bool
		wantPolicy   bool
	}{
		{"an allowed check carries the token, the input and the decision", context.Background(),
			transactionsRequest(t, raw), DecisionAllow, "", 200, true, true},
		{"a policy deny carries the policy's reason and status", context.Background(),
			notGranted, DecisionDeny, "resource_not_granted", 403, true, true},
		{"an invalid token is a 401 deny without token or policy", context.Background(),
			transactionsRequest(t, raw+"x"), DecisionDeny, "token_malformed", 401, false, false},
		{"a request without HTTP attributes is denied as invalid_request", context.Background(),
			&authv3.CheckRequest{}, DecisionDeny, "invalid_request", 403, false, false},
		{"a cancelled check is an error with no response", cancelled,
			transactionsRequest(t, raw), DecisionError, "canceled", 0, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			s, err := New(Config{Verifier: f.srv.verifier, Policy: f.srv.policy, Observer: rec})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Check(tc.ctx, tc.req)
			if rec.starts != 1 || len(rec.done) != 1 {
				t.Fatalf("observer saw %d starts and %d ends, want 1 each", rec.starts, len(rec.done))
			}
			if !rec.ctxOK[0] {
				t.Error("CheckDone did not get the context CheckStart returned")
			}
			info := rec.done[0]
			if info.Response != resp || info.Err != err || info.Request != tc.req {
				t.Error("info does not hold the request, the response and the error of the call")
			}
			if info.Start.IsZero() || info.Duration <= 0 {
				t.Errorf("start %v, duration %v: want the time the check took", info.Start, info.Duration)
			}
			decision, reason, status := info.Outcome()
			if decision != tc.wantDecision || reason != tc.wantReason || status != tc.wantStatus {
				t.Errorf("Outcome = %q, %q, %d; want %q, %q, %d", decision, reason, status,
					tc.wantDecision, tc.wantReason, tc.wantStatus)
			}
			if (info.Token != nil) != tc.wantToken {
				t.Errorf("token recorded = %v, want %v", info.Token != nil, tc.wantToken)
			}
			if (info.Input != nil) != tc.wantPolicy || (info.Decision != nil) != tc.wantPolicy {
				t.Errorf("input and decision recorded = %v, %v; want %v", info.Input != nil, info.Decision != nil, tc.wantPolicy)
			}
			if info.Decision != nil && info.Decision.Revision == "" {
				t.Error("the decision has no policy revision")
			}
		})
	}
}

func TestServingMirrorsTheHealthService(t *testing.T) {
	f := newFixture(t, 0)
	if f.srv.Serving() {
		t.Fatal("a new server reports serving before readiness was checked")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.srv.WatchReadiness(ctx, func() (bool, string) { return true, "" }, 10*time.Millisecond)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	polltest.Until(t, "the server reports serving", f.srv.Serving)
	f.srv.Shutdown()
	if f.srv.Serving() {
		t.Error("a shut down server still reports serving")
	}
}
