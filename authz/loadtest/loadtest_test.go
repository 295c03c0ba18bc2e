package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/service"
	"github.com/finauthz/authz/policies"
)

// startService runs the real service, with the shipped policies and a development issuer whose key lives in a
// temporary directory, and returns its address and that issuer.
func startService(t *testing.T) (string, *devissuer.Issuer) {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dev-key.pem")
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
listen: 127.0.0.1:0
policy: {builtin: true}
dev_issuer: {enabled: true, listen: 127.0.0.1:0, key_file: %s}
`, keyFile)), "loadtest.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, service.Options{BuiltinPolicies: policies.FS})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("service: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("service did not stop within 10s")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ok, _ := svc.Ready(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("service not ready within 10s")
		}
	}
	iss, err := devissuer.Open(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return svc.Addr().String(), iss
}

// TestLoadAgainstTheService drives the real service with every class of the mix, closed and open loop, and the
// no-op server beside it.
func TestLoadAgainstTheService(t *testing.T) {
	addr, iss := startService(t)
	mix := Mix{Valid: 70, Forbidden: 10, Invalid: 10, Public: 10}
	w, err := NewWorkload(WorkloadConfig{Issuer: iss, Subjects: 40, Mix: mix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("closed loop: counts add up and every class gets its expected outcome", func(t *testing.T) {
		const n = 300 // whole periods of the mix (10), so the class counts are exact
		res, err := Load(ctx, "service", addr, w, LoadConfig{
			Concurrency: 4, Conns: 2, Requests: n,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != n || res.Histogram.Count() != n {
			t.Fatalf("requests %d, histogram %d; want %d", res.Requests, res.Histogram.Count(), n)
		}
		var sum uint64
		for _, c := range res.Outcomes {
			sum += c
		}
		if sum != n {
			t.Errorf("outcomes %v add up to %d, want %d", res.Outcomes, sum, n)
		}
		want := map[string]map[string]uint64{
			"valid": {"allowed": 210}, "forbidden": {"denied": 30}, "invalid": {"401": 30}, "public": {"allowed": 30},
		}
		if fmt.Sprint(res.Classes) != fmt.Sprint(want) || res.Unexpected != 0 {
			t.Errorf("classes %v (unexpected %d, errors %v), want %v", res.Classes, res.Unexpected, res.Errors, want)
		}
		if res.Outcomes["allowed"] != 240 || res.Outcomes["denied"] != 30 || res.Outcomes["401"] != 30 || res.Outcomes["errors"] != 0 {
			t.Errorf("outcomes %v, want 240 allowed, 30 denied, 30 401, no errors", res.Outcomes)
		}
		assertOrdered(t, res.Latency)
		if res.RPS <= 0 || res.Mode != "closed" {
			t.Errorf("rps %v mode %q", res.RPS, res.Mode)
		}
		var text bytes.Buffer
		if err := res.WriteText(&text); err != nil || !strings.Contains(text.String(), "req/s") || strings.Contains(text.String(), "UNEXPECTED") {
			t.Errorf("text summary:\n%s", text.String())
		}
	})

	t.Run("open loop: the schedule holds the rate", func(t *testing.T) {
		const rate, n = 100.0, 60
		res, err := Load(ctx, "service", addr, w, LoadConfig{Concurrency: 8, Rate: rate, Requests: n})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != n || res.Unexpected != 0 || res.Outcomes["errors"] != 0 {
			t.Fatalf("requests %d unexpected %d errors %v", res.Requests, res.Unexpected, res.Errors)
		}
		// The last check is due at (n-1)/rate: the run can never be shorter, whatever the service's speed.
		minElapsed := time.Duration(float64(n-1) / rate * float64(time.Second))
		if res.Elapsed < minElapsed {
			t.Errorf("ran %d checks in %v: faster than %v/s allows (%v)", n, res.Elapsed, rate, minElapsed)
		}
		// Roughly on time: a service that keeps up adds one latency, not a multiple of the schedule.
		if res.Elapsed > minElapsed+time.Second {
			t.Errorf("ran %d checks in %v, want close to %v", n, res.Elapsed, minElapsed)
		}
		assertOrdered(t, res.Latency)
		if res.Mode != "open" {
			t.Errorf("mode %q, want open", res.Mode)
		}
	})

	t.Run("run measures the no-op server first and reports the ratio", func(t *testing.T) {
		rep, err := Run(ctx, Options{
			Addr: addr, NoopListen: "127.0.0.1:0",
			Load:     LoadConfig{Concurrency: 4, Conns: 2, Requests: 200},
			Workload: WorkloadConfig{Issuer: iss, Subjects: 20},
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Noop == nil || rep.Service == nil || rep.Ratio <= 0 {
			t.Fatalf("report %+v: want both results and a ratio", rep)
		}
		if rep.Noop.Outcomes["allowed"] != 200 || rep.Noop.Unexpected != 0 {
			t.Errorf("noop outcomes %v, unexpected %d: want everything allowed and nothing judged", rep.Noop.Outcomes, rep.Noop.Unexpected)
		}
		if rep.Service.Outcomes["allowed"] != 180 || rep.Service.Outcomes["401"] != 20 {
			t.Errorf("service outcomes %v: want the default mix's 180 allowed and 20 401", rep.Service.Outcomes)
		}
		var out bytes.Buffer
		if err := rep.WriteJSON(&out); err != nil {
			t.Fatal(err)
		}
		var decoded struct {
			Noop    struct{ RPS float64 }
			Service struct {
				Requests uint64
				Latency  map[string]float64
				Outcomes map[string]uint64
			}
			Ratio float64 `json:"service_to_noop_rps"`
		}
		if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
			t.Fatalf("JSON summary: %v\n%s", err, out.String())
		}
		if decoded.Service.Requests != 200 || decoded.Ratio <= 0 || decoded.Service.Latency["p99_ms"] <= 0 || decoded.Noop.RPS <= 0 {
			t.Errorf("JSON summary misses figures:\n%s", out.String())
		}
	})

	t.Run("rounds alternate the two servers and report the median ratio", func(t *testing.T) {
		n, err := StartNoop("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
		rep, err := Run(ctx, Options{
			Addr: addr, NoopAddr: n.Addr(), Rounds: 3,
			Load:     LoadConfig{Concurrency: 4, Conns: 2, Requests: 100},
			Workload: WorkloadConfig{Issuer: iss, Subjects: 20},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Ratios) != 3 {
			t.Fatalf("ratios %v, want one per round", rep.Ratios)
		}
		sorted := slices.Sorted(slices.Values(rep.Ratios))
		if rep.Ratio != sorted[1] {
			t.Errorf("ratio %v is not the median of %v", rep.Ratio, rep.Ratios)
		}
		var out bytes.Buffer
		if err := rep.WriteText(&out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "the median of 3 rounds") {
			t.Errorf("text report does not give the rounds:\n%s", out.String())
		}
		if len(rep.ServiceP99) != 3 || len(rep.NoopP99) != 3 {
			t.Fatalf("p99 per round: service %v, noop %v; want three each", rep.ServiceP99, rep.NoopP99)
		}
		if want := "service median " + ms(median(rep.ServiceP99)); !strings.Contains(out.String(), want) {
			t.Errorf("text report does not give the service's median p99 (%q):\n%s", want, out.String())
		}
	})
}

// A warmup first passes over the whole workload, so that a slow measured rate meets warm caches.
func TestLoadWarmupPassesOverTheWorkload(t *testing.T) {
	w := devWorkload(t, 50)
	n, err := StartNoop("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	const conns, measured = 2, 10
	// A warmup at this rate sends one check of its own: the rest are the pass.
	res, err := Load(context.Background(), "noop", n.Addr(), w, LoadConfig{
		Concurrency: 2, Conns: conns, Rate: 1000, Warmup: time.Millisecond, Requests: measured,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != measured {
		t.Fatalf("measured %d checks, want %d", res.Requests, measured)
	}
	if got, want := n.Checks(), uint64(conns+w.Len()+1+measured); got != want {
		t.Errorf("the no-op server answered %d checks, want %d: %d connection probes, a pass over the %d of the workload, 1 of warmup at the rate, %d measured",
			got, want, conns, w.Len(), measured)
	}
}

func TestLoadStopsWhenItsContextEnds(t *testing.T) {
	before := runtime.NumGoroutine()
	n, err := StartNoop("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := devWorkload(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	var progress bytes.Buffer
	res, err := Load(ctx, "noop", n.Addr(), w, LoadConfig{
		Concurrency: 2, Conns: 1, Duration: time.Minute, Progress: &progress, ProgressInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second || !res.Interrupted || res.Requests == 0 || res.Outcomes["errors"] != 0 {
		t.Errorf("after %v: interrupted %v, %d requests, errors %v; want a prompt stop with what was answered",
			took, res.Interrupted, res.Requests, res.Errors)
	}
	if lines := strings.Count(progress.String(), "req/s"); lines < 2 {
		t.Errorf("%d progress lines in 300ms at one per 50ms:\n%s", lines, progress.String())
	}
	n.Stop()
	// Every goroutine of the generator and the no-op server ends with them.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}

func TestLoadFailsFastWhenNothingAnswers(t *testing.T) {
	t.Parallel()
	n, err := StartNoop("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := n.Addr()
	n.Stop() // nothing listens there now
	w := devWorkload(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Load(ctx, "service", addr, w, LoadConfig{Requests: 10}); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("Load against a closed port = %v, want an error saying it does not answer", err)
	}
}

// devWorkload is the default mix over tokens minted for subjects subjects by a development issuer of its own.
func devWorkload(tb testing.TB, subjects int) *Workload {
	tb.Helper()
	iss, err := devissuer.Open(filepath.Join(tb.TempDir(), "key.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	w, err := NewWorkload(WorkloadConfig{Issuer: iss, Subjects: subjects})
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

func assertOrdered(t *testing.T, l Latency) {
	t.Helper()
	steps := []time.Duration{l.Min, l.P50, l.P90, l.P99, l.P999, l.Max}
	for i := 1; i < len(steps); i++ {
		if steps[i] < steps[i-1] || steps[i] <= 0 {
			t.Errorf("latencies not ordered: min %v p50 %v p90 %v p99 %v p99.9 %v max %v", l.Min, l.P50, l.P90, l.P99, l.P999, l.Max)
			return
		}
	}
	if l.Mean < l.Min || l.Mean > l.Max {
		t.Errorf("mean %v outside [%v, %v]", l.Mean, l.Min, l.Max)
	}
}

// BenchmarkCheckRoundTrip measures one Check against the in-process no-op server, as the generator sends it
// (pre-encoded, verdict read from the wire) and as a generated gRPC client would; the difference is what the
// generator saves per check. Allocations include the server's.
func BenchmarkCheckRoundTrip(b *testing.B) {
	n, err := StartNoop("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer n.Stop()
	w := devWorkload(b, 1)
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	ctx := context.Background()
	b.Run("pre-encoded", func(b *testing.B) {
		opt := grpc.ForceCodecV2(rawCodec{})
		req := w.seq[0].req
		b.ReportAllocs()
		for b.Loop() {
			var v verdict
			if err := cc.Invoke(ctx, checkMethod, req, &v, opt); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("generated-client", func(b *testing.B) {
		client := authv3.NewAuthorizationClient(cc)
		req := decode(b, w.seq[0].req)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Check(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
