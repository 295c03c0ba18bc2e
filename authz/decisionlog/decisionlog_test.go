package decisionlog

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/internal/polltest"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/response"
	"github.com/finauthz/authz/authz/server"
	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

func allowedInfo() *server.CheckInfo {
	return &server.CheckInfo{
		Request:  &authv3.CheckRequest{},
		Start:    time.Now(),
		Duration: time.Millisecond,
		Response: response.FromDecision(&policy.Decision{Allowed: true}),
	}
}

// TestABlockedSinkNeverSlowsACheck hands far more records than the buffer holds to a Logger whose sink does
// not return: every hand-over stays fast and everything that did not fit is counted as dropped.
func TestABlockedSinkNeverSlowsACheck(t *testing.T) {
	sink := &recordingSink{block: make(chan struct{})}
	l, err := New(Config{Sink: sink, Buffer: 64, BatchSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	took := make([]time.Duration, n)
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		l.CheckDone(context.Background(), allowedInfo())
		took[i] = time.Since(t0)
	}
	total := time.Since(start)
	slices.Sort(took)
	// Generous bounds for -race on a shared machine (a GC pause may hit any one call, so the tail is judged
	// at p99); a hand-over that waited for the sink would never return at all.
	if p99 := took[n*99/100]; p99 > 5*time.Millisecond || total > 5*time.Second {
		t.Errorf("handing over %d records took %s, p99 %s: the sink's speed leaks into checks", n, total, p99)
	}
	c := l.Counts()
	if c.BufferFull < n-64-8 {
		t.Errorf("%d records counted as dropped, want at least %d", c.BufferFull, n-64-8)
	}
	close(sink.block)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c = l.Counts()
	if c.Written+c.BufferFull != n || c.SinkFailed != 0 {
		t.Errorf("written %d + dropped %d != %d handed over (sink failures %d)", c.Written, c.BufferFull, n, c.SinkFailed)
	}
}

func TestCloseWritesWhatIsBufferedAndClosesTheSink(t *testing.T) {
	sink := &recordingSink{}
	l, err := New(Config{Sink: sink, BatchSize: 4, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		l.CheckDone(context.Background(), allowedInfo())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sink.sizes(); !slices.Equal(got, []int{4, 4, 2}) {
		t.Errorf("batches = %v, want [4 4 2]", got)
	}
	if !sink.closed {
		t.Error("the sink was not closed")
	}
	l.CheckDone(context.Background(), allowedInfo()) // after Close: ignored, no panic
	if err := l.Close(context.Background()); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

func TestCloseGivesUpWhenItsContextEnds(t *testing.T) {
	sink := &recordingSink{block: make(chan struct{})}
	defer close(sink.block)
	l, err := New(Config{Sink: sink, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.CheckDone(context.Background(), allowedInfo())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want the context's deadline", err)
	}
	if c := l.Counts(); c.SinkFailed != 5 || c.Written != 0 {
		t.Errorf("counts = %+v, want all 5 records counted as lost to the sink", c)
	}
}

func TestSinkFailuresAreCounted(t *testing.T) {
	sink := &recordingSink{fail: errors.New("disk full")}
	l, err := New(Config{Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.CheckDone(context.Background(), allowedInfo())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := l.Counts(); c.SinkFailed != 3 || c.Written != 0 {
		t.Errorf("counts = %+v, want 3 sink failures", c)
	}
}

func TestAPartialBatchIsWrittenAfterTheFlushInterval(t *testing.T) {
	sink := &recordingSink{}
	l, err := New(Config{Sink: sink, BatchSize: 100, FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	l.CheckDone(context.Background(), allowedInfo())
	l.CheckDone(context.Background(), allowedInfo())
	polltest.Until(t, "the partial batch is written", func() bool { return slices.Equal(sink.sizes(), []int{2}) })
	l.CheckDone(context.Background(), allowedInfo())
	polltest.Until(t, "the next record is written on its own interval", func() bool { return slices.Equal(sink.sizes(), []int{2, 1}) })
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no sink", Config{}},
		{"negative buffer", Config{Sink: &recordingSink{}, Buffer: -1}},
		{"negative interval", Config{Sink: &recordingSink{}, FlushInterval: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if l, err := New(tc.cfg); err == nil {
				l.Close(context.Background())
				t.Fatal("New succeeded")
			}
		})
	}
}

type discardSink struct{}

func (discardSink) Write(context.Context, []*authzv1.DecisionLog) error { return nil }
func (discardSink) Close() error                                        { return nil }

// BenchmarkCheckDone is what the decision log adds to every check: the hand-over only.
func BenchmarkCheckDone(b *testing.B) {
	l, err := New(Config{Sink: discardSink{}, Buffer: 1024})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	info := allowedInfo()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.CheckDone(ctx, info)
	}
}
