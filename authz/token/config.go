package token

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Defaults applied by [NewVerifier] to zero-valued [Config] fields.
const (
	DefaultLeeway             = 30 * time.Second
	DefaultMaxTokenBytes      = 8192
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultUnknownKIDCooldown = 10 * time.Second
	DefaultMaxStale           = 24 * time.Hour
	DefaultFetchTimeout       = 10 * time.Second
	DefaultMaxJWKSBytes       = 1 << 20
	DefaultCacheSize          = 10_000
)

// Config configures a [Verifier]. Zero values select the defaults above; the config package fills it from
// the YAML file.
type Config struct {
	// Issuers lists the trusted token issuers. A token is verified only against the keys of the issuer named
	// by its iss claim.
	Issuers []Issuer

	// Leeway is the clock skew tolerated on exp, nbf and iat. Default 30s.
	Leeway time.Duration
	// MaxTokenBytes bounds the raw token; longer tokens fail with ErrTooLarge before any parsing. Default 8192.
	MaxTokenBytes int

	// RefreshInterval is the period of the background JWKS refresh. Default 15m.
	RefreshInterval time.Duration
	// UnknownKIDCooldown is the least time between two JWKS fetches caused by requests (a token with a kid
	// not in the set, or a key set that is missing or too old). Default 10s.
	UnknownKIDCooldown time.Duration
	// MaxStale is how long after the last successful fetch cached keys keep verifying while the JWKS endpoint
	// fails. Past it the issuer fails closed with ErrKeysUnavailable. Default 24h.
	MaxStale time.Duration
	// FetchTimeout bounds one JWKS request. Default 10s.
	FetchTimeout time.Duration
	// MaxJWKSBytes bounds a JWKS response body; a larger one is an error and the previous keys stay.
	// Default 1 MiB.
	MaxJWKSBytes int64

	// CacheSize bounds the verification cache (entries). 0 selects the default of 10000; a negative value
	// disables the cache.
	CacheSize int

	// HTTPClient fetches key sets. Default: a client with TLS 1.2 as minimum and FetchTimeout as timeout.
	// Either way, redirects may only lead to URLs that would be accepted as a JWKSURI.
	HTTPClient *http.Client
	// Logger receives fetch failures and key set changes. Default slog.Default().
	Logger *slog.Logger
	// OnFetch, when set, is called after every JWKS fetch with the issuer (as configured) and the outcome,
	// nil on success; fetches cut short by Close are not reported. It runs on the fetching goroutine, so it
	// must return quickly. For metrics.
	OnFetch func(issuer string, err error)
	// Now is the clock for token validity, key set age, cooldowns and the cache. Default time.Now. The
	// background refresh schedule runs on real timers regardless.
	Now func() time.Time
}

// Issuer describes one trusted token issuer.
type Issuer struct {
	// Issuer is the exact value of the iss claim.
	Issuer string
	// JWKSURI is where the issuer publishes its JSON Web Key Set. It must be https unless its host is a
	// loopback address (127.0.0.0/8, ::1, localhost).
	JWKSURI string
	// Audiences lists accepted aud values; a token must carry at least one of them. At least one is required.
	Audiences []string
	// Algorithms lists accepted JWS algorithms. Default: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
	// ES384, ES512, EdDSA. "none" and HS* are refused.
	Algorithms []string
	// Types, when set, lists accepted values of the typ header, compared case-insensitively and with an
	// optional "application/" prefix (RFC 7515 §4.1.9), e.g. "at+jwt" for RFC 9068 access tokens. A token
	// without typ is then rejected.
	Types []string
}

// settings is a validated Config with defaults applied.
type settings struct {
	issuers            []issuerSettings
	leeway             time.Duration
	maxTokenBytes      int
	refreshInterval    time.Duration
	unknownKIDCooldown time.Duration
	maxStale           time.Duration
	fetchTimeout       time.Duration
	maxJWKSBytes       int64
	cacheSize          int // 0: disabled
	httpClient         *http.Client
	ownedTransport     *http.Transport // closed by Verifier.Close when the default client is used
	logger             *slog.Logger
	onFetch            func(issuer string, err error)
	now                func() time.Time
}

type issuerSettings struct {
	issuer     string
	jwksURI    *url.URL
	audiences  []string
	algorithms []string
	types      []string // normalised with normaliseType
}

// asymmetricAlgorithms are the JWS algorithms this package verifies, in a stable order.
func asymmetricAlgorithms() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

