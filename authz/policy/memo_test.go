package policy

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/finauthz/authz/authz/cache"
	"github.com/finauthz/authz/authz/internal/clocktest"
	"github.com/finauthz/authz/policies"
)

// engineOf returns an engine serving one policy module, evaluated as written
// unless partial is set.
func engineOf(t testing.TB, module string, partial bool, cfg Config) *Engine {
	t.Helper()
	cfg.FS = fstest.MapFS{"policy.rego": &fstest.MapFile{Data: []byte(module)}}
	cfg.Paths = []string{"."}
	cfg.Query = "data.test.allow"
	cfg.PartialEval = PartialEvalNever
	if partial {
		cfg.PartialEval = PartialEvalAlways
	}
	return newEngine(t, cfg)
}

func TestInputAnalysis(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		module string
		want   []string // input paths; nil with off set
		off    string   // a substring of why the cache is off
		// partial is want after partial evaluation, when it differs: inlining
		// narrows what a reference reads, and evaluates what depends on data.
		partial []string
	}{
		{
			name:   "references with constant keys are their own paths",
			module: `allow if { input.attributes.request.http.method == "GET"; input.parsed_path[0] == "accounts" }`,
			want:   []string{"input.attributes.request.http.method", "input.parsed_path[0]"},
		},
		{
			name:   "a variable key depends on everything below the constant part",
			module: `allow if { some name; input.headers[name] == "x" }`,
			want:   []string{"input.headers"},
		},
		{
			name:   "a path below another is covered by it",
			module: `allow if { input.token.payload.sub == "a"; count(input.token) > 0 }`,
			want:   []string{"input.token"},
		},
		{
			name:   "object.get with a constant path reads that path",
			module: `allow if object.get(input, ["attributes", "source", "principal"], "") == "spiffe://x"`,
			want:   []string{`input.attributes.source.principal`},
		},
		{
			name:    "object.get with a computed path element reads the constant part",
			module:  `allow if { some k in ["a", "b"]; object.get(input, ["headers", k], "") == "x" }`,
			want:    []string{"input.headers"},
			partial: []string{"input.headers.a", "input.headers.b"},
		},
		{
			name:    "input passed whole to a function is the whole input",
			module:  "allow if f(input)\nf(x) if x.a == 1",
			want:    []string{"input"},
			partial: []string{"input.a"},
		},
		{
			name:   "rules reached through other rules and functions count",
			module: "allow if ok(1)\nok(n) if { n == 1; h }\nh if input.headers.x == \"y\"",
			want:   []string{"input.headers.x"},
		},
		{
			name:   "rules not reached from the query do not count",
			module: "allow if input.a == 1\nunused if input.b == 2",
			want:   []string{"input.a"},
		},
		{
			name:   "replacing input with `with` turns the cache off",
			module: "allow if inner with input as {\"a\": 1}\ninner if input.a == 1",
			off:    "with",
		},
		{
			name:    "replacing data with `with` turns the cache off",
			module:  "allow if inner with data.x as 1\ninner if data.x == 1",
			off:     "with",
			partial: []string{},
		},
	}
	for _, tc := range tests {
		for _, partial := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/partial=%v", tc.name, partial), func(t *testing.T) {
				t.Parallel()
				e := engineOf(t, "package test\n"+tc.module, partial, Config{})
				deps := e.current.Load().deps
				want, off := tc.want, tc.off
				if partial && tc.partial != nil {
					want, off = tc.partial, ""
				}
				if off != "" {
					if !strings.Contains(deps.off, off) {
						t.Errorf("off = %q, want it to mention %q (paths %v)", deps.off, off, deps.paths)
					}
					return
				}
				var got []string
				for _, p := range deps.paths {
					got = append(got, p.String())
				}
				if deps.off != "" || !slices.Equal(got, want) {
					t.Errorf("paths = %q (off %q), want %q", got, deps.off, want)
				}
			})
		}
	}
}

