package input

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// protojsonAttributes is the reference: input.attributes as OPA-Envoy built it,
// by marshalling the request with protojson and decoding the JSON.
func protojsonAttributes(req *authv3.CheckRequest) (ast.Value, error) {
	bs, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	var x any
	if err := util.UnmarshalJSON(bs, &x); err != nil {
		return nil, err
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, err
	}
	attrs := v.(ast.Object).Get(ast.StringTerm("attributes"))
	if attrs == nil {
		return nil, errors.New("request has no attributes")
	}
	return attrs.Value, nil
}

func builtAttributes(req *authv3.CheckRequest) (ast.Value, error) {
	v, err := Build(req, nil, Options{})
	if err != nil {
		return nil, err
	}
	return v.(ast.Object).Get(ast.StringTerm("attributes")).Value, nil
}

func assertParity(t *testing.T, req *authv3.CheckRequest) {
	t.Helper()
	want, err := protojsonAttributes(req)
	if err != nil {
		t.Fatalf("protojson: %v", err)
	}
	got, err := builtAttributes(req)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	// Compare treats 1e+21 and 1000000000000000000000 as equal; the text
	// must match too, since policies can print and concatenate numbers.
	if got.Compare(want) != 0 || got.String() != want.String() {
		t.Fatalf("attributes differ from protojson\n got: %v\nwant: %v", got, want)
	}
}

func socket(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fullRequest populates every AttributeContext field Envoy can send.
func fullRequest(t *testing.T) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:     socket("10.1.2.3", 53124),
			Service:     "mobile-bff",
			Labels:      map[string]string{"app": "bff", "tier": "edge"},
			Principal:   "spiffe://bank.example/ns/edge/sa/bff",
			Certificate: "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----%0A",
		},
		Destination: &authv3.AttributeContext_Peer{
			Address:   socket("10.9.8.7", 8443),
			Service:   "payments",
			Principal: "spiffe://bank.example/ns/core/sa/payments",
		},
		Request: &authv3.AttributeContext_Request{
			Time: &timestamppb.Timestamp{Seconds: 1767225600, Nanos: 123000000},
			Http: &authv3.AttributeContext_HttpRequest{
				Id:     "8412293471622361012",
				Method: "POST",
				Headers: map[string]string{
					":authority":    "api.bank.example",
					"content-type":  "application/json",
					"authorization": "Bearer abc.def.ghi",
					"x-empty":       "",
				},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: ":authority", Value: "api.bank.example"},
					{Key: "x-bin", RawValue: []byte{0xde, 0xad, 0xbe, 0xef}},
				}},
				Path:     "/v1/accounts/ACC-42/payments?dryRun=true",
				Host:     "api.bank.example",
				Scheme:   "https",
				Query:    "dryRun=true",
				Fragment: "top",
				Size:     17,
				Protocol: "HTTP/2",
				Body:     `{"amount": 125.5}`,
				RawBody:  []byte(`{"amount": 125.5}`),
			},
		},
		ContextExtensions: map[string]string{"virtual_host": "api", "route": "payments"},
		MetadataContext: &corev3.Metadata{
			FilterMetadata: map[string]*structpb.Struct{
				"envoy.filters.http.jwt_authn": mustStruct(t, map[string]any{
					"jwt_payload": map[string]any{
						"sub":    "alice",
						"amr":    []any{"pwd", "otp"},
						"limit":  2500.75,
						"exp":    1.7672256e9,
						"tiny":   1e-9,
						"huge":   1e300,
						"mfa":    true,
						"parent": nil,
					},
				}),
			},
			TypedFilterMetadata: map[string]*anypb.Any{
				"typed.address": mustAny(t, &corev3.SocketAddress{Address: "10.0.0.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9901}}),
				"typed.struct":  mustAny(t, mustStruct(t, map[string]any{"k": "v"})),
				"typed.wrapper": mustAny(t, wrapperspb.String("w")),
			},
		},
		RouteMetadataContext: &corev3.Metadata{
			FilterMetadata: map[string]*structpb.Struct{
				"bank.routes": mustStruct(t, map[string]any{"scope": "payments:write", "step_up": true}),
			},
		},
		TlsSession: &authv3.AttributeContext_TLSSession{Sni: "api.bank.example"},
	}}
}

