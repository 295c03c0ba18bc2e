// Package envoyproxy is a reverse proxy that behaves like Envoy with its HTTP external authorization filter
// (envoy.filters.http.ext_authz) in gRPC mode, for end-to-end tests on machines without Envoy. FromBootstrap
// configures it from an Envoy bootstrap, so that it runs the same sidecar configuration Envoy would.
//
// For every request it does what Envoy's connection manager, ext_authz filter and router do, in Envoy's order:
// the codec's underscore rule, early header removal, path normalisation; x-request-id (kept or generated),
// x-forwarded-for and x-forwarded-proto, x-forwarded-client-cert sanitising; route selection; optionally body
// buffering; a CheckRequest (lower-case headers, repeated headers joined with ",", pseudo-headers, source and
// destination addresses, the client certificate's principal) sent to the Authorization service with a deadline;
// and then:
//
//   - OK: the header mutations (append_action, or the deprecated append), headers_to_remove and the query
//     parameter edits are applied within decoder_header_mutation_rules, the request goes upstream and
//     response_headers_to_add are added to the answer;
//   - denied: the denied status (403 when unset), headers and body go to the client; the upstream never sees it;
//   - a gRPC error or timeout: status_on_error (403 by default) with an empty body, or, with failure_mode_allow,
//     the request goes upstream unchanged.
//
// Reference: https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/ext_authz_filter,
// envoy/service/auth/v3/external_auth.proto and attribute_context.proto.
package envoyproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DefaultTimeout is Envoy's default ext_authz gRPC timeout.
const DefaultTimeout = 200 * time.Millisecond

// FailureModeAllowedHeader is added to a request forwarded under failure_mode_allow when
// failure_mode_allow_header_add is set.
const FailureModeAllowedHeader = "x-envoy-auth-failure-mode-allowed"

// ForwardClientCert is the connection manager's forward_client_cert_details: what becomes of a client-sent
// x-forwarded-client-cert header.
type ForwardClientCert int

const (
	// Sanitize drops the client's x-forwarded-client-cert (Envoy's default), so no client can claim a certificate.
	Sanitize ForwardClientCert = iota
	// ForwardOnly passes the client's header on unchanged (for a proxy behind a trusted one).
	ForwardOnly
)

// BufferSettings is the ext_authz filter's with_request_body.
type BufferSettings struct {
	// MaxRequestBytes is the most body bytes sent to the service; must be positive.
	MaxRequestBytes int
	// AllowPartialMessage sends the first MaxRequestBytes of a larger body, with x-envoy-auth-partial-body:
	// true, instead of answering 413.
	AllowPartialMessage bool
	// PackAsBytes sends the body in raw_body instead of body.
	PackAsBytes bool
}

