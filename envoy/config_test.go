package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"
)

// errPolicy marks a configuration that Envoy would run but that breaks a rule of ours.
var errPolicy = errors.New("policy")

const (
	extAuthzType   = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	perRouteType   = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	maxAuthzWait   = time.Second
	maxBufferBytes = 64 << 10
)

// bootstraps are the Envoy configurations users deploy, each with the rules that apply to it alone.
var bootstraps = []struct {
	file   string
	policy func(*bootstrapv3.Bootstrap) []error
}{
	{"sidecar.yaml", sidecarPolicy},
	{"gateway.yaml", gatewayPolicy},
}

// checkBootstrap loads data as Envoy would and applies every policy to it: the ones all bootstraps share, then
// policy. Violations wrap errPolicy.
func checkBootstrap(data []byte, policy func(*bootstrapv3.Bootstrap) []error) error {
	b, err := Load(data)
	if err != nil {
		return err
	}
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return err
	}
	errs := explicitSettings(tree)
	errs = append(errs, commonPolicy(b)...)
	errs = append(errs, policy(b)...)
	return errors.Join(errs...)
}

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errPolicy, fmt.Sprintf(format, args...))
}

func TestBootstrapsLoadAndMeetPolicy(t *testing.T) {
	t.Parallel()
	for _, bc := range bootstraps {
		t.Run(bc.file, func(t *testing.T) {
			t.Parallel()
			if err := checkBootstrap(readFile(t, bc.file), bc.policy); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A typed_config is a google.protobuf.Any: ValidateAll on the bootstrap checks that it is set, never what is in
// it. This is why Validate unpacks every Any.
func TestValidateAllAloneDoesNotLookInsideTypedConfig(t *testing.T) {
	t.Parallel()
	tree := decodeTree(t, readFile(t, "sidecar.yaml"))
	authz := findObject(t, tree, hasType(extAuthzType))
	authz["status_on_error"] = map[string]any{"code": 0}
	data := encodeTree(t, tree)

	js, err := yamlToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll on the bootstrap now sees inside typed_config (%v): Validate may be simpler", err)
	}
	err = Validate(b)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "typed_config<ExtAuthz>") || !strings.Contains(err.Error(), "StatusOnError") {
		t.Fatalf("Validate = %v, want ErrInvalid naming typed_config<ExtAuthz> and StatusOnError", err)
	}
}

func TestLoadNamesTheYAMLLineOfAnUnknownField(t *testing.T) {
	t.Parallel()
	good := readFile(t, "sidecar.yaml")
	bad := bytes.Replace(good, []byte("merge_slashes: true"), []byte("merge_slash: true"), 1)
	want := 1 + bytes.Count(good[:bytes.Index(good, []byte("merge_slashes: true"))], []byte("\n"))
	_, err := Load(bad)
	if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), fmt.Sprintf("yaml line %d:", want)) {
		t.Fatalf("Load = %v, want ErrSyntax naming yaml line %d", err, want)
	}
}

// mutation injects one mistake into a decoded bootstrap.
type mutation struct {
	name   string
	files  []string // nil: every bootstrap
	mutate func(t *testing.T, tree map[string]any)
	want   error
}

