package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"
)

// The Istio and Envoy Gateway files are Kubernetes resources, not Envoy bootstraps. The types below hold the
// fields of their CRDs that the files use, and are decoded strictly: a field they do not name (a misspelling,
// or a field nobody reviewed) fails the test.

type objectMeta struct {
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

// istioOperator is install.istio.io/v1alpha1 IstioOperator, reduced to spec.meshConfig.extensionProviders.
type istioOperator struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		MeshConfig struct {
			ExtensionProviders []struct {
				Name              string             `yaml:"name"`
				EnvoyExtAuthzGrpc *istioGRPCProvider `yaml:"envoyExtAuthzGrpc"`
			} `yaml:"extensionProviders"`
		} `yaml:"meshConfig"`
	} `yaml:"spec"`
}

// istioGRPCProvider is MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider. Pointers tell a
// setting left to Istio's default from one written down.
type istioGRPCProvider struct {
	Service                   string  `yaml:"service"`
	Port                      uint32  `yaml:"port"`
	Timeout                   *string `yaml:"timeout"`
	FailOpen                  *bool   `yaml:"failOpen"`
	StatusOnError             *string `yaml:"statusOnError"`
	IncludeRequestBodyInCheck *struct {
		MaxRequestBytes     uint32 `yaml:"maxRequestBytes"`
		AllowPartialMessage bool   `yaml:"allowPartialMessage"`
		PackAsBytes         bool   `yaml:"packAsBytes"`
	} `yaml:"includeRequestBodyInCheck"`
}

// authorizationPolicy is security.istio.io/v1 AuthorizationPolicy, reduced to what a CUSTOM policy of ours uses.
type authorizationPolicy struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Selector *struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Action   string `yaml:"action"`
		Provider *struct {
			Name string `yaml:"name"`
		} `yaml:"provider"`
		Rules []struct {
			To []struct {
				Operation istioOperation `yaml:"operation"`
			} `yaml:"to"`
		} `yaml:"rules"`
	} `yaml:"spec"`
}

type istioOperation struct {
	Paths      []string `yaml:"paths"`
	NotPaths   []string `yaml:"notPaths"`
	Methods    []string `yaml:"methods"`
	NotMethods []string `yaml:"notMethods"`
}

// securityPolicy is gateway.envoyproxy.io/v1alpha1 SecurityPolicy, reduced to targetRefs and a gRPC extAuth.
type securityPolicy struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		TargetRefs []struct {
			Group string `yaml:"group"`
			Kind  string `yaml:"kind"`
			Name  string `yaml:"name"`
		} `yaml:"targetRefs"`
		ExtAuth *struct {
			GRPC *struct {
				BackendRefs []struct {
					Name      string `yaml:"name"`
					Namespace string `yaml:"namespace"`
					Port      uint32 `yaml:"port"`
				} `yaml:"backendRefs"`
			} `yaml:"grpc"`
			Timeout          *string  `yaml:"timeout"`
			FailOpen         *bool    `yaml:"failOpen"`
			RecomputeRoute   *bool    `yaml:"recomputeRoute"`
			HeadersToExtAuth []string `yaml:"headersToExtAuth"`
			BodyToExtAuth    *struct {
				MaxRequestBytes uint32 `yaml:"maxRequestBytes"`
			} `yaml:"bodyToExtAuth"`
		} `yaml:"extAuth"`
	} `yaml:"spec"`
}

// referenceGrant is gateway.networking.k8s.io/v1beta1 ReferenceGrant.
type referenceGrant struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		From []grantFrom `yaml:"from"`
		To   []grantTo   `yaml:"to"`
	} `yaml:"spec"`
}

type grantFrom struct {
	Group     string `yaml:"group"`
	Kind      string `yaml:"kind"`
	Namespace string `yaml:"namespace"`
}

type grantTo struct {
	Group string `yaml:"group"`
	Kind  string `yaml:"kind"`
	Name  string `yaml:"name"`
}

// errSchema marks a resource with a field its CRD (as far as the types above model it) does not have.
var errSchema = errors.New("unknown field")

