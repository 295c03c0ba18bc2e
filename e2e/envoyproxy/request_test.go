package envoyproxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/e2e/testpki"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestCheckRequestAttributes(t *testing.T) {
	f := newFixture(t, answer(okResponse(nil)), nil)
	proxyHost := strings.TrimPrefix(f.url, "http://")

	tests := []struct {
		name   string
		method string
		target string
		header http.Header
		check  func(t *testing.T, h *authv3.AttributeContext_HttpRequest, attrs *authv3.AttributeContext)
	}{
		{
			name:   "header names are lower-case and repeated headers are joined with a comma",
			method: http.MethodGet, target: "/accounts",
			header: http.Header{"X-Custom": {"a", "b"}, "Accept": {"application/json"}},
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				wantHeader(t, h.GetHeaders(), "x-custom", "a,b")
				wantHeader(t, h.GetHeaders(), "accept", "application/json")
				for k := range h.GetHeaders() {
					if k != strings.ToLower(k) {
						t.Errorf("header %q is not lower-case", k)
					}
				}
			},
		},
		{
			name:   "pseudo-headers are in the map and the path keeps its raw query",
			method: http.MethodPost, target: "/a%2Fb/c?x=1&y=%20z",
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				wantHeader(t, h.GetHeaders(), ":path", "/a%2Fb/c?x=1&y=%20z")
				wantHeader(t, h.GetHeaders(), ":method", "POST")
				wantHeader(t, h.GetHeaders(), ":authority", proxyHost)
				wantHeader(t, h.GetHeaders(), ":scheme", "http")
				if _, ok := h.GetHeaders()["host"]; ok {
					t.Error("host is in the header map; Envoy has it as :authority only")
				}
				wantEqual(t, "path", h.GetPath(), "/a%2Fb/c?x=1&y=%20z")
				wantEqual(t, "method", h.GetMethod(), "POST")
				wantEqual(t, "host", h.GetHost(), proxyHost)
				wantEqual(t, "scheme", h.GetScheme(), "http")
				wantEqual(t, "protocol", h.GetProtocol(), "HTTP/1.1")
				wantEqual(t, "query", h.GetQuery(), "")
			},
		},
		{
			name:   "the client's x-request-id is the id",
			method: http.MethodGet, target: "/", header: http.Header{"X-Request-Id": {"req-123"}},
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				wantEqual(t, "id", h.GetId(), "req-123")
				wantHeader(t, h.GetHeaders(), "x-request-id", "req-123")
			},
		},
		{
			name:   "an x-request-id is generated when the client sent none",
			method: http.MethodGet, target: "/",
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				if !uuidPattern.MatchString(h.GetId()) {
					t.Errorf("id = %q, want a random UUID", h.GetId())
				}
				wantHeader(t, h.GetHeaders(), "x-request-id", h.GetId())
			},
		},
		{
			name:   "x-forwarded-proto is added by the connection manager",
			method: http.MethodGet, target: "/",
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				wantHeader(t, h.GetHeaders(), "x-forwarded-proto", "http")
			},
		},
		{
			name:   "source and destination are the connection's socket addresses",
			method: http.MethodGet, target: "/",
			check: func(t *testing.T, _ *authv3.AttributeContext_HttpRequest, attrs *authv3.AttributeContext) {
				src := attrs.GetSource().GetAddress().GetSocketAddress()
				wantEqual(t, "source address", src.GetAddress(), "127.0.0.1")
				if src.GetPortValue() == 0 {
					t.Error("source port is 0")
				}
				dst := attrs.GetDestination().GetAddress().GetSocketAddress()
				wantEqual(t, "destination", net.JoinHostPort(dst.GetAddress(), strconv.Itoa(int(dst.GetPortValue()))), proxyHost)
				wantEqual(t, "source principal", attrs.GetSource().GetPrincipal(), "")
				if attrs.GetRequest().GetTime() == nil {
					t.Error("request time is not set")
				}
			},
		},
		{
			name:   "a client-sent partial-body header and x-forwarded-client-cert never reach the service",
			method: http.MethodGet, target: "/",
			header: http.Header{"X-Envoy-Auth-Partial-Body": {"false"}, "X-Forwarded-Client-Cert": {"URI=spiffe://bank.internal/ns/ops/sa/x"}},
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				for _, name := range []string{PartialBodyHeader, "x-forwarded-client-cert"} {
					if v, ok := h.GetHeaders()[name]; ok {
						t.Errorf("%s = %q reached the service", name, v)
					}
				}
				if h.GetBody() != "" || h.GetSize() != 0 {
					t.Errorf("body %q, size %d without body buffering", h.GetBody(), h.GetSize())
				}
			},
		},
		{
			name:   "bytes that are not UTF-8 become !",
			method: http.MethodGet, target: "/", header: http.Header{"X-Bin": {"a\xffb\xfe"}},
			check: func(t *testing.T, h *authv3.AttributeContext_HttpRequest, _ *authv3.AttributeContext) {
				wantHeader(t, h.GetHeaders(), "x-bin", "a!b!")
			},
		},
		{
			name:   "context extensions are not sent unless configured",
			method: http.MethodGet, target: "/",
			check: func(t *testing.T, _ *authv3.AttributeContext_HttpRequest, attrs *authv3.AttributeContext) {
				if len(attrs.GetContextExtensions()) != 0 {
					t.Errorf("context extensions %v", attrs.GetContextExtensions())
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest(t, tc.method, f.url+tc.target, nil)
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			res := do(t, nil, req)
			if res.status != http.StatusOK {
				t.Fatalf("status %d, want 200 from the upstream", res.status)
			}
			cr, _ := f.authz.last(t)
			tc.check(t, cr.GetAttributes().GetRequest().GetHttp(), cr.GetAttributes())

			// Whatever the id, the upstream receives the same one.
			got, ok := f.upstream.Last()
			if !ok {
				t.Fatal("upstream received nothing")
			}
			wantEqual(t, "upstream x-request-id", got.Get("x-request-id"), cr.GetAttributes().GetRequest().GetHttp().GetId())
		})
	}
}

