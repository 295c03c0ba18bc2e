package loadtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/response"
)

func TestParseVerdictReadsWhatEnvoyReads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		resp *authv3.CheckResponse
		want Outcome
	}{
		{"an allow with header mutations is allowed",
			response.FromDecision(&policy.Decision{Allowed: true, Headers: []policy.Header{{Key: "x-subject", Value: "cust-1"}},
				RequestHeadersToRemove: []string{"authorization"}, DynamicMetadata: map[string]any{"route": "accounts.list"}}), Allowed},
		{"a policy deny without a status is denied",
			response.FromDecision(&policy.Decision{Allowed: false, Body: `{"error":"resource_not_granted"}`}), Denied},
		{"a policy deny with 401 is unauthorized",
			response.FromDecision(&policy.Decision{Allowed: false, HTTPStatus: 401, DynamicMetadata: map[string]any{"reason": "step_up_required"}}), Unauthorized},
		{"an invalid token is unauthorized", response.InvalidToken("token_expired"), Unauthorized},
		{"a fail-closed error is denied", response.Error("policy_error"), Denied},
		{"an empty response is allowed, as Envoy reads status OK", &authv3.CheckResponse{}, Allowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			var v verdict
			if err := parseVerdict(b, &v); err != nil {
				t.Fatal(err)
			}
			if got := outcomeOf(nil, v); got != tc.want {
				t.Errorf("outcome %v (verdict %+v), want %v", got, v, tc.want)
			}
			if v.code != tc.resp.GetStatus().GetCode() || v.httpStatus != int32(tc.resp.GetDeniedResponse().GetStatus().GetCode()) {
				t.Errorf("verdict %+v, want code %d and HTTP status %d", v, tc.resp.GetStatus().GetCode(),
					tc.resp.GetDeniedResponse().GetStatus().GetCode())
			}
		})
	}
}

func TestParseVerdictRejectsMalformedResponses(t *testing.T) {
	t.Parallel()
	for name, b := range map[string][]byte{
		"truncated tag":         {0x80},
		"length past the end":   {0x0a, 0x05, 0x08},
		"truncated status code": {0x0a, 0x01, 0x08},
	} {
		t.Run(name, func(t *testing.T) {
			if err := parseVerdict(b, &verdict{}); err == nil {
				t.Error("parsed a malformed response")
			}
		})
	}
}

func TestMixFlag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    Mix
		wantErr string
	}{
		{"the default mix", "valid=80,invalid=10,public=10", Mix{Valid: 80, Invalid: 10, Public: 10}, ""},
		{"classes not named weigh nothing", "valid=1", Mix{Valid: 1}, ""},
		{"spaces around parts are ignored", "valid=7, forbidden=1, invalid=1, public=1", Mix{7, 1, 1, 1}, ""},
		{"an unknown class is an error", "valid=80,expired=20", Mix{}, "want class=weight"},
		{"a negative weight is an error", "valid=-1", Mix{}, "0 or more"},
		{"all zero is an error", "valid=0", Mix{}, "at least one class"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m Mix
			err := m.Set(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Set(%q) = %v, want an error containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || m != tc.want {
				t.Fatalf("Set(%q) = %v, %v; want %v", tc.in, m, err, tc.want)
			}
			var again Mix
			if err := again.Set(m.String()); err != nil || again != m {
				t.Errorf("String %q does not round-trip: %v %v", m.String(), again, err)
			}
		})
	}
}

func TestInterleaveKeepsTheMixInEveryWindow(t *testing.T) {
	t.Parallel()
	var pools [numClasses][]*preEncoded
	for c, n := range [numClasses]int{300, 100, 7, 16} {
		for range n {
			pools[c] = append(pools[c], &preEncoded{})
		}
	}
	mix := Mix{Valid: 70, Forbidden: 10, Invalid: 10, Public: 10}
	seq := interleave(mix, pools)
	const period = 10 // the weights divided by their gcd
	if len(seq)%period != 0 {
		t.Fatalf("sequence of %d is not whole periods", len(seq))
	}
	for start := 0; start < len(seq); start += period {
		var n [numClasses]int
		for _, e := range seq[start : start+period] {
			n[e.class]++
		}
		if n != [numClasses]int{7, 1, 1, 1} {
			t.Fatalf("window at %d holds %v, want 7/1/1/1", start, n)
		}
	}
	seen := map[*preEncoded]bool{}
	for _, e := range seq {
		seen[e.req] = true
	}
	if len(seen) != 300+100+7+16 {
		t.Errorf("%d distinct requests in the sequence, want every pooled one", len(seen))
	}
}

