package envoyproxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// rawRequest sends a request line and headers exactly as given, so that paths Go's client would clean reach the
// proxy unchanged, and returns the status code.
func rawRequest(t *testing.T, base, requestLine string, headers ...string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: bank.test\r\nConnection: close\r\n", requestLine)
	for _, h := range headers {
		fmt.Fprintf(conn, "%s\r\n", h)
	}
	fmt.Fprint(conn, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestConnectionManager(t *testing.T) {
	edge := func(c *Config) {
		c.HeadersWithUnderscores = RejectUnderscores
		c.RemoveHeaderPrefixes = []string{"x-envoy-"}
		c.RejectEscapedSlashes, c.NormalizePath, c.MergeSlashes = true, true, true
	}
	tests := []struct {
		name        string
		requestLine string
		headers     []string
		wantStatus  int
		wantPath    string // the :path the service and the upstream see
	}{
		{"a header with an underscore is rejected", "GET /accounts", []string{"X_User_Id: u1"}, 400, ""},
		{"an escaped slash is rejected", "GET /accounts%2F..%2Fadmin", nil, 400, ""},
		{"an escaped backslash is rejected", "GET /accounts%5cadmin", nil, 400, ""},
		{"dot segments are resolved before the check", "GET /fx/rates/../../accounts/./acc-1?x=1", nil, 200, "/accounts/acc-1?x=1"},
		{"encoded dot segments are resolved too", "GET /fx/%2e%2E/accounts", nil, 200, "/accounts"},
		{"dot segments never climb above the root", "GET /../../accounts", nil, 200, "/accounts"},
		{"repeated slashes are merged", "GET //accounts///acc-1", nil, 200, "/accounts/acc-1"},
		{"a trailing dot segment keeps the directory", "GET /accounts/acc-1/..", nil, 200, "/accounts/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(okResponse(nil)), edge)
			got := rawRequest(t, f.url, tc.requestLine, tc.headers...)
			wantEqual(t, "status", got, tc.wantStatus)
			if tc.wantStatus != 200 {
				if n := f.authz.count(); n != 0 {
					t.Errorf("the service was called %d times", n)
				}
				return
			}
			cr, _ := f.authz.last(t)
			wantEqual(t, "checked path", cr.GetAttributes().GetRequest().GetHttp().GetPath(), tc.wantPath)
			up, _ := f.upstream.Last()
			target := up.Path
			if up.RawQuery != "" {
				target += "?" + up.RawQuery
			}
			wantEqual(t, "upstream path", target, tc.wantPath)
		})
	}

	t.Run("headers under a removed prefix reach neither the service nor the upstream", func(t *testing.T) {
		f := newFixture(t, answer(okResponse(nil)), edge)
		wantEqual(t, "status", rawRequest(t, f.url, "GET /", "X-Envoy-Upstream-Rq-Timeout-Ms: 1", "X-Envoy-Auth-Partial-Body: false"), 200)
		cr, _ := f.authz.last(t)
		for k := range cr.GetAttributes().GetRequest().GetHttp().GetHeaders() {
			if strings.HasPrefix(k, "x-envoy-") {
				t.Errorf("%s reached the service", k)
			}
		}
		up, _ := f.upstream.Last()
		for k := range up.Header {
			if strings.HasPrefix(k, "x-envoy-") {
				t.Errorf("%s reached the upstream", k)
			}
		}
	})

	t.Run("an edge replaces the client's request id unless told to keep it", func(t *testing.T) {
		for _, preserve := range []bool{false, true} {
			f := newFixture(t, answer(okResponse(nil)), func(c *Config) {
				c.UseRemoteAddress, c.PreserveExternalRequestID, c.RequestIDInResponse = true, preserve, true
			})
			req := newRequest(t, http.MethodGet, f.url+"/", nil)
			req.Header.Set("X-Request-Id", "client-chosen")
			res := do(t, nil, req)
			up, _ := f.upstream.Last()
			if kept := up.Get("x-request-id") == "client-chosen"; kept != preserve {
				t.Errorf("preserve_external_request_id %v: upstream x-request-id %q", preserve, up.Get("x-request-id"))
			}
			wantEqual(t, "response x-request-id", res.header.Get("X-Request-Id"), up.Get("x-request-id"))
		}
	})
}

func TestRoutes(t *testing.T) {
	routes := []Route{
		{Name: "health", Path: "/healthz", Methods: []string{http.MethodGet}, DisableAuthz: true},
		{Name: "accounts", SeparatedPrefix: "/accounts", ContextExtensions: map[string]string{"route": "accounts"}},
		{Name: "fx", Prefix: "/fx/"},
	}
	tests := []struct {
		name          string
		method, path  string
		wantStatus    int
		wantChecked   bool
		wantExtension string
	}{
		{"a route with ext_authz disabled is not checked", http.MethodGet, "/healthz", 200, false, ""},
		{"the same path with another method is checked", http.MethodPost, "/healthz", 404, true, ""},
		{"path_separated_prefix matches the prefix itself", http.MethodGet, "/accounts", 200, true, "accounts"},
		{"path_separated_prefix matches below the prefix", http.MethodGet, "/accounts/acc-1", 200, true, "accounts"},
		{"path_separated_prefix does not match a longer segment", http.MethodGet, "/accountsx", 404, true, ""},
		{"a route without extensions sends none", http.MethodGet, "/fx/rates", 200, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(okResponse(nil)), func(c *Config) { c.Routes = routes })
			res := do(t, nil, newRequest(t, tc.method, f.url+tc.path, nil))
			wantEqual(t, "status", res.status, tc.wantStatus)
			wantEqual(t, "checked", f.authz.count() > 0, tc.wantChecked)
			if tc.wantChecked {
				cr, _ := f.authz.last(t)
				wantEqual(t, "context extension", cr.GetAttributes().GetContextExtensions()["route"], tc.wantExtension)
			}
			wantEqual(t, "forwarded", f.upstream.Count() > 0, tc.wantStatus == 200)
		})
	}
}

