package envoyproxy

import (
	"net/http"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/finauthz/authz/e2e/echo"
)

func hv(key, value string, act corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: act}
}

func hvAppend(key, value string, appendValue bool) *corev3.HeaderValueOption {
	//lint:ignore SA1019 a policy's response may still set the deprecated field, which Envoy honours.
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, Append: wrapperspb.Bool(appendValue)}
}

func TestOKRequestHeaderMutations(t *testing.T) {
	const (
		appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		addIfAbsentAct = corev3.HeaderValueOption_ADD_IF_ABSENT
		overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		overwriteIf    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
	)
	tests := []struct {
		name   string
		sent   http.Header
		ok     *authv3.OkHttpResponse
		header string
		want   []string // nil: the upstream must not receive the header
	}{
		{
			name: "an option without append_action adds a second value next to the client's",
			sent: http.Header{"X-Subject": {"mallory"}}, ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-subject", "alice", appendOrAdd)}},
			header: "x-subject", want: []string{"mallory", "alice"},
		},
		{
			name:   "APPEND_IF_EXISTS_OR_ADD adds when absent",
			ok:     &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-subject", "alice", appendOrAdd)}},
			header: "x-subject", want: []string{"alice"},
		},
		{
			name: "OVERWRITE_IF_EXISTS_OR_ADD replaces the client's value",
			sent: http.Header{"X-Subject": {"mallory", "eve"}}, ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-subject", "alice", overwriteOrAdd)}},
			header: "x-subject", want: []string{"alice"},
		},
		{
			name:   "OVERWRITE_IF_EXISTS_OR_ADD adds when absent",
			ok:     &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-subject", "alice", overwriteOrAdd)}},
			header: "x-subject", want: []string{"alice"},
		},
		{
			name: "ADD_IF_ABSENT keeps the client's value",
			sent: http.Header{"X-Tenant": {"t1"}}, ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-tenant", "t2", addIfAbsentAct)}},
			header: "x-tenant", want: []string{"t1"},
		},
		{
			name:   "ADD_IF_ABSENT adds when absent",
			ok:     &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-tenant", "t2", addIfAbsentAct)}},
			header: "x-tenant", want: []string{"t2"},
		},
		{
			name: "OVERWRITE_IF_EXISTS replaces an existing value",
			sent: http.Header{"X-Tenant": {"t1"}}, ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-tenant", "t2", overwriteIf)}},
			header: "x-tenant", want: []string{"t2"},
		},
		{
			name:   "OVERWRITE_IF_EXISTS adds nothing when absent",
			ok:     &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-tenant", "t2", overwriteIf)}},
			header: "x-tenant", want: nil,
		},
		{
			name: "the deprecated append true joins the value to the client's with a comma",
			sent: http.Header{"X-Trace": {"a"}}, ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hvAppend("x-trace", "b", true)}},
			header: "x-trace", want: []string{"a,b"},
		},
		{
			name:   "the deprecated append true adds when absent",
			ok:     &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hvAppend("x-trace", "b", true)}},
			header: "x-trace", want: []string{"b"},
		},
		{
			name: "the deprecated append false overwrites",
			sent: http.Header{"X-Trace": {"a"}}, ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hvAppend("x-trace", "b", false)}},
			header: "x-trace", want: []string{"b"},
		},
		{
			name: "the deprecated append wins over append_action",
			sent: http.Header{"X-Trace": {"a"}},
			ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-trace", Value: "b"}, Append: wrapperspb.Bool(false), AppendAction: appendOrAdd,
			}}},
			header: "x-trace", want: []string{"b"},
		},
		{
			name: "mutations apply in order",
			ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				hv("x-scopes", "a", overwriteOrAdd), hv("x-scopes", "b", appendOrAdd),
			}},
			sent:   http.Header{"X-Scopes": {"admin"}},
			header: "x-scopes", want: []string{"a", "b"},
		},
		{
			name: "headers_to_remove removes the token",
			sent: http.Header{"Authorization": {"Bearer abc"}}, ok: &authv3.OkHttpResponse{HeadersToRemove: []string{"authorization"}},
			header: "authorization", want: nil,
		},
		{
			name: "removal comes after the header mutations",
			sent: http.Header{"X-User-Id": {"u1"}},
			ok: &authv3.OkHttpResponse{
				Headers:         []*corev3.HeaderValueOption{hv("x-user-id", "u2", overwriteOrAdd)},
				HeadersToRemove: []string{"x-user-id"},
			},
			header: "x-user-id", want: nil,
		},
		{
			name: "pseudo-headers and host are never removed",
			sent: http.Header{"X-Keep": {"1"}}, ok: &authv3.OkHttpResponse{HeadersToRemove: []string{":authority", "host", ":path"}},
			header: "x-keep", want: []string{"1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(okResponse(tc.ok)), nil)
			req := newRequest(t, http.MethodGet, f.url+"/accounts?x=1", nil)
			for k, vs := range tc.sent {
				req.Header[k] = vs
			}
			res := do(t, nil, req)
			if res.status != http.StatusOK || res.header.Get(echo.MarkerHeader) == "" {
				t.Fatalf("status %d (%q), want 200 from the upstream", res.status, res.body)
			}
			got, _ := f.upstream.Last()
			if vs, ok := got.Header[tc.header]; tc.want == nil && ok {
				t.Errorf("upstream received %s: %q, want it absent", tc.header, vs)
			} else if tc.want != nil && !slices.Equal(vs, tc.want) {
				t.Errorf("upstream received %s: %q, want %q", tc.header, vs, tc.want)
			}
			wantEqual(t, "upstream path", got.Path, "/accounts")
			wantEqual(t, "upstream query", got.RawQuery, "x=1")
			wantEqual(t, "upstream host", got.Host, f.url[len("http://"):])
		})
	}
}