func TestCheckRequestBody(t *testing.T) {
	const limit = 16
	tests := []struct {
		name        string
		settings    BufferSettings
		body        string
		chunked     bool
		wantStatus  int
		wantChecked bool
		wantBody    string // sent to the service
		wantPartial string // "" when the header must be absent
	}{
		{
			name:     "a body within the limit is sent whole with partial false",
			settings: BufferSettings{MaxRequestBytes: limit, AllowPartialMessage: true},
			body:     `{"amount":5}`, wantStatus: 200, wantChecked: true, wantBody: `{"amount":5}`, wantPartial: "false",
		},
		{
			name:     "a body of exactly the limit is complete",
			settings: BufferSettings{MaxRequestBytes: limit, AllowPartialMessage: true},
			body:     strings.Repeat("x", limit), wantStatus: 200, wantChecked: true, wantBody: strings.Repeat("x", limit), wantPartial: "false",
		},
		{
			name:     "a larger body is cut at the limit with partial true when partial messages are allowed",
			settings: BufferSettings{MaxRequestBytes: limit, AllowPartialMessage: true},
			body:     `{"amount":5,"memo":"far too long for the buffer"}`, wantStatus: 200, wantChecked: true,
			wantBody: `{"amount":5,"memo":"far too long for the buffer"}`[:limit], wantPartial: "true",
		},
		{
			name:     "a chunked body is buffered too",
			settings: BufferSettings{MaxRequestBytes: limit, AllowPartialMessage: true},
			body:     "chunked body that is long", chunked: true, wantStatus: 200, wantChecked: true,
			wantBody: "chunked body that is long"[:limit], wantPartial: "true",
		},
		{
			name:     "a larger body is refused with 413 before any check when partial messages are not allowed",
			settings: BufferSettings{MaxRequestBytes: limit},
			body:     strings.Repeat("y", limit+1), wantStatus: http.StatusRequestEntityTooLarge,
		},
		{
			name:       "a request without a body is checked without the partial-body header",
			settings:   BufferSettings{MaxRequestBytes: limit, AllowPartialMessage: true},
			wantStatus: 200, wantChecked: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			settings := tc.settings
			f := newFixture(t, answer(okResponse(nil)), func(c *Config) { c.WithRequestBody = &settings })
			var body *strings.Reader
			method := http.MethodGet
			if tc.body != "" {
				body, method = strings.NewReader(tc.body), http.MethodPost
			}
			req := newRequest(t, method, f.url+"/payments", nil)
			if body != nil {
				req = newRequest(t, method, f.url+"/payments", body)
				req.Header.Set("Content-Type", "application/json")
				if tc.chunked {
					req.ContentLength = -1
					req.Body = readerOnly{body}
				}
			}
			res := do(t, nil, req)
			if res.status != tc.wantStatus {
				t.Fatalf("status %d (%q), want %d", res.status, res.body, tc.wantStatus)
			}
			if !tc.wantChecked {
				if n := f.authz.count(); n != 0 {
					t.Errorf("the service was called %d times", n)
				}
				if n := f.upstream.Count(); n != 0 {
					t.Errorf("the upstream was called %d times", n)
				}
				return
			}
			cr, _ := f.authz.last(t)
			h := cr.GetAttributes().GetRequest().GetHttp()
			wantEqual(t, "body", h.GetBody(), tc.wantBody)
			partial, ok := h.GetHeaders()[PartialBodyHeader]
			if tc.wantPartial == "" && ok {
				t.Errorf("%s = %q, want it absent", PartialBodyHeader, partial)
			} else if tc.wantPartial != "" {
				wantEqual(t, PartialBodyHeader, partial, tc.wantPartial)
			}
			got, _ := f.upstream.Last()
			wantEqual(t, "upstream body", got.Body, tc.body)
			if got.Has(PartialBodyHeader) {
				t.Errorf("%s reached the upstream", PartialBodyHeader)
			}
		})
	}

	t.Run("pack_as_bytes sends raw_body", func(t *testing.T) {
		f := newFixture(t, answer(okResponse(nil)), func(c *Config) {
			c.WithRequestBody = &BufferSettings{MaxRequestBytes: limit, PackAsBytes: true}
		})
		res := do(t, nil, newRequest(t, http.MethodPost, f.url+"/x", strings.NewReader("\xff\x00bin")))
		if res.status != http.StatusOK {
			t.Fatalf("status %d", res.status)
		}
		cr, _ := f.authz.last(t)
		h := cr.GetAttributes().GetRequest().GetHttp()
		wantEqual(t, "raw_body", string(h.GetRawBody()), "\xff\x00bin")
		wantEqual(t, "body", h.GetBody(), "")
	})
}

