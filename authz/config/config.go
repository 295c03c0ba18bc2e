// Package config reads, defaults and validates the service's YAML configuration.
//
// The file is decoded strictly: an unknown key, a value of the wrong type or a missing required value is an error
// that names the file, the line and the key (for example
// `authz.yaml:7: jwt.issuers[0].jwks_uri: must be https unless the host is loopback (got "http://idp")`).
// Everything is checked once, at start; the request path only sees ready values.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults for the keys that have one.
const (
	DefaultListen             = "127.0.0.1:9191"
	DefaultQuery              = "data.envoy.authz.allow"
	DefaultLeeway             = 30 * time.Second
	DefaultMaxTokenBytes      = 8192
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultUnknownKIDCooldown = 10 * time.Second
	DefaultMaxStale           = 24 * time.Hour
	DefaultFetchTimeout       = 10 * time.Second
	DefaultMaxJWKSBytes       = 1 << 20
	DefaultCacheSize          = 10000
	DefaultDecisionCacheSize  = 10000
	DefaultDecisionCacheTTL   = time.Minute
	DefaultGracePeriod        = 15 * time.Second
	DefaultDevIssuerListen    = "127.0.0.1:9192"
	DefaultMaxRequestBytes    = 4 << 20
	DefaultMaxDenialsPerSec   = 100
)

// AsymmetricAlgorithms are the JOSE algorithms accepted when an issuer lists none. Symmetric (HS*) and "none" are
// never accepted: a JWKS holds public keys, and a shared secret cannot prove who signed.
var AsymmetricAlgorithms = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// Config is the whole configuration file.
type Config struct {
	// Listen is the gRPC listen address (ext_authz, grpc.health.v1 and reflection).
	Listen string `yaml:"listen"`
	// GracePeriod bounds how long a stopping server waits for in-flight checks.
	GracePeriod Duration `yaml:"grace_period"`
	// MaxRequestBytes bounds the size of one gRPC message received.
	MaxRequestBytes int       `yaml:"max_request_bytes"`
	Policy          Policy    `yaml:"policy"`
	JWT             JWT       `yaml:"jwt"`
	DevIssuer       DevIssuer `yaml:"dev_issuer"`
	Log             Log       `yaml:"log"`

	// Observability: the admin HTTP listener, tracing and decision logs (telemetry.go).
	Admin       Admin       `yaml:"admin"`
	Tracing     Tracing     `yaml:"tracing"`
	DecisionLog DecisionLog `yaml:"decision_log"`

	// Runtime tunes the Go runtime's garbage collector (runtime.go).
	Runtime Runtime `yaml:"runtime"`

	// The gRPC listener's limits and transport security (transport.go).
	MaxResponseBytes    int      `yaml:"max_response_bytes"`    // largest gRPC message sent
	CheckTimeout        Duration `yaml:"check_timeout"`         // bounds a check whose deadline is absent or later
	MaxConcurrentChecks int      `yaml:"max_concurrent_checks"` // checks in progress at once; more fail fast
	MaxConnections      int      `yaml:"max_connections"`       // open connections; -1 for no bound
	TLS                 TLS      `yaml:"tls"`

	// RejectNonNormalizedPaths denies, with 400 invalid_path, a request whose path is not in the normal form
	// Envoy forwards with normalize_path, merge_slashes and path_with_escaped_slashes_action: REJECT_REQUEST
	// (dot segments, "//", an encoded "/" or "\", control characters, a ";" parameter, ...), so that a
	// misconfigured Envoy cannot make the policy decide on a path the application reads differently. Default true.
	RejectNonNormalizedPaths bool `yaml:"reject_non_normalized_paths"`

	// Dir is the directory of the file the configuration was read from; relative paths resolve against it.
	Dir string `yaml:"-"`
	// File names the configuration's source in error messages.
	File string `yaml:"-"`
}

// Policy selects the Rego policy and the decision query.
type Policy struct {
	// Paths are .rego, .json and .yaml files or directories, relative to the configuration file's directory.
	Paths []string `yaml:"paths"`
	// Builtin loads the policy library compiled into the binary instead of Paths.
	Builtin bool `yaml:"builtin"`
	// Query is the decision's reference; OPA-Envoy's default.
	Query string `yaml:"query"`
	// ValidationQuery, when set, is evaluated once per policy revision: a non-empty result (a set or array of
	// messages) refuses the revision. The shipped library's is data.authz.lib.routing.errors.
	ValidationQuery string `yaml:"validation_query"`
	// DecisionCache remembers decisions per policy revision, keyed by the input values the policy reads.
	DecisionCache DecisionCache `yaml:"decision_cache"`
}

// DecisionCache bounds the policy's decision cache. Decisions that read the clock, the network or randomness
// are never cached; the others are exact for as long as their revision serves.
type DecisionCache struct {
	// Size bounds the decisions remembered; -1 turns the cache off.
	Size int `yaml:"size"`
	// TTL bounds how long a decision is remembered.
	TTL Duration `yaml:"ttl"`
}

