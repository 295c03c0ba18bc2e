package envoyproxy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlymutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Well-known names in an Envoy bootstrap.
const (
	hcmFilter     = "envoy.filters.network.http_connection_manager"
	extAuthzName  = "envoy.filters.http.ext_authz"
	routerFilter  = "envoy.filters.http.router"
	methodPseudo  = ":method"
	earlyMutation = "envoy.http.early_header_mutation.header_mutation"
)

// FromBootstrap reads a proxy configuration from an Envoy bootstrap: the listener named listener (the first one
// when empty), its HTTP connection manager, that manager's ext_authz filter and its route table, and the
// addresses of the clusters they name. The result runs the bootstrap's behaviour in this proxy; what the proxy
// cannot reproduce is an error, so that no test believes it exercised a setting it did not.
func FromBootstrap(b *bootstrapv3.Bootstrap, listener string) (Config, error) {
	var cfg Config
	hcm, err := findHCM(b, listener)
	if err != nil {
		return cfg, err
	}
	if err := connectionManagerConfig(hcm, &cfg); err != nil {
		return cfg, err
	}

	var authz *extauthzv3.ExtAuthz
	for _, f := range hcm.GetHttpFilters() {
		switch f.GetName() {
		case extAuthzName:
			authz = &extauthzv3.ExtAuthz{}
			if err := unpack(f.GetTypedConfig(), authz); err != nil {
				return cfg, fmt.Errorf("envoyproxy: %s: %w", extAuthzName, err)
			}
		case routerFilter:
		default:
			return cfg, fmt.Errorf("envoyproxy: http filter %s is not supported", f.GetName())
		}
	}
	if authz == nil {
		return cfg, fmt.Errorf("envoyproxy: no %s filter", extAuthzName)
	}
	authzCluster, err := filterConfig(authz, &cfg)
	if err != nil {
		return cfg, err
	}
	if cfg.Authz, err = clusterAddress(b, authzCluster); err != nil {
		return cfg, err
	}

	upstreamCluster, err := routes(hcm, &cfg)
	if err != nil {
		return cfg, err
	}
	addr, err := clusterAddress(b, upstreamCluster)
	if err != nil {
		return cfg, err
	}
	cfg.Upstream = &url.URL{Scheme: "http", Host: addr}
	return cfg, nil
}

func findHCM(b *bootstrapv3.Bootstrap, listener string) (*hcmv3.HttpConnectionManager, error) {
	for _, l := range b.GetStaticResources().GetListeners() {
		if listener != "" && l.GetName() != listener {
			continue
		}
		if len(l.GetFilterChains()) != 1 {
			return nil, fmt.Errorf("envoyproxy: listener %s: want one filter chain, got %d", l.GetName(), len(l.GetFilterChains()))
		}
		fc := l.GetFilterChains()[0]
		if fc.GetTransportSocket() != nil {
			return nil, fmt.Errorf("envoyproxy: listener %s: TLS is configured in Config.TLS, not read from the bootstrap", l.GetName())
		}
		for _, f := range fc.GetFilters() {
			if f.GetName() != hcmFilter {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := unpack(f.GetTypedConfig(), hcm); err != nil {
				return nil, fmt.Errorf("envoyproxy: listener %s: %w", l.GetName(), err)
			}
			return hcm, nil
		}
		return nil, fmt.Errorf("envoyproxy: listener %s has no %s", l.GetName(), hcmFilter)
	}
	return nil, fmt.Errorf("envoyproxy: no listener %q", listener)
}

func connectionManagerConfig(hcm *hcmv3.HttpConnectionManager, cfg *Config) error {
	cfg.UseRemoteAddress = hcm.GetUseRemoteAddress().GetValue()
	cfg.PreserveExternalRequestID = hcm.GetPreserveExternalRequestId()
	cfg.RequestIDInResponse = hcm.GetAlwaysSetRequestIdInResponse()
	if g := hcm.GetGenerateRequestId(); g != nil && !g.GetValue() {
		return errors.New("envoyproxy: generate_request_id: false is not supported")
	}
	switch hcm.GetForwardClientCertDetails() {
	case hcmv3.HttpConnectionManager_SANITIZE:
		cfg.ForwardClientCert = Sanitize
	case hcmv3.HttpConnectionManager_FORWARD_ONLY, hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		cfg.ForwardClientCert = ForwardOnly
	default:
		return fmt.Errorf("envoyproxy: forward_client_cert_details %s is not supported", hcm.GetForwardClientCertDetails())
	}
	switch hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() {
	case corev3.HttpProtocolOptions_REJECT_REQUEST:
		cfg.HeadersWithUnderscores = RejectUnderscores
	case corev3.HttpProtocolOptions_DROP_HEADER:
		cfg.HeadersWithUnderscores = DropUnderscores
	}
	cfg.NormalizePath = hcm.GetNormalizePath().GetValue()
	cfg.MergeSlashes = hcm.GetMergeSlashes()
	switch hcm.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		cfg.RejectEscapedSlashes = true
	default:
		return fmt.Errorf("envoyproxy: path_with_escaped_slashes_action %s is not supported", hcm.GetPathWithEscapedSlashesAction())
	}
	for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
		if ext.GetName() != earlyMutation {
			return fmt.Errorf("envoyproxy: early header mutation %s is not supported", ext.GetName())
		}
		m := &earlymutationv3.HeaderMutation{}
		if err := unpack(ext.GetTypedConfig(), m); err != nil {
			return fmt.Errorf("envoyproxy: %s: %w", earlyMutation, err)
		}
		for _, mu := range m.GetMutations() {
			prefix := mu.GetRemoveOnMatch().GetKeyMatcher().GetPrefix()
			if prefix == "" {
				return fmt.Errorf("envoyproxy: %s: only remove_on_match with a prefix key_matcher is supported", earlyMutation)
			}
			cfg.RemoveHeaderPrefixes = append(cfg.RemoveHeaderPrefixes, prefix)
		}
	}
	return nil
}