// requestInput is an input shaped like the service's, with a request id and
// trace header that differ per request and that the shipped policy never
// reads.
func requestInput(t testing.TB, path, method, device string, token map[string]any, requestID string) ast.Value {
	t.Helper()
	segments := []any{}
	for s := range strings.SplitSeq(strings.TrimPrefix(path, "/"), "/") {
		segments = append(segments, s)
	}
	headers := map[string]any{
		"x-request-id": requestID,
		"traceparent":  "00-" + requestID + "-01",
		"user-agent":   "bank-app/7.1",
	}
	if device != "" {
		headers["x-device-posture"] = device
	}
	in := map[string]any{
		"attributes": map[string]any{
			"source": map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "203.0.113.7", "portValue": 40000}}},
			"request": map[string]any{"http": map[string]any{
				"id": requestID, "method": method, "path": path, "headers": headers,
			}},
		},
		"parsed_path":    segments,
		"parsed_query":   map[string]any{},
		"parsed_body":    nil,
		"truncated_body": false,
	}
	if token != nil {
		in["token"] = map[string]any{"header": map[string]any{"alg": "ES256"}, "payload": token}
	}
	return mustInput(t, in)
}

func TestDecisionCacheServesRequestsThatDifferOnlyInWhatThePolicyDoesNotRead(t *testing.T) {
	t.Parallel()
	cfg := Config{FS: policies.FS, Paths: []string{"."}, Query: policies.Query, ValidationQuery: policies.ValidationQuery}
	e := newEngine(t, cfg)
	off := cfg
	off.DecisionCacheSize = -1
	ref := newEngine(t, off)

	now := time.Now().Unix()
	alice := map[string]any{
		"iss": "https://issuer.test", "sub": "alice", "exp": now + 600, "iat": now,
		"scope": "accounts:read transactions:read payments:write", "accounts": []any{"acc-123"},
	}
	mallory := map[string]any{
		"iss": "https://issuer.test", "sub": "mallory", "exp": now + 600, "iat": now,
		"scope": "accounts:read transactions:read", "accounts": []any{"acc-999"},
	}
	type request struct {
		path, method, device string
		token                map[string]any
	}
	requests := []request{
		{"/accounts/acc-123/transactions", "GET", "", alice},
		{"/accounts/acc-123/transactions", "GET", "", mallory}, // another token: resource_not_granted
		{"/accounts/acc-124/transactions", "GET", "", alice},   // another account
		{"/accounts/acc-123/transactions", "POST", "", alice},  // another method
		{"/accounts/acc-123/transactions", "GET", "", nil},     // no token
		{"/payments", "POST", "managed", alice},
		{"/payments", "POST", "jailbroken", alice}, // the device header is read
		{"/payments", "POST", "", alice},
		{"/fx/rates", "GET", "", nil},
	}
	stats := e.DecisionCache()
	for round := range 3 {
		for i, r := range requests {
			// A new request id every time: the policy never reads it.
			in := requestInput(t, r.path, r.method, r.device, r.token, fmt.Sprintf("req-%d-%d", round, i))
			got, err := e.Eval(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ref.Eval(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			got.Revision, want.Revision = "", ""
			if fmt.Sprint(*got) != fmt.Sprint(*want) {
				t.Errorf("round %d, %s %s: cached engine decided\n%+v\nthe engine without a cache\n%+v", round, r.method, r.path, *got, *want)
			}
		}
	}
	hits, misses := stats.Hits.Load(), stats.Misses.Load()
	if n := uint64(len(requests)); misses != n || hits != 2*n {
		t.Errorf("hits, misses = %d, %d; want %d, %d (every request once evaluated, then served)", hits, misses, 2*n, n)
	}
	if ref.DecisionCache().Hits.Load() != 0 {
		t.Error("the engine with the cache off served a cached decision")
	}
}

func TestDecisionCacheAgreesWithEvaluationOnTheCorpus(t *testing.T) {
	t.Parallel()
	cfg := Config{FS: policies.FS, Paths: []string{"."}, Query: policies.Query}
	e := newEngine(t, cfg)
	cfg.DecisionCacheSize = -1
	ref := newEngine(t, cfg)
	inputs := corpus(400, time.Now())
	for round := range 2 {
		for _, x := range inputs {
			in := mustInput(t, x)
			got, gotErr := e.Eval(t.Context(), in)
			want, wantErr := ref.Eval(t.Context(), in)
			if (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("round %d, input %v: error %v, without the cache %v", round, in, gotErr, wantErr)
			}
			if gotErr == nil && fmt.Sprint(*got) != fmt.Sprint(*want) {
				t.Fatalf("round %d, input %v:\ncached %+v\nwithout the cache %+v", round, in, *got, *want)
			}
		}
	}
	if e.DecisionCache().Hits.Load() == 0 {
		t.Error("the second round was never served from the cache")
	}
}

func TestDecisionsThatReadTheClockAreNotCached(t *testing.T) {
	t.Parallel()
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial=%v", partial), func(t *testing.T) {
			t.Parallel()
			e := engineOf(t, `package test
allow := {"allowed": true, "headers": {"x-at": sprintf("%d", [time.now_ns()])}} if input.clock
allow := {"allowed": true} if not input.clock
`, partial, Config{})
			seen := map[string]bool{}
			for range 3 {
				d, err := e.Eval(t.Context(), ast.MustParseTerm(`{"clock": true}`).Value)
				if err != nil {
					t.Fatal(err)
				}
				seen[d.Headers[0].Value] = true
				time.Sleep(time.Millisecond) // the clock must move for the values to differ
			}
			if len(seen) != 3 {
				t.Errorf("three evaluations reading the clock gave %d distinct values: a decision was cached", len(seen))
			}
			stats := e.DecisionCache()
			if stats.Hits.Load() != 0 || stats.Uncacheable.Load() != 3 {
				t.Errorf("hits %d, uncacheable %d; want 0, 3", stats.Hits.Load(), stats.Uncacheable.Load())
			}
			// The same policy's decisions that do not read the clock are cached.
			for range 2 {
				if _, err := e.Eval(t.Context(), ast.MustParseTerm(`{"clock": false}`).Value); err != nil {
					t.Fatal(err)
				}
			}
			if stats.Hits.Load() != 1 {
				t.Errorf("hits = %d after two evaluations that do not read the clock, want 1", stats.Hits.Load())
			}
		})
	}
}

