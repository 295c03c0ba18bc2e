package envoyproxy

import (
	"errors"
	"net"
	"net/http"
	"strings"
)

// UnderscoreAction is common_http_protocol_options.headers_with_underscores_action.
type UnderscoreAction int

const (
	// AllowUnderscores passes headers with underscores in their names (Envoy's default).
	AllowUnderscores UnderscoreAction = iota
	// RejectUnderscores answers 400 to a request with such a header, so that no upstream that folds "_" into
	// "-" can be handed a second copy of an identity header.
	RejectUnderscores
	// DropUnderscores removes such headers.
	DropUnderscores
)

// errRejectRequest is a request the connection manager refuses with 400 before any filter runs.
var errRejectRequest = errors.New("request rejected by the connection manager")

// connectionManager does to r what Envoy's HTTP connection manager does before the first filter: the codec's
// underscore rule, early header mutations, path normalisation, then the x-forwarded-*, x-request-id and
// x-forwarded-client-cert handling.
func (p *Proxy) connectionManager(r *http.Request) error {
	for k := range r.Header {
		if strings.Contains(k, "_") {
			switch p.cfg.HeadersWithUnderscores {
			case RejectUnderscores:
				return errRejectRequest
			case DropUnderscores:
				delete(r.Header, k)
			}
		}
	}
	for k := range r.Header {
		for _, prefix := range p.cfg.RemoveHeaderPrefixes {
			if strings.HasPrefix(strings.ToLower(k), prefix) {
				delete(r.Header, k)
			}
		}
	}
	if err := p.normalizeTarget(r); err != nil {
		return err
	}

	external := p.cfg.UseRemoteAddress
	if r.Header.Get("X-Request-Id") == "" || (external && !p.cfg.PreserveExternalRequestID) {
		r.Header.Set("X-Request-Id", newUUID())
	}
	proto := scheme(r)
	if p.cfg.UseRemoteAddress {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
				r.Header.Set("X-Forwarded-For", strings.Join(prior, ",")+","+host)
			} else {
				r.Header.Set("X-Forwarded-For", host)
			}
		}
		r.Header.Set("X-Forwarded-Proto", proto)
	} else if r.Header.Get("X-Forwarded-Proto") == "" {
		r.Header.Set("X-Forwarded-Proto", proto)
	}
	if p.cfg.ForwardClientCert == Sanitize {
		r.Header.Del("X-Forwarded-Client-Cert")
	}
	return nil
}

// normalizeTarget applies the connection manager's path settings ([Config.NormalizedPath]) to the path of r,
// leaving the query as it came.
func (p *Proxy) normalizeTarget(r *http.Request) error {
	if !p.cfg.RejectEscapedSlashes && !p.cfg.NormalizePath && !p.cfg.MergeSlashes {
		return nil
	}
	target := requestTarget(r)
	if !strings.HasPrefix(target, "/") {
		return nil
	}
	path, query, hasQuery := strings.Cut(target, "?")
	path, ok := p.cfg.NormalizedPath(path)
	if !ok {
		return errRejectRequest
	}
	if hasQuery {
		path += "?" + query
	}
	r.RequestURI = path
	return nil
}

// NormalizedPath is what Envoy forwards for an absolute path (no query) under c's settings:
// path_with_escaped_slashes_action REJECT_REQUEST (ok is false for a path holding %2F or %5C), normalize_path
// (RFC 3986 §5.2.4 dot-segment removal, with "\" read as "/" and "%2e" as ".", as Envoy's canonicaliser does)
// and merge_slashes.
func (c Config) NormalizedPath(path string) (_ string, ok bool) {
	if c.RejectEscapedSlashes {
		lower := strings.ToLower(path)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			return "", false
		}
	}
	if c.NormalizePath {
		path = removeDotSegments(strings.ReplaceAll(path, `\`, "/"))
	}
	if c.MergeSlashes {
		for strings.Contains(path, "//") {
			path = strings.ReplaceAll(path, "//", "/")
		}
	}
	return path, true
}

// removeDotSegments resolves "." and ".." segments (also written %2e) of an absolute path; ".." never climbs
// above the root.
func removeDotSegments(path string) string {
	segs := strings.Split(path[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch strings.ToLower(s) {
		case ".", "%2e":
			if last {
				out = append(out, "")
			}
		case "..", ".%2e", "%2e.", "%2e%2e":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
