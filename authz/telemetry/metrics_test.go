package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/internal/stacktest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/response"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/token"
)

var devIssuerLabel = `issuer="` + devissuer.IssuerURL + `"`

func TestMetricsCountChecksByDecisionAndReason(t *testing.T) {
	m := NewMetrics()
	st := newStack(t, m.JWKSFetched)
	m.WatchVerifier(st.verifier, []string{devissuer.IssuerURL})
	m.WatchDecisionCache(st.policy.DecisionCache())
	m.WatchCheckDecoding(func() uint64 { return 3 })
	srv := st.server(t, m, nil, nil)
	raw := st.mint(t, "alice")
	auth := "authorization: Bearer " + raw
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	checks := []struct {
		ctx context.Context
		req *authv3.CheckRequest
	}{
		{context.Background(), stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", auth)},
		{context.Background(), stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", auth)},
		{context.Background(), stacktest.Request(t, "https://api.bank.test/accounts/acc-999/transactions", auth)},
		{context.Background(), stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", auth+"x")},
		{context.Background(), &authv3.CheckRequest{}},
		{cancelled, stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", auth)},
	}
	for _, c := range checks {
		_, _ = srv.Check(c.ctx, c.req)
	}

	_, out := get(t, m.Handler(), "/metrics")
	tests := []struct {
		series string
		want   string
	}{
		{`authz_checks_total{decision="allow",reason="none"}`, "2"},
		{`authz_checks_total{decision="deny",reason="resource_not_granted"}`, "1"},
		{`authz_checks_total{decision="deny",reason="token_malformed"}`, "1"},
		{`authz_checks_total{decision="deny",reason="invalid_request"}`, "1"},
		{`authz_checks_total{decision="error",reason="canceled"}`, "1"},
		{`authz_check_duration_seconds_count{decision="allow"}`, "2"},
		{`authz_check_duration_seconds_count{decision="deny"}`, "3"},
		{`authz_check_duration_seconds_bucket{decision="allow",le="1e-05"}`, ""}, // present; value depends on speed
		{`authz_checks_in_flight`, "0"},
		{`authz_jwks_fetches_total{` + devIssuerLabel + `,result="success"}`, "1"},
		{`authz_jwks_fetches_total{` + devIssuerLabel + `,result="error"}`, "0"},
		{`authz_token_cache_hits_total`, "2"},
		{`authz_token_cache_misses_total`, "2"}, // the first token and the tampered one
		{`authz_policy_reloads_total{result="failure"}`, "0"},
		{`authz_decision_cache_lookups_total{result="hit"}`, "1"}, // the second allowed check
		{`authz_decision_cache_lookups_total{result="miss"}`, "2"},
		{`authz_decision_cache_lookups_total{result="uncacheable"}`, "0"},
		{`authz_check_request_decode_fallbacks_total`, "3"},
	}
	for _, tc := range tests {
		got := sample(out, tc.series)
		switch {
		case got == "":
			t.Errorf("%s is missing", tc.series)
		case tc.want != "" && got != tc.want:
			t.Errorf("%s = %s, want %s", tc.series, got, tc.want)
		}
	}
	age, err := strconv.ParseFloat(sample(out, `authz_jwks_keyset_age_seconds{`+devIssuerLabel+`}`), 64)
	if err != nil || age < 0 || age > 60 {
		t.Errorf("authz_jwks_keyset_age_seconds = %v (%v), want the seconds since the first fetch", age, err)
	}
}

// TestReasonLabelsStayBounded drives a policy that puts request data into its deny reason: every such reason
// is counted as "other", so no request can create a series.
func TestReasonLabelsStayBounded(t *testing.T) {
	ctx := context.Background()
	e, err := policy.New(ctx, policy.Config{FS: fstest.MapFS{"p.rego": {Data: []byte(`package envoy.authz
allow := {"allowed": false, "dynamic_metadata": {"reason": concat("-", input.parsed_path)}}
`)}}, Paths: []string{"."}})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	st := newStack(t, nil)
	srv := st.server(t, m, nil, e)
	for i := range 50 {
		_, _ = srv.Check(ctx, stacktest.Request(t, fmt.Sprintf("https://api.bank.test/cards/41111111111%05d", i)))
	}
	_, out := get(t, m.Handler(), "/metrics")
	if got := sample(out, `authz_checks_total{decision="deny",reason="other"}`); got != "50" {
		t.Errorf(`deny/other = %q, want 50`, got)
	}
	if strings.Contains(out, "cards-") || strings.Contains(out, "41111111111") {
		t.Error("a reason built from the request became a label value")
	}
	series := regexp.MustCompile(`(?m)^authz_checks_total\{`).FindAllStringIndex(out, -1)
	if max := 1 + 2*(len(knownReasons)+1); len(series) > max {
		t.Errorf("%d series of authz_checks_total, want at most %d", len(series), max)
	}
}

func TestDurationCarriesTheTraceOfASampledCheckAsExemplar(t *testing.T) {
	m := NewMetrics()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	ctx = m.CheckStart(ctx, nil)
	m.CheckDone(ctx, &server.CheckInfo{
		Response: response.FromDecision(&policy.Decision{Allowed: true}), Duration: 300 * time.Microsecond,
	})
	_, out := get(t, m.Handler(), "/metrics", "Accept", "application/openmetrics-text; version=1.0.0")
	if !strings.Contains(out, `trace_id="4bf92f3577b34da6a3ce929d0e0e4736"`) {
		t.Errorf("no exemplar with the trace id in:\n%s", grep(out, "authz_check_duration_seconds_bucket"))
	}
}

func TestPolicyReloadsRejectionsAndDecisionLogCounts(t *testing.T) {
	m := NewMetrics()
	m.PolicyReloaded("abc", nil)
	m.PolicyReloaded("abc", nil)
	m.PolicyReloaded("abc", errors.New("rego_parse_error"))
	m.CheckRejected()
	counts := DecisionLogCounts{Written: 7, BufferFull: 3, SinkFailed: 2}
	m.WatchDecisionLog(func() DecisionLogCounts { return counts })
	_, out := get(t, m.Handler(), "/metrics")
	for series, want := range map[string]string{
		`authz_policy_reloads_total{result="success"}`:                     "2",
		`authz_policy_reloads_total{result="failure"}`:                     "1",
		`authz_checks_total{decision="error",reason="resource_exhausted"}`: "1",
		`authz_decision_logs_written_total`:                                "7",
		`authz_decision_logs_dropped_total{reason="buffer_full"}`:          "3",
		`authz_decision_logs_dropped_total{reason="sink_error"}`:           "2",
	} {
		if got := sample(out, series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
}

// TestKnownReasonsCoverEveryReasonTheServiceGives keeps the allow-list in step with the reasons the token
// package and the shipped policy library can give.
func TestKnownReasonsCoverEveryReasonTheServiceGives(t *testing.T) {
	var want []string
	for _, err := range []error{
		token.ErrMalformed, token.ErrTooLarge, token.ErrUnknownIssuer, token.ErrUnknownKey, token.ErrAlgorithm,
		token.ErrSignature, token.ErrExpired, token.ErrNotYetValid, token.ErrIssuedInFuture, token.ErrMissingExpiry,
		token.ErrAudience, token.ErrType, token.ErrKeysUnavailable, errors.New("other"),
	} {
		want = append(want, token.Reason(err))
	}
	readme, err := os.ReadFile("../../policies/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "## Deny reasons")
	if !ok {
		t.Fatal("policies/README.md has no Deny reasons section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(table, -1)
	if len(rows) < 10 {
		t.Fatalf("found %d deny reasons in policies/README.md, want the whole table", len(rows))
	}
	for _, r := range rows {
		want = append(want, r[1])
	}
	for _, r := range want {
		if !slices.Contains(knownReasons, r) {
			t.Errorf("reason %q is not in knownReasons: it would be counted as other", r)
		}
	}
}

func grep(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// BenchmarkMetricsObserve is what the metrics add to every check.
func BenchmarkMetricsObserve(b *testing.B) {
	m := NewMetrics()
	info := &server.CheckInfo{
		Response: response.FromDecision(&policy.Decision{Allowed: false, DynamicMetadata: map[string]any{"reason": "insufficient_scope"}}),
		Duration: 200 * time.Microsecond,
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m.CheckDone(m.CheckStart(ctx, nil), info)
	}
}