// filterConfig reads the ext_authz filter and returns the name of its gRPC cluster.
func filterConfig(a *extauthzv3.ExtAuthz, cfg *Config) (string, error) {
	switch {
	case a.GetHttpService() != nil:
		return "", errors.New("envoyproxy: ext_authz http_service is not supported, only grpc_service")
	case a.GetGrpcService().GetEnvoyGrpc().GetClusterName() == "":
		return "", errors.New("envoyproxy: ext_authz grpc_service needs an envoy_grpc cluster")
	case a.GetEncodeRawHeaders():
		return "", errors.New("envoyproxy: ext_authz encode_raw_headers is not supported")
	case a.GetFilterEnabled() != nil || a.GetFilterEnabledMetadata() != nil || a.GetDenyAtDisable() != nil:
		return "", errors.New("envoyproxy: ext_authz filter_enabled and deny_at_disable are not supported")
	case a.GetTransportApiVersion() != corev3.ApiVersion_V3:
		return "", errors.New("envoyproxy: ext_authz transport_api_version must be V3")
	}
	if t := a.GetGrpcService().GetTimeout(); t != nil {
		cfg.Timeout = t.AsDuration()
	}
	cfg.FailureModeAllow = a.GetFailureModeAllow()
	cfg.FailureModeAllowHeaderAdd = a.GetFailureModeAllowHeaderAdd()
	cfg.StatusOnError = int(a.GetStatusOnError().GetCode())
	if wb := a.GetWithRequestBody(); wb != nil {
		cfg.WithRequestBody = &BufferSettings{
			MaxRequestBytes:     int(wb.GetMaxRequestBytes()),
			AllowPartialMessage: wb.GetAllowPartialMessage(),
			PackAsBytes:         wb.GetPackAsBytes(),
		}
	}
	cfg.IncludePeerCertificate = a.GetIncludePeerCertificate()
	cfg.IncludeTLSSession = a.GetIncludeTlsSession()
	if a.GetAllowedHeaders() != nil {
		cfg.AllowedHeaders = a.GetAllowedHeaders().GetPatterns()
		if cfg.AllowedHeaders == nil {
			cfg.AllowedHeaders = []*matcherv3.StringMatcher{}
		}
	}
	if a.GetDisallowedHeaders() != nil {
		cfg.DisallowedHeaders = a.GetDisallowedHeaders().GetPatterns()
	}
	cfg.MutationRules = a.GetDecoderHeaderMutationRules()
	return a.GetGrpcService().GetEnvoyGrpc().GetClusterName(), nil
}

