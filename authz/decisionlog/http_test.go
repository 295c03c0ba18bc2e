package decisionlog

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

// logService is a decision log upload endpoint on a real HTTP server: it answers with the statuses it is
// given, in turn (the last one repeats), and keeps what it received.
type logService struct {
	srv      *httptest.Server
	attempts atomic.Int64

	mu       sync.Mutex
	statuses []int
	events   [][]map[string]any
	headers  []http.Header
}

func newLogService(t *testing.T, statuses ...int) *logService {
	s := &logService{statuses: statuses}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *logService) serve(w http.ResponseWriter, r *http.Request) {
	n := int(s.attempts.Add(1))
	s.mu.Lock()
	status := s.statuses[min(n-1, len(s.statuses)-1)]
	s.headers = append(s.headers, r.Header.Clone())
	s.mu.Unlock()
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var events []map[string]any
	if err := json.NewDecoder(zr).Decode(&events); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if status == http.StatusOK {
		s.mu.Lock()
		s.events = append(s.events, events)
		s.mu.Unlock()
	}
	w.WriteHeader(status)
}

func newTestHTTPSink(t *testing.T, url string, retries int, mutate func(*HTTPSinkConfig)) *HTTPSink {
	t.Helper()
	cfg := HTTPSinkConfig{
		URL: url, MaxRetries: retries, RetryMinDelay: time.Millisecond, RetryMaxDelay: 4 * time.Millisecond,
		Labels: map[string]string{"id": "instance-1", "app": "authz"}, DecisionPath: "envoy/authz/allow",
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewHTTPSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestHTTPSinkUploadsOPADecisionLogEvents(t *testing.T) {
	svc := newLogService(t, http.StatusOK)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, filepath.Dir(tokenFile), "token", "upload-token\n")
	sink := newTestHTTPSink(t, svc.srv.URL+"/logs", 0, func(c *HTTPSinkConfig) { c.BearerTokenFile = tokenFile })
	rec := sampleRecord("d-1")
	rec.TraceId, rec.Erased = traceID, []string{"/input/attributes/request/http/headers/authorization"}
	if err := sink.Write(context.Background(), []*authzv1.DecisionLog{rec, sampleRecord("d-2")}); err != nil {
		t.Fatal(err)
	}
	h := svc.headers[0]
	if h.Get("Content-Encoding") != "gzip" || h.Get("Content-Type") != "application/json" || h.Get("Authorization") != "Bearer upload-token" {
		t.Errorf("headers = %v", h)
	}
	if len(svc.events) != 1 || len(svc.events[0]) != 2 {
		t.Fatalf("received %v, want one batch of 2 events", svc.events)
	}
	ev := svc.events[0][0]
	checks := map[string]any{
		"decision_id": "d-1",
		"path":        "envoy/authz/allow",
		"trace_id":    traceID,
		"revision":    "410140d534b70c58",
		"timestamp":   "2026-03-14T09:26:53Z",
	}
	for k, v := range checks {
		if ev[k] != v {
			t.Errorf("event %s = %v, want %v", k, ev[k], v)
		}
	}
	if l := ev["labels"].(map[string]any); l["id"] != "instance-1" {
		t.Errorf("labels = %v", l)
	}
	res := ev["result"].(map[string]any)
	if res["allowed"] != false || res["http_status"] != float64(403) ||
		res["dynamic_metadata"].(map[string]any)["reason"] != "insufficient_scope" {
		t.Errorf("result = %v, want an OPA-Envoy result object of the deny", res)
	}
	if m := ev["metrics"].(map[string]any); m["timer_server_handler_ns"] != float64(1500000) {
		t.Errorf("metrics = %v", m)
	}
	if c := ev["custom"].(map[string]any); c["decision_id"] != "d-1" || c["subject"] != "alice" {
		t.Errorf("custom = %v, want the whole record", c)
	}
	if e := ev["erased"].([]any); len(e) != 1 {
		t.Errorf("erased = %v", e)
	}
}

func TestHTTPSinkRetries(t *testing.T) {
	tests := []struct {
		name         string
		statuses     []int
		retries      int
		wantErr      bool
		wantAttempts int64
	}{
		{"a server error is retried until the upload succeeds", []int{503, 500, 200}, 5, false, 3},
		{"429 is retried", []int{429, 200}, 5, false, 2},
		{"retries are bounded", []int{503}, 2, true, 3},
		{"no retries when none are configured", []int{503}, 0, true, 1},
		{"a client error is not retried", []int{400, 200}, 5, true, 1},
		{"a redirect is not followed", []int{307, 200}, 5, true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := newLogService(t, tc.statuses...)
			sink := newTestHTTPSink(t, svc.srv.URL, tc.retries, nil)
			err := sink.Write(context.Background(), []*authzv1.DecisionLog{sampleRecord("d-1")})
			if (err != nil) != tc.wantErr {
				t.Errorf("Write = %v, want error %v", err, tc.wantErr)
			}
			if got := svc.attempts.Load(); got != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", got, tc.wantAttempts)
			}
		})
	}
}

func TestHTTPSinkStopsRetryingWhenItsContextEnds(t *testing.T) {
	svc := newLogService(t, 503)
	sink := newTestHTTPSink(t, svc.srv.URL, 20, func(c *HTTPSinkConfig) {
		c.RetryMinDelay, c.RetryMaxDelay = time.Hour, time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := sink.Write(ctx, []*authzv1.DecisionLog{sampleRecord("d-1")})
	if err == nil || !strings.Contains(err.Error(), "HTTP status 503") {
		t.Errorf("Write = %v, want the context's end with the last failure", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("Write waited out its backoff after the context ended")
	}
}

func TestHTTPSinkTimesOutASlowServer(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	sink := newTestHTTPSink(t, srv.URL, 1, func(c *HTTPSinkConfig) { c.Timeout = 20 * time.Millisecond })
	start := time.Now()
	if err := sink.Write(context.Background(), []*authzv1.DecisionLog{sampleRecord("d-1")}); err == nil {
		t.Fatal("an upload to a server that never answers succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two attempts of 20ms took %s", d)
	}
}
