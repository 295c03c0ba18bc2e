package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestDenialBudget(t *testing.T) {
	t.Parallel()
	b := &denialBudget{perSecond: 2}
	t0 := time.Unix(1_800_000_000, 0)
	steps := []struct {
		at          time.Duration
		ok          bool
		wantDropped int64
	}{
		{0, true, 0},
		{100 * time.Millisecond, true, 0},
		{200 * time.Millisecond, false, 0}, // over the budget of the second
		{900 * time.Millisecond, false, 0},
		{time.Second, true, 2}, // a new second: logged, with the two not logged before it
		{1100 * time.Millisecond, true, 0},
		{1200 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
	}
	for i, s := range steps {
		ok, dropped := b.take(t0.Add(s.at))
		if ok != s.ok || dropped != s.wantDropped {
			t.Errorf("step %d at +%s: take = %v, %d; want %v, %d", i, s.at, ok, dropped, s.ok, s.wantDropped)
		}
	}

	for _, unbounded := range []*denialBudget{{}, {perSecond: -1}} {
		for range 1000 {
			if ok, _ := unbounded.take(t0); !ok {
				t.Fatalf("a budget of %d refused a line", unbounded.perSecond)
			}
		}
	}
}

// logRecorder is a slog.Handler that keeps the records' messages and attributes.
type logRecorder struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var buf bytes.Buffer
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), rec); err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, m)
	return nil
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func TestDenialLinesAreBoundedAndTheRestCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	rec := &logRecorder{}
	s, err := New(Config{Verifier: f.srv.verifier, Policy: f.srv.policy, Logger: slog.New(rec), MaxDenialLogsPerSecond: 3})
	if err != nil {
		t.Fatal(err)
	}
	bad := transactionsRequest(t, f.mint(t, "alice")+"x") // a signature that is not base64url: 401
	const burst = 40
	for range burst {
		if _, err := s.Check(context.Background(), bad); err != nil {
			t.Fatal(err)
		}
	}
	// The next second's first denial is logged and reports every one held back before it.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if _, err := s.Check(context.Background(), bad); err != nil {
		t.Fatal(err)
	}

	var logged, reported int
	for _, l := range rec.lines {
		switch l["msg"] {
		case "check denied":
			logged++
			if l["reason"] != "token_malformed" {
				t.Errorf("denial line %v, want reason token_malformed", l)
			}
		case "check denials not logged":
			reported += int(l["count"].(float64))
		}
	}
	if logged+reported != burst+1 {
		t.Errorf("%d denials logged and %d reported as not logged, want %d in all", logged, reported, burst+1)
	}
	if logged > 3*3 {
		t.Errorf("%d denial lines for %d denials within about a second, want at most 3 a second", logged, burst+1)
	}
}