const (
	istioMeshFile   = "istio/mesh-config.yaml"
	istioPolicyFile = "istio/authorization-policy.yaml"
	egPolicyFile    = "envoy-gateway/security-policy.yaml"
)

// k8sFiles are the Kubernetes resources of this folder, read at once because the rules span files.
type k8sFiles map[string][]byte

func readK8sFiles(t *testing.T) k8sFiles {
	t.Helper()
	files := k8sFiles{}
	for _, f := range []string{istioMeshFile, istioPolicyFile, egPolicyFile, "gateway.yaml"} {
		files[f] = readFile(t, f)
	}
	return files
}

// decodeStrict decodes the YAML documents of data, in order, into out: each must have exactly the fields of its
// type.
func decodeStrict(name string, data []byte, out ...any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	for i, o := range out {
		if err := dec.Decode(o); err != nil {
			return fmt.Errorf("%w: %s: document %d: %w", errSchema, name, i+1, err)
		}
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: want %d documents", name, len(out))
	}
	return nil
}

// checkIstio decodes the Istio files and applies our rules to them.
func checkIstio(files k8sFiles) error {
	var mesh istioOperator
	var pol authorizationPolicy
	if err := decodeStrict(istioMeshFile, files[istioMeshFile], &mesh); err != nil {
		return err
	}
	if err := decodeStrict(istioPolicyFile, files[istioPolicyFile], &pol); err != nil {
		return err
	}
	var errs []error
	bad := func(file, format string, args ...any) { errs = append(errs, violation(file+": "+format, args...)) }

	if mesh.APIVersion != "install.istio.io/v1alpha1" || mesh.Kind != "IstioOperator" {
		bad(istioMeshFile, "want an install.istio.io/v1alpha1 IstioOperator, got %s %s", mesh.APIVersion, mesh.Kind)
	}
	providers := map[string]bool{}
	for _, p := range mesh.Spec.MeshConfig.ExtensionProviders {
		g := p.EnvoyExtAuthzGrpc
		if g == nil {
			continue
		}
		providers[p.Name] = true
		if p.Name == "" || g.Service == "" {
			bad(istioMeshFile, "envoyExtAuthzGrpc needs a name and a service")
		}
		if g.Port != AuthzPort {
			bad(istioMeshFile, "port is %d, want finauthz's %d", g.Port, AuthzPort)
		}
		if g.Timeout == nil {
			bad(istioMeshFile, "timeout must be explicit: Istio's default is 600s")
		} else if d, err := protoDuration(*g.Timeout); err != nil || d <= 0 || d > maxAuthzWait {
			bad(istioMeshFile, "timeout %q: want a protobuf duration up to %v", *g.Timeout, maxAuthzWait)
		}
		if g.FailOpen == nil || *g.FailOpen {
			bad(istioMeshFile, "failOpen must be explicitly false")
		}
		if g.StatusOnError == nil || (*g.StatusOnError != "403" && *g.StatusOnError != "503") {
			bad(istioMeshFile, "statusOnError must be explicitly \"403\" or \"503\"")
		}
		if b := g.IncludeRequestBodyInCheck; b == nil || b.MaxRequestBytes == 0 || b.MaxRequestBytes > maxBufferBytes {
			bad(istioMeshFile, "includeRequestBodyInCheck.maxRequestBytes: want 1..%d", maxBufferBytes)
		}
	}
	if len(providers) == 0 {
		bad(istioMeshFile, "no envoyExtAuthzGrpc extension provider")
	}

	if !strings.HasPrefix(pol.APIVersion, "security.istio.io/") || pol.Kind != "AuthorizationPolicy" {
		bad(istioPolicyFile, "want a security.istio.io AuthorizationPolicy, got %s %s", pol.APIVersion, pol.Kind)
	}
	if pol.Spec.Action != "CUSTOM" {
		bad(istioPolicyFile, "action is %q, want CUSTOM", pol.Spec.Action)
	}
	if pol.Spec.Provider == nil || !providers[pol.Spec.Provider.Name] {
		bad(istioPolicyFile, "provider.name must name an envoyExtAuthzGrpc provider of %s", istioMeshFile)
	}
	if pol.Spec.Selector == nil || len(pol.Spec.Selector.MatchLabels) == 0 {
		bad(istioPolicyFile, "selector.matchLabels must name the workloads")
	}
	// A CUSTOM policy sends a request to the provider only when a rule matches it: no rules, no checks.
	for _, r := range checkedRequests {
		if !istioChecks(pol, r) {
			bad(istioPolicyFile, "%s %s skips finauthz: only GET /healthz may", r.method, r.path)
		}
	}
	if istioChecks(pol, request{"GET", "/healthz"}) {
		bad(istioPolicyFile, "GET /healthz must skip finauthz, as in sidecar.yaml: a finauthz outage must not fail probes")
	}
	return errors.Join(errs...)
}

