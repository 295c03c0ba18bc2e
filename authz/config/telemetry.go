package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults of the observability keys: admin listener, tracing and decision logs.
const (
	// DefaultAdminListen is the admin HTTP listener: loopback, and clear of Envoy's own admin port (9901).
	DefaultAdminListen        = "127.0.0.1:9190"
	DefaultTracingEndpoint    = "http://127.0.0.1:4317"
	DefaultTracingSampleRatio = 1.0
	DefaultTracingServiceName = "authz"
	DefaultDecisionLogSink    = "stdout"
	DefaultDecisionLogBuffer  = 10000
	// DefaultMaskQuery is where OPA looks for decision log masking rules.
	DefaultMaskQuery        = "data.system.log.mask"
	DefaultUploadBatchSize  = 500
	DefaultUploadInterval   = 5 * time.Second
	DefaultUploadTimeout    = 10 * time.Second
	DefaultUploadMaxRetries = 5
	maxDecisionLogBuffer    = 1 << 20
	maxUploadBatchSize      = 10000
	maxUploadRetries        = 20
)

// Admin is the admin HTTP listener: Prometheus metrics (/metrics), liveness (/healthz), readiness (/readyz)
// and, when enabled, Go profiling (/debug/pprof/).
type Admin struct {
	// Enabled turns the listener on; default true.
	Enabled *bool `yaml:"enabled"`
	// Listen is host:port; DefaultAdminListen when absent. A non-loopback address needs AllowRemote.
	Listen string `yaml:"listen"`
	// AllowRemote permits a non-loopback Listen address. Metrics and profiles describe the service's traffic,
	// so they stay on loopback unless an operator decides otherwise.
	AllowRemote bool `yaml:"allow_remote"`
	// PProf serves net/http/pprof under /debug/pprof/.
	PProf bool `yaml:"pprof"`

	// ListenDefaulted reports that Listen was not in the file. The service then tolerates the default port
	// being taken (another instance on the same host) by running without the admin listener, with a warning.
	ListenDefaulted bool `yaml:"-"`
}

// On reports whether the admin listener runs.
func (a Admin) On() bool { return a.Enabled == nil || *a.Enabled }

// Tracing configures OpenTelemetry tracing of checks, exported over OTLP/gRPC.
type Tracing struct {
	Enabled bool `yaml:"enabled"`
	// Endpoint is the OTLP/gRPC collector URL: https, or http (plaintext) when the host is loopback.
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the share of checks traced when Envoy sent no trace context; a sampled or unsampled
	// traceparent from Envoy is always followed. Between 0 and 1; default 1.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute; default "authz".
	ServiceName string `yaml:"service_name"`
}

// Ratio returns the sample ratio with its default applied.
func (t Tracing) Ratio() float64 {
	if t.SampleRatio == nil {
		return DefaultTracingSampleRatio
	}
	return *t.SampleRatio
}

// DecisionLog configures the decision log: one record per check, written off the request path.
type DecisionLog struct {
	Enabled bool `yaml:"enabled"`
	// Sink is stdout, file or http.
	Sink string `yaml:"sink"`
	// File is the JSON lines file for sink: file, relative to the configuration file's directory.
	File string `yaml:"file"`
	// Buffer bounds the records waiting for the sink; a record that finds it full is dropped and counted.
	Buffer int `yaml:"buffer"`
	// IncludeInput logs the policy input, less the authorization header and whatever the mask query removes.
	IncludeInput bool `yaml:"include_input"`
	// MaskQuery returns JSON pointers ("/input/attributes/request/http/headers/x-api-key") to remove from the
	// logged input; its input is the decision log event, as in OPA. Evaluated only with include_input.
	MaskQuery string `yaml:"mask_query"`
	// IncludePath logs the request path (digit runs that may be card numbers masked). Off by default: records
	// carry the policy's route id (dynamic_metadata.route) instead.
	IncludePath bool `yaml:"include_path"`
	// HashSubject logs the token's subject as HMAC-SHA-256 keyed with the salt in SubjectSaltFile.
	HashSubject     bool   `yaml:"hash_subject"`
	SubjectSaltFile string `yaml:"subject_salt_file"`
	// HTTP configures sink: http.
	HTTP DecisionLogHTTP `yaml:"http"`
}

// DecisionLogHTTP uploads decision logs in batches in the format of OPA's decision log plugin (a gzip'd JSON
// array of events).
type DecisionLogHTTP struct {
	// URL receives the POSTs: https, or http when the host is loopback.
	URL string `yaml:"url"`
	// BatchSize is the most records in one upload.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is the longest a record waits for its batch to fill.
	FlushInterval Duration `yaml:"flush_interval"`
	// Timeout bounds one upload attempt.
	Timeout Duration `yaml:"timeout"`
	// MaxRetries is how often a failed upload is retried, with exponential backoff, before its records are
	// dropped and counted; default 5, and 0 is kept (no retry).
	MaxRetries *int `yaml:"max_retries"`
	// BearerTokenFile, when set, holds a token sent as "Authorization: Bearer"; it is re-read for every upload
	// so that a rotated token is picked up.
	BearerTokenFile string `yaml:"bearer_token_file"`
}