func TestDecisionCacheIsBoundedAndExpires(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Unix(2_000_000_000, 0))
	e := engineOf(t, `package test
allow if input.n >= 0
`, false, Config{DecisionCacheSize: 16, DecisionCacheTTL: time.Minute, now: clk.Now})
	for i := range 200 {
		if _, err := e.Eval(t.Context(), ast.MustParseTerm(fmt.Sprintf(`{"n": %d}`, i)).Value); err != nil {
			t.Fatal(err)
		}
	}
	m := e.current.Load().memo
	if n := m.m.Len(); n > 16 {
		t.Errorf("the cache holds %d decisions, size 16", n)
	}
	in := ast.MustParseTerm(`{"n": 1000}`).Value
	for range 2 {
		if _, err := e.Eval(t.Context(), in); err != nil {
			t.Fatal(err)
		}
	}
	hits := e.DecisionCache().Hits.Load()
	if hits != 1 {
		t.Fatalf("hits = %d, want 1", hits)
	}
	clk.Advance(time.Minute)
	if _, err := e.Eval(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if e.DecisionCache().Hits.Load() != hits {
		t.Error("a decision was served after its TTL")
	}
}

// Decisions made together expire spread over the last fifth of the TTL, never after it.
func TestDecisionCacheSpreadsExpiries(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{time.Minute, 1000 * time.Hour} {
		m := &memo{ttl: ttl}
		var lo, hi time.Duration
		for i := range 1000 {
			k := cache.Key(sha256.Sum256([]byte(strconv.Itoa(i))))
			d := m.lifetime(&k)
			if d > ttl || d < ttl-ttl/ttlSpread {
				t.Fatalf("TTL %v: lifetime %v outside [%v, %v]", ttl, d, ttl-ttl/ttlSpread, ttl)
			}
			if i == 0 || d < lo {
				lo = d
			}
			hi = max(hi, d)
			if again := m.lifetime(&k); again != d {
				t.Fatalf("TTL %v: the same key lives %v, then %v", ttl, d, again)
			}
		}
		// A fifth of the TTL, less the gaps 1000 random points leave at its ends.
		if spread := hi - lo; spread < ttl/ttlSpread*9/10 {
			t.Errorf("TTL %v: 1000 decisions expire within %v of each other, want them spread over about %v", ttl, spread, ttl/ttlSpread)
		}
	}
}