// Config is the listener, the connection manager, the ext_authz filter and the route table of the proxy. Zero
// values are Envoy's defaults.
type Config struct {
	// Authz is the gRPC target of the Authorization service (host:port); required.
	Authz string
	// Upstream is where allowed requests go (scheme and host); required.
	Upstream *url.URL
	// TLS, when set, is the downstream TLS context; set ClientAuth to ask clients for certificates.
	TLS *tls.Config

	// Connection manager.

	// UseRemoteAddress makes the proxy an edge: x-forwarded-for gets the peer address appended,
	// x-forwarded-proto is overwritten and the client's x-request-id is replaced unless
	// PreserveExternalRequestID. Otherwise x-forwarded-proto is only set when absent.
	UseRemoteAddress          bool
	PreserveExternalRequestID bool
	// RequestIDInResponse copies x-request-id into every response (always_set_request_id_in_response).
	RequestIDInResponse bool
	// ForwardClientCert handles a client-sent x-forwarded-client-cert; Sanitize by default.
	ForwardClientCert ForwardClientCert
	// HeadersWithUnderscores is what becomes of a request header with "_" in its name.
	HeadersWithUnderscores UnderscoreAction
	// RemoveHeaderPrefixes drops request headers whose lower-case name starts with one of them before anything
	// else looks at the request (an early header mutation with remove_on_match).
	RemoveHeaderPrefixes []string
	// RejectEscapedSlashes answers 400 to a path holding %2F or %5C; NormalizePath resolves dot segments;
	// MergeSlashes collapses repeated slashes.
	RejectEscapedSlashes bool
	NormalizePath        bool
	MergeSlashes         bool

	// ext_authz filter.

	// Timeout bounds each Check call and becomes its gRPC deadline; DefaultTimeout when zero.
	Timeout time.Duration
	// StatusOnError is the reply status when the service fails or times out; 403 when zero.
	StatusOnError int
	// FailureModeAllow forwards requests whose check failed; FailureModeAllowHeaderAdd marks them.
	FailureModeAllow          bool
	FailureModeAllowHeaderAdd bool
	// WithRequestBody, when set, buffers the body and sends it to the service.
	WithRequestBody *BufferSettings
	// IncludePeerCertificate sends the client certificate, URL-encoded PEM, in source.certificate.
	IncludePeerCertificate bool
	// IncludeTLSSession sends the SNI in tls_session.
	IncludeTLSSession bool
	// AllowedHeaders, when set, are the only request headers sent to the service; DisallowedHeaders are never
	// sent.
	AllowedHeaders    []*matcherv3.StringMatcher
	DisallowedHeaders []*matcherv3.StringMatcher
	// MutationRules (decoder_header_mutation_rules) restrict which headers the service may set or remove; a
	// disallowed change is dropped, or fails the request with 500 when disallow_is_error is set.
	MutationRules *mutationrulesv3.HeaderMutationRules
	// ContextExtensions are sent with the checks of requests whose route gives none.
	ContextExtensions map[string]string

	// Routes is the virtual host's route table; without routes every request goes upstream. A request no route
	// matches is still checked, and answered 404 if the check lets it through.
	Routes []Route

	// Logger receives one line per failed check; nothing is logged when nil.
	Logger *slog.Logger
}

// Proxy is a started proxy: its connection to the Authorization service is ready to use.
type Proxy struct {
	cfg                 Config
	conn                *grpc.ClientConn
	authz               authv3.AuthorizationClient
	upstream            *httputil.ReverseProxy
	localPrincipal      string
	log                 *slog.Logger
	allowed, disallowed []func(string) bool
	allowRe, disallowRe *regexp.Regexp

	mu      sync.Mutex
	servers []*http.Server
	closed  bool
}

// New validates cfg, applies Envoy's defaults and connects to the Authorization service (lazily, as gRPC does).
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.Authz == "":
		return nil, errors.New("envoyproxy: Authz is required")
	case cfg.Upstream == nil || cfg.Upstream.Host == "":
		return nil, errors.New("envoyproxy: Upstream is required")
	case cfg.WithRequestBody != nil && cfg.WithRequestBody.MaxRequestBytes <= 0:
		return nil, errors.New("envoyproxy: WithRequestBody.MaxRequestBytes must be positive")
	case cfg.StatusOnError != 0 && (cfg.StatusOnError < 200 || cfg.StatusOnError > 599):
		return nil, fmt.Errorf("envoyproxy: StatusOnError %d is not a final HTTP status", cfg.StatusOnError)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StatusOnError == 0 {
		cfg.StatusOnError = http.StatusForbidden
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := grpc.NewClient(cfg.Authz, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("envoyproxy: authz %s: %w", cfg.Authz, err)
	}
	p := &Proxy{cfg: cfg, conn: conn, authz: authv3.NewAuthorizationClient(conn), log: log}
	if err := p.compileMatchers(); err != nil {
		conn.Close()
		return nil, err
	}
	if cfg.TLS != nil && len(cfg.TLS.Certificates) > 0 {
		if leaf, err := x509.ParseCertificate(cfg.TLS.Certificates[0].Certificate[0]); err == nil {
			p.localPrincipal = Principal(leaf)
		}
	}
	p.upstream = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		ModifyResponse: addResponseHeaders,
		ErrorHandler:   upstreamError,
	}
	return p, nil
}

// Serve accepts connections on l until Close, wrapping them in TLS when Config.TLS is set. It returns
// http.ErrServerClosed after Close.
func (p *Proxy) Serve(l net.Listener) error {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	p.servers = append(p.servers, srv)
	p.mu.Unlock()
	if p.cfg.TLS != nil {
		l = tls.NewListener(l, p.cfg.TLS)
	}
	return srv.Serve(l)
}

