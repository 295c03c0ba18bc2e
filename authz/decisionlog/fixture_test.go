package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/internal/stacktest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/token"
	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

const policyDir = "testdata/policy"

// stack is a real verifier trusting a development issuer served over HTTP, and a real policy engine with
// testdata/policy.
type stack struct {
	iss      *devissuer.Issuer
	verifier *token.Verifier
	policy   *policy.Engine
}

func newStack(tb testing.TB) *stack {
	tb.Helper()
	iss, jwksURI := stacktest.Issuer(tb)
	v := stacktest.Verifier(tb, jwksURI, nil)
	e, err := policy.New(context.Background(), policy.Config{Paths: []string{policyDir}})
	if err != nil {
		tb.Fatal(err)
	}
	return &stack{iss: iss, verifier: v, policy: e}
}

func (s *stack) server(tb testing.TB, obs server.Observer) *server.Server {
	tb.Helper()
	srv, err := server.New(server.Config{Verifier: s.verifier, Policy: s.policy, Observer: obs})
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

func (s *stack) mint(tb testing.TB, sub string) string {
	tb.Helper()
	return stacktest.Mint(tb, s.iss, devissuer.Claims{
		Subject: sub, Scope: "accounts:read", ClientID: "bank-app",
		Extra: map[string]any{"accounts": []string{"acc-123"}},
	})
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reading test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logChecks runs the checks through a real server over st observed by a Logger with opts and a JSON lines sink, closes
// the Logger, and returns its output parsed, one map per line, and raw.
func logChecks(t *testing.T, st *stack, opts RecordOptions, reqs ...*authv3.CheckRequest) ([]map[string]any, string) {
	t.Helper()
	out := &syncBuffer{}
	l, err := New(Config{Sink: NewLinesSink(out), Record: opts})
	if err != nil {
		t.Fatal(err)
	}
	srv := st.server(t, l)
	for _, req := range reqs {
		if _, err := srv.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return parseLines(t, out.String()), out.String()
}

func parseLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

// recordingSink keeps what it is given; block, when set, makes Write wait for it to close or ctx to end.
type recordingSink struct {
	mu      sync.Mutex
	batches [][]*authzv1.DecisionLog
	block   chan struct{}
	fail    error
	closed  bool
}

func (s *recordingSink) Write(ctx context.Context, recs []*authzv1.DecisionLog) error {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.batches = append(s.batches, append([]*authzv1.DecisionLog(nil), recs...))
	return nil
}

func (s *recordingSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *recordingSink) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, len(s.batches))
	for i, b := range s.batches {
		out[i] = len(b)
	}
	return out
}

func writeFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}