func TestBootstrapMistakesAreCaught(t *testing.T) {
	t.Parallel()
	authz := func(t *testing.T, tree map[string]any) map[string]any {
		return findObject(t, tree, hasType(extAuthzType))
	}
	set := func(key string, v any) func(*testing.T, map[string]any) {
		return func(t *testing.T, tree map[string]any) { authz(t, tree)[key] = v }
	}
	del := func(key string) func(*testing.T, map[string]any) {
		return func(t *testing.T, tree map[string]any) { remove(t, authz(t, tree), key) }
	}
	cluster := func(t *testing.T, tree map[string]any, name string) map[string]any {
		return findObject(t, tree, func(o map[string]any) bool { return o["name"] == name && o["load_assignment"] != nil })
	}
	route := func(t *testing.T, tree map[string]any, name string) map[string]any {
		return findObject(t, tree, func(o map[string]any) bool { return o["name"] == name && o["match"] != nil })
	}
	hcm := func(t *testing.T, tree map[string]any) map[string]any {
		return findObject(t, tree, hasType("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"))
	}
	tlsParams := func(t *testing.T, tree map[string]any) map[string]any {
		return findObject(t, tree, hasType("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"))["common_tls_context"].(map[string]any)["tls_params"].(map[string]any)
	}
	onlySidecar, onlyGateway := []string{"sidecar.yaml"}, []string{"gateway.yaml"}

	tests := []mutation{
		// Mistakes Envoy itself refuses at start.
		{"misspelt ext_authz field is a syntax error", nil,
			func(t *testing.T, tree map[string]any) {
				rename(t, authz(t, tree), "transport_api_version", "transport_api_verison")
			}, ErrSyntax},
		{"misspelt bootstrap field is a syntax error", nil,
			func(t *testing.T, tree map[string]any) { rename(t, tree, "static_resources", "static_resource") }, ErrSyntax},
		{"misspelt cluster field is a syntax error", nil,
			func(t *testing.T, tree map[string]any) {
				rename(t, cluster(t, tree, "ext_authz"), "connect_timeout", "connect_timout")
			}, ErrSyntax},
		{"misspelt connection manager field is a syntax error", nil,
			func(t *testing.T, tree map[string]any) { rename(t, hcm(t, tree), "normalize_path", "normalise_path") }, ErrSyntax},
		{"misspelt per-route field is a syntax error", nil,
			func(t *testing.T, tree map[string]any) {
				perRoute := findObject(t, tree, func(o map[string]any) bool { return o["@type"] == perRouteType && o["check_settings"] != nil })
				rename(t, perRoute, "check_settings", "check_setting")
			}, ErrSyntax},
		{"misspelt @type is a syntax error", nil, set("@type", extAuthzType+"s"), ErrSyntax},
		{"@type of the retired v2 API is a syntax error", nil,
			set("@type", "type.googleapis.com/envoy.config.filter.http.ext_authz.v2.ExtAuthz"), ErrSyntax},
		{"unknown enum name is a syntax error", nil, set("transport_api_version", "V4"), ErrSyntax},
		{"undefined enum number is invalid", nil, set("status_on_error", map[string]any{"code": 999}), ErrInvalid},
		{"empty status inside typed_config is invalid", nil, set("status_on_error", map[string]any{"code": 0}), ErrInvalid},
		{"gRPC service without a cluster is invalid", nil,
			func(t *testing.T, tree map[string]any) {
				authz(t, tree)["grpc_service"].(map[string]any)["envoy_grpc"] = map[string]any{"cluster_name": ""}
			}, ErrInvalid},
		{"v2 transport API is deprecated", nil, set("transport_api_version", "V2"), ErrDeprecated},
		{"cluster-level http2_protocol_options is deprecated", nil,
			func(t *testing.T, tree map[string]any) {
				cluster(t, tree, "ext_authz")["http2_protocol_options"] = map[string]any{}
			}, ErrDeprecated},

		// Configurations Envoy would run but that break our rules.
		{"failing open is refused", nil, set("failure_mode_allow", true), errPolicy},
		{"failure_mode_allow left implicit is refused", nil, del("failure_mode_allow"), errPolicy},
		{"shadow mode, which never denies, is refused", nil, set("shadow_mode", true), errPolicy},
		{"checking a sample of requests is refused", nil,
			set("filter_enabled", map[string]any{"default_value": map[string]any{"numerator": 50}}), errPolicy},
		{"missing timeout is refused", nil,
			func(t *testing.T, tree map[string]any) {
				remove(t, authz(t, tree)["grpc_service"].(map[string]any), "timeout")
			}, errPolicy},
		{"timeout over a second is refused", nil,
			func(t *testing.T, tree map[string]any) {
				authz(t, tree)["grpc_service"].(map[string]any)["timeout"] = "5s"
			}, errPolicy},
		{"missing status_on_error is refused", nil, del("status_on_error"), errPolicy},
		{"status_on_error other than 403 or 503 is refused", nil, set("status_on_error", map[string]any{"code": 200}), errPolicy},
		{"missing transport_api_version is refused", nil, del("transport_api_version"), errPolicy},
		{"include_peer_certificate left implicit is refused", nil, del("include_peer_certificate"), errPolicy},
		{"unchecked mutations are refused", nil, set("validate_mutations", false), errPolicy},
		{"route cache clearing is refused", nil, set("clear_route_cache", true), errPolicy},
		{"raw header encoding, which finauthz does not read, is refused", nil, set("encode_raw_headers", true), errPolicy},
		{"letting finauthz rewrite :authority is refused", nil,
			func(t *testing.T, tree map[string]any) {
				authz(t, tree)["decoder_header_mutation_rules"].(map[string]any)["disallow_system"] = false
			}, errPolicy},
		{"HTTP ext_authz service is refused", nil,
			func(t *testing.T, tree map[string]any) {
				a := authz(t, tree)
				delete(a, "grpc_service")
				a["http_service"] = map[string]any{"server_uri": map[string]any{"uri": "http://127.0.0.1:9191", "cluster": "ext_authz", "timeout": "0.25s"}}
			}, errPolicy},
		{"unknown ext_authz cluster is refused", nil,
			func(t *testing.T, tree map[string]any) {
				authz(t, tree)["grpc_service"].(map[string]any)["envoy_grpc"] = map[string]any{"cluster_name": "ext-authz"}
			}, errPolicy},
		{"ext_authz cluster without HTTP/2 is refused", nil,
			func(t *testing.T, tree map[string]any) {
				remove(t, cluster(t, tree, "ext_authz"), "typed_extension_protocol_options")
			}, errPolicy},
		{"sending cookies to finauthz is refused", nil,
			func(t *testing.T, tree map[string]any) {
				p := authz(t, tree)["allowed_headers"].(map[string]any)
				p["patterns"] = append(p["patterns"].([]any), map[string]any{"exact": "cookie"})
			}, errPolicy},
		{"header patterns other than exact names are refused", nil,
			func(t *testing.T, tree map[string]any) {
				p := authz(t, tree)["allowed_headers"].(map[string]any)
				p["patterns"] = append(p["patterns"].([]any), map[string]any{"prefix": "x-"})
			}, errPolicy},
		{"withholding content-length from finauthz is refused", nil,
			func(t *testing.T, tree map[string]any) {
				p := authz(t, tree)["allowed_headers"].(map[string]any)
				p["patterns"] = slices.DeleteFunc(p["patterns"].([]any), func(v any) bool { return v.(map[string]any)["exact"] == "content-length" })
			}, errPolicy},
		{"ext_authz after the router is refused", nil,
			func(t *testing.T, tree map[string]any) {
				fs := hcm(t, tree)["http_filters"].([]any)
				fs[0], fs[len(fs)-1] = fs[len(fs)-1], fs[0]
			}, errPolicy},
		{"ext_authz disabled in the filter chain is refused", nil,
			func(t *testing.T, tree map[string]any) {
				findObject(t, tree, func(o map[string]any) bool {
					return o["name"] == "envoy.filters.http.ext_authz" && o["typed_config"] != nil
				})["disabled"] = true
			}, errPolicy},
		{"per-route config under a misspelt filter name is refused", nil,
			func(t *testing.T, tree map[string]any) {
				rename(t, route(t, tree, "accounts")["typed_per_filter_config"].(map[string]any), "envoy.filters.http.ext_authz", "envoy.filters.http.extauthz")
			}, errPolicy},
		{"prefix route exempt from ext_authz is refused", nil,
			func(t *testing.T, tree map[string]any) {
				route(t, tree, "default")["typed_per_filter_config"] = map[string]any{"envoy.filters.http.ext_authz": map[string]any{"@type": perRouteType, "disabled": true}}
			}, errPolicy},
		{"route without context_extensions is refused", nil,
			func(t *testing.T, tree map[string]any) {
				remove(t, route(t, tree, "payments"), "typed_per_filter_config")
			}, errPolicy},
		{"route to an unknown cluster is refused", nil,
			func(t *testing.T, tree map[string]any) {
				route(t, tree, "accounts")["route"] = map[string]any{"cluster": "nowhere"}
			}, errPolicy},
		{"keeping client x-envoy-* headers is refused", nil,
			func(t *testing.T, tree map[string]any) { remove(t, hcm(t, tree), "early_header_mutation_extensions") }, errPolicy},
		{"unnormalised paths are refused", nil,
			func(t *testing.T, tree map[string]any) { hcm(t, tree)["normalize_path"] = false }, errPolicy},
		{"escaped slashes passed through are refused", nil,
			func(t *testing.T, tree map[string]any) {
				hcm(t, tree)["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
			}, errPolicy},
		{"trusting the client's X-Forwarded-For is refused", nil,
			func(t *testing.T, tree map[string]any) { hcm(t, tree)["use_remote_address"] = false }, errPolicy},
		{"forwarding a client's X-Forwarded-Client-Cert is refused", nil,
			func(t *testing.T, tree map[string]any) {
				hcm(t, tree)["forward_client_cert_details"] = "APPEND_FORWARD"
			}, errPolicy},
		{"admin on every interface is refused", nil,
			func(t *testing.T, tree map[string]any) {
				tree["admin"].(map[string]any)["address"].(map[string]any)["socket_address"].(map[string]any)["address"] = "0.0.0.0"
			}, errPolicy},
		{"plaintext cluster off loopback is refused", nil,
			func(t *testing.T, tree map[string]any) {
				// The sidecar's clusters are all on loopback: move the application off it. The gateway's backend is
				// remote already: take its TLS away.
				if c := lookup(tree, func(o map[string]any) bool { return o["name"] == "backend" && o["load_assignment"] != nil }); c != nil {
					remove(t, c, "transport_socket")
					return
				}
				c := cluster(t, tree, "app")
				c["type"] = "STRICT_DNS"
				addr := findObject(t, c, func(o map[string]any) bool { return o["port_value"] != nil })
				addr["address"] = "app.internal"
			}, errPolicy},

		// Sidecar: the health route, and only it, skips authorization.
		{"health route checked by finauthz is refused", onlySidecar,
			func(t *testing.T, tree map[string]any) {
				route(t, tree, "health")["typed_per_filter_config"] = map[string]any{"envoy.filters.http.ext_authz": map[string]any{"@type": perRouteType, "disabled": false}}
			}, errPolicy},
		{"health route without its exemption is refused", onlySidecar,
			func(t *testing.T, tree map[string]any) {
				remove(t, route(t, tree, "health"), "typed_per_filter_config")
			}, errPolicy},

		// Gateway: mutual TLS at the edge, and finauthz sees the certificate.
		{"gateway without the peer certificate is refused", onlyGateway, set("include_peer_certificate", false), errPolicy},
		{"gateway without the TLS session is refused", onlyGateway, set("include_tls_session", false), errPolicy},
		{"gateway without the request body is refused", onlyGateway, del("with_request_body"), errPolicy},
		{"TLS 1.1 at the edge is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) {
				tlsParams(t, tree)["tls_minimum_protocol_version"] = "TLSv1_1"
			}, errPolicy},
		{"TLS minimum left implicit is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) { remove(t, tlsParams(t, tree), "tls_minimum_protocol_version") }, errPolicy},
		{"CBC cipher suite is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) {
				p := tlsParams(t, tree)
				p["cipher_suites"] = append(p["cipher_suites"].([]any), "ECDHE-RSA-AES128-SHA")
			}, errPolicy},
		{"optional client certificate is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) {
				findObject(t, tree, hasType("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"))["require_client_certificate"] = false
			}, errPolicy},
		{"client certificates without trust anchors are refused", onlyGateway,
			func(t *testing.T, tree map[string]any) {
				remove(t, findObject(t, tree, hasType("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"))["common_tls_context"].(map[string]any), "validation_context")
			}, errPolicy},
		{"plaintext listener at the edge is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) {
				remove(t, findObject(t, tree, func(o map[string]any) bool { return o["transport_socket"] != nil && o["filters"] != nil }), "transport_socket")
			}, errPolicy},
		{"trusting a proxy hop at the edge is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) { hcm(t, tree)["xff_num_trusted_hops"] = 1 }, errPolicy},
		{"keeping the client's request id at the edge is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) { hcm(t, tree)["preserve_external_request_id"] = true }, errPolicy},
		{"no connection limit at the edge is refused", onlyGateway,
			func(t *testing.T, tree map[string]any) { remove(t, tree, "overload_manager") }, errPolicy},
	}

	for _, bc := range bootstraps {
		good := readFile(t, bc.file)
		for _, tc := range tests {
			if tc.files != nil && !slices.Contains(tc.files, bc.file) {
				continue
			}
			t.Run(bc.file+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				tree := decodeTree(t, good)
				tc.mutate(t, tree)
				err := checkBootstrap(encodeTree(t, tree), bc.policy)
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want an error wrapping %q", err, tc.want)
				}
				t.Log(err)
			})
		}
	}
}