func TestAllowedHeaders(t *testing.T) {
	f := newFixture(t, answer(okResponse(nil)), func(c *Config) {
		c.AllowedHeaders = []*matcherv3.StringMatcher{
			{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "authorization"}},
			{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "x-risk"}},
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "x-dev[a-z]+"}}},
			{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "X-TENANT"}, IgnoreCase: true},
		}
		c.DisallowedHeaders = []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "-secret"}}}
	})
	req := newRequest(t, http.MethodGet, f.url+"/accounts", nil)
	for _, h := range []string{"Authorization", "X-Risk-Score", "X-Risk-Secret", "X-Device", "X-Devices1", "X-Tenant", "Cookie"} {
		req.Header.Set(h, "v")
	}
	do(t, nil, req)
	cr, _ := f.authz.last(t)
	got := cr.GetAttributes().GetRequest().GetHttp().GetHeaders()
	for _, name := range []string{"authorization", "x-risk-score", "x-device", "x-tenant"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s was not sent", name)
		}
	}
	for _, name := range []string{"x-risk-secret", "x-devices1", "cookie", ":path", "x-request-id"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s was sent", name)
		}
	}
	wantEqual(t, "path field", cr.GetAttributes().GetRequest().GetHttp().GetPath(), "/accounts")
	up, _ := f.upstream.Last()
	wantEqual(t, "cookie upstream", up.Get("cookie"), "v")
}

func TestMutationRules(t *testing.T) {
	ok := okResponse(&authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			hv("x-envoy-retry-on", "5xx", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			hv("x-subject", "alice", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		},
		HeadersToRemove: []string{":authority"},
	})
	tests := []struct {
		name        string
		rules       *mutationrulesv3.HeaderMutationRules
		wantStatus  int
		wantEnvoyUp bool
	}{
		{"without rules every mutation applies", nil, 200, true},
		{"disallowed mutations are dropped", &mutationrulesv3.HeaderMutationRules{DisallowSystem: wrapperspb.Bool(true)}, 200, false},
		{"disallow_is_error refuses the request", &mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true)}, 500, false},
		{"allow_envoy lets x-envoy-* through", &mutationrulesv3.HeaderMutationRules{AllowEnvoy: wrapperspb.Bool(true)}, 200, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(ok), func(c *Config) { c.MutationRules = tc.rules })
			res := do(t, nil, newRequest(t, http.MethodGet, f.url+"/", nil))
			wantEqual(t, "status", res.status, tc.wantStatus)
			up, got := f.upstream.Last()
			if tc.wantStatus != 200 {
				wantEqual(t, "forwarded", got, false)
				return
			}
			wantEqual(t, "x-subject", up.Get("x-subject"), "alice")
			wantEqual(t, "x-envoy-retry-on upstream", up.Has("x-envoy-retry-on"), tc.wantEnvoyUp)
		})
	}
}