// JWT configures bearer token verification.
type JWT struct {
	Issuers            []Issuer `yaml:"issuers"`
	Leeway             Duration `yaml:"leeway"`
	MaxTokenBytes      int      `yaml:"max_token_bytes"`
	RefreshInterval    Duration `yaml:"refresh_interval"`
	UnknownKIDCooldown Duration `yaml:"unknown_kid_cooldown"`
	// MaxStale is how long keys fetched from an issuer keep verifying after its JWKS endpoint stopped answering.
	MaxStale     Duration `yaml:"max_stale"`
	FetchTimeout Duration `yaml:"fetch_timeout"`
	MaxJWKSBytes int      `yaml:"max_jwks_bytes"`
	// CacheSize bounds the verified-token cache; -1 disables it.
	CacheSize int `yaml:"cache_size"`
}

// Issuer is one trusted token issuer.
type Issuer struct {
	Issuer     string   `yaml:"issuer"`
	JWKSURI    string   `yaml:"jwks_uri"`
	Audiences  []string `yaml:"audiences"`
	Algorithms []string `yaml:"algorithms"`
	// Types, when set, are the accepted JOSE "typ" values (RFC 9068: "at+jwt").
	Types []string `yaml:"types"`
}

// DevIssuer is the development token issuer that the binary runs itself. Never enable it in production.
type DevIssuer struct {
	Enabled bool `yaml:"enabled"`
	// Listen is where its JWKS is served; it must be a loopback address.
	Listen string `yaml:"listen"`
	// KeyFile holds its signing key; created on first use. Default: the user cache directory.
	KeyFile string `yaml:"key_file"`
}

