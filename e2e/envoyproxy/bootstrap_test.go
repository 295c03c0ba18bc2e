package envoyproxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/finauthz/authz/envoy"
)

func loadSidecar(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	yaml, err := envoy.Sidecar(envoy.Ports{Listener: 20000, Authz: 20001, App: 20002, Admin: 20003})
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoy.Load(yaml)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFromBootstrapReadsTheSidecar(t *testing.T) {
	cfg, err := FromBootstrap(loadSidecar(t), "")
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "authz", cfg.Authz, "127.0.0.1:20001")
	wantEqual(t, "upstream", cfg.Upstream.String(), "http://127.0.0.1:20002")
	if cfg.Timeout <= 0 || cfg.Timeout > 10*time.Second {
		t.Errorf("timeout %v", cfg.Timeout)
	}
	if cfg.FailureModeAllow {
		t.Error("the sidecar fails open")
	}
	if cfg.StatusOnError != 0 && (cfg.StatusOnError < 400 || cfg.StatusOnError > 599) {
		t.Errorf("status_on_error %d is not an error status", cfg.StatusOnError)
	}
	if len(cfg.Routes) == 0 {
		t.Error("no routes")
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New refuses the sidecar's configuration: %v", err)
	}
	p.Close()
}

// editHCM changes the connection manager of the bootstrap's first listener.
func editHCM(t *testing.T, b *bootstrapv3.Bootstrap, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	f := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	edit(hcm)
	a, err := anypb.New(hcm)
	if err != nil {
		t.Fatal(err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

// editAuthz changes the ext_authz filter of a connection manager.
func editAuthz(t *testing.T, hcm *hcmv3.HttpConnectionManager, edit func(*extauthzv3.ExtAuthz)) {
	t.Helper()
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() != extAuthzName {
			continue
		}
		a := &extauthzv3.ExtAuthz{}
		if err := f.GetTypedConfig().UnmarshalTo(a); err != nil {
			t.Fatal(err)
		}
		edit(a)
		packed, err := anypb.New(a)
		if err != nil {
			t.Fatal(err)
		}
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: packed}
		return
	}
	t.Fatal("no ext_authz filter")
}

func TestFromBootstrapRefusesWhatItCannotRun(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, hcm *hcmv3.HttpConnectionManager)
		want string
	}{
		{
			name: "an HTTP authorization service",
			edit: func(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
				editAuthz(t, hcm, func(a *extauthzv3.ExtAuthz) {
					a.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{}}
				})
			},
			want: "http_service",
		},
		{
			name: "raw header encoding",
			edit: func(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
				editAuthz(t, hcm, func(a *extauthzv3.ExtAuthz) { a.EncodeRawHeaders = true })
			},
			want: "encode_raw_headers",
		},
		{
			name: "another HTTP filter in the chain",
			edit: func(_ *testing.T, hcm *hcmv3.HttpConnectionManager) {
				hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.lua"}}, hcm.HttpFilters...)
			},
			want: "envoy.filters.http.lua",
		},
		{
			name: "a client certificate header Envoy would set",
			edit: func(_ *testing.T, hcm *hcmv3.HttpConnectionManager) {
				hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
			},
			want: "forward_client_cert_details",
		},
		{
			name: "a regex route",
			edit: func(_ *testing.T, hcm *hcmv3.HttpConnectionManager) {
				r := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
				r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/.*"}}
			},
			want: "path_separated_prefix",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := loadSidecar(t)
			editHCM(t, b, func(hcm *hcmv3.HttpConnectionManager) { tc.edit(t, hcm) })
			_, err := FromBootstrap(b, "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromBootstrap error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestRoutesFollowTheSidecar(t *testing.T) {
	cfg, err := FromBootstrap(loadSidecar(t), "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tests := []struct {
		method, target string
		wantRoute      bool
	}{
		{http.MethodGet, "/accounts", true},
		{http.MethodGet, "/accounts/acc-1?x=1", true},
		{http.MethodPost, "/payments", true},
		{http.MethodGet, "/anything", true},
	}
	for _, tc := range tests {
		got := p.route(tc.method, tc.target)
		if (got != nil) != tc.wantRoute {
			t.Errorf("%s %s: route %v", tc.method, tc.target, got)
		}
	}
}
