package input

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// This file renders AttributeContext the way protojson.Marshal does (the
// encoding OPA-Envoy's input advertises), field by field from the getters:
// https://protobuf.dev/programming-guides/json/. A field is emitted when it
// is populated: scalars when non-zero, messages when non-nil (even if empty),
// oneof members when chosen (even if zero), maps and lists when non-empty.
// TestAttributesMatchProtojson holds it to protojson for every field.

// Field names, in protojson's lowerCamelCase.
var (
	jAddress                  = ast.StringTerm("address")
	jBody                     = ast.StringTerm("body")
	jCertificate              = ast.StringTerm("certificate")
	jContextExtensions        = ast.StringTerm("contextExtensions")
	jDestination              = ast.StringTerm("destination")
	jEndpointID               = ast.StringTerm("endpointId")
	jEnvoyInternalAddress     = ast.StringTerm("envoyInternalAddress")
	jFilterMetadata           = ast.StringTerm("filterMetadata")
	jFragment                 = ast.StringTerm("fragment")
	jHeaderMap                = ast.StringTerm("headerMap")
	jHeaders                  = ast.StringTerm("headers")
	jHost                     = ast.StringTerm("host")
	jHTTP                     = ast.StringTerm("http")
	jID                       = ast.StringTerm("id")
	jIpv4Compat               = ast.StringTerm("ipv4Compat")
	jKey                      = ast.StringTerm("key")
	jLabels                   = ast.StringTerm("labels")
	jMetadataContext          = ast.StringTerm("metadataContext")
	jMethod                   = ast.StringTerm("method")
	jMode                     = ast.StringTerm("mode")
	jNamedPort                = ast.StringTerm("namedPort")
	jNetworkNamespaceFilepath = ast.StringTerm("networkNamespaceFilepath")
	jPath                     = ast.StringTerm("path")
	jPipe                     = ast.StringTerm("pipe")
	jPortValue                = ast.StringTerm("portValue")
	jPrincipal                = ast.StringTerm("principal")
	jProtocol                 = ast.StringTerm("protocol")
	jQuery                    = ast.StringTerm("query")
	jRawBody                  = ast.StringTerm("rawBody")
	jRawValue                 = ast.StringTerm("rawValue")
	jRequest                  = ast.StringTerm("request")
	jResolverName             = ast.StringTerm("resolverName")
	jRouteMetadataContext     = ast.StringTerm("routeMetadataContext")
	jScheme                   = ast.StringTerm("scheme")
	jServerListenerName       = ast.StringTerm("serverListenerName")
	jService                  = ast.StringTerm("service")
	jSize                     = ast.StringTerm("size")
	jSni                      = ast.StringTerm("sni")
	jSocketAddress            = ast.StringTerm("socketAddress")
	jSource                   = ast.StringTerm("source")
	jTime                     = ast.StringTerm("time")
	jTLSSession               = ast.StringTerm("tlsSession")
	jTypedFilterMetadata      = ast.StringTerm("typedFilterMetadata")
	jValue                    = ast.StringTerm("value")
)

func (b *builder) attributeContext(ac *authv3.AttributeContext) (ast.Object, error) {
	var buf [7][2]*ast.Term
	items := buf[:0]
	if ac.Source != nil {
		items = append(items, ast.Item(jSource, b.peer(ac.Source)))
	}
	if ac.Destination != nil {
		items = append(items, ast.Item(jDestination, b.peer(ac.Destination)))
	}
	if ac.Request != nil {
		r, err := b.request(ac.Request)
		if err != nil {
			return nil, err
		}
		items = append(items, ast.Item(jRequest, r))
	}
	if len(ac.ContextExtensions) > 0 {
		items = append(items, ast.Item(jContextExtensions, b.stringMap(ac.ContextExtensions)))
	}
	if ac.MetadataContext != nil {
		m, err := b.metadata("metadataContext", ac.MetadataContext)
		if err != nil {
			return nil, err
		}
		items = append(items, ast.Item(jMetadataContext, m))
	}
	if ac.RouteMetadataContext != nil {
		m, err := b.metadata("routeMetadataContext", ac.RouteMetadataContext)
		if err != nil {
			return nil, err
		}
		items = append(items, ast.Item(jRouteMetadataContext, m))
	}
	if ac.TlsSession != nil {
		var tls [1][2]*ast.Term
		t := tls[:0]
		if s := ac.TlsSession.GetSni(); s != "" {
			t = append(t, ast.Item(jSni, b.str(s)))
		}
		items = append(items, ast.Item(jTLSSession, b.object(t...)))
	}
	return ast.NewObject(items...), nil
}