// explicitSettings requires every ext_authz filter to spell out the settings a security reviewer looks for,
// defaults included: a default read off the file is a default nobody has to remember.
func explicitSettings(tree any) []error {
	var errs []error
	required := []string{
		"transport_api_version", "failure_mode_allow", "status_on_error", "include_peer_certificate",
		"validate_mutations", "clear_route_cache", "allowed_headers", "with_request_body", "grpc_service.timeout",
	}
	eachObject(tree, func(o map[string]any) {
		if o["@type"] != extAuthzType {
			return
		}
		for _, key := range required {
			if !hasPath(o, key) {
				errs = append(errs, violation("ext_authz: %s must be set explicitly", key))
			}
		}
	})
	return errs
}

// commonPolicy holds the rules every bootstrap meets.
func commonPolicy(b *bootstrapv3.Bootstrap) []error {
	var errs []error
	if a := b.GetAdmin().GetAddress(); a != nil && !loopback(a) {
		errs = append(errs, violation("admin listens on %s, want loopback", a.GetSocketAddress().GetAddress()))
	}
	clusters := make(map[string]*clusterv3.Cluster)
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
		errs = append(errs, clusterPolicy(c)...)
	}

	var authzFilters int
	err := unpacked(b, func(path string, m proto.Message) error {
		switch m := m.(type) {
		case *hcmv3.HttpConnectionManager:
			errs = append(errs, hcmPolicy(path, m, clusters)...)
		case *extauthzv3.ExtAuthz:
			authzFilters++
			errs = append(errs, extAuthzPolicy(path, m, clusters)...)
		case *tlsv3.DownstreamTlsContext:
			errs = append(errs, downstreamTLSPolicy(path, m)...)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if authzFilters == 0 {
		errs = append(errs, violation("no ext_authz filter"))
	}
	return errs
}

var requiredAuthzHeaders = []string{"authorization", "content-type", "content-length"}

// forbiddenAuthzHeaders carry credentials or session state finauthz does not use and must not log.
var forbiddenAuthzHeaders = []string{"cookie", "set-cookie", "proxy-authorization", "x-api-key"}

func extAuthzPolicy(path string, a *extauthzv3.ExtAuthz, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, violation(path+": "+format, args...)) }
	if a.GetFailureModeAllow() || a.GetFailureModeAllowHeaderAdd() {
		bad("failure_mode_allow must be false: fail closed")
	}
	if a.GetShadowMode() {
		bad("shadow_mode never denies")
	}
	if a.GetFilterEnabled() != nil || a.GetFilterEnabledMetadata() != nil || a.GetDenyAtDisable() != nil {
		bad("the filter must check every request: no filter_enabled, filter_enabled_metadata or deny_at_disable")
	}
	if a.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		bad("transport_api_version is %v, want V3", a.GetTransportApiVersion())
	}
	if code := a.GetStatusOnError().GetCode(); code != 403 && code != 503 {
		bad("status_on_error is %d, want 403 or 503", code)
	}
	if !a.GetIncludePeerCertificate() {
		bad("include_peer_certificate must be true")
	}
	if !a.GetValidateMutations() {
		bad("validate_mutations must be true")
	}
	if a.GetClearRouteCache() {
		bad("clear_route_cache must be false: finauthz does not reroute")
	}
	if a.GetEncodeRawHeaders() {
		bad("encode_raw_headers must be false: finauthz reads the headers map")
	}
	if r := a.GetDecoderHeaderMutationRules(); r == nil || !r.GetDisallowSystem().GetValue() || r.GetAllowEnvoy().GetValue() ||
		r.GetAllowAllRouting().GetValue() || !r.GetDisallowIsError().GetValue() {
		bad("decoder_header_mutation_rules must forbid pseudo-header, routing and x-envoy-* mutations, as errors")
	}

	g := a.GetGrpcService()
	if g == nil {
		bad("want a gRPC service: finauthz serves the gRPC Check API")
	} else {
		name := g.GetEnvoyGrpc().GetClusterName()
		if c, ok := clusters[name]; !ok {
			bad("grpc_service names cluster %q, not in static_resources", name)
		} else if !http2(c) {
			bad("cluster %q must speak HTTP/2 (typed_extension_protocol_options)", name)
		}
		if d := g.GetTimeout().AsDuration(); g.GetTimeout() == nil || d <= 0 || d > maxAuthzWait {
			bad("grpc_service.timeout is %v, want set and at most %v", d, maxAuthzWait)
		}
	}

	var names []string
	for _, p := range a.GetAllowedHeaders().GetPatterns() {
		if p.GetExact() == "" || p.GetIgnoreCase() {
			bad("allowed_headers: want exact lower-case names a reviewer can read, got %v", p)
			continue
		}
		names = append(names, p.GetExact())
	}
	for _, h := range requiredAuthzHeaders {
		if !slices.Contains(names, h) {
			bad("allowed_headers must include %s: finauthz reads it", h)
		}
	}
	for _, h := range forbiddenAuthzHeaders {
		if slices.Contains(names, h) {
			bad("allowed_headers must not include %s", h)
		}
	}
	if n := a.GetWithRequestBody().GetMaxRequestBytes(); a.GetWithRequestBody() != nil && (n == 0 || n > maxBufferBytes) {
		bad("with_request_body.max_request_bytes is %d, want 1..%d", n, maxBufferBytes)
	}
	return errs
}