// Retries returns max_retries with its default applied.
func (h DecisionLogHTTP) Retries() int {
	if h.MaxRetries == nil {
		return DefaultUploadMaxRetries
	}
	return *h.MaxRetries
}

func (c *Config) applyTelemetryDefaults() {
	a := &c.Admin
	a.ListenDefaulted = a.Listen == ""
	setDefault(&a.Listen, DefaultAdminListen)
	t := &c.Tracing
	setDefault(&t.Endpoint, DefaultTracingEndpoint)
	setDefault(&t.ServiceName, DefaultTracingServiceName)
	d := &c.DecisionLog
	setDefault(&d.Sink, DefaultDecisionLogSink)
	setDefault(&d.Buffer, DefaultDecisionLogBuffer)
	setDefault(&d.MaskQuery, DefaultMaskQuery)
	h := &d.HTTP
	setDefault(&h.BatchSize, DefaultUploadBatchSize)
	setDefault(&h.FlushInterval, Duration(DefaultUploadInterval))
	setDefault(&h.Timeout, Duration(DefaultUploadTimeout))
	if h.MaxRetries == nil {
		n := DefaultUploadMaxRetries
		h.MaxRetries = &n
	}
	for _, p := range []*string{&d.File, &d.SubjectSaltFile, &h.BearerTokenFile} {
		if *p != "" && !filepath.IsAbs(*p) && c.Dir != "" {
			*p = filepath.Join(c.Dir, *p)
		}
	}
}

// validateTelemetry checks the admin, tracing and decision_log keys; bad reports one error naming the key.
func (c *Config) validateTelemetry(bad func(key, format string, args ...any)) {
	a := c.Admin
	if a.On() {
		host, _, err := net.SplitHostPort(a.Listen)
		switch {
		case err != nil:
			bad("admin.listen", "must be host:port (got %q)", a.Listen)
		case !IsLoopback(host) && !a.AllowRemote:
			bad("admin.listen", "must be a loopback address unless admin.allow_remote is true (got %q)", a.Listen)
		case a.Listen == c.Listen && !strings.HasSuffix(a.Listen, ":0"):
			bad("admin.listen", "must differ from listen (both %q)", a.Listen)
		}
	}

	t := c.Tracing
	if t.Enabled {
		if err := checkEndpointURL(t.Endpoint); err != nil {
			bad("tracing.endpoint", "%v", err)
		}
	}
	if r := t.Ratio(); r < 0 || r > 1 {
		bad("tracing.sample_ratio", "must be between 0 and 1 (got %g)", r)
	}
	if strings.TrimSpace(t.ServiceName) == "" {
		bad("tracing.service_name", "must not be empty")
	}

	d := c.DecisionLog
	if !slices.Contains([]string{"stdout", "file", "http"}, d.Sink) {
		bad("decision_log.sink", "must be stdout, file or http (got %q)", d.Sink)
	}
	if d.Sink == "file" && d.File == "" {
		bad("decision_log.file", "required when decision_log.sink is file")
	}
	if d.Buffer < 1 || d.Buffer > maxDecisionLogBuffer {
		bad("decision_log.buffer", "must be between 1 and %d (got %d)", maxDecisionLogBuffer, d.Buffer)
	}
	if !strings.HasPrefix(d.MaskQuery, "data.") {
		bad("decision_log.mask_query", "must be a reference under data (got %q)", d.MaskQuery)
	}
	if d.HashSubject && d.SubjectSaltFile == "" {
		bad("decision_log.subject_salt_file", "required when decision_log.hash_subject is true")
	}
	if !d.HashSubject && d.SubjectSaltFile != "" {
		bad("decision_log.subject_salt_file", "is only used with decision_log.hash_subject: true")
	}
	h := d.HTTP
	if d.Sink == "http" {
		if h.URL == "" {
			bad("decision_log.http.url", "required when decision_log.sink is http")
		} else if err := checkEndpointURL(h.URL); err != nil {
			bad("decision_log.http.url", "%v", err)
		}
	}
	if h.BatchSize < 1 || h.BatchSize > maxUploadBatchSize {
		bad("decision_log.http.batch_size", "must be between 1 and %d (got %d)", maxUploadBatchSize, h.BatchSize)
	}
	if h.FlushInterval <= 0 {
		bad("decision_log.http.flush_interval", "must be a positive duration (got %s)", h.FlushInterval.D())
	}
	if h.Timeout <= 0 {
		bad("decision_log.http.timeout", "must be a positive duration (got %s)", h.Timeout.D())
	}
	if n := h.Retries(); n < 0 || n > maxUploadRetries {
		bad("decision_log.http.max_retries", "must be between 0 and %d (got %d)", maxUploadRetries, n)
	}
}

// checkEndpointURL accepts an absolute https URL without credentials, or http when the host is loopback.
func checkEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("must be an absolute URL (got %q)", raw)
	}
	if u.User != nil {
		return fmt.Errorf("must not carry credentials (got %s)", u.Redacted())
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && IsLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("must be https unless the host is loopback (got %q)", u.Redacted())
}
