package decisionlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

// Defaults of HTTPSinkConfig.
const (
	DefaultUploadTimeout = 10 * time.Second
	DefaultRetryMinDelay = 500 * time.Millisecond
	DefaultRetryMaxDelay = 30 * time.Second
)

// HTTPSinkConfig configures an HTTPSink.
type HTTPSinkConfig struct {
	// URL receives the uploads; required. The caller checks its scheme (https unless loopback).
	URL string
	// Timeout bounds one attempt; DefaultUploadTimeout when 0.
	Timeout time.Duration
	// MaxRetries is how often a failed upload is tried again before its records are given up.
	MaxRetries int
	// RetryMinDelay and RetryMaxDelay bound the exponential backoff between attempts (with jitter);
	// DefaultRetryMinDelay and DefaultRetryMaxDelay when 0.
	RetryMinDelay, RetryMaxDelay time.Duration
	// BearerTokenFile, when set, is read before every upload and its content sent as a bearer token.
	BearerTokenFile string
	// Labels are every event's labels, as OPA's (it sends "id", the instance, and "version").
	Labels map[string]string
	// DecisionPath is every event's path: the decision's reference without "data.", with slashes
	// ("envoy/authz/allow").
	DecisionPath string
	// Client sends the uploads. Default: TLS 1.2 or later, no redirects, no other timeout than Timeout.
	Client *http.Client
}

// HTTPSink uploads batches in the format of OPA's decision log plugin: a POST of a gzip'd JSON array of
// events, each with OPA's fields (labels, decision_id, path, input, result, erased, timestamp, metrics,
// trace_id, span_id) and the full record under "custom". Failed uploads are retried with exponential backoff
// a bounded number of times.
type HTTPSink struct {
	cfg    HTTPSinkConfig
	client *http.Client
}

// NewHTTPSink returns an HTTPSink; it sends nothing until the first Write.
func NewHTTPSink(cfg HTTPSinkConfig) (*HTTPSink, error) {
	if cfg.URL == "" {
		return nil, errors.New("decisionlog: http sink: a URL is required")
	}
	if cfg.MaxRetries < 0 {
		return nil, errors.New("decisionlog: http sink: max retries must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultUploadTimeout
	}
	if cfg.RetryMinDelay == 0 {
		cfg.RetryMinDelay = DefaultRetryMinDelay
	}
	if cfg.RetryMaxDelay == 0 {
		cfg.RetryMaxDelay = DefaultRetryMaxDelay
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
				ForceAttemptHTTP2:   true,
				MaxIdleConnsPerHost: 2,
				IdleConnTimeout:     90 * time.Second,
				TLSHandshakeTimeout: cfg.Timeout,
			},
			// A redirect could lead the records elsewhere; an upload endpoint has no reason to send one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &HTTPSink{cfg: cfg, client: client}, nil
}

// opaEvent is one event in the shape of OPA's decision log (plugins/logs EventV1).
type opaEvent struct {
	Labels     map[string]string `json:"labels"`
	DecisionID string            `json:"decision_id"`
	TraceID    string            `json:"trace_id,omitempty"`
	SpanID     string            `json:"span_id,omitempty"`
	Revision   string            `json:"revision,omitempty"`
	Path       string            `json:"path,omitempty"`
	Input      json.RawMessage   `json:"input,omitempty"`
	Result     opaResult         `json:"result"`
	Erased     []string          `json:"erased,omitempty"`
	Timestamp  time.Time         `json:"timestamp"`
	Metrics    map[string]int64  `json:"metrics,omitempty"`
	Custom     json.RawMessage   `json:"custom"`
}

// opaResult is the part of an OPA-Envoy result object a record keeps.
type opaResult struct {
	Allowed         bool              `json:"allowed"`
	HTTPStatus      int32             `json:"http_status,omitempty"`
	DynamicMetadata map[string]string `json:"dynamic_metadata,omitempty"`
}

// Encode returns the gzip'd JSON array that Write uploads for records.
func (s *HTTPSink) Encode(records []*authzv1.DecisionLog) ([]byte, error) {
	events := make([]opaEvent, len(records))
	for i, rec := range records {
		custom, err := MarshalJSON(rec)
		if err != nil {
			return nil, fmt.Errorf("decisionlog: marshal: %w", err)
		}
		ev := opaEvent{
			Labels:     s.cfg.Labels,
			DecisionID: rec.GetDecisionId(),
			TraceID:    rec.GetTraceId(),
			SpanID:     rec.GetSpanId(),
			Revision:   rec.GetPolicyRevision(),
			Path:       s.cfg.DecisionPath,
			Result: opaResult{
				Allowed:    rec.GetDecision() == authzv1.Decision_DECISION_ALLOW,
				HTTPStatus: rec.GetHttpStatus(),
			},
			Erased:    rec.GetErased(),
			Timestamp: rec.GetTimestamp().AsTime(),
			Metrics:   map[string]int64{"timer_server_handler_ns": rec.GetLatency().AsDuration().Nanoseconds()},
			Custom:    custom,
		}
		if rec.GetReason() != "" || rec.GetRoute() != "" {
			ev.Result.DynamicMetadata = map[string]string{}
			if rec.GetReason() != "" {
				ev.Result.DynamicMetadata["reason"] = rec.GetReason()
			}
			if rec.GetRoute() != "" {
				ev.Result.DynamicMetadata["route"] = rec.GetRoute()
			}
		}
		if rec.GetInput() != nil {
			if ev.Input, err = protojson.Marshal(rec.GetInput()); err != nil {
				return nil, fmt.Errorf("decisionlog: marshal input: %w", err)
			}
		}
		events[i] = ev
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(events); err != nil {
		return nil, fmt.Errorf("decisionlog: encode: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("decisionlog: gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// Write implements Sink: it uploads the batch, retrying transport errors and 408, 429 and 5xx answers.
func (s *HTTPSink) Write(ctx context.Context, records []*authzv1.DecisionLog) error {
	body, err := s.Encode(records)
	if err != nil {
		return err
	}
	var lastErr error
	for attempt := 0; attempt <= s.cfg.MaxRetries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(s.delay(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("decisionlog: upload: %w (last error: %w)", ctx.Err(), lastErr)
			case <-t.C:
			}
		}
		retry, err := s.post(ctx, body)
		if err == nil {
			return nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	return lastErr
}

// delay is the wait before the given attempt: doubling from RetryMinDelay up to RetryMaxDelay, with equal
// jitter so that replicas that failed together do not retry together.
func (s *HTTPSink) delay(attempt int) time.Duration {
	d := s.cfg.RetryMinDelay << min(attempt-1, 20)
	d = min(d, s.cfg.RetryMaxDelay)
	return d/2 + rand.N(d/2+1)
}

// post makes one attempt; retry says whether another may succeed.
func (s *HTTPSink) post(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("decisionlog: upload: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", "finauthz-decision-logger")
	if s.cfg.BearerTokenFile != "" {
		tok, err := os.ReadFile(s.cfg.BearerTokenFile)
		if err != nil {
			return true, fmt.Errorf("decisionlog: upload: bearer token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("decisionlog: upload: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return true, fmt.Errorf("decisionlog: upload: HTTP status %d", resp.StatusCode)
	}
	return false, fmt.Errorf("decisionlog: upload: HTTP status %d", resp.StatusCode)
}

// Close implements Sink.
func (s *HTTPSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