func hcmPolicy(path string, h *hcmv3.HttpConnectionManager, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, violation(path+": "+format, args...)) }

	filters := h.GetHttpFilters()
	authzAt, routerAt := -1, -1
	names := make(map[string]bool)
	for i, f := range filters {
		names[f.GetName()] = true
		inner, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			continue
		}
		switch inner.(type) {
		case *extauthzv3.ExtAuthz:
			if authzAt < 0 {
				authzAt = i
			}
			if f.GetDisabled() || f.GetIsOptional() {
				bad("http_filters[%d]: ext_authz must be neither disabled nor optional", i)
			}
		case *routerv3.Router:
			routerAt = i
		}
	}
	switch {
	case authzAt < 0:
		bad("no ext_authz filter")
	case routerAt != len(filters)-1:
		bad("the router must be the last HTTP filter")
	case authzAt > routerAt:
		bad("ext_authz must run before the router")
	}

	if !h.GetUseRemoteAddress().GetValue() {
		bad("use_remote_address must be true: the peer address, not X-Forwarded-For")
	}
	if !stripsEnvoyHeaders(h) {
		bad("early_header_mutation_extensions must remove client x-envoy-* headers")
	}
	if !h.GetNormalizePath().GetValue() || !h.GetMergeSlashes() {
		bad("normalize_path and merge_slashes must be true")
	}
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
	default:
		bad("path_with_escaped_slashes_action %v lets the policy and the upstream read a path differently", h.GetPathWithEscapedSlashesAction())
	}
	switch h.GetForwardClientCertDetails() {
	case hcmv3.HttpConnectionManager_SANITIZE, hcmv3.HttpConnectionManager_SANITIZE_SET:
	default:
		bad("forward_client_cert_details %v trusts a client-supplied X-Forwarded-Client-Cert", h.GetForwardClientCertDetails())
	}
	if h.GetGenerateRequestId() == nil || !h.GetGenerateRequestId().GetValue() {
		bad("generate_request_id must be explicitly true")
	}
	if h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_ALLOW {
		bad("headers with underscores must be rejected or dropped")
	}

	rc := h.GetRouteConfig()
	if rc == nil {
		bad("want an inline route_config")
		return errs
	}
	for _, vh := range rc.GetVirtualHosts() {
		if _, err := perRoute(vh.GetTypedPerFilterConfig(), names); err != nil {
			bad("virtual host %s: %v", vh.GetName(), err)
		} else if _, ok := vh.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; ok {
			bad("virtual host %s: ext_authz settings belong on routes", vh.GetName())
		}
		for _, r := range vh.GetRoutes() {
			errs = append(errs, routePolicy(path, r, names, clusters)...)
		}
	}
	return errs
}