func (b *builder) peer(p *authv3.AttributeContext_Peer) *ast.Term {
	var buf [5][2]*ast.Term
	items := buf[:0]
	if p.Address != nil {
		items = append(items, ast.Item(jAddress, b.address(p.Address)))
	}
	items = b.appendString(items, jService, p.Service)
	if len(p.Labels) > 0 {
		items = append(items, ast.Item(jLabels, b.stringMap(p.Labels)))
	}
	items = b.appendString(items, jPrincipal, p.Principal)
	items = b.appendString(items, jCertificate, p.Certificate)
	return b.object(items...)
}

func (b *builder) address(a *corev3.Address) *ast.Term {
	var item [1][2]*ast.Term
	items := item[:0]
	switch x := a.GetAddress().(type) {
	case *corev3.Address_SocketAddress:
		items = append(items, ast.Item(jSocketAddress, b.socketAddress(x.SocketAddress)))
	case *corev3.Address_Pipe:
		p := x.Pipe
		var buf [2][2]*ast.Term
		pi := b.appendString(buf[:0], jPath, p.GetPath())
		if m := p.GetMode(); m != 0 {
			pi = append(pi, ast.Item(jMode, ast.InternedTerm(m)))
		}
		items = append(items, ast.Item(jPipe, b.object(pi...)))
	case *corev3.Address_EnvoyInternalAddress:
		e := x.EnvoyInternalAddress
		var buf [2][2]*ast.Term
		ei := buf[:0]
		if n, ok := e.GetAddressNameSpecifier().(*corev3.EnvoyInternalAddress_ServerListenerName); ok {
			ei = append(ei, ast.Item(jServerListenerName, b.str(n.ServerListenerName)))
		}
		ei = b.appendString(ei, jEndpointID, e.GetEndpointId())
		items = append(items, ast.Item(jEnvoyInternalAddress, b.object(ei...)))
	}
	return b.object(items...)
}

func (b *builder) socketAddress(s *corev3.SocketAddress) *ast.Term {
	var buf [6][2]*ast.Term
	items := buf[:0]
	if p := s.GetProtocol(); p != corev3.SocketAddress_TCP {
		items = append(items, ast.Item(jProtocol, b.enumTerm(corev3.SocketAddress_Protocol_name, int32(p))))
	}
	items = b.appendString(items, jAddress, s.GetAddress())
	switch p := s.GetPortSpecifier().(type) {
	case *corev3.SocketAddress_PortValue:
		items = append(items, ast.Item(jPortValue, ast.InternedTerm(p.PortValue)))
	case *corev3.SocketAddress_NamedPort:
		items = append(items, ast.Item(jNamedPort, b.str(p.NamedPort)))
	}
	items = b.appendString(items, jResolverName, s.GetResolverName())
	if s.GetIpv4Compat() {
		items = append(items, ast.Item(jIpv4Compat, ast.InternedTerm(true)))
	}
	items = b.appendString(items, jNetworkNamespaceFilepath, s.GetNetworkNamespaceFilepath())
	return b.object(items...)
}

func (b *builder) request(r *authv3.AttributeContext_Request) (*ast.Term, error) {
	var buf [2][2]*ast.Term
	items := buf[:0]
	if r.Time != nil {
		t, err := b.timestamp(r.Time)
		if err != nil {
			return nil, err
		}
		items = append(items, ast.Item(jTime, t))
	}
	if r.Http != nil {
		items = append(items, ast.Item(jHTTP, b.httpRequest(r.Http)))
	}
	return b.object(items...), nil
}

