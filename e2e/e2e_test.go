package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/finauthz/authz/e2e/echo"
	"github.com/finauthz/authz/e2e/envoyproxy"
)

// spoofed are identity headers a client sends to pass as someone else; the service owns these names and none of
// these values may reach the application.
var spoofed = http.Header{
	"X-User-Id":        {"mallory"},
	"X-Subject":        {"mallory"},
	"X-Client-Id":      {"evil-app"},
	"X-Scopes":         {"admin:all"},
	"X-Data-Fields":    {"*"},
	"X-Forwarded-User": {"mallory"},
}

// routeTable is the part of policies/routes.yaml the expectations are computed from.
type routeTable struct {
	Authz struct {
		Routes []struct {
			ID         string   `yaml:"id"`
			DataFields []string `yaml:"data_fields"`
		} `yaml:"routes"`
	} `yaml:"authz"`
}

// dataFields is the x-data-fields value the policy sets for a route: its data_fields, comma-separated.
func (rt routeTable) dataFields(t *testing.T, id string) string {
	t.Helper()
	for _, r := range rt.Authz.Routes {
		if r.ID == id {
			return strings.Join(r.DataFields, ",")
		}
	}
	t.Fatalf("policies/routes.yaml has no route %s", id)
	return ""
}

func loadRouteTable(t *testing.T) routeTable {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "policies", "routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rt routeTable
	if err := yaml.Unmarshal(b, &rt); err != nil {
		t.Fatalf("policies/routes.yaml: %v", err)
	}
	return rt
}

// tokens are minted once per service process with the real `authz token` command.
type tokens map[string]string