type request struct{ method, path string }

// checkedRequests must all reach finauthz.
var checkedRequests = []request{
	{"GET", "/accounts"}, {"GET", "/accounts/42"}, {"POST", "/payments"}, {"GET", "/"},
	{"POST", "/healthz"}, {"DELETE", "/healthz"}, {"GET", "/healthz/x"}, {"GET", "/healthzx"}, {"GET", "/x/healthz"},
}

// istioChecks reports whether pol sends r to its provider: whether any rule matches r, with Istio's matching of
// paths and methods (exact, "prefix*", "*suffix" or "*").
func istioChecks(pol authorizationPolicy, r request) bool {
	for _, rule := range pol.Spec.Rules {
		if len(rule.To) == 0 {
			return true
		}
		for _, to := range rule.To {
			op := to.Operation
			if matchesAny(op.Paths, r.path, true) && !matchesAny(op.NotPaths, r.path, false) &&
				matchesAny(op.Methods, r.method, true) && !matchesAny(op.NotMethods, r.method, false) {
				return true
			}
		}
	}
	return false
}

// matchesAny reports whether v matches one of patterns; an empty list gives empty.
func matchesAny(patterns []string, v string, empty bool) bool {
	if len(patterns) == 0 {
		return empty
	}
	return slices.ContainsFunc(patterns, func(p string) bool {
		switch {
		case p == "*":
			return true
		case strings.HasSuffix(p, "*"):
			return strings.HasPrefix(v, strings.TrimSuffix(p, "*"))
		case strings.HasPrefix(p, "*"):
			return strings.HasSuffix(v, strings.TrimPrefix(p, "*"))
		default:
			return p == v
		}
	})
}

