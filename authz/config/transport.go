package config

import (
	"net"
	"path/filepath"
	"time"
)

// Defaults of the gRPC listener's transport keys.
const (
	DefaultMaxResponseBytes    = 4 << 20
	DefaultCheckTimeout        = time.Second
	DefaultMaxConcurrentChecks = 1024
	DefaultMaxConnections      = 4096
	DefaultTLSMinVersion       = "tls1.2"
)

// TLS configures transport security of the gRPC listener. With cert_file and key_file it serves TLS; with
// client_ca_file as well it requires and verifies client certificates (mTLS). Without them it serves plaintext,
// which is refused unless the listen address is loopback or insecure_plaintext is set.
type TLS struct {
	// CertFile is the PEM certificate chain, leaf first; KeyFile its private key. Both are re-read when they
	// change.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile holds the PEM CA certificates that client certificates must chain to. Setting it requires a
	// client certificate on every connection.
	ClientCAFile string `yaml:"client_ca_file"`
	// MinVersion is tls1.2 (TLS 1.2 with ECDHE and AEAD cipher suites only) or tls1.3.
	MinVersion string `yaml:"min_version"`
	// InsecurePlaintext allows serving plaintext on an address that is not loopback: only behind a transport
	// that secures the connection already (a mesh sidecar on the same pod network namespace, for example).
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
}

// TLSMode is how the gRPC listener secures its connections.
type TLSMode string

// The listener's transport modes.
const (
	TLSModePlaintext TLSMode = "plaintext"
	TLSModeTLS       TLSMode = "tls"
	TLSModeMTLS      TLSMode = "mtls"
)

// Mode is the transport mode that the keys set.
func (t TLS) Mode() TLSMode {
	switch {
	case t.CertFile == "":
		return TLSModePlaintext
	case t.ClientCAFile == "":
		return TLSModeTLS
	}
	return TLSModeMTLS
}

func (c *Config) applyTransportDefaults() {
	setDefault(&c.MaxResponseBytes, DefaultMaxResponseBytes)
	setDefault(&c.CheckTimeout, Duration(DefaultCheckTimeout))
	setDefault(&c.MaxConcurrentChecks, DefaultMaxConcurrentChecks)
	setDefault(&c.MaxConnections, DefaultMaxConnections)
	if c.TLS.CertFile != "" {
		setDefault(&c.TLS.MinVersion, DefaultTLSMinVersion)
	}
}

// validateTransport checks the listener's limits and TLS keys; bad reports one error naming the key.
func (c *Config) validateTransport(bad func(key, format string, args ...any)) {
	if c.MaxResponseBytes < 1024 || c.MaxResponseBytes > 64<<20 {
		bad("max_response_bytes", "must be between 1024 and 67108864 (got %d)", c.MaxResponseBytes)
	}
	// Envoy's ext_authz timeout (default 200ms) arrives as the gRPC deadline and wins when shorter; this bounds
	// checks whose deadline is absent or longer.
	if c.CheckTimeout <= 0 || c.CheckTimeout.D() > time.Minute {
		bad("check_timeout", "must be a positive duration of at most 1m (got %s)", c.CheckTimeout.D())
	}
	if c.MaxConcurrentChecks < 1 || c.MaxConcurrentChecks > 1<<20 {
		bad("max_concurrent_checks", "must be between 1 and 1048576 (got %d)", c.MaxConcurrentChecks)
	}
	if c.MaxConnections != -1 && c.MaxConnections < 1 {
		bad("max_connections", "must be -1 (unlimited) or a positive count (got %d)", c.MaxConnections)
	}

	t := c.TLS
	switch {
	case t.CertFile == "" && t.KeyFile != "":
		bad("tls.cert_file", "required when tls.key_file is set")
	case t.CertFile != "" && t.KeyFile == "":
		bad("tls.key_file", "required when tls.cert_file is set")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		bad("tls.client_ca_file", "needs tls.cert_file and tls.key_file: client certificates are verified over TLS only")
	}
	if t.MinVersion != "" && t.CertFile == "" {
		bad("tls.min_version", "needs tls.cert_file and tls.key_file")
	} else if t.MinVersion != "" && t.MinVersion != "tls1.2" && t.MinVersion != "tls1.3" {
		bad("tls.min_version", "must be tls1.2 or tls1.3 (got %q)", t.MinVersion)
	}
	if t.InsecurePlaintext && t.CertFile != "" {
		bad("tls.insecure_plaintext", "must not be set together with tls.cert_file")
	}
	if t.CertFile == "" && t.KeyFile == "" && !t.InsecurePlaintext {
		if host, _, err := net.SplitHostPort(c.Listen); err == nil && !IsLoopback(host) {
			bad("tls", "required when listen is not a loopback address (got %q): set tls.cert_file and tls.key_file, "+
				"or tls.insecure_plaintext: true to serve plaintext", c.Listen)
		}
	}
}

// resolve makes the TLS file paths absolute against dir, the configuration file's directory.
func (t *TLS) resolve(dir string) {
	for _, p := range []*string{&t.CertFile, &t.KeyFile, &t.ClientCAFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