func TestAttributesMatchProtojson(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(ac *authv3.AttributeContext)
	}{
		{"every field populated", func(*authv3.AttributeContext) {}},
		{"only http is set", func(ac *authv3.AttributeContext) {
			*ac = authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}}
		}},
		{"empty messages are emitted as empty objects", func(ac *authv3.AttributeContext) {
			ac.Source = &authv3.AttributeContext_Peer{}
			ac.Destination = &authv3.AttributeContext_Peer{Address: &corev3.Address{}}
			ac.MetadataContext = &corev3.Metadata{}
			ac.TlsSession = &authv3.AttributeContext_TLSSession{}
			ac.Request.Http.HeaderMap = &corev3.HeaderMap{}
		}},
		{"oneof members are emitted even when zero", func(ac *authv3.AttributeContext) {
			ac.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				PortSpecifier: &corev3.SocketAddress_PortValue{},
			}}}
			ac.Destination.Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
				AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{},
			}}}
		}},
		{"oneof holding a nil message is an empty object", func(ac *authv3.AttributeContext) {
			ac.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{}}
			ac.Destination.Address = &corev3.Address{Address: &corev3.Address_Pipe{}}
		}},
		{"named port, resolver, UDP, ipv4 compat and network namespace", func(ac *authv3.AttributeContext) {
			ac.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol:                 corev3.SocketAddress_UDP,
				Address:                  "::ffff:10.1.2.3",
				PortSpecifier:            &corev3.SocketAddress_NamedPort{NamedPort: "https"},
				ResolverName:             "custom",
				Ipv4Compat:               true,
				NetworkNamespaceFilepath: "/var/run/netns/edge",
			}}}
		}},
		{"unknown enum number is written as a number", func(ac *authv3.AttributeContext) {
			ac.Source.Address.GetSocketAddress().Protocol = 7
		}},
		{"pipe address", func(ac *authv3.AttributeContext) {
			ac.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o660}}}
		}},
		{"envoy internal address", func(ac *authv3.AttributeContext) {
			ac.Destination.Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
				AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "internal"},
				EndpointId:           "ep-1",
			}}}
		}},
		{"timestamp on the second", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: 1767225600}
		}},
		{"timestamp with microseconds", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: 1767225600, Nanos: 123456000}
		}},
		{"timestamp with nanoseconds", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: 1767225600, Nanos: 1}
		}},
		{"timestamp at the ends of the range", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: minTimestampSeconds}
			ac.Request.Http.Size = math.MaxInt64
		}},
		{"timestamp before 1970", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: -1, Nanos: 999999999}
		}},
		{"unknown size is -1, written as a string", func(ac *authv3.AttributeContext) {
			ac.Request.Http.Size = -1
		}},
		{"nil header value in header_map is an empty object", func(ac *authv3.AttributeContext) {
			ac.Request.Http.HeaderMap.Headers = append(ac.Request.Http.HeaderMap.Headers, nil, &corev3.HeaderValue{})
		}},
		{"struct holds every value kind, nested", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.FilterMetadata["x"] = mustStruct(t, map[string]any{
				"list":   []any{1, "two", false, nil, map[string]any{"deep": []any{[]any{}}}},
				"obj":    map[string]any{},
				"neg":    -0.000001,
				"small":  -1.5e-7,
				"int":    float64(1 << 53),
				"big":    1e21,
				"just":   999999999999999999999.0,
				"empty":  "",
				"escape": "\"quoted\" \\ \u2028 \x00",
			})
		}},
		{"nil struct, nil nested struct and nil list are empty", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.FilterMetadata["nil"] = nil
			ac.MetadataContext.FilterMetadata["kinds"] = &structpb.Struct{Fields: map[string]*structpb.Value{
				"s": {Kind: &structpb.Value_StructValue{}},
				"l": {Kind: &structpb.Value_ListValue{}},
				"n": {Kind: &structpb.Value_NullValue{NullValue: 3}},
			}}
		}},
		{"nil and empty Any are empty objects", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.TypedFilterMetadata = map[string]*anypb.Any{"nil": nil, "empty": {}}
		}},
		{"non-ASCII strings", func(ac *authv3.AttributeContext) {
			ac.ContextExtensions["ünï"] = "日本語 🏦"
			ac.Request.Http.Headers["x-name"] = "Zoë"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := fullRequest(t)
			tc.mutate(req.Attributes)
			assertParity(t, req)
		})
	}
}