// gatewayDuration is the Gateway API duration format (GEP-2257) that Envoy Gateway's timeout takes.
var gatewayDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// checkEnvoyGateway decodes the Envoy Gateway file and applies our rules, the header list of gateway.yaml
// included, so the two edges send finauthz the same request.
func checkEnvoyGateway(files k8sFiles) error {
	var sp securityPolicy
	var grant referenceGrant
	if err := decodeStrict(egPolicyFile, files[egPolicyFile], &sp, &grant); err != nil {
		return err
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, violation(egPolicyFile+": "+format, args...)) }

	if sp.APIVersion != "gateway.envoyproxy.io/v1alpha1" || sp.Kind != "SecurityPolicy" {
		bad("want a gateway.envoyproxy.io/v1alpha1 SecurityPolicy, got %s %s", sp.APIVersion, sp.Kind)
	}
	if len(sp.Spec.TargetRefs) == 0 {
		bad("no targetRefs")
	}
	for _, ref := range sp.Spec.TargetRefs {
		if ref.Group != "gateway.networking.k8s.io" || ref.Kind != "HTTPRoute" || ref.Name == "" {
			bad("targetRefs: want gateway.networking.k8s.io HTTPRoutes by name, got %s/%s %q", ref.Group, ref.Kind, ref.Name)
		}
	}
	ea := sp.Spec.ExtAuth
	if ea == nil || ea.GRPC == nil || len(ea.GRPC.BackendRefs) == 0 {
		bad("want extAuth.grpc.backendRefs")
		return errors.Join(errs...)
	}
	for _, ref := range ea.GRPC.BackendRefs {
		if ref.Port != AuthzPort {
			bad("backendRefs: port %d, want finauthz's %d", ref.Port, AuthzPort)
		}
		ns := ref.Namespace
		if ns == "" {
			ns = sp.Metadata.Namespace
		}
		if ns != sp.Metadata.Namespace && !grants(grant, sp.Metadata.Namespace, ns, ref.Name) {
			bad("backendRefs: %s/%s is in another namespace and no ReferenceGrant there lets this policy use it", ns, ref.Name)
		}
	}
	if ea.Timeout == nil {
		bad("timeout must be explicit: Envoy Gateway's default is 10s")
	} else if d, err := time.ParseDuration(*ea.Timeout); !gatewayDuration.MatchString(*ea.Timeout) || err != nil || d <= 0 || d > maxAuthzWait {
		bad("timeout %q: want a Gateway API duration up to %v", *ea.Timeout, maxAuthzWait)
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		bad("failOpen must be explicitly false")
	}
	if ea.RecomputeRoute == nil || *ea.RecomputeRoute {
		bad("recomputeRoute must be explicitly false: finauthz does not reroute")
	}
	if b := ea.BodyToExtAuth; b == nil || b.MaxRequestBytes == 0 || b.MaxRequestBytes > maxBufferBytes {
		bad("bodyToExtAuth.maxRequestBytes: want 1..%d", maxBufferBytes)
	}
	edge, err := gatewayAllowedHeaders(files["gateway.yaml"])
	if err != nil {
		return err
	}
	for _, h := range requiredAuthzHeaders {
		if !slices.Contains(ea.HeadersToExtAuth, h) {
			bad("headersToExtAuth must include %s: finauthz reads it", h)
		}
	}
	for _, h := range forbiddenAuthzHeaders {
		if slices.Contains(ea.HeadersToExtAuth, h) {
			bad("headersToExtAuth must not include %s", h)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(ea.HeadersToExtAuth)), edge) {
		bad("headersToExtAuth %q differs from allowed_headers of gateway.yaml %q", ea.HeadersToExtAuth, edge)
	}
	return errors.Join(errs...)
}

// grants reports whether g, in namespace to, lets SecurityPolicies of namespace from use Service name.
func grants(g referenceGrant, from, to, name string) bool {
	if g.Kind != "ReferenceGrant" || g.Metadata.Namespace != to {
		return false
	}
	okFrom := slices.ContainsFunc(g.Spec.From, func(f grantFrom) bool {
		return f.Group == "gateway.envoyproxy.io" && f.Kind == "SecurityPolicy" && f.Namespace == from
	})
	okTo := slices.ContainsFunc(g.Spec.To, func(t grantTo) bool {
		return t.Group == "" && t.Kind == "Service" && (t.Name == "" || t.Name == name)
	})
	return okFrom && okTo
}