// expiringSource is a document whose credentials expire at a time.
type expiringSource struct {
	valueSource
	at time.Time
}

func (s expiringSource) Expires() time.Time { return s.at }

func TestDecisionCacheKeepsNoDecisionPastItsCredentials(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Unix(2_000_000_000, 0))
	e := engineOf(t, "package test\nallow if input.a == 1\n", false, Config{DecisionCacheTTL: time.Hour, now: clk.Now})
	src := expiringSource{valueSource{ast.MustParseTerm(`{"a": 1}`).Value}, clk.Now().Add(time.Minute)}
	for range 2 {
		if _, err := e.EvalSource(t.Context(), src); err != nil {
			t.Fatal(err)
		}
	}
	if hits := e.DecisionCache().Hits.Load(); hits != 1 {
		t.Fatalf("hits = %d before the credentials expire, want 1", hits)
	}
	clk.Advance(time.Minute)
	if _, err := e.EvalSource(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	if hits := e.DecisionCache().Hits.Load(); hits != 1 {
		t.Error("a decision was served past the expiry of the credentials it was made on")
	}
}

// digestSource stands for its token by a digest, as the service's input does.
type digestSource struct {
	valueSource
	digest [32]byte
}

func (s digestSource) Digest(path ast.Ref) (*[32]byte, bool) {
	if len(path) == 1 && path[0].Equal(ast.StringTerm("token")) {
		return &s.digest, true
	}
	return nil, false
}

func TestDecisionCacheKeysOnTokenDigests(t *testing.T) {
	t.Parallel()
	e := engineOf(t, "package test\nallow if input.token.sub == \"alice\"\n", false, Config{})
	if paths := e.current.Load().deps.paths; len(paths) != 1 || paths[0].String() != "input.token.sub" {
		t.Fatalf("paths = %v", paths)
	}
	// A policy reading the whole token keys on the digest.
	e = engineOf(t, "package test\ndefault allow := false\nallow if count(input.token) == 1\n", false, Config{})
	alice := digestSource{valueSource{ast.MustParseTerm(`{"token": {"sub": "alice"}}`).Value}, [32]byte{1}}
	other := digestSource{valueSource{ast.MustParseTerm(`{"token": {"sub": "alice", "x": 1}}`).Value}, [32]byte{2}}
	for _, src := range []digestSource{alice, alice, other} {
		if _, err := e.EvalSource(t.Context(), src); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses := e.DecisionCache().Hits.Load(), e.DecisionCache().Misses.Load(); hits != 1 || misses != 2 {
		t.Errorf("hits, misses = %d, %d; want 1, 2 (another digest is another key)", hits, misses)
	}
}

func TestDerivedValuesAreRememberedWithTheirDecision(t *testing.T) {
	t.Parallel()
	e := engineOf(t, "package test\nallow := {\"allowed\": true, \"headers\": {\"x-at\": sprintf(\"%d\", [time.now_ns()])}} if input.clock\nallow if not input.clock\n", false, Config{})
	calls := 0
	derive := func(d *Decision) any { calls++; return &struct{ d *Decision }{d} }
	cached := ast.MustParseTerm(`{"clock": false}`).Value
	_, first, err := e.EvalDerive(t.Context(), valueSource{cached}, derive)
	if err != nil {
		t.Fatal(err)
	}
	_, second, err := e.EvalDerive(t.Context(), valueSource{cached}, derive)
	if err != nil {
		t.Fatal(err)
	}
	if first != second || calls != 1 {
		t.Errorf("a cached decision came with a new derived value (%d derivations)", calls)
	}
	clock := ast.MustParseTerm(`{"clock": true}`).Value
	for range 2 {
		d, derived, err := e.EvalDerive(t.Context(), valueSource{clock}, derive)
		if err != nil {
			t.Fatal(err)
		}
		if derived.(*struct{ d *Decision }).d != d {
			t.Error("the derived value is not of the decision returned with it")
		}
	}
	if calls != 3 {
		t.Errorf("%d derivations, want 3: one per evaluation that was not served from the cache", calls)
	}
	// EvalSource stored no derived value; EvalDerive derives one for the cached decision.
	other := ast.MustParseTerm(`{}`).Value // no clock: another key
	if _, err := e.EvalSource(t.Context(), valueSource{other}); err != nil {
		t.Fatal(err)
	}
	if _, derived, err := e.EvalDerive(t.Context(), valueSource{other}, derive); err != nil || derived == nil {
		t.Errorf("EvalDerive of a decision cached by EvalSource = %v, %v", derived, err)
	}
}

func TestDecisionCacheStartsEmptyOnEveryRevision(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, t.TempDir(), map[string]string{"p.rego": "package test\ndefault allow := false\nallow if input.a == 1\n"})
	e := newEngine(t, Config{Paths: []string{dir}, Query: "data.test.allow"})
	in := ast.MustParseTerm(`{"a": 1}`).Value
	if d, err := e.Eval(t.Context(), in); err != nil || !d.Allowed {
		t.Fatalf("first revision: %+v, %v", d, err)
	}
	writeFiles(t, dir, map[string]string{"p.rego": "package test\ndefault allow := false\nallow if input.a == 2\n"})
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d, err := e.Eval(t.Context(), in); err != nil || d.Allowed {
		t.Fatalf("after the reload the old revision's decision was served: %+v, %v", d, err)
	}
}

