package service

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/finauthz/authz/authz/config"
)

const testPAN = "4111111111111111"

// lockedBuffer collects the service's log output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// observed is a running service with a gRPC client, and the Service itself for its admin address.
type observed struct {
	*harness
	svc      *Service
	stopOnce sync.Once
}

// startObserved runs the service configured by yaml in dir, like startServiceIn.
func startObserved(t testing.TB, yaml, dir string, opts Options) *observed {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "test.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	return startConfigured(t, cfg, opts)
}

func startConfigured(t testing.TB, cfg *config.Config, opts Options) *observed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h := &harness{cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(svc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	o := &observed{harness: h, svc: svc}
	t.Cleanup(func() {
		conn.Close()
		o.shutdown(t)
	})
	h.auth = authv3.NewAuthorizationClient(conn)
	h.health = healthpb.NewHealthClient(conn)
	return o
}

// shutdown stops the service and waits for Run to return; later calls do nothing.
func (o *observed) shutdown(t testing.TB) {
	o.stopOnce.Do(func() { o.stop(t) })
}

// policyDir holds testdata/policy.rego and the extra files given as name, content pairs.
func policyDir(t testing.TB, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("testdata", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "policy.rego", string(b))
	for i := 0; i+1 < len(files); i += 2 {
		if err := os.WriteFile(filepath.Join(dir, files[i]), []byte(files[i+1]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (o *observed) adminGet(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + o.svc.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (o *observed) metric(t testing.TB, series string) float64 {
	t.Helper()
	_, body := o.adminGet(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s is not in /metrics", series)
	return 0
}

func TestAdminListener(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	p := newIDP(t, key)
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
policy: {paths: [policy.rego]}
admin: {listen: "127.0.0.1:0", pprof: true}
jwt:
  issuers:
    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}
`, issuerA, p.jwksURI())
	o := startObserved(t, yaml, policyDir(t), Options{})
	o.waitServing(t)

	if code, body := o.adminGet(t, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := o.adminGet(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d while the gRPC health service is SERVING, want 200", code)
	}
	if code, _ := o.adminGet(t, "/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ = %d with admin.pprof, want 200", code)
	}
	alice := bearer(key.sign(t, claims(issuerA, "payments-api", "alice")))
	o.check(t, "GET", "/accounts", alice)
	o.check(t, "GET", "/accounts", nil)
	o.check(t, "GET", "/accounts", alice) // the same decision, served by the decision cache
	if got := o.metric(t, `authz_checks_total{decision="allow",reason="none"}`); got != 2 {
		t.Errorf("allowed checks = %v, want 2", got)
	}
	if got := o.metric(t, `authz_decision_cache_lookups_total{result="hit"}`); got != 1 {
		t.Errorf("decision cache hits = %v, want 1", got)
	}
	if got := o.metric(t, `authz_checks_total{decision="deny",reason="authentication_required"}`); got != 1 {
		t.Errorf("denied checks = %v, want 1", got)
	}
	if got := o.metric(t, `authz_jwks_fetches_total{issuer="`+issuerA+`",result="success"}`); got < 1 {
		t.Errorf("JWKS fetches = %v, want at least 1", got)
	}
	o.metric(t, `authz_jwks_keyset_age_seconds{issuer="`+issuerA+`"}`)
	o.metric(t, `authz_token_cache_misses_total`)
	o.metric(t, `authz_check_request_decode_fallbacks_total`)
	o.metric(t, `authz_checks_in_flight`)

	o.shutdown(t)
	if _, err := http.Get("http://" + o.svc.AdminAddr().String() + "/healthz"); err == nil {
		t.Error("the admin listener still answers after the service stopped")
	}
}

func TestAdminListenerOnItsDefaultAddressIsOptional(t *testing.T) {
	// Hold a port, as another instance on the same host would hold the default one.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	p := newIDP(t, newSigner(t, "ec-1", "ES256"))
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
policy: {paths: [policy.rego]}
admin: {listen: %q}
jwt:
  issuers:
    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}
`, lis.Addr().String(), issuerA, p.jwksURI())
	dir := policyDir(t)
	parse := func() *config.Config {
		cfg, err := config.Parse([]byte(yaml), "test.yaml", dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	cfg := parse()
	if svc, err := New(context.Background(), cfg, Options{}); err == nil {
		svc.close()
		t.Fatal("a configured admin address that is taken did not stop the start")
	} else if !strings.Contains(err.Error(), "admin.listen") {
		t.Errorf("error %q does not name admin.listen", err)
	}

	cfg = parse()
	cfg.Admin.ListenDefaulted = true // as if admin.listen were absent and the default were taken
	logs := &lockedBuffer{}
	o := startConfigured(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	o.waitServing(t)
	if o.svc.AdminAddr() != nil {
		t.Error("the service claims an admin listener on a taken port")
	}
	if !strings.Contains(logs.String(), "admin listener not started") {
		t.Error("running without the admin listener was not logged")
	}
}

// TestLogsNeverHoldTokensOrCardNumbers runs checks carrying tokens (valid, tampered, from an unknown issuer
// whose iss is a card number, and one in the query string), a card number in the path, the request id and a
// header, then scans the service's log and its decision log.
func TestLogsNeverHoldTokensOrCardNumbers(t *testing.T) {
	key := newSigner(t, "ec-1", "ES256")
	p := newIDP(t, key)
	dir := policyDir(t, "mask.rego", "package system.log\nmask contains \"/input/attributes/request/http/headers/x-api-key\"\n",
		"salt", "pepper-for-subjects-0123456789")
	decisions := filepath.Join(dir, "decisions.jsonl")
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
policy: {paths: [policy.rego, mask.rego]}
admin: {enabled: false}
log: {level: debug, format: json}
decision_log:
  enabled: true
  sink: file
  file: decisions.jsonl
  include_input: true
  include_path: true
  hash_subject: true
  subject_salt_file: salt
jwt:
  issuers:
    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}
`, issuerA, p.jwksURI())
	logs := &lockedBuffer{}
	h := startObserved(t, yaml, dir, Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	h.waitServing(t)

	valid := key.sign(t, claims(issuerA, "payments-api", "alice"))
	foreign := key.sign(t, claims("https://"+testPAN+".idp.test", "payments-api", "mallory"))
	const apiKey = "sk_live_5f2b9c1e0a7d4e3b"
	cardPath := "/cards/" + testPAN + "/limits?pan=" + testPAN
	headers := func(tok string) map[string]string {
		return map[string]string{
			"authorization": "Bearer " + tok, "x-request-id": "req-" + testPAN, "x-api-key": apiKey,
			"x-card": "4111 1111 1111 1111",
		}
	}
	h.check(t, "GET", cardPath, headers(valid))
	h.check(t, "GET", cardPath, headers(valid+"x"))
	h.check(t, "GET", cardPath, headers(foreign))
	h.check(t, "GET", "/public?access_token="+valid+"&card="+testPAN, map[string]string{"x-request-id": testPAN})
	h.shutdown(t) // writes the decision log

	b, err := os.ReadFile(decisions)
	if err != nil {
		t.Fatal(err)
	}
	service, decisionLog := logs.String(), string(b)
	if n := strings.Count(decisionLog, "\n"); n != 4 {
		t.Fatalf("decision log has %d records, want 4:\n%s", n, decisionLog)
	}
	if !strings.Contains(service, "check denied") || !strings.Contains(decisionLog, "****1111") {
		t.Fatal("the logs do not show the checks: the scan below would prove nothing")
	}
	for name, out := range map[string]string{"service log": service, "decision log": decisionLog} {
		for _, tok := range []string{valid, foreign} {
			for _, seg := range strings.Split(tok, ".") {
				if strings.Contains(out, seg[:16]) {
					t.Errorf("%s holds a piece of a token (%s...)", name, seg[:16])
				}
			}
		}
		for _, secret := range []string{testPAN, "4111 1111 1111 1111", apiKey, `"alice"`} {
			if strings.Contains(out, secret) {
				t.Errorf("%s holds %q", name, secret)
			}
		}
	}
	if t.Failed() {
		t.Logf("service log:\n%s\ndecision log:\n%s", service, decisionLog)
	}
}

// TestASlowDecisionLogSinkNeverSlowsChecks uploads decision logs to an endpoint that never answers: checks keep
// their latency, and what does not fit in the buffer is counted as dropped.
func TestASlowDecisionLogSinkNeverSlowsChecks(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	hung := newHungServer(t, release)
	key := newSigner(t, "ec-1", "ES256")
	p := newIDP(t, key)
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
policy: {paths: [policy.rego]}
admin: {listen: "127.0.0.1:0"}
decision_log:
  enabled: true
  sink: http
  buffer: 16
  http: {url: %s, batch_size: 4, flush_interval: 10ms, timeout: 1m, max_retries: 0}
jwt:
  issuers:
    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}
`, hung.URL, issuerA, p.jwksURI())
	o := startObserved(t, yaml, policyDir(t), Options{})
	t.Cleanup(unblock) // runs before the service's cleanup: lets the stop flush
	o.waitServing(t)
	auth := bearer(key.sign(t, claims(issuerA, "payments-api", "alice")))

	const n = 300
	took := make([]time.Duration, n)
	for i := range n {
		t0 := time.Now()
		o.check(t, "GET", "/accounts", auth)
		took[i] = time.Since(t0)
	}
	slices.Sort(took)
	if p99 := took[n*99/100]; p99 > decisionBound() {
		t.Errorf("p99 check latency %s with a hung decision log endpoint, want under %s", p99, decisionBound())
	}
	dropped := o.metric(t, `authz_decision_logs_dropped_total{reason="buffer_full"}`)
	if dropped < n-16-4 {
		t.Errorf("%v records counted as dropped, want at least %d of %d (buffer 16, one batch of 4 in flight)", dropped, n-16-4, n)
	}
	if written := o.metric(t, `authz_decision_logs_written_total`); written != 0 {
		t.Errorf("%v records written to an endpoint that never answered", written)
	}
	unblock()
}

// newHungServer accepts uploads and answers none until release closes.
func newHungServer(t *testing.T, release <-chan struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}