func mintTokens(t *testing.T, p *authzProc) tokens {
	t.Helper()
	reader := []string{"--sub", "alice", "--client-id", "e2e-app", "--scope", "accounts:read balances:read profile:read",
		"--claim", `accounts=["acc-1","acc-2"]`}
	specs := map[string][]string{
		"reader": reader,
		"tx":     {"--sub", "alice", "--client-id", "e2e-app", "--scope", "transactions:read", "--claim", `accounts=["acc-1"]`},
		"payer":  {"--sub", "alice", "--client-id", "e2e-app", "--scope", "payments:write"},
		"payer-sca": {"--sub", "alice", "--client-id", "e2e-app", "--scope", "payments:write",
			"--claim", "acr=urn:openbanking:psd2:sca"},
		"payments-reader": {"--sub", "alice", "--client-id", "e2e-app", "--scope", "payments:read"},
		"expired":         append(slices.Clone(reader), "--claim", "exp=1000000000"),
		"wrong-audience":  append(slices.Clone(reader), "--aud", "another-api"),
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	toks := tokens{}
	for name, args := range specs {
		wg.Go(func() {
			tok, err := p.tryMint(args...)
			mu.Lock()
			defer mu.Unlock()
			toks[name] = tok
			errs = append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// A token whose signature was changed after minting.
	r := toks["reader"]
	last := "A"
	if strings.HasSuffix(r, "A") {
		last = "B"
	}
	toks["tampered"] = r[:len(r)-2] + last + r[len(r)-1:]
	return toks
}

// scenario is one request through the sidecar and what must come of it.
type scenario struct {
	name   string
	method string
	path   string
	// token names a minted token sent as "Bearer <token>"; auth, when set, is the whole Authorization value.
	token  string
	auth   []string
	header http.Header
	body   string
	// cert is the client certificate to present; mtls sends the request to the mTLS listener even without one.
	cert *tls.Certificate
	mtls bool
	// noSpoof leaves out the spoofed identity headers.
	noSpoof bool
	// skip, when it returns a reason, skips the scenario for this sidecar configuration.
	skip func(envoyproxy.Config) string

	want int
	// wantError is the "error" member of the JSON body of a denial; "" checks nothing.
	wantError string
	// wantHeader are response headers the client must get (a prefix of the value when it ends in "*").
	wantHeader map[string]string
	// upstream are headers the application must receive: "" means it must not receive the header at all.
	// Only for scenarios that reach it (want 200).
	upstream map[string]string
	// check inspects what the application received.
	check func(t *testing.T, got echo.Request)
}

const bearerInvalid = `Bearer error="invalid_token"`

func scenarios(t *testing.T, rt routeTable, sc envoyproxy.Config, keys *pki) []scenario {
	bodyLimit := 0
	if sc.WithRequestBody != nil && sc.WithRequestBody.AllowPartialMessage {
		bodyLimit = sc.WithRequestBody.MaxRequestBytes
	}
	needPartialBody := func(envoyproxy.Config) string {
		if bodyLimit == 0 {
			return "the sidecar does not send partial bodies"
		}
		return ""
	}
	payment := func(amount string) string {
		return `{"amount":"` + amount + `","currency":"EUR","creditor":"GB33BUKB20201555555555"}`
	}
	devicePosture := http.Header{"X-Device-Posture": {"managed"}, "X-Risk-Score": {"10"}, "Content-Type": {"application/json"}}
	withHeaders := func(h http.Header, kv ...string) http.Header {
		out := h.Clone()
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}

	return []scenario{
		// Allowed: only what the route needs reaches the application.
		{
			name:   "account list: token and spoofed identity headers are stripped, minimal identity set",
			method: http.MethodGet, path: "/accounts", token: "reader",
			want: 200,
			upstream: map[string]string{
				"authorization": "", "x-user-id": "", "x-forwarded-user": "",
				"x-subject": "alice", "x-client-id": "e2e-app", "x-scopes": "accounts:read",
				"x-data-fields": rt.dataFields(t, "accounts.list"),
			},
		},
		{
			name:   "consented account is readable",
			method: http.MethodGet, path: "/accounts/acc-1", token: "reader",
			want: 200,
			upstream: map[string]string{"x-subject": "alice", "x-scopes": "accounts:read",
				"x-data-fields": rt.dataFields(t, "accounts.read")},
		},
		{
			name:   "balances get only the balances scope and fields",
			method: http.MethodGet, path: "/accounts/acc-2/balances", token: "reader",
			want:     200,
			upstream: map[string]string{"x-scopes": "balances:read", "x-data-fields": rt.dataFields(t, "balances.read")},
		},
		{
			name:   "query string reaches the application as sent",
			method: http.MethodGet, path: "/accounts/acc-1/transactions?from=2024-01-01&limit=10&q=caf%C3%A9", token: "tx",
			want: 200,
			check: func(t *testing.T, got echo.Request) {
				if got.Path != "/accounts/acc-1/transactions" || got.RawQuery != "from=2024-01-01&limit=10&q=caf%C3%A9" {
					t.Errorf("application got %s?%s", got.Path, got.RawQuery)
				}
			},
		},
		{
			name:   "own customer profile is readable",
			method: http.MethodGet, path: "/customers/alice", token: "reader",
			want: 200, upstream: map[string]string{"x-subject": "alice"},
		},
		{
			name:   "payment below the step-up threshold is allowed with its body intact",
			method: http.MethodPost, path: "/payments", token: "payer", header: devicePosture, body: payment("50.00"),
			want: 200,
			check: func(t *testing.T, got echo.Request) {
				if got.Body != payment("50.00") {
					t.Errorf("application got body %q", got.Body)
				}
			},
		},
		{
			name:   "large payment with strong authentication is allowed",
			method: http.MethodPost, path: "/payments", token: "payer-sca", header: devicePosture, body: payment("5000.00"),
			want: 200,
		},
		{
			name:   "payment status with any_of scope",
			method: http.MethodGet, path: "/payments/p-123", token: "payments-reader",
			want: 200, upstream: map[string]string{"x-scopes": "payments:read"},
		},
		{
			name:   "public route needs no token and strips spoofed identity",
			method: http.MethodGet, path: "/fx/rates",
			want:     200,
			upstream: map[string]string{"authorization": "", "x-subject": "", "x-client-id": "", "x-scopes": "", "x-user-id": ""},
		},
		{
			name:   "health probe reaches the application from loopback without a token",
			method: http.MethodGet, path: "/healthz", noSpoof: true,
			want: 200,
		},

		// Authentication failures: 401 with an RFC 6750 challenge, never upstream.
		{
			name:   "no token on a protected route asks for one",
			method: http.MethodGet, path: "/accounts",
			want: 401, wantError: "authentication_required", wantHeader: map[string]string{"www-authenticate": "Bearer*"},
		},
		{
			name:   "garbage token is invalid_token",
			method: http.MethodGet, path: "/accounts", auth: []string{"Bearer not-a-jwt"},
			want: 401, wantError: "invalid_token", wantHeader: map[string]string{"www-authenticate": bearerInvalid},
		},
		{
			name:   "token with a changed signature is invalid_token",
			method: http.MethodGet, path: "/accounts", token: "tampered",
			want: 401, wantError: "invalid_token", wantHeader: map[string]string{"www-authenticate": bearerInvalid},
		},
		{
			name:   "expired token is invalid_token",
			method: http.MethodGet, path: "/accounts", token: "expired",
			want: 401, wantError: "invalid_token", wantHeader: map[string]string{"www-authenticate": bearerInvalid},
		},
		{
			name:   "token for another audience is invalid_token",
			method: http.MethodGet, path: "/accounts", token: "wrong-audience",
			want: 401, wantError: "invalid_token", wantHeader: map[string]string{"www-authenticate": bearerInvalid},
		},
		{
			name:   "invalid token is refused even on a public route",
			method: http.MethodGet, path: "/fx/rates", auth: []string{"Bearer not-a-jwt"},
			want: 401, wantError: "invalid_token", wantHeader: map[string]string{"www-authenticate": bearerInvalid},
		},
		{
			name:   "two authorization headers are refused rather than one picked",
			method: http.MethodGet, path: "/accounts", auth: []string{"Bearer not-a-jwt", "Bearer another"},
			want: 401, wantError: "invalid_token",
		},

		// Authorization failures: 403, never upstream.
		{
			name:   "missing scope is insufficient_scope naming the route's scope",
			method: http.MethodGet, path: "/accounts/acc-1/transactions", token: "reader",
			want: 403, wantError: "insufficient_scope",
			wantHeader: map[string]string{"www-authenticate": `Bearer error="insufficient_scope", scope="transactions:read"`},
		},
		{
			name:   "account outside the consent is not granted",
			method: http.MethodGet, path: "/accounts/acc-9", token: "reader",
			want: 403, wantError: "resource_not_granted",
		},
		{
			name:   "another customer's profile is not granted",
			method: http.MethodGet, path: "/customers/bob", token: "reader",
			want: 403, wantError: "resource_not_granted",
		},
		{
			name:   "unknown route is denied",
			method: http.MethodGet, path: "/internal/debug/vars", token: "reader",
			want: 403, wantError: "route_not_found",
		},
		{
			name:   "known path with another method is denied",
			method: http.MethodDelete, path: "/accounts/acc-1", token: "reader",
			want: 403, wantError: "route_not_found",
		},
		{
			name:   "unmanaged device cannot pay",
			method: http.MethodPost, path: "/payments", token: "payer",
			header: withHeaders(devicePosture, "X-Device-Posture", "jailbroken"), body: payment("50.00"),
			want: 403, wantError: "device_posture",
		},
		{
			name:   "risky payment is refused",
			method: http.MethodPost, path: "/payments", token: "payer",
			header: withHeaders(devicePosture, "X-Risk-Score", "90"), body: payment("50.00"),
			want: 403, wantError: "risk_too_high",
		},
		{
			name:   "large payment without strong authentication needs step-up",
			method: http.MethodPost, path: "/payments", token: "payer", header: devicePosture, body: payment("5000.00"),
			want: 401, wantError: "step_up_required",
			wantHeader: map[string]string{"www-authenticate": `Bearer error="insufficient_user_authentication"*`},
		},
		{
			name:   "a body cut at the buffer limit cannot prove a small amount",
			method: http.MethodPost, path: "/payments", token: "payer", header: devicePosture,
			body: `{"amount":"50.00","currency":"EUR","memo":"` + strings.Repeat("m", 9000) + `"}`,
			skip: needPartialBody,
			want: 401, wantError: "step_up_required",
		},
		{
			name:   "a client's partial-body header cannot make a cut body look whole",
			method: http.MethodPost, path: "/payments", token: "payer",
			header: withHeaders(devicePosture, "X-Envoy-Auth-Partial-Body", "false"),
			body:   `{"amount":"50.00","currency":"EUR","memo":"` + strings.Repeat("m", 9000) + `"}`,
			skip:   needPartialBody,
			want:   401, wantError: "step_up_required",
		},
		{
			name:   "admin route without a client certificate needs mTLS",
			method: http.MethodGet, path: "/admin/jobs", token: "reader",
			want: 403, wantError: "mtls_required",
		},
		{
			name:   "a forged x-forwarded-client-cert does not stand in for mTLS",
			method: http.MethodGet, path: "/admin/jobs",
			header: http.Header{"X-Forwarded-Client-Cert": {"By=spiffe://bank.internal/ns/api/sa/sidecar;URI=spiffe://bank.internal/ns/ops/sa/break-glass"}},
			want:   403, wantError: "mtls_required",
		},
		{
			name:   "mTLS principal outside the ops namespace is not allowed",
			method: http.MethodGet, path: "/admin/jobs", cert: &keys.payments,
			want: 403, wantError: "principal_not_allowed",
		},
		{
			name:   "ops principal from outside the admin network is refused",
			method: http.MethodGet, path: "/admin/jobs", cert: &keys.ops,
			want: 403, wantError: "network_not_allowed",
		},
		{
			name:   "mTLS listener without a certificate needs mTLS",
			method: http.MethodGet, path: "/admin/jobs", mtls: true,
			want: 403, wantError: "mtls_required",
		},

		// The sidecar's own request hygiene, before the service is asked.
		{
			name:   "a header with an underscore is rejected",
			method: http.MethodGet, path: "/accounts", token: "reader", header: http.Header{"X_user_id": {"mallory"}},
			skip: func(c envoyproxy.Config) string {
				if c.HeadersWithUnderscores != envoyproxy.RejectUnderscores {
					return "the sidecar does not reject underscores"
				}
				return ""
			},
			want: 400,
		},
		{
			name:   "an escaped slash is rejected",
			method: http.MethodGet, path: "/accounts/acc-1%2F..%2Facc-9", token: "reader",
			skip: func(c envoyproxy.Config) string {
				if !c.RejectEscapedSlashes {
					return "the sidecar does not reject escaped slashes"
				}
				return ""
			},
			want: 400,
		},
		{
			name:   "dot segments are resolved before the check",
			method: http.MethodGet, path: "/fx/rates/../../accounts/acc-9", token: "reader",
			skip: func(c envoyproxy.Config) string {
				if !c.NormalizePath {
					return "the sidecar does not normalise paths"
				}
				return ""
			},
			want: 403, wantError: "resource_not_granted",
		},
		{
			name:   "client x-envoy-* headers never reach the application",
			method: http.MethodGet, path: "/accounts", token: "reader",
			header: http.Header{"X-Envoy-Original-Path": {"/admin/jobs"}, "X-Envoy-Internal": {"true"}},
			skip: func(c envoyproxy.Config) string {
				if !slices.Contains(c.RemoveHeaderPrefixes, "x-envoy-") {
					return "the sidecar keeps x-envoy-* headers"
				}
				return ""
			},
			want:     200,
			upstream: map[string]string{"x-envoy-original-path": "", "x-envoy-internal": ""},
		},
	}
}

func TestScenarios(t *testing.T) {
	needBinary(t)
	authz := startAuthz(t)
	toks := mintTokens(t, authz)
	up, upAddr := startUpstream(t)
	keys := newPKI(t)
	setup := sidecarSetup{authzAddr: authz.addr, upstreamAddr: upAddr, pki: keys}
	sc := sidecarConfig(t, setup)
	table := scenarios(t, loadRouteTable(t), sc, keys)

	forEachVariant(t, func(t *testing.T, v variant) {
		fe := v.start(t, setup)
		for _, s := range table {
			t.Run(s.name, func(t *testing.T) {
				if s.skip != nil {
					if why := s.skip(sc); why != "" {
						t.Skip(why)
					}
				}
				s.run(t, fe, up, toks, sc)
			})
		}
	})
}

var plainClient = &http.Client{Timeout: 30 * time.Second}

func newRequestID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "e2e-" + hex.EncodeToString(b)
}

func (s scenario) run(t *testing.T, fe frontend, up *echo.Server, toks tokens, sc envoyproxy.Config) {
	base, client := fe.baseURL(), plainClient
	if s.cert != nil || s.mtls {
		var ok bool
		if base, client, ok = fe.mtls(s.cert); !ok {
			t.Skip("this sidecar's listener is plaintext: no client certificate reaches it")
		}
		defer client.CloseIdleConnections()
	}
	var body io.Reader
	if s.body != "" {
		body = strings.NewReader(s.body)
	}
	req, err := http.NewRequest(s.method, base+s.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if !s.noSpoof {
		for k, v := range spoofed {
			req.Header[k] = v
		}
	}
	for k, v := range s.header {
		req.Header[k] = v
	}
	switch {
	case s.auth != nil:
		req.Header["Authorization"] = s.auth
	case s.token != "":
		req.Header.Set("Authorization", "Bearer "+toks[s.token])
	}
	id := newRequestID(t)
	req.Header.Set("X-Request-Id", id)

	before := up.Count()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", describe(s.method, s.path), err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != s.want {
		t.Fatalf("%s: status %d, want %d; body %q", describe(s.method, s.path), resp.StatusCode, s.want, got)
	}
	for name, want := range s.wantHeader {
		have := resp.Header.Get(name)
		if p, ok := strings.CutSuffix(want, "*"); ok && strings.HasPrefix(have, p) {
			continue
		}
		if have != want {
			t.Errorf("response %s = %q, want %q", name, have, want)
		}
	}
	if s.wantError != "" {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(got, &e); err != nil || e.Error != s.wantError {
			t.Errorf("body %q, want {\"error\":%q}", got, s.wantError)
		}
	}
	// Requests the connection manager rejects (400) are answered before an id is assigned.
	if sc.RequestIDInResponse && sc.PreserveExternalRequestID && s.want != http.StatusBadRequest {
		if have := resp.Header.Get("X-Request-Id"); have != id {
			t.Errorf("response x-request-id %q, want the client's %q", have, id)
		}
	}

	after := up.Count()
	if s.want != http.StatusOK {
		if after != before {
			t.Fatalf("a %d reached the application (%d requests)", s.want, after-before)
		}
		if resp.Header.Get(echo.MarkerHeader) != "" {
			t.Error("the denial came from the application")
		}
		return
	}
	if after != before+1 {
		t.Fatalf("the application received %d requests, want 1", after-before)
	}
	rec, _ := up.Last()
	if sc.PreserveExternalRequestID && rec.Get("x-request-id") != id {
		t.Errorf("application x-request-id %q, want the client's %q", rec.Get("x-request-id"), id)
	}
	if !s.noSpoof {
		for k, vs := range spoofed {
			name := strings.ToLower(k)
			for _, v := range rec.Header[name] {
				if v == vs[0] {
					t.Errorf("the spoofed %s: %s reached the application", name, v)
				}
			}
			if n := len(rec.Header[name]); n > 1 {
				t.Errorf("the application received %d %s headers: %q", n, name, rec.Header[name])
			}
		}
	}
	for name, want := range s.upstream {
		vs, ok := rec.Header[name]
		switch {
		case want == "" && ok:
			t.Errorf("the application received %s: %s, want none", name, shown(name, vs))
		case want != "" && !slices.Equal(vs, []string{want}):
			t.Errorf("the application received %s: %s, want %q", name, shown(name, vs), want)
		}
	}
	if s.check != nil {
		s.check(t, rec)
	}
}

// TestServiceDownFailsClosed kills the service (SIGKILL, no goodbye): every checked request is then answered
// with the sidecar's status_on_error and none reaches the application; the health probe route, which the sidecar
// exempts from the check, still does.
func TestServiceDownFailsClosed(t *testing.T) {
	t.Parallel()
	needBinary(t)
	forEachVariant(t, func(t *testing.T, v variant) {
		authz := startAuthz(t)
		reader := authz.mint(t, "--sub", "alice", "--scope", "accounts:read", "--claim", `accounts=["acc-1"]`)
		up, upAddr := startUpstream(t)
		setup := sidecarSetup{authzAddr: authz.addr, upstreamAddr: upAddr, pki: newPKI(t)}
		sc := sidecarConfig(t, setup)
		fe := v.start(t, setup)

		get := func(path string) int {
			t.Helper()
			req, err := http.NewRequest(http.MethodGet, fe.baseURL()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+reader)
			resp, err := plainClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		if got := get("/accounts/acc-1"); got != http.StatusOK {
			t.Fatalf("before the kill: status %d, want 200", got)
		}
		if err := authz.signal(t, syscall.SIGKILL, 10*time.Second); err == nil {
			t.Fatal("authz serve exited cleanly on SIGKILL")
		}
		want := sc.StatusOnError
		if want == 0 {
			want = http.StatusForbidden
		}
		before := up.Count()
		for _, path := range []string{"/accounts/acc-1", "/fx/rates", "/payments/p-1"} {
			if got := get(path); got != want {
				t.Errorf("GET %s with the service down: status %d, want status_on_error %d", path, got, want)
			}
		}
		if n := up.Count() - before; n != 0 {
			t.Errorf("%d requests reached the application unchecked", n)
		}
		if exempt := exemptHealthRoute(sc); exempt {
			if got := get("/healthz"); got != http.StatusOK {
				t.Errorf("GET /healthz with the service down: status %d, want 200 (the route skips the check)", got)
			}
		}
	})
}

// exemptHealthRoute reports whether the sidecar skips the check for GET /healthz.
func exemptHealthRoute(sc envoyproxy.Config) bool {
	for _, r := range sc.Routes {
		if r.Path == "/healthz" {
			return r.DisableAuthz
		}
	}
	return false
}

// TestSIGTERMExitsZero stops the service as Kubernetes does and checks that it drains and exits with status 0.
func TestSIGTERMExitsZero(t *testing.T) {
	t.Parallel()
	needBinary(t)
	authz := startAuthz(t)
	err := authz.signal(t, syscall.SIGTERM, 30*time.Second)
	if err != nil {
		t.Fatalf("authz serve exited with %v after SIGTERM, want status 0\n%s", err, authz.output.String())
	}
	if code := authz.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

// shown formats header values for a failure message, leaving credentials out.
func shown(name string, vs []string) string {
	if name == "authorization" {
		return fmt.Sprintf("%d credential(s)", len(vs))
	}
	return fmt.Sprintf("%q", vs)
}
