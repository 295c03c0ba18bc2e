package token

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func validIssuer() Issuer {
	return Issuer{Issuer: issA, JWKSURI: "https://idp-a.bank.example/jwks", Audiences: []string{"payments-api"}}
}

func TestNewVerifierRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	iss := func(mutate func(*Issuer)) []Issuer {
		is := validIssuer()
		mutate(&is)
		return []Issuer{is}
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no issuer", Config{}, "issuers: at least one issuer is required"},
		{"empty issuer name", Config{Issuers: iss(func(i *Issuer) { i.Issuer = " " })}, "issuers[0].issuer: must not be empty"},
		{"duplicate issuer", Config{Issuers: []Issuer{validIssuer(), validIssuer()}}, "issuers[1].issuer: duplicates issuers[0]"},
		{"http jwks_uri on a public host", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "http://idp.bank.example/jwks" })},
			"issuers[0].jwks_uri: must be https unless the host is a loopback address (got http://idp.bank.example/jwks)"},
		{"http jwks_uri on a private address", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "http://10.0.0.7/jwks" })},
			"must be https unless the host is a loopback address"},
		{"http jwks_uri on a host named like localhost", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "http://localhost.evil.example/jwks" })},
			"must be https unless the host is a loopback address"},
		{"ftp jwks_uri", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "ftp://idp.bank.example/jwks" })}, "jwks_uri: must be https"},
		{"relative jwks_uri", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "/jwks" })}, "jwks_uri: must be an absolute URL"},
		{"empty jwks_uri", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "" })}, "jwks_uri: must not be empty"},
		{"jwks_uri with credentials", Config{Issuers: iss(func(i *Issuer) { i.JWKSURI = "https://u:secret@idp.bank.example/jwks" })},
			"jwks_uri: must not carry credentials (got https://u:xxxxx@idp.bank.example/jwks)"},
		{"no audience", Config{Issuers: iss(func(i *Issuer) { i.Audiences = nil })}, "issuers[0].audiences: at least one audience is required"},
		{"blank audience", Config{Issuers: iss(func(i *Issuer) { i.Audiences = []string{"a", ""} })}, "issuers[0].audiences[1]: must not be empty"},
		{"alg none", Config{Issuers: iss(func(i *Issuer) { i.Algorithms = []string{"none"} })}, `algorithms[0]: "none" is never allowed`},
		{"alg None", Config{Issuers: iss(func(i *Issuer) { i.Algorithms = []string{"RS256", "None"} })}, `algorithms[1]: "None" is never allowed`},
		{"alg HS256", Config{Issuers: iss(func(i *Issuer) { i.Algorithms = []string{"HS256"} })}, `algorithms[0]: "HS256" is never allowed`},
		{"alg hs512", Config{Issuers: iss(func(i *Issuer) { i.Algorithms = []string{"hs512"} })}, `algorithms[0]: "hs512" is never allowed`},
		{"unsupported alg", Config{Issuers: iss(func(i *Issuer) { i.Algorithms = []string{"ES256K"} })}, `unsupported algorithm "ES256K"`},
		{"alg in the wrong case", Config{Issuers: iss(func(i *Issuer) { i.Algorithms = []string{"rs256"} })}, `unsupported algorithm "rs256"`},
		{"blank type", Config{Issuers: iss(func(i *Issuer) { i.Types = []string{" "} })}, "issuers[0].types[0]: must not be empty"},
		{"negative leeway", Config{Issuers: iss(func(*Issuer) {}), Leeway: -time.Second}, "leeway: must not be negative"},
		{"negative cooldown", Config{Issuers: iss(func(*Issuer) {}), UnknownKIDCooldown: -1}, "unknown_kid_cooldown: must not be negative"},
		{"negative token limit", Config{Issuers: iss(func(*Issuer) {}), MaxTokenBytes: -1}, "max_token_bytes: must not be negative"},
		{"negative body limit", Config{Issuers: iss(func(*Issuer) {}), MaxJWKSBytes: -1}, "max_jwks_bytes: must not be negative"},
		{"max_stale shorter than refresh_interval", Config{Issuers: iss(func(*Issuer) {}), MaxStale: time.Minute},
			"max_stale: must be at least refresh_interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name+" is rejected", func(t *testing.T) {
			v, err := NewVerifier(context.Background(), tc.cfg)
			if err == nil {
				v.Close()
				t.Fatalf("NewVerifier accepted the config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error reveals a credential: %q", err)
			}
		})
	}
}

func TestNewVerifierAcceptsHTTPOnLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, uri := range []string{
		"http://127.0.0.1:8080/jwks", "http://127.8.9.10/jwks", "http://[::1]:9000/jwks", "http://localhost/jwks",
		"http://LOCALHOST:1/jwks", "http://[::ffff:127.0.0.1]/jwks", "https://idp.bank.example/jwks",
	} {
		t.Run(uri+" is accepted", func(t *testing.T) {
			is := validIssuer()
			is.JWKSURI = uri
			s, err := Config{Issuers: []Issuer{is}}.resolve()
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if s.issuers[0].jwksURI.String() != uri {
				t.Errorf("jwks_uri = %s", s.issuers[0].jwksURI)
			}
		})
	}
}

func TestZeroConfigValuesSelectTheDefaults(t *testing.T) {
	t.Parallel()
	s, err := Config{Issuers: []Issuer{validIssuer()}}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"leeway", s.leeway, 30 * time.Second},
		{"max_token_bytes", s.maxTokenBytes, 8192},
		{"refresh_interval", s.refreshInterval, 15 * time.Minute},
		{"unknown_kid_cooldown", s.unknownKIDCooldown, 10 * time.Second},
		{"max_stale", s.maxStale, 24 * time.Hour},
		{"fetch_timeout", s.fetchTimeout, 10 * time.Second},
		{"max_jwks_bytes", s.maxJWKSBytes, int64(1 << 20)},
		{"cache_size", s.cacheSize, 10000},
		{"algorithms", strings.Join(s.issuers[0].algorithms, ","), "RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,EdDSA"},
		{"http client timeout", s.httpClient.Timeout, 10 * time.Second},
		{"TLS minimum", s.ownedTransport.TLSClientConfig.MinVersion, uint16(0x0303)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if s.logger == nil || s.now == nil {
		t.Error("logger or clock left nil")
	}

	off, err := Config{Issuers: []Issuer{validIssuer()}, CacheSize: -1}.resolve()
	if err != nil || off.cacheSize != 0 {
		t.Errorf("negative cache_size: size %d, err %v; want the cache disabled", off.cacheSize, err)
	}
}

func TestGivenHTTPClientIsNotModified(t *testing.T) {
	t.Parallel()
	given := &http.Client{Timeout: time.Second}
	s, err := Config{Issuers: []Issuer{validIssuer()}, HTTPClient: given}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if given.CheckRedirect != nil {
		t.Error("the caller's client got a redirect policy")
	}
	if s.httpClient == given || s.httpClient.CheckRedirect == nil || s.httpClient.Timeout != time.Second || s.ownedTransport != nil {
		t.Error("the verifier does not use a copy of the given client with its redirect policy")
	}
}

func TestNormaliseType(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"at+jwt", "at+jwt"},
		{"AT+JWT", "at+jwt"},
		{"application/at+jwt", "at+jwt"},
		{"Application/AT+JWT", "at+jwt"},
		{"JWT", "jwt"},
		{"application/vnd.bank/at+jwt", "application/vnd.bank/at+jwt"},
		{" at+jwt ", "at+jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := normaliseType(tc.in); got != tc.want {
				t.Errorf("normaliseType(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