func TestDecisionCacheOff(t *testing.T) {
	t.Parallel()
	e := engineOf(t, "package test\nallow if input.a == 1\n", false, Config{DecisionCacheSize: -1})
	for range 2 {
		if _, err := e.Eval(t.Context(), ast.MustParseTerm(`{"a": 1}`).Value); err != nil {
			t.Fatal(err)
		}
	}
	if e.current.Load().memo != nil || e.DecisionCache().Hits.Load() != 0 {
		t.Error("a negative size did not turn the cache off")
	}
}

func TestKeyEncodingTellsValuesApart(t *testing.T) {
	t.Parallel()
	// Pairs of different values whose naive concatenations would collide.
	values := []string{
		`null`, `true`, `false`, `0`, `1`, `"1"`, `""`, `"a"`, `"ab"`, `["a", "b"]`, `["ab"]`, `[["a"], "b"]`,
		`{"a": "b"}`, `{"ab": ""}`, `{"a": {"b": 1}}`, `{"a": ["b", 1]}`, `{"a"}`, `{"a", "b"}`, `["a", ["b"]]`, `[]`, `{}`,
	}
	seen := map[string]string{}
	for _, s := range values {
		enc := newKeyEncoder()
		enc.value(ast.MustParseTerm(s).Value)
		if !enc.ok {
			t.Fatalf("%s: not encodable", s)
		}
		if prev, ok := seen[string(enc.b)]; ok {
			t.Errorf("%s and %s encode alike", prev, s)
		}
		seen[string(enc.b)] = s
	}
	enc := newKeyEncoder()
	enc.value(ast.MustParseTerm(`[x]`).Value)
	if enc.ok {
		t.Error("a variable was encoded")
	}
}

func BenchmarkDecisionCacheHit(b *testing.B) {
	e := newEngine(b, Config{FS: policies.FS, Paths: []string{"."}, Query: policies.Query})
	now := time.Now().Unix()
	in := requestInput(b, "/accounts/acc-123/transactions", "GET", "", map[string]any{
		"iss": "https://issuer.test", "sub": "alice", "exp": now + 600, "iat": now,
		"scope": "transactions:read", "accounts": []any{"acc-123"},
	}, "req-1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Eval(b.Context(), in); err != nil {
			b.Fatal(err)
		}
	}
}