func (b *builder) httpRequest(h *authv3.AttributeContext_HttpRequest) *ast.Term {
	var buf [13][2]*ast.Term
	items := buf[:0]
	items = b.appendString(items, jID, h.Id)
	items = b.appendString(items, jMethod, h.Method)
	if len(h.Headers) > 0 {
		items = append(items, ast.Item(jHeaders, b.stringMap(h.Headers)))
	}
	if h.HeaderMap != nil {
		items = append(items, ast.Item(jHeaderMap, b.headerMap(h.HeaderMap)))
	}
	items = b.appendString(items, jPath, h.Path)
	items = b.appendString(items, jHost, h.Host)
	items = b.appendString(items, jScheme, h.Scheme)
	items = b.appendString(items, jQuery, h.Query)
	items = b.appendString(items, jFragment, h.Fragment)
	if h.Size != 0 {
		// protojson writes 64-bit integers as strings.
		items = append(items, ast.Item(jSize, b.term(ast.String(strconv.FormatInt(h.Size, 10)))))
	}
	items = b.appendString(items, jProtocol, h.Protocol)
	items = b.appendString(items, jBody, h.Body)
	if len(h.RawBody) > 0 {
		items = append(items, ast.Item(jRawBody, b.bytes(h.RawBody)))
	}
	return b.object(items...)
}

func (b *builder) headerMap(m *corev3.HeaderMap) *ast.Term {
	var item [1][2]*ast.Term
	items := item[:0]
	if hs := m.Headers; len(hs) > 0 {
		elems := make([]*ast.Term, len(hs))
		for i, hv := range hs {
			var buf [3][2]*ast.Term
			kv := b.appendString(buf[:0], jKey, hv.GetKey())
			kv = b.appendString(kv, jValue, hv.GetValue())
			if raw := hv.GetRawValue(); len(raw) > 0 {
				kv = append(kv, ast.Item(jRawValue, b.bytes(raw)))
			}
			elems[i] = b.object(kv...)
		}
		items = append(items, ast.Item(jHeaders, b.array(elems)))
	}
	return b.object(items...)
}

// metadata renders core.v3.Metadata. typed_filter_metadata holds Any values
// whose JSON form depends on the packed type; it is rare in ext_authz requests
// and goes through protojson itself rather than a second resolver. As with
// protojson, an Any whose type is not linked into the binary is an error.
func (b *builder) metadata(field string, m *corev3.Metadata) (*ast.Term, error) {
	var buf [2][2]*ast.Term
	items := buf[:0]
	if len(m.FilterMetadata) > 0 {
		t, err := objectFromMap(b, m.FilterMetadata, b.structTerm)
		if err != nil {
			return nil, fmt.Errorf("%w: %s.filterMetadata: %w", ErrInvalidRequest, field, err)
		}
		items = append(items, ast.Item(jFilterMetadata, t))
	}
	if len(m.TypedFilterMetadata) > 0 {
		t, err := objectFromMap(b, m.TypedFilterMetadata, b.anyTerm)
		if err != nil {
			return nil, fmt.Errorf("%w: %s.typedFilterMetadata: %w", ErrInvalidRequest, field, err)
		}
		items = append(items, ast.Item(jTypedFilterMetadata, t))
	}
	return b.object(items...), nil
}

func (b *builder) anyTerm(a *anypb.Any) (*ast.Term, error) {
	if a == nil {
		return b.object(), nil
	}
	bs, err := protojson.Marshal(a)
	if err != nil {
		return nil, err
	}
	v, err := parseJSON(b, string(bs), maxJSONDepth)
	if err != nil {
		return nil, err
	}
	return b.term(v), nil
}

// structTerm renders google.protobuf.Struct as the JSON object it stands for.
func (b *builder) structTerm(s *structpb.Struct) (*ast.Term, error) {
	return objectFromMap(b, s.GetFields(), b.valueTerm)
}