// Close stops every Serve and closes the connection to the Authorization service.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	servers := p.servers
	p.servers = nil
	p.mu.Unlock()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Close())
	}
	errs = append(errs, p.conn.Close())
	return errors.Join(errs...)
}

// compileMatchers prepares allowed_headers, disallowed_headers and the mutation rules' expressions.
func (p *Proxy) compileMatchers() error {
	compile := func(ms []*matcherv3.StringMatcher) ([]func(string) bool, error) {
		out := make([]func(string) bool, 0, len(ms))
		for _, m := range ms {
			f, err := stringMatch(m)
			if err != nil {
				return nil, fmt.Errorf("envoyproxy: header matcher: %w", err)
			}
			out = append(out, f)
		}
		return out, nil
	}
	var err error
	if p.cfg.AllowedHeaders != nil {
		if p.allowed, err = compile(p.cfg.AllowedHeaders); err != nil {
			return err
		}
	}
	if p.disallowed, err = compile(p.cfg.DisallowedHeaders); err != nil {
		return err
	}
	if re := p.cfg.MutationRules.GetAllowExpression().GetRegex(); re != "" {
		if p.allowRe, err = regexp.Compile(`^(?:` + re + `)$`); err != nil {
			return fmt.Errorf("envoyproxy: allow_expression: %w", err)
		}
	}
	if re := p.cfg.MutationRules.GetDisallowExpression().GetRegex(); re != "" {
		if p.disallowRe, err = regexp.Compile(`^(?:` + re + `)$`); err != nil {
			return fmt.Errorf("envoyproxy: disallow_expression: %w", err)
		}
	}
	return nil
}

// ServeHTTP runs one request through the connection manager, the ext_authz filter and the router.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, in *http.Request) {
	received := time.Now()
	r := in.Clone(in.Context())
	if err := p.connectionManager(r); err != nil {
		localReply(w, http.StatusBadRequest, "", nil)
		return
	}
	if p.cfg.RequestIDInResponse {
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
	}
	route := p.route(r.Method, requestTarget(r))
	if route != nil && route.DisableAuthz {
		p.forward(w, r, requestTarget(r), nil)
		return
	}
	extensions := p.cfg.ContextExtensions
	if route != nil && route.ContextExtensions != nil {
		extensions = route.ContextExtensions
	}

	var b *body
	if p.cfg.WithRequestBody != nil && r.Body != nil && r.Body != http.NoBody {
		var err error
		if b, err = p.buffer(r); err != nil {
			if errors.Is(err, errBodyTooLarge) {
				localReply(w, http.StatusRequestEntityTooLarge, "Payload Too Large", nil)
			} else {
				localReply(w, http.StatusBadRequest, "", nil)
			}
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Timeout)
	resp, err := p.authz.Check(ctx, p.checkRequest(r, received, b, extensions))
	cancel()
	switch {
	case err != nil:
		p.log.Warn("ext_authz check failed", slog.String("code", status.Code(err).String()),
			slog.String("request_id", r.Header.Get("X-Request-Id")))
		p.onError(w, r, route, 0, "", nil)
	case codes.Code(resp.GetStatus().GetCode()) == codes.OK:
		p.onOK(w, r, route, resp.GetOkResponse())
	case resp.GetErrorResponse() != nil:
		e := resp.GetErrorResponse()
		ms, err := mutations(e.GetHeaders(), true)
		if err != nil {
			localReply(w, http.StatusInternalServerError, "", nil)
			return
		}
		p.onError(w, r, route, int(e.GetStatus().GetCode()), e.GetBody(), ms)
	default:
		d := resp.GetDeniedResponse()
		ms, err := mutations(d.GetHeaders(), true)
		if err != nil {
			localReply(w, http.StatusInternalServerError, "", nil)
			return
		}
		code := int(d.GetStatus().GetCode())
		if code < 100 || code > 999 {
			code = http.StatusForbidden
		}
		localReply(w, code, d.GetBody(), ms)
	}
}

var errBodyTooLarge = errors.New("request body larger than max_request_bytes")

