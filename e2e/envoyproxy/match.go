package envoyproxy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Route is one route of the proxy's virtual host: what it matches, and how the ext_authz filter treats the
// requests it matches (ExtAuthzPerRoute).
type Route struct {
	Name string
	// Exactly one of Path (the path without the query, exactly), Prefix and SeparatedPrefix (Envoy's
	// path_separated_prefix: the path is the prefix or continues after it with "/") is set.
	Path, Prefix, SeparatedPrefix string
	// Methods, when set, are the methods the route matches (an exact :method header matcher).
	Methods []string
	// DisableAuthz skips the check for the route.
	DisableAuthz bool
	// ContextExtensions are sent with the route's checks.
	ContextExtensions map[string]string
}

func (rt *Route) matches(method, path string) bool {
	if len(rt.Methods) > 0 && !slices.Contains(rt.Methods, method) {
		return false
	}
	switch {
	case rt.Path != "":
		return path == rt.Path
	case rt.SeparatedPrefix != "":
		rest, ok := strings.CutPrefix(path, rt.SeparatedPrefix)
		return ok && (rest == "" || rest[0] == '/')
	default:
		return strings.HasPrefix(path, rt.Prefix)
	}
}

// route returns the first route matching r's method and path; nil when none does.
func (p *Proxy) route(method, target string) *Route {
	path, _, _ := strings.Cut(target, "?")
	for i := range p.cfg.Routes {
		if p.cfg.Routes[i].matches(method, path) {
			return &p.cfg.Routes[i]
		}
	}
	return nil
}

// stringMatch compiles a StringMatcher into a predicate; safe_regex must match the whole string, as RE2's
// FullMatch does in Envoy.
func stringMatch(m *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if m.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("safe_regex: %w", err)
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("unsupported string matcher %v", m)
}

func anyMatch(ms []func(string) bool, s string) bool {
	for _, m := range ms {
		if m(s) {
			return true
		}
	}
	return false
}

// sendHeader reports whether a request header goes into the CheckRequest under allowed_headers and
// disallowed_headers; a header matching both is not sent.
func (p *Proxy) sendHeader(name string) bool {
	if p.allowed != nil && !anyMatch(p.allowed, name) {
		return false
	}
	return !anyMatch(p.disallowed, name)
}

// mutationAllowed applies decoder_header_mutation_rules to a header the service wants to set or remove, in the
// order of Envoy's HeaderMutationChecker: disallow_all, allow_expression, disallow_expression, system headers,
// routing headers, x-envoy-* headers. Without rules everything is allowed.
func mutationAllowed(rules *mutationrulesv3.HeaderMutationRules, allow, disallow *regexp.Regexp, name string) bool {
	if rules == nil {
		return true
	}
	name = strings.ToLower(name)
	switch {
	case rules.GetDisallowAll().GetValue():
		return false
	case allow != nil && allow.MatchString(name):
		return true
	case disallow != nil && disallow.MatchString(name):
		return false
	}
	if strings.HasPrefix(name, ":") || name == "host" {
		if rules.GetDisallowSystem().GetValue() {
			return false
		}
		switch name {
		case "host", ":authority", ":method", ":scheme", ":path":
			return rules.GetAllowAllRouting().GetValue()
		}
		return true
	}
	if strings.HasPrefix(name, "x-envoy-") {
		return rules.GetAllowEnvoy().GetValue()
	}
	return true
}