func TestWorkloadFromMintedTokens(t *testing.T) {
	t.Parallel()
	iss, err := devissuer.Open(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorkload(WorkloadConfig{Issuer: iss, Subjects: 30, Mix: Mix{Valid: 8, Forbidden: 1, Invalid: 2, Public: 1}})
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[Class]map[string]bool{}
	paths := map[Class]map[string]bool{}
	for _, e := range w.seq {
		req := decode(t, e.req)
		h := req.GetAttributes().GetRequest().GetHttp()
		if tokens[e.class] == nil {
			tokens[e.class], paths[e.class] = map[string]bool{}, map[string]bool{}
		}
		tokens[e.class][h.GetHeaders()["authorization"]] = true
		paths[e.class][strings.Split(h.GetPath(), "?")[0]] = true
	}
	if n := len(tokens[Valid]); n != 30 {
		t.Errorf("%d distinct valid tokens, want one per subject (30)", n)
	}
	if n := len(paths[Valid]); n != 1+30+30 {
		t.Errorf("%d distinct valid paths, want /accounts plus one transactions and one payment per subject", n)
	}
	if len(tokens[Public]) != 1 || !tokens[Public][""] || len(paths[Public]) != 1 || !paths[Public]["/fx/rates"] {
		t.Errorf("public requests: tokens %v paths %v, want /fx/rates without a token", tokens[Public], paths[Public])
	}
	if n := len(tokens[Invalid]); n != 30 {
		t.Errorf("%d distinct invalid tokens, want 30", n)
	}
	for tok := range tokens[Invalid] {
		if tokens[Valid][tok] {
			t.Errorf("an invalid request carries a valid token")
		}
	}
}

func TestWorkloadFromTokenFile(t *testing.T) {
	t.Parallel()
	iss, err := devissuer.Open(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	withAccounts, err := iss.Mint(devissuer.Claims{Subject: "a", Extra: map[string]any{"accounts": []string{"acc-9"}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	without, err := iss.Mint(devissuer.Claims{Subject: "b"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := ReadTokens([]byte("# tokens\n" + withAccounts + "\n\n  " + without + "  \n"))
	if err != nil || len(tokens) != 2 {
		t.Fatalf("ReadTokens = %d tokens, %v; want 2", len(tokens), err)
	}
	w, err := NewWorkload(WorkloadConfig{Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	if w.judged[Valid] || !w.judged[Invalid] || !w.judged[Public] {
		t.Errorf("judged = %v: want the file's tokens unjudged, invalid and public judged", w.judged)
	}
	var sawTransactions bool
	for _, e := range w.seq {
		if strings.HasPrefix(decode(t, e.req).GetAttributes().GetRequest().GetHttp().GetPath(), "/accounts/acc-9/transactions") {
			sawTransactions = true
		}
	}
	if !sawTransactions {
		t.Error("no transactions request for the account in the token's claims")
	}
	if _, err := ReadTokens([]byte("not-a-jwt\n")); err == nil {
		t.Error("ReadTokens accepted a line that is not a JWS")
	}
	if _, err := NewWorkload(WorkloadConfig{}); err == nil {
		t.Error("NewWorkload without issuer or tokens succeeded")
	}
}

func TestTamperedAndResignedTokensDiffer(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := builder{stranger: key}
	const tok = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLW9mLXNpeHR5LWZvdXItYnl0ZXMtYXQtbGVhc3Qtc28tdGhlLW1pZGRsZQ"
	if got := tamper(tok); got == tok || len(got) != len(tok) || got[:strings.LastIndexByte(tok, '.')] != tok[:strings.LastIndexByte(tok, '.')] {
		t.Errorf("tamper(%s) = %s: want one changed signature character", tok, got)
	}
	re, err := b.resign(tok)
	if err != nil {
		t.Fatal(err)
	}
	if parts := strings.Split(re, "."); len(parts) != 3 || parts[1] != "eyJzdWIiOiJhIn0" || parts[0] == "eyJhbGciOiJFUzI1NiJ9" {
		t.Errorf("resign(%s) = %s: want a new header and signature around the same payload", tok, re)
	}
}

func decode(t testing.TB, p *preEncoded) *authv3.CheckRequest {
	t.Helper()
	var req authv3.CheckRequest
	if err := proto.Unmarshal(p.wire.Materialize(), &req); err != nil {
		t.Fatal(err)
	}
	return &req
}