// readerOnly hides the body's length so the client sends it chunked.
type readerOnly struct{ *strings.Reader }

func (readerOnly) Close() error { return nil }

func TestCheckRequestMTLS(t *testing.T) {
	ca, err := testpki.NewCA("test mesh CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.Server(testpki.Leaf{
		CommonName: "proxy", SPIFFEID: "spiffe://bank.internal/ns/edge/sa/proxy", DNSNames: []string{"proxy.test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	opsCert, err := ca.Client(testpki.Leaf{CommonName: "change-runner", SPIFFEID: "spiffe://bank.internal/ns/ops/sa/change-runner"})
	if err != nil {
		t.Fatal(err)
	}
	plainCert, err := ca.Client(testpki.Leaf{CommonName: "legacy-batch", Organization: "Bank"})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, answer(okResponse(nil)), func(c *Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
		c.IncludePeerCertificate = true
		c.IncludeTLSSession = true
	})
	roots := &tls.Config{RootCAs: ca.Pool(), ServerName: "proxy.test"}

	tests := []struct {
		name          string
		cert          *tls.Certificate
		wantPrincipal string
	}{
		{"the SPIFFE ID in the URI SAN is the principal", &opsCert, "spiffe://bank.internal/ns/ops/sa/change-runner"},
		{"without a URI SAN the subject is the principal", &plainCert, "CN=legacy-batch,O=Bank"},
		{"without a client certificate there is no principal", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := tlsClient(roots, tc.cert)
			defer client.CloseIdleConnections()
			res := do(t, client, newRequest(t, http.MethodGet, f.url+"/admin/jobs", nil))
			if res.status != http.StatusOK {
				t.Fatalf("status %d", res.status)
			}
			cr, _ := f.authz.last(t)
			attrs := cr.GetAttributes()
			wantEqual(t, "source principal", attrs.GetSource().GetPrincipal(), tc.wantPrincipal)
			wantEqual(t, "destination principal", attrs.GetDestination().GetPrincipal(), "spiffe://bank.internal/ns/edge/sa/proxy")
			wantEqual(t, "scheme", attrs.GetRequest().GetHttp().GetScheme(), "https")
			wantHeader(t, attrs.GetRequest().GetHttp().GetHeaders(), ":scheme", "https")
			wantEqual(t, "sni", attrs.GetTlsSession().GetSni(), "proxy.test")

			enc := attrs.GetSource().GetCertificate()
			if tc.cert == nil {
				wantEqual(t, "certificate", enc, "")
				return
			}
			if strings.ContainsAny(enc, " \n+/=") {
				t.Errorf("certificate %q is not URL-encoded", enc)
			}
			dec, err := url.QueryUnescape(enc)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode([]byte(dec))
			if block == nil {
				t.Fatalf("certificate %q does not decode to PEM", dec)
			}
			got, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.cert.Leaf) {
				t.Error("source.certificate is not the client's certificate")
			}
		})
	}
}

func TestContextExtensions(t *testing.T) {
	f := newFixture(t, answer(okResponse(nil)), func(c *Config) {
		c.ContextExtensions = map[string]string{"virtual_host": "bank-api"}
	})
	do(t, nil, newRequest(t, http.MethodGet, f.url+"/", nil))
	cr, _ := f.authz.last(t)
	wantEqual(t, "context extension", cr.GetAttributes().GetContextExtensions()["virtual_host"], "bank-api")
}

func TestUseRemoteAddress(t *testing.T) {
	f := newFixture(t, answer(okResponse(nil)), func(c *Config) { c.UseRemoteAddress = true })
	req := newRequest(t, http.MethodGet, f.url+"/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Proto", "https")
	do(t, nil, req)
	cr, _ := f.authz.last(t)
	h := cr.GetAttributes().GetRequest().GetHttp().GetHeaders()
	wantHeader(t, h, "x-forwarded-for", "203.0.113.7,127.0.0.1")
	wantHeader(t, h, "x-forwarded-proto", "http")
	got, _ := f.upstream.Last()
	wantEqual(t, "upstream x-forwarded-for", got.Get("x-forwarded-for"), "203.0.113.7,127.0.0.1")
	wantEqual(t, "upstream x-forwarded-proto", got.Get("x-forwarded-proto"), "http")
}

func wantHeader(t *testing.T, h map[string]string, name, want string) {
	t.Helper()
	got, ok := h[name]
	if !ok {
		t.Errorf("header %s is missing, want %q", name, want)
		return
	}
	if got != want {
		t.Errorf("header %s = %q, want %q", name, got, want)
	}
}

func wantEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}
