package service

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/policies"
)

// TestShippedRouteTableThroughTheService drives every route of the shipped open-banking route table, and every
// deny reason it can produce, through the running service: real gRPC, the development issuer's real JWKS
// endpoint, the embedded policies.
func TestShippedRouteTableThroughTheService(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dev-key.pem")
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
policy: {builtin: true, validation_query: data.authz.lib.routing.errors}
dev_issuer: {enabled: true, listen: 127.0.0.1:0, key_file: %s}
`, keyFile)
	h := startServiceIn(t, yaml, dir, Options{BuiltinPolicies: policies.FS})
	h.waitServing(t)
	iss, err := devissuer.Open(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(scope string, extra map[string]any) string {
		raw, err := iss.Mint(devissuer.Claims{Subject: "alice", Scope: scope, ClientID: "bank-app", Extra: extra}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	accounts := map[string]any{"accounts": []string{"acc-123", "acc-456"}}
	sca := map[string]any{"acr": "urn:openbanking:psd2:sca", "auth_time": time.Now().Unix()}
	staleSCA := map[string]any{"acr": "urn:openbanking:psd2:sca", "auth_time": time.Now().Add(-time.Hour).Unix()}
	payment := func(amount string) string { return `{"amount":"` + amount + `","currency":"EUR","creditor":"GB00X"}` }
	const ops = "spiffe://bank.internal/ns/ops/sa/console"

	// admin.write is open only on London weekdays 08:00-18:00: expect what the clock says.
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(london)
	inHours := now.Weekday() != time.Saturday && now.Weekday() != time.Sunday && now.Hour() >= 8 && now.Hour() < 18
	adminWrite := struct {
		status int
		reason string
	}{403, "outside_business_hours"}
	if inHours {
		adminWrite.status, adminWrite.reason = 200, ""
	}

	type req = envoyreq.Request
	tests := []struct {
		name       string
		req        req
		token      string
		wantStatus int
		wantReason string
		wantHeader map[string]string // substring of the header value
	}{
		{"accounts.list allows accounts:read with minimal identity headers",
			req{URL: "https://api.bank.test/accounts"}, mint("accounts:read payments:write", nil), 200, "",
			map[string]string{"x-subject": "alice", "x-client-id": "bank-app", "x-scopes": "accounts:read", "x-data-fields": "id,currency"}},
		{"accounts.list without a token asks for authentication",
			req{URL: "https://api.bank.test/accounts"}, "", 401, "authentication_required", map[string]string{"www-authenticate": "Bearer"}},
		{"accounts.list without the scope is insufficient_scope",
			req{URL: "https://api.bank.test/accounts"}, mint("payments:read", nil), 403, "insufficient_scope",
			map[string]string{"www-authenticate": `error="insufficient_scope", scope="accounts:read"`}},
		{"accounts.read of a consented account is allowed",
			req{URL: "https://api.bank.test/accounts/acc-123"}, mint("accounts:read", accounts), 200, "", nil},
		{"accounts.read of another account is not granted",
			req{URL: "https://api.bank.test/accounts/acc-999"}, mint("accounts:read", accounts), 403, "resource_not_granted", nil},
		{"balances.read of a consented account is allowed",
			req{URL: "https://api.bank.test/accounts/acc-456/balances"}, mint("balances:read", accounts), 200, "",
			map[string]string{"x-data-fields": "amount"}},
		{"transactions.list limits the data fields",
			req{URL: "https://api.bank.test/accounts/acc-123/transactions?from=2026-01-01"}, mint("transactions:read", accounts), 200, "",
			map[string]string{"x-data-fields": "id,amount,currency,booked_at"}},
		{"transactions.list of another account is not granted",
			req{URL: "https://api.bank.test/accounts/acc-999/transactions"}, mint("transactions:read", accounts), 403, "resource_not_granted", nil},
		{"customers.read of oneself is allowed",
			req{URL: "https://api.bank.test/customers/alice"}, mint("profile:read", nil), 200, "", nil},
		{"customers.read of another customer is not granted",
			req{URL: "https://api.bank.test/customers/bob"}, mint("profile:read", nil), 403, "resource_not_granted", nil},
		{"payments.create of a small amount from a managed device is allowed",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: managed", "x-risk-score: 12"}, Body: []byte(payment("50.00")), MaxBody: 8192},
			mint("payments:write", nil), 200, "", nil},
		{"payments.create from an unmanaged device is denied",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: jailbroken", "x-risk-score: 12"}, Body: []byte(payment("50.00")), MaxBody: 8192},
			mint("payments:write", nil), 403, "device_posture", nil},
		{"payments.create without a risk score fails closed",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: managed"}, Body: []byte(payment("50.00")), MaxBody: 8192},
			mint("payments:write", nil), 403, "risk_too_high", nil},
		{"payments.create above the risk maximum is denied",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: managed", "x-risk-score: 91"}, Body: []byte(payment("50.00")), MaxBody: 8192},
			mint("payments:write", nil), 403, "risk_too_high", nil},
		{"payments.create above the step-up amount without strong authentication needs step-up",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: compliant", "x-risk-score: 12"}, Body: []byte(payment("5000.00")), MaxBody: 8192},
			mint("payments:write", nil), 401, "step_up_required", map[string]string{"www-authenticate": `error="insufficient_user_authentication"`}},
		{"payments.create above the step-up amount with an old strong authentication needs step-up",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: compliant", "x-risk-score: 12"}, Body: []byte(payment("5000.00")), MaxBody: 8192},
			mint("payments:write", staleSCA), 401, "step_up_required", nil},
		{"payments.create above the step-up amount with fresh SCA is allowed",
			req{Method: "POST", URL: "https://api.bank.test/payments", Headers: []string{"content-type: application/json", "x-device-posture: compliant", "x-risk-score: 12"}, Body: []byte(payment("5000.00")), MaxBody: 8192},
			mint("payments:write", sca), 200, "", nil},
		{"payments.read accepts either payments scope",
			req{URL: "https://api.bank.test/payments/pay-1"}, mint("payments:read", nil), 200, "", nil},
		{"admin.read from an ops workload inside the bank is allowed",
			req{URL: "https://api.bank.test/admin/jobs/42", Principal: ops, Source: "10.20.30.40:5000"}, "", 200, "",
			map[string]string{"x-client-id": ops}},
		{"admin.read without mTLS is denied",
			req{URL: "https://api.bank.test/admin/jobs/42", Source: "10.20.30.40:5000"}, "", 403, "mtls_required", nil},
		{"admin.read from another namespace is not allowed",
			req{URL: "https://api.bank.test/admin/jobs/42", Principal: "spiffe://bank.internal/ns/web/sa/frontend", Source: "10.20.30.40:5000"}, "", 403, "principal_not_allowed", nil},
		{"admin.read from outside the bank's network is denied",
			req{URL: "https://api.bank.test/admin/jobs/42", Principal: ops, Source: "203.0.113.9:5000"}, "", 403, "network_not_allowed", nil},
		{"admin.write follows business hours",
			req{Method: "POST", URL: "https://api.bank.test/admin/jobs", Principal: "spiffe://bank.internal/ns/ops/sa/change-runner", Source: "10.20.30.40:5000"}, "", adminWrite.status, adminWrite.reason, nil},
		{"admin.write by a workload not on the list is not allowed",
			req{Method: "POST", URL: "https://api.bank.test/admin/jobs", Principal: ops, Source: "10.20.30.40:5000"}, "", 403, "principal_not_allowed", nil},
		{"fx.rates is public and sets no identity",
			req{URL: "https://api.bank.test/fx/rates"}, "", 200, "", nil},
		{"health from inside is allowed",
			req{URL: "https://api.bank.test/healthz", Source: "127.0.0.1:5000"}, "", 200, "", nil},
		{"health from outside is denied",
			req{URL: "https://api.bank.test/healthz", Source: "203.0.113.9:5000"}, "", 403, "network_not_allowed", nil},
		{"an unknown route is denied",
			req{URL: "https://api.bank.test/internal/debug"}, mint("accounts:read", nil), 403, "route_not_found", nil},
		{"a known path with another method is denied",
			req{Method: "DELETE", URL: "https://api.bank.test/accounts"}, mint("accounts:read", nil), 403, "route_not_found", nil},
		{"an invalid token never reaches the route table",
			req{URL: "https://api.bank.test/fx/rates"}, mint("accounts:read", nil) + "x", 401, "token_malformed", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			r.Headers = slices.Clone(r.Headers)
			if tc.token != "" {
				r.Headers = append(r.Headers, "authorization: Bearer "+tc.token)
			}
			// Spoofed identity headers from the client: the policy must remove or overwrite them.
			r.Headers = append(r.Headers, "x-subject: mallory", "x-user-id: mallory", "x-scopes: admin")
			creq, err := envoyreq.New(r)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := h.auth.Check(ctx, creq)
			if err != nil {
				t.Fatal(err)
			}
			got := summarise(resp)
			if got.status != tc.wantStatus || got.reason != tc.wantReason {
				t.Fatalf("got %d %q, want %d %q (body %s)", got.status, got.reason, tc.wantStatus, tc.wantReason, got.body)
			}
			for k, v := range tc.wantHeader {
				if !strings.Contains(got.headers[k], v) {
					t.Errorf("header %s = %q, want it to contain %q", k, got.headers[k], v)
				}
			}
			if got.status == 200 {
				assertMinimized(t, resp, got)
			} else if got.body == "" || strings.Contains(got.body, "acc-") || strings.Contains(got.body, "alice") {
				t.Errorf("deny body %q: want a JSON error without request details", got.body)
			}
		})
	}
}

// assertMinimized checks data minimization on an allow: the raw token and every client-supplied identity header are
// gone upstream unless the policy set its own value in their place.
func assertMinimized(t *testing.T, resp *authv3.CheckResponse, got outcome) {
	t.Helper()
	if !slices.Contains(got.removed, "authorization") {
		t.Errorf("authorization not removed: %v", got.removed)
	}
	for _, h := range []string{"x-subject", "x-user-id", "x-scopes"} {
		if _, set := got.headers[h]; !set && !slices.Contains(got.removed, h) {
			t.Errorf("client-supplied %s neither removed nor overwritten", h)
		}
		if got.headers[h] == "mallory" || got.headers[h] == "admin" {
			t.Errorf("spoofed %s passed through", h)
		}
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" && h.GetHeader().GetKey() != "" {
			t.Errorf("header %s set with %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), h.GetAppendAction())
		}
	}
}

// TestRouteTableMistakesStopTheStart copies the shipped library to disk with one misspelt requirement key and
// checks that the service refuses to start on it: a typo must never silently drop a requirement.
func TestRouteTableMistakesStopTheStart(t *testing.T) {
	dir := t.TempDir()
	err := fs.WalkDir(policies.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(policies.FS, path)
		if err != nil {
			return err
		}
		if path == "routes.yaml" {
			b = []byte(strings.Replace(string(b), "scopes:", "scope:", 1))
		}
		dst := filepath.Join(dir, "policies", path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {enabled: false}
policy: {paths: [policies], validation_query: data.authz.lib.routing.errors}
dev_issuer: {enabled: true, listen: 127.0.0.1:0, key_file: %s}
`, filepath.Join(dir, "key.pem"))
	cfg, err := config.Parse([]byte(yaml), "test.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(context.Background(), cfg, Options{})
	if err == nil {
		svc.close()
		t.Fatal("the service started on a route table with a misspelt key")
	}
	t.Logf("start refused: %v", err)
	if !strings.Contains(err.Error(), "scope") {
		t.Errorf("error %q does not name the mistake", err)
	}
}
