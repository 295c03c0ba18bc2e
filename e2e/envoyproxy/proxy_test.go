package envoyproxy

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/finauthz/authz/e2e/echo"
)

func fail(code codes.Code) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return nil, status.Error(code, "scripted failure")
	}
}

// waitForDeadline answers only when the caller gives up, like a service that hangs.
func waitForDeadline(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name       string
		respond    func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		edit       func(*Config)
		wantStatus int
		wantBody   string
		forwarded  bool
		wantHeader string // sent upstream, for forwarded requests
	}{
		{
			name:       "a gRPC error fails closed with 403 by default",
			respond:    fail(codes.Internal),
			wantStatus: http.StatusForbidden,
		},
		{
			name:       "status_on_error sets the reply status",
			respond:    fail(codes.Unavailable),
			edit:       func(c *Config) { c.StatusOnError = http.StatusServiceUnavailable },
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name:       "a timeout fails closed",
			respond:    waitForDeadline,
			edit:       func(c *Config) { c.Timeout = 50 * time.Millisecond },
			wantStatus: http.StatusForbidden,
		},
		{
			name: "an error_response is an error with its own status and body",
			respond: answer(&authv3.CheckResponse{
				Status: &rpcstatus.Status{Code: int32(codes.Unavailable)},
				HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}, Body: "try later",
				}},
			}),
			wantStatus: http.StatusServiceUnavailable, wantBody: "try later",
		},
		{
			name:      "failure_mode_allow forwards the request",
			respond:   fail(codes.Unavailable),
			edit:      func(c *Config) { c.FailureModeAllow = true },
			forwarded: true, wantStatus: http.StatusOK,
		},
		{
			name:    "failure_mode_allow_header_add marks the forwarded request",
			respond: fail(codes.Unavailable),
			edit: func(c *Config) {
				c.FailureModeAllow, c.FailureModeAllowHeaderAdd = true, true
			},
			forwarded: true, wantStatus: http.StatusOK, wantHeader: FailureModeAllowedHeader,
		},
		{
			name:       "failure_mode_allow does not let a denial through",
			respond:    answer(deniedResponse(nil)),
			edit:       func(c *Config) { c.FailureModeAllow = true },
			wantStatus: http.StatusForbidden,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.respond, tc.edit)
			req := newRequest(t, http.MethodGet, f.url+"/accounts", nil)
			req.Header.Set("Authorization", "Bearer abc")
			res := do(t, nil, req)
			wantEqual(t, "status", res.status, tc.wantStatus)
			if !tc.forwarded {
				wantEqual(t, "body", res.body, tc.wantBody)
				if n := f.upstream.Count(); n != 0 {
					t.Errorf("the upstream received %d requests; the proxy must fail closed", n)
				}
				return
			}
			got, ok := f.upstream.Last()
			if !ok {
				t.Fatal("the request was not forwarded")
			}
			wantEqual(t, "authorization upstream", got.Get("authorization"), "Bearer abc")
			if tc.wantHeader != "" {
				wantEqual(t, tc.wantHeader, got.Get(tc.wantHeader), "true")
			}
		})
	}
}

func TestTimeoutPropagatesAsDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	f := newFixture(t, waitForDeadline, func(c *Config) { c.Timeout = timeout })
	start := time.Now()
	res := do(t, nil, newRequest(t, http.MethodGet, f.url+"/accounts", nil))
	elapsed := time.Since(start)
	wantEqual(t, "status", res.status, http.StatusForbidden)
	_, left := f.authz.last(t)
	if left <= 0 || left > timeout {
		t.Errorf("the service saw %v left to its deadline, want a deadline within %v", left, timeout)
	}
	if elapsed < timeout {
		t.Errorf("answered after %v, before the %v timeout", elapsed, timeout)
	}
	if n := f.upstream.Count(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
}

func TestUnreachableServiceFailsClosed(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there any more

	up, u := startUpstream(t)
	base := startProxy(t, Config{Authz: addr, Upstream: u, Timeout: 2 * time.Second})
	res := do(t, nil, newRequest(t, http.MethodGet, base+"/fx/rates", nil))
	wantEqual(t, "status", res.status, http.StatusForbidden)
	wantEqual(t, "body", res.body, "")
	if n := up.Count(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
}

func TestUnreachableUpstream(t *testing.T) {
	a := startAuthz(t, answer(okResponse(nil)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "http", Host: lis.Addr().String()}
	lis.Close()
	base := startProxy(t, Config{Authz: a.addr, Upstream: u, Timeout: 2 * time.Second})
	res := do(t, nil, newRequest(t, http.MethodGet, base+"/", nil))
	wantEqual(t, "status", res.status, http.StatusServiceUnavailable)
	if res.header.Get(echo.MarkerHeader) != "" {
		t.Error("answer marked as the upstream's")
	}
}

func TestNewValidates(t *testing.T) {
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"the authorization service is required", Config{Upstream: u}},
		{"the upstream is required", Config{Authz: "127.0.0.1:1"}},
		{"a body limit must be positive", Config{Authz: "127.0.0.1:1", Upstream: u, WithRequestBody: &BufferSettings{}}},
		{"status_on_error must be a final status", Config{Authz: "127.0.0.1:1", Upstream: u, StatusOnError: 99}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := New(tc.cfg); err == nil {
				p.Close()
				t.Fatal("New accepted an invalid configuration")
			}
		})
	}
}
