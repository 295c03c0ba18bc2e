package service

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/credentials/insecure"
)

// Two policies that answer every request differently, each split over a module and a data document, so that an
// answer mixing the two (one's rule with the other's data) would show.
const (
	policyA = `package envoy.authz

allow := {"allowed": true, "headers": {"x-rule": "a", "x-data": data.flip.version}}
`
	policyB = `package envoy.authz

allow := {
	"allowed": false,
	"http_status": 403,
	"body": "b",
	"headers": {"x-rule": "b", "x-data": data.flip.version},
	"dynamic_metadata": {"reason": "policy_b"},
}
`
	brokenPolicy = `package envoy.authz

allow := {"allowed": true, "headers": {"x-rule": 
`
)

func dataFor(version string) string { return fmt.Sprintf(`{"flip": {"version": %q}}`, version) }

// answer names the policy an outcome came from: "a", "b", or a description of what is wrong with it.
func answer(o outcome) string {
	switch {
	case o.status == 200 && o.headers["x-rule"] == "a" && o.headers["x-data"] == "a":
		return "a"
	case o.status == 403 && o.reason == "policy_b" && o.body == "b" && o.headers["x-rule"] == "b" && o.headers["x-data"] == "b":
		return "b"
	}
	return fmt.Sprintf("neither policy: %+v", o)
}

// reloadHarness runs the service on a policy directory with OnPolicyReload and the log recorded.
type reloadHarness struct {
	addr    string
	logs    *lockedBuffer
	reloads chan policyReload
}

type policyReload struct {
	revision string
	err      error
}

func startReloadService(t *testing.T, policyDir string) *reloadHarness {
	t.Helper()
	h := &reloadHarness{logs: &lockedBuffer{}, reloads: make(chan policyReload, 1000)}
	p := newIDP(t, newSigner(t, "k", "ES256"))
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
grace_period: 2s
policy: {paths: [%q]}
jwt:
  issuers:
    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}
`, policyDir, issuerA, p.jwksURI())
	h.addr = runService(t, yaml, t.TempDir(), Options{
		Logger:         slog.New(slog.NewTextHandler(h.logs, nil)),
		OnPolicyReload: func(revision string, err error) { h.reloads <- policyReload{revision, err} },
	})
	return h
}

// lastReload returns the last OnPolicyReload call once none has come for a second.
func (h *reloadHarness) lastReload(t *testing.T) policyReload {
	t.Helper()
	var last policyReload
	for {
		select {
		case last = <-h.reloads:
		case <-time.After(time.Second):
			return last
		}
	}
}

func TestPolicyHotReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.rego"), []byte(policyA))
	writeFile(t, filepath.Join(dir, "data.json"), []byte(dataFor("a")))
	h := startReloadService(t, dir)
	c := dial(t, h.addr, insecure.NewCredentials())
	current := func() string {
		t.Helper()
		resp, err := checkOnce(c, "/accounts")
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		return answer(summarise(resp))
	}
	waitAnswer := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for got := current(); got != want; got = current() {
			if time.Now().After(deadline) {
				t.Fatalf("answer still %q 5s after the change, want %q", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got := current(); got != "a" {
		t.Fatalf("at start: %q, want a", got)
	}

	// Policy B, written in place as a plain editor or `cp` would.
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(policyB), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(dataFor("b")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitAnswer("b")
	// The two files were written one after the other, so a reload may have read B's rule with A's data first;
	// the last successful reload is B.
	revB := h.lastReload(t)
	if revB.err != nil || revB.revision == "" {
		t.Fatalf("last reload before the broken policy: %+v, want B's revision", revB)
	}

	// A broken policy keeps B serving, and the compile error is logged and reported.
	writeFile(t, filepath.Join(dir, "policy.rego"), []byte(brokenPolicy))
	select {
	case r := <-h.reloads:
		if r.err == nil || !strings.Contains(r.err.Error(), "rego_parse_error") {
			t.Fatalf("reload of a broken policy reported %v, want a parse error", r.err)
		}
		if r.revision != revB.revision {
			t.Errorf("revision reported with the error = %s, want B's %s still serving", r.revision, revB.revision)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnPolicyReload not called for the broken policy")
	}
	for range 5 {
		if got := current(); got != "b" {
			t.Fatalf("with a broken policy on disk: %q, want b", got)
		}
	}
	out := h.logs.String()
	if !strings.Contains(out, "policy reload failed") || !strings.Contains(out, "rego_parse_error") {
		t.Errorf("log lacks the failed reload and its compile error:\n%s", out)
	}

	// Fixing the file is picked up as any other change.
	writeFile(t, filepath.Join(dir, "policy.rego"), []byte(policyA))
	writeFile(t, filepath.Join(dir, "data.json"), []byte(dataFor("a")))
	waitAnswer("a")
}

// TestPolicyHotReloadUnderLoad flips a ConfigMap-style directory between two policies while checks run: every
// answer is one policy's or the other's, never an error and never a mix.
func TestPolicyHotReloadUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := 0
	// swap re-points ..data at a fresh directory holding both files, as Kubernetes' atomic writer does, so each
	// revision on disk is whole.
	swap := func(rego, data string) {
		version++
		ts := fmt.Sprintf("..ts_%d", version)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string]string{"policy.rego": rego, "data.json": data} {
			if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if old != "" {
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		}
	}
	swap(policyA, dataFor("a"))
	for _, name := range []string{"policy.rego", "data.json"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	h := startReloadService(t, dir)

	const workers = 8
	var (
		seen    sync.Map // answer -> count
		checks  atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		failure atomic.Value
	)
	for range workers {
		c := dial(t, h.addr, insecure.NewCredentials())
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := checkOnce(c, "/accounts")
				if err != nil {
					failure.CompareAndSwap(nil, fmt.Sprintf("check error: %v", err))
					return
				}
				a := answer(summarise(resp))
				if a != "a" && a != "b" {
					failure.CompareAndSwap(nil, a)
					return
				}
				n, _ := seen.LoadOrStore(a, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				checks.Add(1)
			}
		})
	}

	// Flip until both answers were seen under load several times over, waiting for each flip to be served.
	flips := 0
	deadline := time.Now().Add(30 * time.Second)
	for flips < 6 && failure.Load() == nil {
		next, rego := "b", policyB
		if flips%2 == 1 {
			next, rego = "a", policyA
		}
		swap(rego, dataFor(next))
		select {
		case r := <-h.reloads:
			if r.err != nil {
				t.Fatalf("reload of a whole revision failed: %v", r.err)
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("flip %d not reloaded in time", flips+1)
		}
		flips++
	}
	close(stop)
	wg.Wait()
	if f := failure.Load(); f != nil {
		t.Fatal(f)
	}
	counts := map[string]int64{}
	seen.Range(func(k, v any) bool { counts[k.(string)] = v.(*atomic.Int64).Load(); return true })
	if counts["a"] == 0 || counts["b"] == 0 {
		t.Fatalf("answers %v over %d flips: want both policies served", counts, flips)
	}
	t.Logf("%d checks over %d flips: %v", checks.Load(), flips, counts)
}