func (c Config) resolve() (settings, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	s := settings{
		leeway:             orDefault(c.Leeway, DefaultLeeway),
		maxTokenBytes:      orDefault(c.MaxTokenBytes, DefaultMaxTokenBytes),
		refreshInterval:    orDefault(c.RefreshInterval, DefaultRefreshInterval),
		unknownKIDCooldown: orDefault(c.UnknownKIDCooldown, DefaultUnknownKIDCooldown),
		maxStale:           orDefault(c.MaxStale, DefaultMaxStale),
		fetchTimeout:       orDefault(c.FetchTimeout, DefaultFetchTimeout),
		maxJWKSBytes:       orDefault(c.MaxJWKSBytes, DefaultMaxJWKSBytes),
		cacheSize:          orDefault(c.CacheSize, DefaultCacheSize),
		logger:             c.Logger,
		onFetch:            c.OnFetch,
		now:                c.Now,
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{
		{"leeway", c.Leeway}, {"refresh_interval", c.RefreshInterval}, {"unknown_kid_cooldown", c.UnknownKIDCooldown},
		{"max_stale", c.MaxStale}, {"fetch_timeout", c.FetchTimeout},
	} {
		if d.val < 0 {
			bad(d.key, "must not be negative (got %s)", d.val)
		}
	}
	if c.MaxTokenBytes < 0 {
		bad("max_token_bytes", "must not be negative (got %d)", c.MaxTokenBytes)
	}
	if c.MaxJWKSBytes < 0 {
		bad("max_jwks_bytes", "must not be negative (got %d)", c.MaxJWKSBytes)
	}
	if s.maxStale < s.refreshInterval {
		bad("max_stale", "must be at least refresh_interval (%s), or keys would go stale between refreshes (got %s)",
			s.refreshInterval, s.maxStale)
	}
	if c.CacheSize < 0 {
		s.cacheSize = 0
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}

	if len(c.Issuers) == 0 {
		bad("issuers", "at least one issuer is required")
	}
	seen := make(map[string]int, len(c.Issuers))
	for i, is := range c.Issuers {
		key := fmt.Sprintf("issuers[%d]", i)
		r, ierrs := is.resolve(key)
		errs = append(errs, ierrs...)
		if j, dup := seen[is.Issuer]; dup && is.Issuer != "" {
			bad(key+".issuer", "duplicates issuers[%d] (%q)", j, is.Issuer)
		}
		seen[is.Issuer] = i
		s.issuers = append(s.issuers, r)
	}
	if err := errors.Join(errs...); err != nil {
		return settings{}, err
	}

	if c.HTTPClient != nil {
		client := *c.HTTPClient
		client.CheckRedirect = redirectPolicy(c.HTTPClient.CheckRedirect)
		s.httpClient = &client
	} else {
		s.httpClient, s.ownedTransport = defaultHTTPClient(s.fetchTimeout)
	}
	return s, nil
}

func (is Issuer) resolve(key string) (issuerSettings, []error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, field, fmt.Sprintf(format, args...)))
	}
	r := issuerSettings{issuer: is.Issuer}
	if strings.TrimSpace(is.Issuer) == "" {
		bad("issuer", "must not be empty")
	}

	u, err := url.Parse(is.JWKSURI)
	switch {
	case is.JWKSURI == "":
		bad("jwks_uri", "must not be empty")
	case err != nil:
		bad("jwks_uri", "is not a URL")
	default:
		if err := checkFetchURL(u); err != nil {
			bad("jwks_uri", "%v (got %s)", err, u.Redacted())
		}
		r.jwksURI = u
	}

	if len(is.Audiences) == 0 {
		bad("audiences", "at least one audience is required")
	}
	for i, a := range is.Audiences {
		if strings.TrimSpace(a) == "" {
			bad(fmt.Sprintf("audiences[%d]", i), "must not be empty")
		}
	}
	r.audiences = slices.Clone(is.Audiences)

	r.algorithms = slices.Clone(is.Algorithms)
	if len(r.algorithms) == 0 {
		r.algorithms = asymmetricAlgorithms()
	}
	for i, alg := range r.algorithms {
		field := fmt.Sprintf("algorithms[%d]", i)
		switch {
		case strings.EqualFold(alg, "none"):
			bad(field, "%q is never allowed: it accepts unsigned tokens", alg)
		case len(alg) >= 2 && strings.EqualFold(alg[:2], "HS"):
			bad(field, "%q is never allowed: symmetric algorithms would accept tokens signed with public key bytes", alg)
		case !slices.Contains(asymmetricAlgorithms(), alg):
			bad(field, "unsupported algorithm %q (supported: %s)", alg, strings.Join(asymmetricAlgorithms(), ", "))
		}
	}

	for i, t := range is.Types {
		n := normaliseType(t)
		if n == "" {
			bad(fmt.Sprintf("types[%d]", i), "must not be empty")
		}
		r.types = append(r.types, n)
	}
	return r, errs
}

// normaliseType lower-cases a typ value and drops an "application/" prefix when no other "/" follows, as
// RFC 7515 §4.1.9 lets producers omit it.
func normaliseType(t string) string {
	t = strings.ToLower(strings.TrimSpace(t))
	if rest, ok := strings.CutPrefix(t, "application/"); ok && !strings.Contains(rest, "/") {
		return rest
	}
	return t
}

// checkFetchURL accepts absolute https URLs, and http URLs whose host is a loopback address.
func checkFetchURL(u *url.URL) error {
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("must be an absolute URL with a host")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return errors.New("must be https unless the host is a loopback address")
	default:
		return errors.New("must be https")
	}
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

// redirectPolicy keeps redirects of a JWKS request to URLs that would pass as a JWKSURI, so an https
// endpoint cannot hand the fetch over to plain http, then defers to the client's own policy.
func redirectPolicy(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if err := checkFetchURL(req.URL); err != nil {
			return fmt.Errorf("refusing redirect to %s: %w", req.URL.Redacted(), err)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 5 {
			return errors.New("stopped after 5 redirects")
		}
		return nil
	}
}

func defaultHTTPClient(timeout time.Duration) (*http.Client, *http.Transport) {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: redirectPolicy(nil)}, tr
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