func routePolicy(path string, r *routev3.Route, filters map[string]bool, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, violation(path+": route "+r.GetName()+": "+format, args...))
	}
	if name := r.GetRoute().GetCluster(); r.GetRoute() != nil && clusters[name] == nil {
		bad("cluster %q is not in static_resources", name)
	}
	pr, err := perRoute(r.GetTypedPerFilterConfig(), filters)
	switch {
	case err != nil:
		bad("%v", err)
	case pr == nil:
		bad("want ext_authz per-route settings with context_extensions")
	case pr.GetDisabled():
		if r.GetMatch().GetPath() == "" {
			bad("only a route matching one exact path may skip ext_authz")
		}
	case pr.GetCheckSettings().GetContextExtensions()["route"] == "":
		bad("want check_settings.context_extensions.route")
	}
	return errs
}

// perRoute returns the ext_authz per-route settings in cfg, after checking that every key of cfg names an HTTP
// filter of the chain: Envoy ignores settings under a name no filter has.
func perRoute(cfg map[string]*anypb.Any, filters map[string]bool) (*extauthzv3.ExtAuthzPerRoute, error) {
	var pr *extauthzv3.ExtAuthzPerRoute
	for name, a := range cfg {
		if !filters[name] {
			return nil, fmt.Errorf("typed_per_filter_config[%q] names no HTTP filter of the chain", name)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		if name == "envoy.filters.http.ext_authz" {
			var ok bool
			if pr, ok = m.(*extauthzv3.ExtAuthzPerRoute); !ok {
				return nil, fmt.Errorf("typed_per_filter_config[%q] is %T, want ExtAuthzPerRoute", name, m)
			}
		}
	}
	return pr, nil
}

func stripsEnvoyHeaders(h *hcmv3.HttpConnectionManager) bool {
	for _, ext := range h.GetEarlyHeaderMutationExtensions() {
		m, err := ext.GetTypedConfig().UnmarshalNew()
		if err != nil {
			continue
		}
		hm, ok := m.(*headermutationv3.HeaderMutation)
		if !ok {
			continue
		}
		for _, mu := range hm.GetMutations() {
			if mu.GetRemoveOnMatch().GetKeyMatcher().GetPrefix() == "x-envoy-" {
				return true
			}
		}
	}
	return false
}

// clusterPolicy: traffic that leaves the host is encrypted and the peer authenticated.
func clusterPolicy(c *clusterv3.Cluster) []error {
	var errs []error
	remote := false
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			if !loopback(e.GetEndpoint().GetAddress()) {
				remote = true
			}
		}
	}
	if !remote {
		return nil
	}
	var up *tlsv3.UpstreamTlsContext
	if ts := c.GetTransportSocket(); ts != nil {
		m, err := ts.GetTypedConfig().UnmarshalNew()
		if err == nil {
			up, _ = m.(*tlsv3.UpstreamTlsContext)
		}
	}
	if up == nil {
		return []error{violation("cluster %s leaves the host in plaintext", c.GetName())}
	}
	vc := up.GetCommonTlsContext().GetValidationContext()
	if vc.GetTrustedCa() == nil || len(vc.GetMatchTypedSubjectAltNames()) == 0 {
		errs = append(errs, violation("cluster %s: want trusted_ca and match_typed_subject_alt_names", c.GetName()))
	}
	if up.GetCommonTlsContext().GetTlsParams().GetTlsMinimumProtocolVersion() < tlsv3.TlsParameters_TLSv1_2 {
		errs = append(errs, violation("cluster %s: want an explicit TLS minimum of 1.2 or more", c.GetName()))
	}
	return errs
}