// routes reads the route table of the connection manager's single virtual host and returns the one cluster all
// routes send to.
func routes(hcm *hcmv3.HttpConnectionManager, cfg *Config) (string, error) {
	rc := hcm.GetRouteConfig()
	if rc == nil {
		return "", errors.New("envoyproxy: only an inline route_config is supported")
	}
	if len(rc.GetVirtualHosts()) != 1 {
		return "", fmt.Errorf("envoyproxy: want one virtual host, got %d", len(rc.GetVirtualHosts()))
	}
	cluster := ""
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		rt, c, err := route(r)
		if err != nil {
			return "", fmt.Errorf("envoyproxy: route %s: %w", r.GetName(), err)
		}
		if cluster != "" && c != cluster {
			return "", fmt.Errorf("envoyproxy: route %s: every route must go to cluster %s", r.GetName(), cluster)
		}
		cluster = c
		cfg.Routes = append(cfg.Routes, rt)
	}
	if cluster == "" {
		return "", errors.New("envoyproxy: no routes")
	}
	return cluster, nil
}

func route(r *routev3.Route) (Route, string, error) {
	rt := Route{Name: r.GetName()}
	m := r.GetMatch()
	switch m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Path:
		rt.Path = m.GetPath()
	case *routev3.RouteMatch_Prefix:
		rt.Prefix = m.GetPrefix()
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rt.SeparatedPrefix = m.GetPathSeparatedPrefix()
	default:
		return rt, "", errors.New("only path, prefix and path_separated_prefix matches are supported")
	}
	if m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue() {
		return rt, "", errors.New("case_sensitive: false is not supported")
	}
	for _, h := range m.GetHeaders() {
		exact := h.GetStringMatch().GetExact()
		if h.GetName() != methodPseudo || exact == "" || h.GetInvertMatch() {
			return rt, "", errors.New("only an exact :method header match is supported")
		}
		rt.Methods = append(rt.Methods, exact)
	}
	if len(m.GetQueryParameters()) > 0 || len(m.GetCookies()) > 0 || m.GetGrpc() != nil || m.GetTlsContext() != nil {
		return rt, "", errors.New("only path and :method matches are supported")
	}
	cluster := r.GetRoute().GetCluster()
	if cluster == "" {
		return rt, "", errors.New("only a route to a named cluster is supported")
	}
	if a := r.GetRoute(); a.GetPrefixRewrite() != "" || a.GetRegexRewrite() != nil || a.GetHostRewriteLiteral() != "" {
		return rt, "", errors.New("rewrites are not supported")
	}
	if anyCfg, ok := r.GetTypedPerFilterConfig()[extAuthzName]; ok {
		per := &extauthzv3.ExtAuthzPerRoute{}
		if err := unpack(anyCfg, per); err != nil {
			return rt, "", err
		}
		rt.DisableAuthz = per.GetDisabled()
		cs := per.GetCheckSettings()
		if cs.GetDisableRequestBodyBuffering() || cs.GetWithRequestBody() != nil || cs.GetServiceOverride() != nil {
			return rt, "", errors.New("per-route check_settings other than context_extensions are not supported")
		}
		rt.ContextExtensions = cs.GetContextExtensions()
	}
	return rt, cluster, nil
}

// clusterAddress is the address of the single endpoint of a static cluster.
func clusterAddress(b *bootstrapv3.Bootstrap, name string) (string, error) {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		if c.GetType() != clusterv3.Cluster_STATIC {
			return "", fmt.Errorf("envoyproxy: cluster %s: only STATIC clusters are supported", name)
		}
		var addrs []string
		for _, e := range c.GetLoadAssignment().GetEndpoints() {
			for _, le := range e.GetLbEndpoints() {
				sa := le.GetEndpoint().GetAddress().GetSocketAddress()
				addrs = append(addrs, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
			}
		}
		if len(addrs) != 1 {
			return "", fmt.Errorf("envoyproxy: cluster %s: want one endpoint, got %d", name, len(addrs))
		}
		return addrs[0], nil
	}
	return "", fmt.Errorf("envoyproxy: no cluster %s", name)
}

func unpack(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return errors.New("no typed_config")
	}
	return a.UnmarshalTo(m)
}
