package loadtest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/envoyreq"
	"github.com/finauthz/authz/authz/gctune"
	"github.com/finauthz/authz/authz/internal/polltest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/token"
	"github.com/finauthz/authz/policies"
)

var memTokens = flag.Int64("tokens", 0,
	"TestServiceMemoryIsBounded: distinct valid tokens to push through the service (e.g. 10000000); 0 skips the test")

const memIssuer = "https://loadtest-issuer.invalid"

// TestServiceMemoryIsBounded pushes -tokens distinct valid tokens through the service's Check (the token
// verifier and the shipped policies, with their default cache sizes, in-process) and reports the process's
// resident memory as it goes: the verification and decision caches are bounded, so the peak must level off once
// they are full instead of growing with the number of tokens. It takes minutes for millions of tokens and is
// skipped unless -tokens is given:
//
//	go test -run TestServiceMemoryIsBounded -v -timeout 150m ./authz/loadtest -tokens 10000000
//
// Tokens are signed with Ed25519, the cheapest signature the verifier accepts, built without a JWT library; each
// is signed, checked on the transactions of one of its accounts, and never stored.
func TestServiceMemoryIsBounded(t *testing.T) {
	total := *memTokens
	if total <= 0 {
		t.Skip("give -tokens N to run it")
	}
	// The collector settings authz serve runs with by default (GOGC and GOMEMLIMIT in the environment win).
	pct, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(pct); debug.SetMemoryLimit(limit) })
	rt, err := gctune.Apply(config.DefaultRuntime(), gctune.System())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("runtime: GC percent %d (%s), memory limit %s", rt.GCPercent, rt.GCPercentFrom, rt.MemoryLimitText())
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := publishKey(t, pub)
	ctx := context.Background()
	v, err := token.NewVerifier(ctx, token.Config{
		Issuers: []token.Issuer{{Issuer: memIssuer, JWKSURI: jwks, Audiences: []string{"loadtest"}, Algorithms: []string{"EdDSA"}}},
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	polltest.Until(t, "the verifier is ready", func() bool { ok, _ := v.Ready(); return ok })
	e, err := policy.New(ctx, policy.Config{
		FS: policies.FS, Paths: []string{"."}, Query: policies.Query, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Verifier: v, Policy: e, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}

	const samples = 20
	var (
		next, done atomic.Int64
		failures   atomic.Int64
		firstErr   sync.Once
		wg         sync.WaitGroup
	)
	start := time.Now()
	exp := start.Add(2 * time.Hour).Unix()
	const chunk = 256
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			s := newEdSigner(priv, start.Unix(), exp)
			for {
				first := next.Add(chunk) - chunk
				if first >= total {
					return
				}
				for i := first; i < min(first+chunk, total); i++ {
					resp, err := srv.Check(ctx, memRequest(t, i, s.token(i)))
					if err != nil || resp.GetStatus().GetCode() != 0 {
						failures.Add(1)
						firstErr.Do(func() { t.Errorf("token %d: %v %v", i, err, resp.GetDynamicMetadata()) })
					}
				}
				done.Add(min(first+chunk, total) - first)
			}
		})
	}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	var marks []memSample
	sampler.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		nextMark := total / samples
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if n := done.Load(); n >= nextMark {
				m := sample(n, time.Since(start))
				marks = append(marks, m)
				t.Logf("%11d tokens  %6.0fs  %7.0f tokens/s  rss %6.1f MiB  peak %6.1f MiB  heap in use %6.1f MiB",
					m.tokens, m.elapsed.Seconds(), float64(m.tokens)/m.elapsed.Seconds(), mib(m.rss), mib(m.hwm), mib(m.heap))
				for nextMark <= n {
					nextMark += total / samples
				}
			}
		}
	})
	wg.Wait()
	close(stop)
	sampler.Wait()
	end := sample(done.Load(), time.Since(start))
	marks = append(marks, end)
	t.Logf("%d distinct tokens verified in %v (%.0f/s, %d failures); peak RSS %.1f MiB, heap in use %.1f MiB",
		end.tokens, end.elapsed.Round(time.Second), float64(end.tokens)/end.elapsed.Seconds(), failures.Load(), mib(end.hwm), mib(end.heap))
	if failures.Load() > 0 {
		t.Fatalf("%d of %d tokens failed to verify", failures.Load(), total)
	}
	// What stays reachable is, almost all of it, the two caches.
	runtime.GC()
	var live runtime.MemStats
	runtime.ReadMemStats(&live)
	cached := min(end.tokens, token.DefaultCacheSize)
	t.Logf("live heap after GC: %.1f MiB, %.1f KiB per cached token and decision (%d cached)",
		mib(live.HeapAlloc), float64(live.HeapAlloc)/float64(cached)/1024, cached)

	// Once 3x as many tokens as the caches hold went through, they are full and evicting; from then on the peak
	// may only wobble with garbage collection, not grow with the token count.
	var full *memSample
	for i := range marks {
		if marks[i].tokens >= 3*token.DefaultCacheSize {
			full = &marks[i]
			break
		}
	}
	if full == nil || full == &marks[len(marks)-1] || end.tokens < 2*full.tokens {
		t.Logf("too few tokens (%d) to judge the plateau: give -tokens of at least %d", end.tokens, 10*token.DefaultCacheSize)
		return
	}
	growth := float64(end.hwm-full.hwm) / float64(full.hwm)
	t.Logf("peak RSS after %d tokens (cache full): %.1f MiB; after %d: %.1f MiB (%+.1f%%)",
		full.tokens, mib(full.hwm), end.tokens, mib(end.hwm), 100*growth)
	if growth > 0.25 {
		t.Errorf("peak RSS grew by %.0f%% while the token count grew %.0fx past a full cache: the cache is not bounding memory",
			100*growth, float64(end.tokens)/float64(full.tokens))
	}
}

