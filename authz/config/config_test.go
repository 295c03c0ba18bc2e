package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `
listen: 127.0.0.1:9191
policy:
  paths: [policies]
jwt:
  issuers:
    - issuer: https://idp.example.com
      jwks_uri: https://idp.example.com/.well-known/jwks.json
      audiences: [payments-api]
`

func TestParseAppliesDefaults(t *testing.T) {
	c, err := Parse([]byte(good), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Query != DefaultQuery {
		t.Errorf("query = %q, want %q", c.Policy.Query, DefaultQuery)
	}
	if dc := c.Policy.DecisionCache; dc.Size != DefaultDecisionCacheSize || dc.TTL.D() != time.Minute {
		t.Errorf("decision cache defaults = %+v", dc)
	}
	if c.Log.MaxDenialsPerSecond != DefaultMaxDenialsPerSec {
		t.Errorf("log.max_denials_per_second default = %d", c.Log.MaxDenialsPerSecond)
	}
	if r := c.Runtime; r.GCPercent != DefaultGCPercent || r.MemoryLimitMiB != 0 || r.MemoryLimitRatio != DefaultMemoryLimitRatio {
		t.Errorf("runtime defaults = %+v", r)
	}
	if got := c.Policy.Paths[0]; got != "/etc/authz/policies" {
		t.Errorf("policy path = %q, want it resolved against the config directory", got)
	}
	j := c.JWT
	if j.Leeway.D() != 30*time.Second || j.MaxTokenBytes != 8192 || j.RefreshInterval.D() != 15*time.Minute ||
		j.UnknownKIDCooldown.D() != 10*time.Second || j.MaxStale.D() != 24*time.Hour {
		t.Errorf("jwt defaults = %+v", j)
	}
	if got := j.Issuers[0].Algorithms; len(got) != len(AsymmetricAlgorithms) {
		t.Errorf("algorithms default = %v, want all asymmetric", got)
	}
}

func TestParseRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error
	}{
		{"unknown top-level key names the key and line", "listen: 127.0.0.1:1\nlisten_addr: x\n" + "policy: {builtin: true}\ndev_issuer: {enabled: true}\n", "authz.yaml:2: listen_addr: unknown key"},
		{"unknown nested key names the full path", strings.Replace(good, "audiences:", "audience:", 1), "jwt.issuers[0].audience: unknown key"},
		{"wrong type names the key", strings.Replace(good, "listen: 127.0.0.1:9191", "listen: [a]", 1), "listen: want a string, got a list"},
		{"integer where a list is expected", strings.Replace(good, "paths: [policies]", "paths: 3", 1), "policy.paths: want a list, got an integer"},
		{"denial log budget below -1", good + "log: {max_denials_per_second: -2}\n", "log.max_denials_per_second: must be -1 (every denial) or a positive number (got -2)"},
		{"gc off without a memory limit", good + "runtime: {gc_percent: -1}\n", "runtime.gc_percent: -1 (off) needs runtime.memory_limit_mib"},
		{"gc percent out of range", good + "runtime: {gc_percent: 5}\n", "runtime.gc_percent: must be -1 (off) or between 25 and 2000 (got 5)"},
		{"memory limit too small", good + "runtime: {memory_limit_mib: 8}\n", "runtime.memory_limit_mib: must be between 32 and 1048576"},
		{"memory limit ratio above 1", good + "runtime: {memory_limit_ratio: 1.5}\n", "runtime.memory_limit_ratio: must be above 0 and at most 1 (got 1.5)"},
		{"bad duration", good + "  leeway: soon\n", `jwt.leeway: want a duration such as 30s (got "soon")`},
		{"missing audiences", strings.Replace(good, "      audiences: [payments-api]\n", "", 1), "jwt.issuers[0].audiences: required"},
		{"http jwks on a remote host", strings.Replace(good, "https://idp.example.com/.well-known", "http://idp.example.com/.well-known", 1), "jwt.issuers[0].jwks_uri: must be https unless the host is loopback"},
		{"symmetric algorithm refused", strings.Replace(good, "audiences: [payments-api]", "audiences: [payments-api]\n      algorithms: [HS256]", 1), `jwt.issuers[0].algorithms[0]: "HS256" is not an asymmetric JOSE algorithm`},
		{"alg none refused", strings.Replace(good, "audiences: [payments-api]", "audiences: [payments-api]\n      algorithms: [none]", 1), `algorithms[0]: "none"`},
		{"no issuers and no dev issuer", "policy: {builtin: true}\n", "jwt.issuers: required"},
		{"no policy", "dev_issuer: {enabled: true}\n", "policy.paths: required"},
		{"duplicate issuer", strings.Replace(good, "      audiences: [payments-api]\n", "      audiences: [payments-api]\n    - issuer: https://idp.example.com\n      jwks_uri: https://idp.example.com/j\n      audiences: [x]\n", 1), `jwt.issuers[1].issuer: duplicate issuer`},
		{"dev issuer off loopback", "policy: {builtin: true}\ndev_issuer: {enabled: true, listen: 0.0.0.0:9192}\n", "dev_issuer.listen: must be a loopback address"},
		{"token size bound", good + "  max_token_bytes: 10\n", "jwt.max_token_bytes: must be between"},
		{"invalid yaml", "listen: [", "authz.yaml"},
		{"duplicate key", good + "listen: 127.0.0.1:1\n", "listen: duplicate key"},
		{"decision cache size below -1", strings.Replace(good, "  paths: [policies]", "  paths: [policies]\n  decision_cache: {size: -2}", 1), "policy.decision_cache.size: must be -1 (off) or a positive size (got -2)"},
		{"decision cache ttl not a duration", strings.Replace(good, "  paths: [policies]", "  paths: [policies]\n  decision_cache: {ttl: 5}", 1), "policy.decision_cache.ttl: want a duration"},
		{"decision cache ttl negative", strings.Replace(good, "  paths: [policies]", "  paths: [policies]\n  decision_cache: {ttl: -1s}", 1), "policy.decision_cache.ttl: must be a positive duration"},
		{"path check switch is a boolean", good + "reject_non_normalized_paths: \"no\"\n", `reject_non_normalized_paths: want true or false, got a string ("no")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "authz.yaml", "/etc/authz")
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRejectNonNormalizedPathsIsOnUnlessTurnedOff(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want bool
	}{
		{"absent key keeps the check on", good, true},
		{"explicit null keeps the check on", good + "reject_non_normalized_paths: null\n", true},
		{"explicit true", good + "reject_non_normalized_paths: true\n", true},
		{"explicit false turns it off", good + "reject_non_normalized_paths: false\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "authz.yaml", "/etc/authz")
			if err != nil {
				t.Fatal(err)
			}
			if c.RejectNonNormalizedPaths != tc.want {
				t.Errorf("RejectNonNormalizedPaths = %v, want %v", c.RejectNonNormalizedPaths, tc.want)
			}
		})
	}
}

func TestPolicyPathsResolveAgainstTheConfigDirectory(t *testing.T) {
	y := strings.Replace(good, "paths: [policies]", `paths: [policies, "tables.routes:data/routes", /abs/policy.rego, "x.y:/abs/dir"]`, 1)
	c, err := Parse([]byte(y), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/etc/authz/policies", "tables.routes:/etc/authz/data/routes", "/abs/policy.rego", "x.y:/abs/dir"}
	for i, w := range want {
		if c.Policy.Paths[i] != w {
			t.Errorf("paths[%d] = %q, want %q", i, c.Policy.Paths[i], w)
		}
	}
}

func TestCheckJWKSURI(t *testing.T) {
	tests := []struct {
		uri string
		ok  bool
	}{
		{"https://idp.example.com/jwks", true},
		{"http://127.0.0.1:8080/jwks", true},
		{"http://[::1]:8080/jwks", true},
		{"http://localhost/jwks", true},
		{"http://10.0.0.1/jwks", false},
		{"http://idp.example.com/jwks", false},
		{"ftp://idp.example.com/jwks", false},
		{"/relative/jwks", false},
		{"", false},
	}
	for _, tc := range tests {
		if err := CheckJWKSURI(tc.uri); (err == nil) != tc.ok {
			t.Errorf("CheckJWKSURI(%q) = %v, want ok=%v", tc.uri, err, tc.ok)
		}
	}
}

func TestLoadReadsFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(p, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Paths[0] != filepath.Join(dir, "policies") {
		t.Errorf("paths = %v", c.Policy.Paths)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestRuntimeGCOffIsAcceptedWithAMemoryLimit(t *testing.T) {
	c, err := Parse([]byte(good+"runtime: {gc_percent: -1, memory_limit_mib: 256}\n"), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Runtime; r.GCPercent != -1 || r.MemoryLimitMiB != 256 {
		t.Errorf("runtime = %+v", r)
	}
}