func TestOKQueryParameters(t *testing.T) {
	tests := []struct {
		name   string
		target string
		set    []*corev3.QueryParameter
		remove []string
		want   string // path and query the upstream receives
	}{
		{"nothing to change keeps the raw query", "/p?b=2&a=%20x", nil, nil, "/p?b=2&a=%20x"},
		{"set overwrites in place", "/p?a=1&b=2&a=3", []*corev3.QueryParameter{{Key: "a", Value: "9"}}, nil, "/p?a=9&b=2"},
		{"set appends an absent key, encoded", "/p?a=1", []*corev3.QueryParameter{{Key: "tenant id", Value: "x&y"}}, nil, "/p?a=1&tenant+id=x%26y"},
		{"remove drops every value of the key", "/p?a=1&b=2&a=3", nil, []string{"a"}, "/p?b=2"},
		{"remove matches the decoded key", "/p?access%5Ftoken=s&b=2", nil, []string{"access_token"}, "/p?b=2"},
		{"remove is case-sensitive", "/p?A=1", nil, []string{"a"}, "/p?A=1"},
		{"an emptied query loses its question mark", "/p?access_token=s", nil, []string{"access_token"}, "/p"},
		{"remove runs after set", "/p", []*corev3.QueryParameter{{Key: "a", Value: "1"}}, []string{"a"}, "/p"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(okResponse(&authv3.OkHttpResponse{
				QueryParametersToSet: tc.set, QueryParametersToRemove: tc.remove,
			})), nil)
			res := do(t, nil, newRequest(t, http.MethodGet, f.url+tc.target, nil))
			if res.status != http.StatusOK {
				t.Fatalf("status %d", res.status)
			}
			got, _ := f.upstream.Last()
			target := got.Path
			if got.RawQuery != "" {
				target += "?" + got.RawQuery
			}
			wantEqual(t, "upstream target", target, tc.want)
		})
	}
}

func TestOKResponseHeadersToAdd(t *testing.T) {
	f := newFixture(t, answer(okResponse(&authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{
		hv("x-ratelimit-remaining", "9", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		hv("content-type", "application/vnd.bank+json", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hv(echo.MarkerHeader, "second", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		hvAppend("cache-control", "no-store", true),
	}})), nil)
	res := do(t, nil, newRequest(t, http.MethodGet, f.url+"/", nil))
	if res.status != http.StatusOK {
		t.Fatalf("status %d", res.status)
	}
	wantEqual(t, "x-ratelimit-remaining", res.header.Get("X-Ratelimit-Remaining"), "9")
	wantEqual(t, "content-type", res.header.Get("Content-Type"), "application/vnd.bank+json")
	if got := res.header.Values(echo.MarkerHeader); !slices.Equal(got, []string{"true", "second"}) {
		t.Errorf("%s = %q, want the upstream's value and the added one", echo.MarkerHeader, got)
	}
	// On responses the deprecated append: true adds an entry rather than joining values.
	wantEqual(t, "cache-control", res.header.Get("Cache-Control"), "no-store")
	got, _ := f.upstream.Last()
	if got.Has("x-ratelimit-remaining") {
		t.Error("a response header was sent upstream")
	}
}

func TestDenied(t *testing.T) {
	tests := []struct {
		name       string
		denied     *authv3.DeniedHttpResponse
		wantStatus int
		wantHeader http.Header
		wantBody   string
	}{
		{
			name:       "no denied_response means 403 with an empty body",
			wantStatus: http.StatusForbidden, wantBody: "",
		},
		{
			name:       "a denied_response without status means 403",
			denied:     &authv3.DeniedHttpResponse{Body: "no"},
			wantStatus: http.StatusForbidden, wantBody: "no",
			wantHeader: http.Header{"Content-Type": {"text/plain"}},
		},
		{
			name: "status, headers and body reach the client",
			denied: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{
					hv("www-authenticate", `Bearer error="invalid_token"`, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
					hv("content-type", "application/json", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				},
				Body: `{"error":"invalid_token"}`,
			},
			wantStatus: http.StatusUnauthorized, wantBody: `{"error":"invalid_token"}`,
			wantHeader: http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}, "Content-Type": {"application/json"}},
		},
		{
			name: "local reply headers without append_action add entries",
			denied: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
				Headers: []*corev3.HeaderValueOption{
					hv("x-reason", "a", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
					hv("x-reason", "b", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				},
			},
			wantStatus: http.StatusTooManyRequests,
			wantHeader: http.Header{"X-Reason": {"a", "b"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(deniedResponse(tc.denied)), nil)
			res := do(t, nil, newRequest(t, http.MethodGet, f.url+"/accounts", nil))
			wantEqual(t, "status", res.status, tc.wantStatus)
			wantEqual(t, "body", res.body, tc.wantBody)
			for k, want := range tc.wantHeader {
				if got := res.header.Values(k); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if res.header.Get(echo.MarkerHeader) != "" {
				t.Error("the answer came from the upstream")
			}
			if n := f.upstream.Count(); n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
		})
	}
}

func TestInvalidMutationFailsClosed(t *testing.T) {
	tests := []struct {
		name string
		resp *authv3.CheckResponse
	}{
		{"a header value with a newline", okResponse(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
			hv("x-subject", "alice\r\nx-admin: true", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}})},
		{"a header name that is not a token", okResponse(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
			hv("x subject", "alice", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, answer(tc.resp), nil)
			res := do(t, nil, newRequest(t, http.MethodGet, f.url+"/", nil))
			wantEqual(t, "status", res.status, http.StatusInternalServerError)
			if n := f.upstream.Count(); n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
		})
	}
}
