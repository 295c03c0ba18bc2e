package decisionlog

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/finauthz/authz/authz/internal/stacktest"
)

const (
	testPAN    = "4111111111111111"
	apiKey     = "sk_live_5f2b9c1e0a7d4e3b"
	traceID    = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceparen = "traceparent: 00-" + traceID + "-00f067aa0ba902b7-01"
)

// leaks fails if out holds the token, a sizeable piece of its segments, or any of the other secrets.
func leaks(t *testing.T, out, raw string, secrets ...string) {
	t.Helper()
	if strings.Contains(out, raw) {
		t.Error("the log holds the raw token")
	}
	for _, seg := range strings.Split(raw, ".") {
		if len(seg) >= 16 && strings.Contains(out, seg[:16]) {
			t.Errorf("the log holds a piece of a token segment (%s...)", seg[:16])
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log holds %q", s)
		}
	}
}

func TestRecordOfAnAllowedCheck(t *testing.T) {
	st := newStack(t)
	raw := st.mint(t, "alice")
	recs, out := logChecks(t, st, RecordOptions{},
		stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions?card="+testPAN,
			"authorization: Bearer "+raw, traceparen, "x-api-key: "+apiKey))
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1:\n%s", len(recs), out)
	}
	r := recs[0]
	want := map[string]any{
		"decision":    "DECISION_ALLOW",
		"http_status": float64(200),
		"issuer":      "https://dev-issuer.authz.invalid",
		"subject":     "alice",
		"client_id":   "bank-app",
		"method":      "GET",
		"route":       "transactions.list",
		"request_id":  "req-1",
		"trace_id":    traceID,
	}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("%s = %v, want %v", k, r[k], v)
		}
	}
	for _, k := range []string{"decision_id", "timestamp", "latency", "policy_revision"} {
		if s, _ := r[k].(string); s == "" {
			t.Errorf("%s is missing", k)
		}
	}
	for _, k := range []string{"path", "input", "span_id", "reason", "subject_hashed"} {
		if _, ok := r[k]; ok {
			t.Errorf("%s is present (%v), want it left out", k, r[k])
		}
	}
	leaks(t, out, raw, testPAN, apiKey, "/accounts/acc-123")
}

func TestRecordsOfDeniedChecks(t *testing.T) {
	st := newStack(t)
	raw := st.mint(t, "alice")
	tests := []struct {
		name       string
		url        string
		token      string
		wantStatus float64
		wantReason string
		wantRoute  string
		identity   bool
	}{
		{"a policy deny names the route and the policy's reason", "https://api.bank.test/accounts/acc-999/transactions",
			raw, 403, "resource_not_granted", "transactions.list", true},
		{"an unknown route has no route id", "https://api.bank.test/nowhere", raw, 403, "route_not_found", "", true},
		{"a bad token is a 401 without identity", "https://api.bank.test/accounts/acc-123/transactions",
			raw + "x", 401, "token_malformed", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, out := logChecks(t, st, RecordOptions{}, stacktest.Request(t, tc.url, "authorization: Bearer "+tc.token))
			r := recs[0]
			if r["decision"] != "DECISION_DENY" || r["http_status"] != tc.wantStatus || r["reason"] != tc.wantReason {
				t.Errorf("decision %v, status %v, reason %v; want deny, %v, %s", r["decision"], r["http_status"], r["reason"], tc.wantStatus, tc.wantReason)
			}
			if got, _ := r["route"].(string); got != tc.wantRoute {
				t.Errorf("route = %q, want %q", got, tc.wantRoute)
			}
			if _, ok := r["subject"]; ok != tc.identity {
				t.Errorf("subject present = %v, want %v", ok, tc.identity)
			}
			leaks(t, out, tc.token)
		})
	}
}

