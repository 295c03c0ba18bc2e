package envoyproxy

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// PartialBodyHeader tells the authorization service whether the body in the CheckRequest is all of it ("false")
// or was cut at max_request_bytes ("true"). Envoy adds it to the CheckRequest headers only, never upstream, and
// drops a copy the client sent.
// https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/ext_authz/v3/ext_authz.proto#envoy-v3-api-msg-extensions-filters-http-ext-authz-v3-buffersettings
const PartialBodyHeader = "x-envoy-auth-partial-body"

// body is what the filter buffered of a request body for the check.
type body struct {
	data    []byte
	partial bool
	// received is how many body bytes had arrived when the check was sent.
	received int
}

// checkRequest builds the CheckRequest Envoy's HTTP ext_authz filter sends for r, whose headers already carry what
// the connection manager adds before the filter runs (x-request-id, x-forwarded-proto, ...). b is nil when the
// filter does not buffer the body or the request has none.
func (p *Proxy) checkRequest(r *http.Request, received time.Time, b *body, extensions map[string]string) *authv3.CheckRequest {
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       r.Header.Get("X-Request-Id"),
		Method:   r.Method,
		Headers:  checkHeaders(r, p.sendHeader),
		Path:     requestTarget(r),
		Host:     r.Host,
		Scheme:   scheme(r),
		Protocol: protocol(r),
	}
	if b != nil {
		httpReq.Size = int64(b.received)
		if p.cfg.WithRequestBody.PackAsBytes {
			httpReq.RawBody = b.data
		} else {
			httpReq.Body = string(b.data)
		}
		httpReq.Headers[PartialBodyHeader] = boolString(b.partial)
	}

	attrs := &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Principal: p.localPrincipal},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(received),
			Http: httpReq,
		},
		ContextExtensions: extensions,
		// Set on every check, empty without metadata_context_namespaces (and their route equivalents).
		MetadataContext:      &corev3.Metadata{},
		RouteMetadataContext: &corev3.Metadata{},
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		attrs.Destination.Address = socketAddress(la.String())
	}
	if r.TLS != nil {
		if p.cfg.IncludeTLSSession {
			attrs.TlsSession = &authv3.AttributeContext_TLSSession{Sni: r.TLS.ServerName}
		}
		if len(r.TLS.PeerCertificates) > 0 {
			peer := r.TLS.PeerCertificates[0]
			attrs.Source.Principal = Principal(peer)
			if p.cfg.IncludePeerCertificate {
				attrs.Source.Certificate = URLEncodedPEM(peer)
			}
		}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

// checkHeaders is the CheckRequest header map: lower-case names, the pseudo-headers of Envoy's header map,
// repeated headers joined with "," in the order received, and values that are not UTF-8 with "!" for each bad
// byte, as attribute_context.proto documents. Only names send accepts (allowed_headers) are included.
func checkHeaders(r *http.Request, send func(string) bool) map[string]string {
	h := make(map[string]string, len(r.Header)+5)
	put := func(name, value string) {
		if send(name) {
			h[name] = toUTF8(value)
		}
	}
	put(":authority", r.Host)
	put(":method", r.Method)
	put(":path", requestTarget(r))
	put(":scheme", scheme(r))
	for k, vs := range r.Header {
		name := strings.ToLower(k)
		if name == PartialBodyHeader || name == "host" {
			// Envoy skips a client-sent copy of its own partial-body header; host is :authority in its map.
			continue
		}
		put(name, strings.Join(vs, ","))
	}
	// Go moves Transfer-Encoding out of the header map; Envoy's HTTP/1 codec keeps it there.
	if len(r.TransferEncoding) > 0 {
		put("transfer-encoding", strings.Join(r.TransferEncoding, ","))
	}
	return h
}

// requestTarget is Envoy's :path: the origin-form target as received, query included, never decoded. An
// absolute-form target (a client talking to a forward proxy) is reduced to its path and query, as Envoy's HTTP/1
// codec does.
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") || r.RequestURI == "*" {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// protocol names the downstream protocol as Envoy's Http::Utility::getProtocolString does.
func protocol(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMajor == 3:
		return "HTTP/3"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

func socketAddress(hostport string) *corev3.Address {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ap.Addr().Unmap().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}

// Principal is the identity Envoy reports for a certificate: its first URI SAN (the SPIFFE ID of an X.509-SVID),
// else its subject in RFC 2253 form.
func Principal(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.String()
}

// URLEncodedPEM is a certificate as Envoy puts it in AttributeContext.Peer.certificate and in the Cert field of
// x-forwarded-client-cert: PEM, then percent-encoded so that it fits in one header value.
func URLEncodedPEM(c *x509.Certificate) string {
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	return strings.ReplaceAll(url.QueryEscape(string(p)), "+", "%20")
}

// toUTF8 replaces every byte that is not part of valid UTF-8 with "!".
func toUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