// publishKey serves a JWKS holding pub on loopback and returns its URL.
// memRequest is a customer listing the transactions of their first account, with raw as the bearer token.
func memRequest(t *testing.T, i int64, raw string) *authv3.CheckRequest {
	n := strconv.FormatInt(i, 10)
	req, err := envoyreq.New(envoyreq.Request{
		URL:       "https://api.bank.test/accounts/acc-" + n + "-a/transactions",
		Headers:   []string{"authorization: Bearer " + raw, "x-request-id: mem-" + n},
		Source:    "203.0.113.7:53122",
		RequestID: "mem-" + n,
	})
	if err != nil {
		t.Error(err)
		return &authv3.CheckRequest{}
	}
	return req
}

func publishKey(t *testing.T, pub ed25519.PublicKey) string {
	t.Helper()
	jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: "mem-1", ALG: jwkset.AlgEdDSA, USE: jwkset.UseSig},
	})
	if err != nil {
		t.Fatal(err)
	}
	store := jwkset.NewMemoryStorage()
	if err := store.KeyWrite(context.Background(), jwk); err != nil {
		t.Fatal(err)
	}
	body, err := store.JSONPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/jwks.json"
}

// edSigner builds distinct access tokens by number, shaped like the development issuer's, reusing its buffers.
type edSigner struct {
	priv      ed25519.PrivateKey
	iat, exp  string
	header    string
	payload   []byte
	signing   []byte
	signature [86]byte // base64url of the 64-byte signature, unpadded
}

func newEdSigner(priv ed25519.PrivateKey, iat, exp int64) *edSigner {
	return &edSigner{
		priv:   priv,
		iat:    strconv.FormatInt(iat, 10),
		exp:    strconv.FormatInt(exp, 10),
		header: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"mem-1","typ":"at+jwt"}`)),
	}
}

func (s *edSigner) token(i int64) string {
	n := strconv.FormatInt(i, 10)
	s.payload = append(s.payload[:0], `{"iss":"`+memIssuer+`","sub":"cust-`...)
	s.payload = append(s.payload, n+`","aud":"loadtest","client_id":"tpp-`+strconv.FormatInt(i%50, 10)+
		`","iat":`+s.iat+`,"nbf":`+s.iat+`,"auth_time":`+s.iat+`,"exp":`+s.exp+
		`,"jti":"`+n+`","scope":"accounts:read transactions:read payments:read","accounts":["acc-`+n+`-a","acc-`+n+`-b"]}`...)
	s.signing = append(s.signing[:0], s.header...)
	s.signing = append(s.signing, '.')
	s.signing = base64.RawURLEncoding.AppendEncode(s.signing, s.payload)
	sig := ed25519.Sign(s.priv, s.signing)
	base64.RawURLEncoding.Encode(s.signature[:], sig)
	var b strings.Builder
	b.Grow(len(s.signing) + 1 + len(s.signature))
	b.Write(s.signing)
	b.WriteByte('.')
	b.Write(s.signature[:])
	return b.String()
}

type memSample struct {
	tokens   int64
	elapsed  time.Duration
	rss, hwm int64 // bytes, from /proc/self/status
	heap     uint64
}

func sample(tokens int64, elapsed time.Duration) memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memSample{tokens: tokens, elapsed: elapsed, heap: ms.HeapInuse}
	m.rss, m.hwm = procStatus("VmRSS:"), procStatus("VmHWM:")
	return m
}

// procStatus reads a memory field of /proc/self/status in bytes, or -1 where there is none (not Linux).
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

func mib[T int64 | uint64](b T) float64 { return float64(b) / (1 << 20) }
