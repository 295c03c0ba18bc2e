package envoyproxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/finauthz/authz/e2e/echo"
)

// authzDouble is a real gRPC Authorization server on loopback whose answers the test scripts; it stands in for
// the service so that these tests exercise the proxy alone.
type authzDouble struct {
	authv3.UnimplementedAuthorizationServer
	addr    string
	respond func(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error)

	mu        sync.Mutex
	requests  []*authv3.CheckRequest
	deadlines []time.Duration
}

func (a *authzDouble) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.mu.Lock()
	a.requests = append(a.requests, req)
	if d, ok := ctx.Deadline(); ok {
		a.deadlines = append(a.deadlines, time.Until(d))
	} else {
		a.deadlines = append(a.deadlines, -1)
	}
	a.mu.Unlock()
	return a.respond(ctx, req)
}

// last returns the latest CheckRequest and the time left to its deadline when it arrived (-1 without one).
func (a *authzDouble) last(t *testing.T) (*authv3.CheckRequest, time.Duration) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.requests) == 0 {
		t.Fatal("the authorization service received no CheckRequest")
	}
	return a.requests[len(a.requests)-1], a.deadlines[len(a.deadlines)-1]
}

func (a *authzDouble) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

// startAuthz serves respond on a loopback port until the test ends.
func startAuthz(t *testing.T, respond func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)) *authzDouble {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &authzDouble{addr: lis.Addr().String(), respond: respond}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, a)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return a
}

// answer returns a fixed CheckResponse.
func answer(resp *authv3.CheckResponse) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil }
}

func okResponse(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

func deniedResponse(d *authv3.DeniedHttpResponse) *authv3.CheckResponse {
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}}
	if d != nil {
		resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: d}
	}
	return resp
}

// upstream is a real echo server on loopback.
func startUpstream(t *testing.T) (*echo.Server, *url.URL) {
	t.Helper()
	e := &echo.Server{}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return e, u
}

// startProxy serves a proxy with cfg on a loopback port until the test ends and returns its base URL.
func startProxy(t *testing.T, cfg Config) string {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(lis) }()
	t.Cleanup(func() { _ = p.Close(); <-done })
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + lis.Addr().String()
}

// fixture is a proxy between a scripted authorization service and an echo upstream.
type fixture struct {
	authz    *authzDouble
	upstream *echo.Server
	url      string
}

func newFixture(t *testing.T, respond func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error), edit func(*Config)) *fixture {
	t.Helper()
	a := startAuthz(t, respond)
	e, u := startUpstream(t)
	cfg := Config{Authz: a.addr, Upstream: u, Timeout: 5 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	return &fixture{authz: a, upstream: e, url: startProxy(t, cfg)}
}

// result is what a client got.
type result struct {
	status int
	header http.Header
	body   string
}

// do sends req with client (http.DefaultClient when nil) and reads the whole answer.
func do(t *testing.T, client *http.Client, req *http.Request) result {
	t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// tlsClient trusts roots and presents cert when it is not nil.
func tlsClient(roots *tls.Config, cert *tls.Certificate) *http.Client {
	cfg := roots.Clone()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}