// gatewayAllowedHeaders returns the sorted allowed_headers of the ext_authz filter in gateway.yaml.
func gatewayAllowedHeaders(data []byte) ([]string, error) {
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return nil, err
	}
	authz := lookup(tree, hasType(extAuthzType))
	if authz == nil {
		return nil, errors.New("gateway.yaml: no ext_authz filter")
	}
	var names []string
	patterns, _ := authz["allowed_headers"].(map[string]any)["patterns"].([]any)
	for _, p := range patterns {
		if s, ok := p.(map[string]any)["exact"].(string); ok {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	return names, nil
}

func protoDuration(s string) (time.Duration, error) {
	var d durationpb.Duration
	if err := protojson.Unmarshal([]byte(`"`+s+`"`), &d); err != nil {
		return 0, err
	}
	return d.AsDuration(), nil
}

func TestKubernetesResourcesMeetPolicy(t *testing.T) {
	t.Parallel()
	files := readK8sFiles(t)
	if err := checkIstio(files); err != nil {
		t.Error(err)
	}
	if err := checkEnvoyGateway(files); err != nil {
		t.Error(err)
	}
}

// istioRules is the rules section of authorization-policy.yaml, as written.
const istioRules = `  rules:
  - to:
    - operation:
        notPaths: ["/healthz"]
  - to:
    - operation:
        paths: ["/healthz"]
        notMethods: ["GET"]
`

func TestKubernetesResourceMistakesAreCaught(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		file     string
		old, new string
		check    func(k8sFiles) error
		want     error
	}{
		{"Istio: misspelt field", istioMeshFile, "failOpen: false", "failopen: false", checkIstio, errSchema},
		{"Istio: failing open", istioMeshFile, "failOpen: false", "failOpen: true", checkIstio, errPolicy},
		{"Istio: failOpen left to the default", istioMeshFile, "failOpen: false\n", "", checkIstio, errPolicy},
		{"Istio: timeout left to the 600s default", istioMeshFile, "timeout: 0.25s\n", "", checkIstio, errPolicy},
		{"Istio: timeout not a protobuf duration", istioMeshFile, "timeout: 0.25s", "timeout: 250ms", checkIstio, errPolicy},
		{"Istio: statusOnError 200", istioMeshFile, `statusOnError: "503"`, `statusOnError: "200"`, checkIstio, errPolicy},
		{"Istio: wrong finauthz port", istioMeshFile, "port: 9191", "port: 9192", checkIstio, errPolicy},
		{"Istio: policy names another provider", istioPolicyFile, "name: finauthz-grpc", "name: finauthz-http", checkIstio, errPolicy},
		{"Istio: provider renamed on one side only", istioMeshFile, "- name: finauthz-grpc", "- name: finauthz", checkIstio, errPolicy},
		{"Istio: ALLOW instead of CUSTOM", istioPolicyFile, "action: CUSTOM", "action: ALLOW", checkIstio, errPolicy},
		{"Istio: policy without rules checks nothing", istioPolicyFile, istioRules, "", checkIstio, errPolicy},
		{"Istio: health exemption widened to a prefix", istioPolicyFile, `notPaths: ["/healthz"]`, `notPaths: ["/healthz*"]`, checkIstio, errPolicy},
		{"Istio: health exemption for every method", istioPolicyFile, `notMethods: ["GET"]`, `notMethods: ["GET", "POST"]`, checkIstio, errPolicy},
		{"Envoy Gateway: misspelt field", egPolicyFile, "backendRefs:", "backendRef:", checkEnvoyGateway, errSchema},
		{"Envoy Gateway: failing open", egPolicyFile, "failOpen: false", "failOpen: true", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: timeout left to the 10s default", egPolicyFile, "timeout: 250ms\n", "", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: timeout not a Gateway API duration", egPolicyFile, "timeout: 250ms", "timeout: 0.25s", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: route recomputed after the check", egPolicyFile, "recomputeRoute: false", "recomputeRoute: true", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: wrong finauthz port", egPolicyFile, "port: 9191", "port: 9192", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: targets a Gateway, not an HTTPRoute", egPolicyFile, "kind: HTTPRoute", "kind: Gateway", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: cookies sent to finauthz", egPolicyFile, "    - user-agent\n", "    - user-agent\n    - cookie\n", checkEnvoyGateway, errPolicy},
		{"Envoy Gateway: ReferenceGrant for another namespace", egPolicyFile, "    namespace: accounts\n  to:", "    namespace: payments\n  to:", checkEnvoyGateway, errPolicy},
	}
	good := readK8sFiles(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			files := k8sFiles{}
			for k, v := range good {
				files[k] = v
			}
			if n := bytes.Count(good[tc.file], []byte(tc.old)); n != 1 {
				t.Fatalf("%s holds %q %d times, want 1", tc.file, tc.old, n)
			}
			files[tc.file] = bytes.Replace(good[tc.file], []byte(tc.old), []byte(tc.new), 1)
			err := tc.check(files)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want an error wrapping %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}
