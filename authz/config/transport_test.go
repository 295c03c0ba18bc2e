package config

import (
	"strings"
	"testing"
	"time"
)

// base is a valid configuration without a listen address and without a tls section.
const base = `
policy:
  paths: [policies]
jwt:
  issuers:
    - issuer: https://idp.example.com
      jwks_uri: https://idp.example.com/.well-known/jwks.json
      audiences: [payments-api]
`

func TestTransportDefaults(t *testing.T) {
	c, err := Parse([]byte(base), "authz.yaml", "/etc/authz")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxResponseBytes != DefaultMaxResponseBytes || c.CheckTimeout.D() != time.Second ||
		c.MaxConcurrentChecks != 1024 || c.MaxConnections != DefaultMaxConnections {
		t.Errorf("limits = %d %s %d %d, want the defaults", c.MaxResponseBytes, c.CheckTimeout.D(), c.MaxConcurrentChecks, c.MaxConnections)
	}
	if got := c.TLS.Mode(); got != TLSModePlaintext {
		t.Errorf("mode without a tls section = %q, want plaintext", got)
	}
	if c.TLS.MinVersion != "" {
		t.Errorf("min_version without TLS = %q, want empty", c.TLS.MinVersion)
	}
}

func TestTransportModes(t *testing.T) {
	tests := []struct {
		name       string
		yaml       string
		wantMode   TLSMode
		wantCert   string
		wantCA     string
		wantMinVer string
	}{
		{"loopback without tls serves plaintext", "listen: 127.0.0.1:9191\n", TLSModePlaintext, "", "", ""},
		{"localhost without tls serves plaintext", "listen: localhost:9191\n", TLSModePlaintext, "", "", ""},
		{"IPv6 loopback without tls serves plaintext", "listen: '[::1]:9191'\n", TLSModePlaintext, "", "", ""},
		{"insecure_plaintext allows plaintext on all interfaces", "listen: 0.0.0.0:9191\ntls: {insecure_plaintext: true}\n", TLSModePlaintext, "", "", ""},
		{"cert and key serve TLS, paths relative to the config file", "listen: :9191\ntls: {cert_file: tls/tls.crt, key_file: tls/tls.key}\n",
			TLSModeTLS, "/etc/authz/tls/tls.crt", "", "tls1.2"},
		{"client CA turns on mTLS", "listen: :9191\ntls: {cert_file: /run/tls.crt, key_file: /run/tls.key, client_ca_file: ca.pem}\n",
			TLSModeMTLS, "/run/tls.crt", "/etc/authz/ca.pem", "tls1.2"},
		{"TLS 1.3 only", "listen: :9191\ntls: {cert_file: a, key_file: b, min_version: tls1.3}\n", TLSModeTLS, "/etc/authz/a", "", "tls1.3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(base+tc.yaml), "authz.yaml", "/etc/authz")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.TLS.Mode(); got != tc.wantMode {
				t.Errorf("mode = %q, want %q", got, tc.wantMode)
			}
			if c.TLS.CertFile != tc.wantCert || c.TLS.ClientCAFile != tc.wantCA {
				t.Errorf("cert_file = %q, client_ca_file = %q, want %q and %q", c.TLS.CertFile, c.TLS.ClientCAFile, tc.wantCert, tc.wantCA)
			}
			if c.TLS.MinVersion != tc.wantMinVer {
				t.Errorf("min_version = %q, want %q", c.TLS.MinVersion, tc.wantMinVer)
			}
		})
	}
}

func TestTransportRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error
	}{
		{"plaintext on all interfaces is refused", "listen: 0.0.0.0:9191\n",
			`authz.yaml: tls: required when listen is not a loopback address (got "0.0.0.0:9191")`},
		{"plaintext on an empty host is refused", "listen: :9191\n", `tls: required when listen is not a loopback address`},
		{"plaintext on a routable address is refused", "listen: 10.0.0.7:9191\ntls: {insecure_plaintext: false}\n", `tls: required`},
		{"cert without key", "listen: :9191\ntls: {cert_file: a}\n", "tls.key_file: required when tls.cert_file is set"},
		{"key without cert", "tls: {key_file: a}\n", "tls.cert_file: required when tls.key_file is set"},
		{"client CA without a server certificate", "tls: {client_ca_file: ca.pem}\n", "tls.client_ca_file: needs tls.cert_file"},
		{"insecure_plaintext together with a certificate", "tls: {cert_file: a, key_file: b, insecure_plaintext: true}\n",
			"tls.insecure_plaintext: must not be set together with tls.cert_file"},
		{"TLS 1.1 is not a minimum version", "tls: {cert_file: a, key_file: b, min_version: tls1.1}\n", `tls.min_version: must be tls1.2 or tls1.3 (got "tls1.1")`},
		{"min_version written as a number", "tls: {cert_file: a, key_file: b, min_version: 1.2}\n", "tls.min_version: want a string, got a number"},
		{"min_version without TLS", "tls: {min_version: tls1.3}\n", "tls.min_version: needs tls.cert_file"},
		{"unknown tls key", "tls: {ca_file: x}\n", "tls.ca_file: unknown key"},
		{"negative check_timeout", "check_timeout: -1s\n", "check_timeout: must be a positive duration"},
		{"check_timeout over a minute", "check_timeout: 5m\n", "check_timeout: must be a positive duration of at most 1m (got 5m0s)"},
		{"negative max_concurrent_checks", "max_concurrent_checks: -5\n", "max_concurrent_checks: must be between 1 and 1048576"},
		{"zero-ish max_connections", "max_connections: -2\n", "max_connections: must be -1 (unlimited) or a positive count"},
		{"tiny max_response_bytes", "max_response_bytes: 10\n", "max_response_bytes: must be between 1024 and 67108864"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base+tc.yaml), "authz.yaml", "/etc/authz")
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