func (b *builder) valueTerm(v *structpb.Value) (*ast.Term, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return ast.InternedNullTerm, nil
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			// protojson refuses these too: JSON has no such numbers.
			return nil, fmt.Errorf("google.protobuf.Value: non-finite number")
		}
		return b.term(formatNumber(f)), nil
	case *structpb.Value_StringValue:
		return b.str(k.StringValue), nil
	case *structpb.Value_BoolValue:
		return ast.InternedTerm(k.BoolValue), nil
	case *structpb.Value_StructValue:
		return b.structTerm(k.StructValue)
	case *structpb.Value_ListValue:
		vs := k.ListValue.GetValues()
		elems := make([]*ast.Term, len(vs))
		for i, e := range vs {
			t, err := b.valueTerm(e)
			if err != nil {
				return nil, err
			}
			elems[i] = t
		}
		return b.array(elems), nil
	default:
		return nil, fmt.Errorf("google.protobuf.Value: no kind set")
	}
}

// formatNumber writes f as protojson (and encoding/json) do: plain decimal,
// switching to an exponent below 1e-6 and from 1e21.
func formatNumber(f float64) ast.Number {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, format, -1, 64)
	if format == 'e' {
		// 1e-07 -> 1e-7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return ast.Number(b)
}

// Timestamp range protojson accepts: 0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59.999999999Z.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// timestamp renders google.protobuf.Timestamp as RFC 3339 in UTC with 0, 3, 6
// or 9 fractional digits, as protojson does.
// checkTimestamp reports a time that RFC 3339, and so protojson, cannot
// represent.
func checkTimestamp(ts *timestamppb.Timestamp) error {
	secs, nanos := ts.GetSeconds(), ts.GetNanos()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999999999 {
		return fmt.Errorf("%w: attributes.request.time: out of range", ErrInvalidRequest)
	}
	return nil
}

func (b *builder) timestamp(ts *timestamppb.Timestamp) (*ast.Term, error) {
	if err := checkTimestamp(ts); err != nil {
		return nil, err
	}
	secs, nanos := ts.GetSeconds(), ts.GetNanos()
	var buf [40]byte
	t := time.Unix(secs, int64(nanos)).UTC().AppendFormat(buf[:0], "2006-01-02T15:04:05.000000000")
	for _, suffix := range [...]string{"000", "000", ".000"} {
		if n := len(t) - len(suffix); string(t[n:]) == suffix {
			t = t[:n]
		}
	}
	t = append(t, 'Z')
	return b.term(ast.String(t)), nil
}

// enumTerm writes an enum by name, or by number when the number is not one
// the generated code knows (as protojson does).
func (b *builder) enumTerm(names map[int32]string, n int32) *ast.Term {
	if name, ok := names[n]; ok {
		return b.term(ast.String(name))
	}
	return ast.InternedTerm(int(n))
}

func (b *builder) bytes(p []byte) *ast.Term {
	return b.term(ast.String(base64.StdEncoding.EncodeToString(p)))
}

func (b *builder) appendString(items [][2]*ast.Term, key *ast.Term, s string) [][2]*ast.Term {
	if s == "" {
		return items
	}
	return append(items, ast.Item(key, b.str(s)))
}

func (b *builder) stringMap(m map[string]string) *ast.Term {
	t, _ := objectFromMap(b, m, b.strValue)
	return t
}

func (b *builder) strValue(s string) (*ast.Term, error) { return b.str(s), nil }

// objectFromMap renders a protobuf map with string keys.
func objectFromMap[V any](b *builder, m map[string]V, value func(V) (*ast.Term, error)) (*ast.Term, error) {
	var buf [16][2]*ast.Term
	items := buf[:0]
	if len(m) > len(buf) {
		items = make([][2]*ast.Term, 0, len(m))
	}
	repaired := false
	for k, v := range m {
		vt, err := value(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", k, err)
		}
		repaired = repaired || !utf8.ValidString(k)
		items = append(items, ast.Item(b.str(k), vt))
	}
	if repaired {
		// Repaired keys may now collide.
		items = lastByKey(items)
	}
	return b.object(items...), nil
}
