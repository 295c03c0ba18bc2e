package config

import (
	"strings"
	"testing"
	"time"
)

func TestTelemetryDefaults(t *testing.T) {
	c, err := Parse([]byte(good), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Admin
	if !a.On() || a.Listen != "127.0.0.1:9190" || !a.ListenDefaulted || a.AllowRemote || a.PProf {
		t.Errorf("admin defaults = %+v, want on at 127.0.0.1:9190 (defaulted), loopback only, no pprof", a)
	}
	tr := c.Tracing
	if tr.Enabled || tr.Endpoint != "http://127.0.0.1:4317" || tr.Ratio() != 1 || tr.ServiceName != "authz" {
		t.Errorf("tracing defaults = %+v (ratio %g)", tr, tr.Ratio())
	}
	d := c.DecisionLog
	if d.Enabled || d.Sink != "stdout" || d.Buffer != 10000 || d.IncludeInput || d.IncludePath || d.HashSubject ||
		d.MaskQuery != "data.system.log.mask" {
		t.Errorf("decision_log defaults = %+v", d)
	}
	h := d.HTTP
	if h.BatchSize != 500 || h.FlushInterval.D() != 5*time.Second || h.Timeout.D() != 10*time.Second || h.Retries() != 5 {
		t.Errorf("decision_log.http defaults = %+v", h)
	}
}

func TestTelemetryKeysAreRead(t *testing.T) {
	yaml := good + `
admin:
  listen: 0.0.0.0:9464
  allow_remote: true
  pprof: true
tracing:
  enabled: true
  endpoint: https://otel-collector.observability:4317
  sample_ratio: 0
decision_log:
  enabled: true
  sink: http
  include_input: true
  include_path: true
  hash_subject: true
  subject_salt_file: secrets/salt
  mask_query: data.authz.log.mask
  http:
    url: https://logs.bank.example/v1/decisions
    batch_size: 50
    flush_interval: 1s
    max_retries: 0
    bearer_token_file: /var/run/secrets/token
`
	c, err := Parse([]byte(yaml), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.ListenDefaulted || c.Admin.Listen != "0.0.0.0:9464" || !c.Admin.PProf {
		t.Errorf("admin = %+v", c.Admin)
	}
	if c.Tracing.SampleRatio == nil || c.Tracing.Ratio() != 0 {
		t.Errorf("an explicit sample_ratio: 0 became %v: it must not be taken for absent", c.Tracing.SampleRatio)
	}
	d := c.DecisionLog
	if d.SubjectSaltFile != "/etc/authz/secrets/salt" {
		t.Errorf("subject_salt_file = %q, want it resolved against the config directory", d.SubjectSaltFile)
	}
	if d.HTTP.BearerTokenFile != "/var/run/secrets/token" || d.HTTP.Retries() != 0 || d.HTTP.BatchSize != 50 {
		t.Errorf("decision_log.http = %+v", d.HTTP)
	}
	if d.MaskQuery != "data.authz.log.mask" {
		t.Errorf("mask_query = %q", d.MaskQuery)
	}
}

func TestAdminCanBeTurnedOff(t *testing.T) {
	c, err := Parse([]byte(good+"admin: {enabled: false, listen: 'not an address'}\n"), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatalf("a disabled admin listener's address was validated: %v", err)
	}
	if c.Admin.On() {
		t.Error("admin.enabled: false left the listener on")
	}
}

func TestTelemetryRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error
	}{
		{"admin on a remote address needs allow_remote", "admin: {listen: 0.0.0.0:9190}\n",
			`admin.listen: must be a loopback address unless admin.allow_remote is true (got "0.0.0.0:9190")`},
		{"admin on all interfaces needs allow_remote", "admin: {listen: ':9190'}\n", "admin.listen: must be a loopback address"},
		{"admin address must be host:port", "admin: {listen: localhost}\n", `admin.listen: must be host:port (got "localhost")`},
		{"admin must not share the gRPC port", "admin: {listen: '127.0.0.1:9191'}\n", `admin.listen: must differ from listen`},
		{"tracing to a remote collector over plaintext", "tracing: {enabled: true, endpoint: 'http://collector:4317'}\n",
			"tracing.endpoint: must be https unless the host is loopback"},
		{"tracing endpoint must be a URL", "tracing: {enabled: true, endpoint: 'collector:4317'}\n", "tracing.endpoint: must be"},
		{"sample ratio above 1", "tracing: {sample_ratio: 1.5}\n", "tracing.sample_ratio: must be between 0 and 1 (got 1.5)"},
		{"sample ratio below 0", "tracing: {sample_ratio: -0.1}\n", "tracing.sample_ratio: must be between 0 and 1"},
		{"sample ratio must be a number", "tracing: {sample_ratio: half}\n", `tracing.sample_ratio: want a number, got a string ("half")`},
		{"unknown sink", "decision_log: {sink: kafka}\n", `decision_log.sink: must be stdout, file or http (got "kafka")`},
		{"file sink needs a file", "decision_log: {sink: file}\n", "decision_log.file: required when decision_log.sink is file"},
		{"http sink needs a url", "decision_log: {sink: http}\n", "decision_log.http.url: required when decision_log.sink is http"},
		{"http sink refuses plaintext to a remote host", "decision_log: {sink: http, http: {url: 'http://logs.bank.example/'}}\n",
			"decision_log.http.url: must be https unless the host is loopback"},
		{"http sink refuses credentials in the url", "decision_log: {sink: http, http: {url: 'https://u:p@logs.bank.example/'}}\n",
			"decision_log.http.url: must not carry credentials"},
		{"buffer must be positive", "decision_log: {buffer: -1}\n", "decision_log.buffer: must be between 1 and 1048576 (got -1)"},
		{"hashing the subject needs a salt", "decision_log: {hash_subject: true}\n",
			"decision_log.subject_salt_file: required when decision_log.hash_subject is true"},
		{"a salt without hashing is a mistake", "decision_log: {subject_salt_file: salt}\n",
			"decision_log.subject_salt_file: is only used with decision_log.hash_subject: true"},
		{"mask query under data", "decision_log: {mask_query: 'input.x'}\n", "decision_log.mask_query: must be a reference under data"},
		{"batch size bounded", "decision_log: {http: {batch_size: 20000}}\n", "decision_log.http.batch_size: must be between 1 and 10000"},
		{"retries bounded", "decision_log: {http: {max_retries: 21}}\n", "decision_log.http.max_retries: must be between 0 and 20"},
		{"flush interval positive", "decision_log: {http: {flush_interval: -1s}}\n", "decision_log.http.flush_interval: must be a positive duration"},
		{"unknown decision_log key", "decision_log: {include_token: true}\n", "decision_log.include_token: unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(good+tc.yaml), "authz.yaml", "/etc/authz")
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "authz.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}