// opaEnvoyPolicy reads input the way policies written for OPA-Envoy do.
const opaEnvoyPolicy = `package envoy.authz

import rego.v1

default allow := false

owners := {"spiffe://bank.example/ns/edge/sa/bff": "alice"}

allow if {
	http := input.attributes.request.http
	http.method == "POST"
	http.headers["content-type"] == "application/json"
	http.size == "17"
	input.attributes.request.time == "2026-01-01T00:00:00.123Z"
	input.attributes.source.address.socketAddress.portValue == 53124
	input.attributes.destination.principal == "spiffe://bank.example/ns/core/sa/payments"
	input.attributes.contextExtensions.route == "payments"
	input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].jwt_payload.mfa
	input.attributes.routeMetadataContext.filterMetadata["bank.routes"].scope == "payments:write"
	input.attributes.tlsSession.sni == "api.bank.example"
	input.parsed_path == ["v1", "accounts", "ACC-42", "payments"]
	input.parsed_query.dryRun == ["true"]
	not input.truncated_body
	input.parsed_body.amount <= 1000
	input.version == {"ext_authz": "v3", "encoding": "protojson"}
	input.token.payload.sub == owners[input.source_principal]
}
`

func TestPolicyWrittenForOPAEnvoyRunsUnchanged(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pq, err := rego.New(
		rego.Query("data.envoy.authz.allow"),
		rego.Module("policy.rego", opaEnvoyPolicy),
	).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	token := ast.MustParseTerm(`{"header": {"alg": "ES256"}, "payload": {"sub": "alice"}}`).Value
	tests := []struct {
		name   string
		mutate func(h *authv3.AttributeContext_HttpRequest)
		allow  bool
	}{
		{"payment within the limit is allowed", func(*authv3.AttributeContext_HttpRequest) {}, true},
		{"payment over the limit is denied", func(h *authv3.AttributeContext_HttpRequest) {
			h.RawBody = []byte(`{"amount": 1000.5}`)
			h.Size = 18
		}, false},
		{"truncated body is denied", func(h *authv3.AttributeContext_HttpRequest) {
			h.Headers["x-envoy-auth-partial-body"] = "true"
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := fullRequest(t)
			tc.mutate(req.Attributes.Request.Http)
			v, err := Build(req, token, Options{})
			if err != nil {
				t.Fatal(err)
			}
			rs, err := pq.Eval(ctx, rego.EvalParsedInput(v))
			if err != nil {
				t.Fatal(err)
			}
			if got := rs.Allowed(); got != tc.allow {
				t.Fatalf("allow = %t, want %t", got, tc.allow)
			}
		})
	}
}

// TestAttributesMatchProtojsonRandom fills CheckRequests at random from the
// descriptors, so a field added to the Envoy protos is populated here before
// anyone teaches Build about it, and the test fails until someone does.
func TestAttributesMatchProtojsonRandom(t *testing.T) {
	t.Parallel()
	n := 2000
	if testing.Short() {
		n = 200
	}
	for seed := range n {
		f := filler{rnd: rand.New(rand.NewPCG(uint64(seed), 0x5eed))}
		req := &authv3.CheckRequest{}
		f.message(req.ProtoReflect(), 0)
		if req.GetAttributes().GetRequest().GetHttp() == nil {
			if req.Attributes == nil {
				req.Attributes = &authv3.AttributeContext{}
			}
			if req.Attributes.Request == nil {
				req.Attributes.Request = &authv3.AttributeContext_Request{}
			}
			req.Attributes.Request.Http = &authv3.AttributeContext_HttpRequest{}
		}
		// Keep the path and body parsers out of it: this is about attributes.
		req.Attributes.Request.Http.Path = "/"
		delete(req.Attributes.Request.Http.Headers, "content-type")
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			assertParity(t, req)
		})
		if t.Failed() {
			return
		}
	}
}

func TestAttributesFailWhereProtojsonFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(ac *authv3.AttributeContext)
	}{
		{"struct value without a kind", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.FilterMetadata["x"] = &structpb.Struct{Fields: map[string]*structpb.Value{"k": {}}}
		}},
		{"nil struct value", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.FilterMetadata["x"] = &structpb.Struct{Fields: map[string]*structpb.Value{"k": nil}}
		}},
		{"nil value in a list", func(ac *authv3.AttributeContext) {
			ac.RouteMetadataContext.FilterMetadata["x"] = &structpb.Struct{Fields: map[string]*structpb.Value{
				"k": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{nil}}),
			}}
		}},
		{"NaN in a struct", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.FilterMetadata["x"] = &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewNumberValue(math.NaN())}}
		}},
		{"infinity in a struct", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.FilterMetadata["x"] = &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewNumberValue(math.Inf(-1))}}
		}},
		{"timestamp after year 9999", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: maxTimestampSeconds + 1}
		}},
		{"timestamp with negative nanos", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: 1, Nanos: -1}
		}},
		{"timestamp with a second's worth of nanos", func(ac *authv3.AttributeContext) {
			ac.Request.Time = &timestamppb.Timestamp{Seconds: 1, Nanos: 1e9}
		}},
		{"Any of a type not linked in", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.TypedFilterMetadata["x"] = &anypb.Any{TypeUrl: "type.googleapis.com/bank.Unknown", Value: []byte{8, 1}}
		}},
		{"Any with a value but no type", func(ac *authv3.AttributeContext) {
			ac.MetadataContext.TypedFilterMetadata["x"] = &anypb.Any{Value: []byte{8, 1}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := fullRequest(t)
			tc.mutate(req.Attributes)
			if _, err := protojson.Marshal(req); err == nil {
				t.Fatal("protojson accepts the request; the case tests nothing")
			}
			v, err := Build(req, nil, Options{})
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("Build = %v, %v; want an error wrapping ErrInvalidRequest", v, err)
			}
		})
	}
}

// filler populates messages at random, walking their descriptors.
type filler struct {
	rnd *rand.Rand
}

const fillDepth = 8

var fillStrings = []string{
	"", "a", "GET", "/v1/accounts", "api.bank.example", "Zoë", "日本語", "🏦 bank",
	`"quoted" \ back\slash`, "tab\tnew\nline\x00nul", " spaced ", "\u2028\u2029", "+%20&=?",
}

func (f *filler) str() string {
	if f.rnd.IntN(4) == 0 {
		b := make([]byte, f.rnd.IntN(12))
		for i := range b {
			b[i] = byte(' ' + f.rnd.IntN(95))
		}
		return string(b)
	}
	return fillStrings[f.rnd.IntN(len(fillStrings))]
}

func (f *filler) message(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if f.rnd.IntN(10) < 3 {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range f.rnd.IntN(4) {
				mp.Set(f.scalar(fd.MapKey()).MapKey(), f.value(fd.MapValue(), mp.NewValue, depth))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range f.rnd.IntN(4) {
				l.Append(f.value(fd, l.NewElement, depth))
			}
		case fd.Message() != nil:
			if depth < fillDepth {
				m.Set(fd, f.value(fd, func() protoreflect.Value { return m.NewField(fd) }, depth))
			}
		default:
			m.Set(fd, f.scalar(fd))
		}
	}
}