// Log configures the service's logs.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
	// MaxDenialsPerSecond bounds the "check denied" info lines; the denials over it are counted and reported in
	// one line with the next one logged. -1: every denial is logged. Metrics and decision logs see every check.
	MaxDenialsPerSecond int `yaml:"max_denials_per_second"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "15m").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads, defaults and validates the configuration file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, filepath.Base(path), filepath.Dir(abs))
}

// Parse decodes data (named name in errors), resolves relative paths against dir, applies defaults and
// validates.
func Parse(data []byte, name, dir string) (*Config, error) {
	// A boolean whose default is true is set before decoding: an absent key (or an explicit null) keeps it.
	c := Config{RejectNonNormalizedPaths: true}
	if err := decode(data, name, &c); err != nil {
		return nil, err
	}
	c.File, c.Dir = name, dir
	c.applyDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	for i, p := range c.Policy.Paths {
		// OPA's "a.b:path" form loads path under data.a.b; only the path part is relative to dir.
		prefix, path := "", p
		if before, after, ok := strings.Cut(p, ":"); ok && before != "" && !strings.ContainsAny(before, `/\`) {
			prefix, path = before+":", after
		}
		if !filepath.IsAbs(path) {
			c.Policy.Paths[i] = prefix + filepath.Join(dir, path)
		}
	}
	if c.DevIssuer.KeyFile != "" && !filepath.IsAbs(c.DevIssuer.KeyFile) {
		c.DevIssuer.KeyFile = filepath.Join(dir, c.DevIssuer.KeyFile)
	}
	c.TLS.resolve(dir)
	return &c, nil
}

func (c *Config) applyDefaults() {
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.GracePeriod, Duration(DefaultGracePeriod))
	setDefault(&c.MaxRequestBytes, DefaultMaxRequestBytes)
	c.applyTransportDefaults()
	c.applyTelemetryDefaults()
	c.Runtime.applyDefaults()
	setDefault(&c.Policy.Query, DefaultQuery)
	setDefault(&c.Policy.DecisionCache.Size, DefaultDecisionCacheSize)
	setDefault(&c.Policy.DecisionCache.TTL, Duration(DefaultDecisionCacheTTL))
	j := &c.JWT
	setDefault(&j.Leeway, Duration(DefaultLeeway))
	setDefault(&j.MaxTokenBytes, DefaultMaxTokenBytes)
	setDefault(&j.RefreshInterval, Duration(DefaultRefreshInterval))
	setDefault(&j.UnknownKIDCooldown, Duration(DefaultUnknownKIDCooldown))
	setDefault(&j.MaxStale, Duration(DefaultMaxStale))
	setDefault(&j.FetchTimeout, Duration(DefaultFetchTimeout))
	setDefault(&j.MaxJWKSBytes, DefaultMaxJWKSBytes)
	setDefault(&j.CacheSize, DefaultCacheSize)
	for i := range j.Issuers {
		if len(j.Issuers[i].Algorithms) == 0 {
			j.Issuers[i].Algorithms = slices.Clone(AsymmetricAlgorithms)
		}
	}
	if c.DevIssuer.Enabled {
		setDefault(&c.DevIssuer.Listen, DefaultDevIssuerListen)
	}
	setDefault(&c.Log.Level, "info")
	setDefault(&c.Log.Format, "text")
	setDefault(&c.Log.MaxDenialsPerSecond, DefaultMaxDenialsPerSec)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// validate checks every value; the error names the key.
func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", c.File, key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "must be host:port (got %q)", c.Listen)
	}
	positive := func(key string, d Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration (got %s)", d.D())
		}
	}
	positive("grace_period", c.GracePeriod)
	if c.MaxRequestBytes < 1024 || c.MaxRequestBytes > 64<<20 {
		bad("max_request_bytes", "must be between 1024 and 67108864 (got %d)", c.MaxRequestBytes)
	}
	c.validateTransport(bad)
	c.validateTelemetry(bad)
	c.validateRuntime(bad)

	switch {
	case c.Policy.Builtin && len(c.Policy.Paths) > 0:
		bad("policy.paths", "must be empty when policy.builtin is true")
	case !c.Policy.Builtin && len(c.Policy.Paths) == 0:
		bad("policy.paths", "required (or set policy.builtin: true)")
	}
	for i, p := range c.Policy.Paths {
		if strings.TrimSpace(p) == "" {
			bad(fmt.Sprintf("policy.paths[%d]", i), "must not be empty")
		}
	}
	if !strings.HasPrefix(c.Policy.Query, "data.") {
		bad("policy.query", "must be a reference under data (got %q)", c.Policy.Query)
	}
	if v := c.Policy.ValidationQuery; v != "" && !strings.HasPrefix(v, "data.") {
		bad("policy.validation_query", "must be a reference under data (got %q)", v)
	}
	if n := c.Policy.DecisionCache.Size; n < -1 {
		bad("policy.decision_cache.size", "must be -1 (off) or a positive size (got %d)", n)
	}
	positive("policy.decision_cache.ttl", c.Policy.DecisionCache.TTL)

	j := c.JWT
	if len(j.Issuers) == 0 && !c.DevIssuer.Enabled {
		bad("jwt.issuers", "required: at least one issuer")
	}
	seen := map[string]bool{}
	for i, is := range j.Issuers {
		key := fmt.Sprintf("jwt.issuers[%d]", i)
		if is.Issuer == "" {
			bad(key+".issuer", "required")
		} else if seen[is.Issuer] {
			bad(key+".issuer", "duplicate issuer %q", is.Issuer)
		}
		seen[is.Issuer] = true
		if err := CheckJWKSURI(is.JWKSURI); err != nil {
			bad(key+".jwks_uri", "%v", err)
		}
		if len(is.Audiences) == 0 {
			bad(key+".audiences", "required: at least one audience")
		}
		for k, a := range is.Audiences {
			if a == "" {
				bad(fmt.Sprintf("%s.audiences[%d]", key, k), "must not be empty")
			}
		}
		for k, a := range is.Algorithms {
			if !slices.Contains(AsymmetricAlgorithms, a) {
				bad(fmt.Sprintf("%s.algorithms[%d]", key, k), "%q is not an asymmetric JOSE algorithm (allowed: %s)",
					a, strings.Join(AsymmetricAlgorithms, ", "))
			}
		}
	}
	positive("jwt.leeway", j.Leeway)
	if j.Leeway.D() > 5*time.Minute {
		bad("jwt.leeway", "must be at most 5m (got %s)", j.Leeway.D())
	}
	if j.MaxTokenBytes < 256 || j.MaxTokenBytes > 1<<20 {
		bad("jwt.max_token_bytes", "must be between 256 and 1048576 (got %d)", j.MaxTokenBytes)
	}
	positive("jwt.refresh_interval", j.RefreshInterval)
	positive("jwt.unknown_kid_cooldown", j.UnknownKIDCooldown)
	positive("jwt.max_stale", j.MaxStale)
	if j.MaxStale < j.RefreshInterval {
		bad("jwt.max_stale", "must be at least jwt.refresh_interval (%s), or keys go stale between refreshes (got %s)", j.RefreshInterval.D(), j.MaxStale.D())
	}
	positive("jwt.fetch_timeout", j.FetchTimeout)
	if j.MaxJWKSBytes < 1024 || j.MaxJWKSBytes > 16<<20 {
		bad("jwt.max_jwks_bytes", "must be between 1024 and 16777216 (got %d)", j.MaxJWKSBytes)
	}
	if j.CacheSize < -1 {
		bad("jwt.cache_size", "must be -1 (off) or a positive size (got %d)", j.CacheSize)
	}

	if c.DevIssuer.Enabled {
		if err := checkLoopbackListen(c.DevIssuer.Listen); err != nil {
			bad("dev_issuer.listen", "%v", err)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "must be debug, info, warn or error (got %q)", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		bad("log.format", "must be text or json (got %q)", c.Log.Format)
	}
	if n := c.Log.MaxDenialsPerSecond; n < -1 {
		bad("log.max_denials_per_second", "must be -1 (every denial) or a positive number (got %d)", n)
	}
	return errors.Join(errs...)
}

// CheckJWKSURI accepts an absolute https URL, or http only when the host is a loopback address.
func CheckJWKSURI(raw string) error {
	if raw == "" {
		return errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("must be an absolute URL (got %q)", raw)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && IsLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("must be https unless the host is loopback (got %q)", raw)
}

// IsLoopback reports whether host is "localhost" or a loopback IP address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkLoopbackListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port (got %q)", addr)
	}
	if !IsLoopback(host) {
		return fmt.Errorf("must be a loopback address: the development issuer is never exposed (got %q)", addr)
	}
	return nil
}