func TestSubjectIsHashedWithTheSalt(t *testing.T) {
	st := newStack(t)
	raw := st.mint(t, "alice")
	salt := []byte("0123456789abcdef-salt")
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("alice"))
	want := hex.EncodeToString(m.Sum(nil))

	recs, out := logChecks(t, st, RecordOptions{HashSubject: true, SubjectSalt: salt, IncludeInput: true},
		stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", "authorization: Bearer "+raw))
	r := recs[0]
	if r["subject"] != want || r["subject_hashed"] != true {
		t.Errorf("subject = %v (hashed %v), want HMAC-SHA-256 %s", r["subject"], r["subject_hashed"], want)
	}
	payload := r["input"].(map[string]any)["token"].(map[string]any)["payload"].(map[string]any)
	if payload["sub"] != want {
		t.Errorf("input.token.payload.sub = %v, want the same hash", payload["sub"])
	}
	if strings.Contains(out, `"alice"`) {
		t.Error("the subject appears in clear")
	}

	other, _ := logChecks(t, st, RecordOptions{HashSubject: true, SubjectSalt: []byte("another-salt-0123456")},
		stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", "authorization: Bearer "+raw))
	if other[0]["subject"] == want {
		t.Error("another salt gave the same hash")
	}
	if _, err := New(Config{Sink: &recordingSink{}, Record: RecordOptions{HashSubject: true}}); err == nil {
		t.Error("hashing without a salt was accepted")
	}
}

func TestPathIsLoggedOnlyWhenAskedAndMasked(t *testing.T) {
	st := newStack(t)
	req := stacktest.Request(t, "https://api.bank.test/cards/"+testPAN+"/limits?x="+testPAN)
	recs, _ := logChecks(t, st, RecordOptions{}, req)
	if _, ok := recs[0]["path"]; ok {
		t.Error("path logged without include_path")
	}
	recs, out := logChecks(t, st, RecordOptions{IncludePath: true}, req)
	if got := recs[0]["path"]; got != "/cards/****1111/limits" {
		t.Errorf("path = %v, want the path without query, card number masked", got)
	}
	leaks(t, out, "no-token", testPAN)
}

func TestInputIsMaskedByThePolicysRule(t *testing.T) {
	st := newStack(t)
	raw := st.mint(t, "alice")
	masker, err := NewRegoMasker(context.Background(), RegoMaskerConfig{Paths: []string{policyDir}})
	if err != nil {
		t.Fatal(err)
	}
	recs, out := logChecks(t, st, RecordOptions{IncludeInput: true, Masker: masker, DecisionPath: "envoy/authz/allow"},
		stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions?card="+testPAN,
			"authorization: Bearer "+raw, "proxy-authorization: Basic dXNlcjpwYXNz", "x-api-key: "+apiKey,
			"user-agent: bank-app/7.1", "accept: application/json"),
		stacktest.Request(t, "https://api.bank.test/accounts/acc-999/transactions",
			"authorization: Bearer "+raw, "x-api-key: "+apiKey, "user-agent: bank-app/7.1"),
	)
	headersOf := func(r map[string]any) map[string]any {
		return r["input"].(map[string]any)["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]any)
	}
	allowed, denied := headersOf(recs[0]), headersOf(recs[1])
	for _, h := range []string{"authorization", "proxy-authorization", "x-api-key", "user-agent"} {
		if _, ok := allowed[h]; ok {
			t.Errorf("header %s is in the logged input of the allowed check", h)
		}
	}
	if allowed["accept"] != "application/json" {
		t.Errorf("accept = %v: unmasked headers must stay", allowed["accept"])
	}
	if denied["user-agent"] != "bank-app/7.1" {
		t.Error("the mask rule's condition on the result was not honoured: user-agent of the deny is gone")
	}
	erased, _ := recs[0]["erased"].([]any)
	wantErased := []any{
		"/input/attributes/request/http/headers/authorization",
		"/input/attributes/request/http/headers/proxy-authorization",
		"/input/attributes/request/http/headers/user-agent",
		"/input/attributes/request/http/headers/x-api-key",
	}
	if len(erased) != len(wantErased) {
		t.Fatalf("erased = %v, want %v", erased, wantErased)
	}
	for i := range erased {
		if erased[i] != wantErased[i] {
			t.Errorf("erased[%d] = %v, want %v", i, erased[i], wantErased[i])
		}
	}
	leaks(t, out, raw, testPAN, apiKey, "dXNlcjpwYXNz")
}

func TestInputIsWithheldWhenTheMaskRuleFails(t *testing.T) {
	st := newStack(t)
	tests := []struct {
		name string
		rule string
	}{
		{"a rule of the wrong shape", "package system.log\nmask := 42\n"},
		{"an operation this reader does not know", "package system.log\nmask contains {\"op\": \"upsert\", \"path\": \"/input/x\", \"value\": 1}\n"},
		{"a pointer that is not one", "package system.log\nmask contains \"input/x\"\n"},
		{"a rule that fails to evaluate", "package system.log\nmask := [\"/input/a\"] if input.input\nmask := [\"/input/b\"] if input.input\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "mask.rego", tc.rule)
			masker, err := NewRegoMasker(context.Background(), RegoMaskerConfig{Paths: []string{dir}})
			if err != nil {
				t.Fatal(err)
			}
			recs, _ := logChecks(t, st, RecordOptions{IncludeInput: true, Masker: masker},
				stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", "x-api-key: "+apiKey))
			if _, ok := recs[0]["input"]; ok {
				t.Error("the input was logged although the mask rule failed")
			}
			if e, _ := recs[0]["erased"].([]any); len(e) != 1 || e[0] != "/input" {
				t.Errorf("erased = %v, want [/input]", recs[0]["erased"])
			}
		})
	}
}

func TestTheInputOfALargeRequestIsNotKept(t *testing.T) {
	st := newStack(t)
	big := stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions", "x-padding: "+strings.Repeat("a", 2048))
	small := stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions")
	recs, _ := logChecks(t, st, RecordOptions{IncludeInput: true, MaxInputBytes: 1024}, big, small)
	if _, ok := recs[0]["input"]; ok {
		t.Error("the input of a request over MaxInputBytes was logged")
	}
	if e, _ := recs[0]["erased"].([]any); len(e) != 1 || e[0] != "/input" {
		t.Errorf("erased = %v, want [/input]", recs[0]["erased"])
	}
	if recs[0]["decision"] != "DECISION_DENY" {
		t.Error("the record itself was lost with the input")
	}
	if _, ok := recs[1]["input"]; !ok {
		t.Error("the input of a small request was not logged")
	}
}