// modernCiphers are the TLS 1.2 suites allowed: ECDHE key exchange and AEAD ciphers only.
var modernCiphers = []string{
	"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}

func downstreamTLSPolicy(path string, d *tlsv3.DownstreamTlsContext) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, violation(path+": "+format, args...)) }
	p := d.GetCommonTlsContext().GetTlsParams()
	if p.GetTlsMinimumProtocolVersion() < tlsv3.TlsParameters_TLSv1_2 {
		bad("tls_minimum_protocol_version is %v, want TLSv1_2 or more, explicitly", p.GetTlsMinimumProtocolVersion())
	}
	if len(p.GetCipherSuites()) == 0 {
		bad("cipher_suites must be listed")
	}
	for _, s := range p.GetCipherSuites() {
		if !slices.Contains(modernCiphers, s) {
			bad("cipher suite %s is not ECDHE with an AEAD cipher", s)
		}
	}
	if !d.GetRequireClientCertificate().GetValue() {
		bad("require_client_certificate must be true")
	}
	if d.GetCommonTlsContext().GetValidationContext().GetTrustedCa() == nil {
		bad("want a validation_context with trusted_ca for client certificates")
	}
	return errs
}

func sidecarPolicy(b *bootstrapv3.Bootstrap) []error {
	var errs []error
	var exempt []string
	err := unpacked(b, func(_ string, m proto.Message) error {
		h, ok := m.(*hcmv3.HttpConnectionManager)
		if !ok {
			return nil
		}
		for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				pr, err := perRoute(r.GetTypedPerFilterConfig(), map[string]bool{"envoy.filters.http.ext_authz": true, "envoy.filters.http.router": true})
				if err == nil && pr.GetDisabled() {
					exempt = append(exempt, r.GetMatch().GetPath())
				}
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if !slices.Equal(exempt, []string{"/healthz"}) {
		errs = append(errs, violation("routes exempt from ext_authz are %q, want exactly [/healthz]", exempt))
	}
	return errs
}

func gatewayPolicy(b *bootstrapv3.Bootstrap) []error {
	var errs []error
	for _, l := range b.GetStaticResources().GetListeners() {
		for i, fc := range l.GetFilterChains() {
			var d *tlsv3.DownstreamTlsContext
			if ts := fc.GetTransportSocket(); ts != nil {
				if m, err := ts.GetTypedConfig().UnmarshalNew(); err == nil {
					d, _ = m.(*tlsv3.DownstreamTlsContext)
				}
			}
			if d == nil {
				errs = append(errs, violation("listener %s filter_chains[%d]: the edge accepts TLS only", l.GetName(), i))
			}
		}
	}
	hasLimit := slices.ContainsFunc(b.GetOverloadManager().GetResourceMonitors(), func(m *overloadv3.ResourceMonitor) bool {
		return m.GetName() == "envoy.resource_monitors.global_downstream_max_connections"
	})
	if !hasLimit {
		errs = append(errs, violation("overload_manager must limit downstream connections"))
	}
	err := unpacked(b, func(path string, m proto.Message) error {
		switch m := m.(type) {
		case *extauthzv3.ExtAuthz:
			if !m.GetIncludeTlsSession() {
				errs = append(errs, violation("%s: include_tls_session must be true at the edge", path))
			}
			if m.GetWithRequestBody() == nil {
				errs = append(errs, violation("%s: with_request_body must be set: the policy reads payment bodies", path))
			}
		case *hcmv3.HttpConnectionManager:
			if m.GetXffNumTrustedHops() != 0 {
				errs = append(errs, violation("%s: the edge trusts no X-Forwarded-For hop", path))
			}
			if m.GetPreserveExternalRequestId() {
				errs = append(errs, violation("%s: the edge replaces a client's x-request-id", path))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errs
}

func http2(c *clusterv3.Cluster) bool {
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return false
	}
	o, ok := m.(*upstreamhttpv3.HttpProtocolOptions)
	return ok && o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

func loopback(a *corev3.Address) bool {
	ip, err := netip.ParseAddr(a.GetSocketAddress().GetAddress())
	return err == nil && ip.IsLoopback()
}

// Helpers for the decoded YAML tree the mutations edit.

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeTree(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	return tree
}

// encodeTree writes tree as JSON, which is YAML too and which Load reads.
func encodeTree(t *testing.T, tree map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hasType(url string) func(map[string]any) bool {
	return func(o map[string]any) bool { return o["@type"] == url }
}

// findObject returns the first mapping in tree, depth first, that match accepts; the test fails without one, so
// that a mutation never silently edits nothing.
func findObject(t *testing.T, tree any, match func(map[string]any) bool) map[string]any {
	t.Helper()
	found := lookup(tree, match)
	if found == nil {
		t.Fatal("no such object in the configuration")
	}
	return found
}

// lookup returns the first mapping in tree, depth first, that match accepts, or nil.
func lookup(tree any, match func(map[string]any) bool) map[string]any {
	var found map[string]any
	eachObject(tree, func(o map[string]any) {
		if found == nil && match(o) {
			found = o
		}
	})
	return found
}

func eachObject(v any, fn func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(v)
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			eachObject(v[k], fn)
		}
	case []any:
		for _, e := range v {
			eachObject(e, fn)
		}
	}
}

// hasPath reports whether the dotted key path exists in o.
func hasPath(o map[string]any, path string) bool {
	var cur any = o
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

func rename(t *testing.T, o map[string]any, from, to string) {
	t.Helper()
	v, ok := o[from]
	if !ok {
		t.Fatalf("no key %q to rename", from)
	}
	delete(o, from)
	o[to] = v
}

func remove(t *testing.T, o map[string]any, key string) {
	t.Helper()
	if _, ok := o[key]; !ok {
		t.Fatalf("no key %q to remove", key)
	}
	delete(o, key)
}