func (f *filler) value(fd protoreflect.FieldDescriptor, newValue func() protoreflect.Value, depth int) protoreflect.Value {
	if fd.Message() == nil {
		return f.scalar(fd)
	}
	v := newValue()
	msg := v.Message()
	switch fd.Message().FullName() {
	case "google.protobuf.Timestamp":
		ts := &timestamppb.Timestamp{Seconds: minTimestampSeconds + f.rnd.Int64N(maxTimestampSeconds-minTimestampSeconds)}
		switch f.rnd.IntN(4) {
		case 1:
			ts.Nanos = f.rnd.Int32N(1000) * 1e6
		case 2:
			ts.Nanos = f.rnd.Int32N(1e6) * 1e3
		case 3:
			ts.Nanos = f.rnd.Int32N(1e9)
		}
		proto.Merge(msg.Interface(), ts)
	case "google.protobuf.Struct":
		proto.Merge(msg.Interface(), f.pbStruct(depth))
	case "google.protobuf.Value":
		proto.Merge(msg.Interface(), f.pbValue(depth))
	case "google.protobuf.Any":
		var packed proto.Message
		switch f.rnd.IntN(3) {
		case 0:
			packed = f.pbStruct(depth)
		case 1:
			packed = wrapperspb.String(f.str())
		default:
			sa := &corev3.SocketAddress{}
			f.message(sa.ProtoReflect(), depth+1)
			packed = sa
		}
		a, err := anypb.New(packed)
		if err != nil {
			panic(err)
		}
		proto.Merge(msg.Interface(), a)
	default:
		f.message(msg, depth+1)
	}
	return v
}

func (f *filler) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(f.rnd.IntN(2) == 0)
	case protoreflect.EnumKind:
		if f.rnd.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(100 + f.rnd.IntN(5)))
		}
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(f.rnd.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32([]int32{0, -1, 1, math.MaxInt32, math.MinInt32, f.rnd.Int32()}[f.rnd.IntN(6)])
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64([]int64{0, -1, 1, math.MaxInt64, math.MinInt64, f.rnd.Int64()}[f.rnd.IntN(6)])
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32([]uint32{0, 1, 443, math.MaxUint32, f.rnd.Uint32()}[f.rnd.IntN(5)])
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64([]uint64{0, 1, math.MaxUint64, f.rnd.Uint64()}[f.rnd.IntN(4)])
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(f.number()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(f.number())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(f.str())
	case protoreflect.BytesKind:
		b := make([]byte, f.rnd.IntN(16))
		for i := range b {
			b[i] = byte(f.rnd.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic(fmt.Sprintf("filler: unexpected kind %v", fd.Kind()))
}

func (f *filler) number() float64 {
	switch f.rnd.IntN(6) {
	case 0:
		return 0
	case 1:
		return float64(f.rnd.IntN(1e6) - 5e5)
	case 2:
		return f.rnd.NormFloat64()
	case 3:
		return f.rnd.Float64() * 1e-8
	case 4:
		return f.rnd.Float64() * 1e25
	default:
		return math.Float64frombits(f.rnd.Uint64()&^(0x7ff<<52) | uint64(f.rnd.IntN(0x7fe)+1)<<52)
	}
}

func (f *filler) pbStruct(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range f.rnd.IntN(4) {
		s.Fields[f.str()] = f.pbValue(depth + 1)
	}
	return s
}

func (f *filler) pbValue(depth int) *structpb.Value {
	kinds := 6
	if depth >= fillDepth {
		kinds = 4
	}
	switch f.rnd.IntN(kinds) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewNumberValue(f.number())
	case 2:
		return structpb.NewStringValue(f.str())
	case 3:
		return structpb.NewBoolValue(f.rnd.IntN(2) == 0)
	case 4:
		return structpb.NewStructValue(f.pbStruct(depth + 1))
	default:
		l := &structpb.ListValue{}
		for range f.rnd.IntN(4) {
			l.Values = append(l.Values, f.pbValue(depth+1))
		}
		return structpb.NewListValue(l)
	}
}