// buffer reads the body as the filter buffers it: up to MaxRequestBytes for the check, the whole body still
// going upstream.
func (p *Proxy) buffer(r *http.Request) (*body, error) {
	limit := p.cfg.WithRequestBody.MaxRequestBytes
	buf, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	b := &body{data: buf, received: len(buf)}
	if len(buf) > limit {
		if !p.cfg.WithRequestBody.AllowPartialMessage {
			return nil, errBodyTooLarge
		}
		b.data, b.partial = buf[:limit], true
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	return b, nil
}

// onOK applies an OK response's mutations in the filter's order (headers, removals, query) and forwards.
func (p *Proxy) onOK(w http.ResponseWriter, r *http.Request, route *Route, ok *authv3.OkHttpResponse) {
	reqMuts, err := mutations(ok.GetHeaders(), false)
	if err != nil {
		localReply(w, http.StatusInternalServerError, "", nil)
		return
	}
	respMuts, err := mutations(ok.GetResponseHeadersToAdd(), true)
	if err != nil {
		localReply(w, http.StatusInternalServerError, "", nil)
		return
	}
	isError := p.cfg.MutationRules.GetDisallowIsError().GetValue()
	allowed := reqMuts[:0:0]
	for _, m := range reqMuts {
		switch {
		case p.mutationAllowed(m.name):
			allowed = append(allowed, m)
		case isError:
			localReply(w, http.StatusInternalServerError, "", nil)
			return
		}
	}
	var toRemove []string
	for _, name := range ok.GetHeadersToRemove() {
		switch {
		case p.mutationAllowed(name):
			toRemove = append(toRemove, name)
		case isError:
			localReply(w, http.StatusInternalServerError, "", nil)
			return
		}
	}
	apply(r.Header, allowed)
	removeHeaders(r.Header, toRemove)
	target := editQuery(requestTarget(r), ok.GetQueryParametersToSet(), ok.GetQueryParametersToRemove())
	if route == nil && len(p.cfg.Routes) > 0 {
		localReply(w, http.StatusNotFound, "", respMuts)
		return
	}
	p.forward(w, r, target, respMuts)
}

func (p *Proxy) mutationAllowed(name string) bool {
	return mutationAllowed(p.cfg.MutationRules, p.allowRe, p.disallowRe, name)
}

// onError handles a check that could not be made or that the service answered with an error_response.
func (p *Proxy) onError(w http.ResponseWriter, r *http.Request, route *Route, code int, body string, ms []mutation) {
	if p.cfg.FailureModeAllow {
		if p.cfg.FailureModeAllowHeaderAdd {
			r.Header.Set(FailureModeAllowedHeader, "true")
		}
		if route == nil && len(p.cfg.Routes) > 0 {
			localReply(w, http.StatusNotFound, "", nil)
			return
		}
		p.forward(w, r, requestTarget(r), nil)
		return
	}
	if code < 100 || code > 999 {
		code = p.cfg.StatusOnError
	}
	localReply(w, code, body, ms)
}

type responseMutationsKey struct{}

// forward sends r to the upstream with target as its :path; respMuts are applied to the upstream's answer.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, target string, respMuts []mutation) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		localReply(w, http.StatusBadRequest, "", nil)
		return
	}
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	if len(respMuts) > 0 {
		r = r.WithContext(context.WithValue(r.Context(), responseMutationsKey{}, respMuts))
	}
	p.upstream.ServeHTTP(w, r)
}

// rewrite points the outbound request at the upstream. Envoy keeps :authority unless the route rewrites it, and
// the x-forwarded-* headers are the connection manager's, which httputil would otherwise drop.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = p.cfg.Upstream.Scheme
	pr.Out.URL.Host = p.cfg.Upstream.Host
	pr.Out.Host = pr.In.Host
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
}

func addResponseHeaders(resp *http.Response) error {
	if ms, ok := resp.Request.Context().Value(responseMutationsKey{}).([]mutation); ok {
		apply(resp.Header, ms)
	}
	return nil
}

// upstreamError answers like Envoy's router when the upstream cannot be reached.
func upstreamError(w http.ResponseWriter, r *http.Request, _ error) {
	ms, _ := r.Context().Value(responseMutationsKey{}).([]mutation)
	localReply(w, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers", ms)
}

// newUUID returns a random (version 4) UUID, as Envoy generates for x-request-id.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
