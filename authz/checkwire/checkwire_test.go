package checkwire

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/finauthz/authz/authz/envoyreq"
)

// envoyCheck is a check as Envoy sends it for an API call with a bearer token.
func envoyCheck(t testing.TB) *authv3.CheckRequest {
	t.Helper()
	req, err := envoyreq.New(envoyreq.Request{
		Method: "POST",
		URL:    "https://api.bank.example/v1/payments?dry_run=true",
		Headers: []string{
			"authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjdXN0LTEifQ.c2ln",
			"user-agent: bank-app/7.4.1 (iPhone; iOS 18.3)",
			"accept: application/json",
			"x-forwarded-for: 203.0.113.7",
			"idempotency-key: 7d1c1c9e-8f0e-4c55-9a5a-3f0d8f6d2b11",
		},
		Body:              []byte(`{"amount":"12.50","currency":"EUR"}`),
		MaxBody:           4096,
		Principal:         "spiffe://bank.example/ns/payments/sa/gateway",
		Source:            "203.0.113.7:40001",
		RequestID:         "req-0001",
		Time:              time.Unix(1795872600, 123456789),
		ContextExtensions: map[string]string{"route": "payments", "tier": "gold"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// withEveryField is envoyCheck with every field of the direct path set.
func withEveryField(t testing.TB) *authv3.CheckRequest {
	req := envoyCheck(t)
	a := req.Attributes
	a.Source.Service = "mobile-edge"
	a.Source.Labels = map[string]string{"app": "edge", "zone": "eu-1", "": "empty key"}
	a.Source.Certificate = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
	a.Destination.Principal = "spiffe://bank.example/ns/payments/sa/api"
	sock := a.Destination.Address.GetSocketAddress()
	sock.Protocol = corev3.SocketAddress_UDP
	sock.ResolverName = "custom"
	sock.Ipv4Compat = true
	sock.NetworkNamespaceFilepath = "/var/run/netns/ns1"
	sock.PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "https"}
	a.MetadataContext = &corev3.Metadata{}
	a.RouteMetadataContext = &corev3.Metadata{}
	a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "api.bank.example"}
	h := a.Request.Http
	h.Query, h.Fragment, h.Body = "dry_run=true", "frag", "body as a string ✓"
	h.Size = -1
	return req
}

// withMetadata is envoyCheck with the metadata a risk engine's filter and the route forward: every kind of Value,
// nested.
func withMetadata(t testing.TB) *authv3.CheckRequest {
	req := envoyCheck(t)
	risk, err := structpb.NewStruct(map[string]any{
		"score": 412.5, "band": "medium", "step_up": true, "reason": nil,
		"signals": []any{"new_device", 3.0, false, nil, map[string]any{"geo": "GB"}, []any{}},
		"model":   map[string]any{"name": "fraud-v7", "features": map[string]any{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"com.bank.risk": risk,
		"empty":         {},
	}}
	req.Attributes.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"com.bank.route": {Fields: map[string]*structpb.Value{"api": structpb.NewStringValue("payments")}},
	}}
	return req
}

// parity decodes b with Unmarshal and proto.Unmarshal and fails unless both give the same message or both fail.
// It reports whether Unmarshal took its direct path.
func parity(t testing.TB, b []byte) (direct bool) {
	t.Helper()
	var want, got authv3.CheckRequest
	wantErr := proto.Unmarshal(b, &want)
	before := Fallbacks()
	gotErr := Unmarshal(b, &got)
	direct = Fallbacks() == before
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("Unmarshal error = %v, proto.Unmarshal error = %v (encoding %x)", gotErr, wantErr, b)
	}
	if wantErr == nil && !proto.Equal(&got, &want) {
		t.Fatalf("Unmarshal gave\n%v\nproto.Unmarshal gave\n%v\n(encoding %x)", &got, &want, b)
	}
	if wantErr != nil && direct {
		t.Fatalf("Unmarshal decoded an encoding proto.Unmarshal refuses (%v) on its direct path", wantErr)
	}
	return direct
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnmarshalMatchesProto(t *testing.T) {
	tests := []struct {
		name   string
		req    func(testing.TB) *authv3.CheckRequest
		direct bool
	}{
		{"envoy check", envoyCheck, true},
		{"every direct field", withEveryField, true},
		{"empty request", func(testing.TB) *authv3.CheckRequest { return &authv3.CheckRequest{} }, true},
		{"empty attributes", func(testing.TB) *authv3.CheckRequest {
			return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}
		}, true},
		{"empty nested messages", func(testing.TB) *authv3.CheckRequest {
			return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source:  &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
				Request: &authv3.AttributeContext_Request{Time: &timestamppb.Timestamp{}, Http: &authv3.AttributeContext_HttpRequest{}},
			}}
		}, true},
		{"port zero", func(t testing.TB) *authv3.CheckRequest {
			req := envoyCheck(t)
			req.Attributes.Source.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{}
			return req
		}, true},
		{"metadata with content", withMetadata, true},
		{"typed metadata", func(t testing.TB) *authv3.CheckRequest {
			req := envoyCheck(t)
			req.Attributes.MetadataContext = &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
				"risk": {TypeUrl: "type.googleapis.com/google.protobuf.Struct"},
			}}
			return req
		}, false},
		{"raw header map", func(t testing.TB) *authv3.CheckRequest {
			req := envoyCheck(t)
			h := req.Attributes.Request.Http
			h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "accept", RawValue: []byte("*/*")}}}
			return req
		}, false},
		{"pipe address", func(t testing.TB) *authv3.CheckRequest {
			req := envoyCheck(t)
			req.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock"}}}
			return req
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if direct := parity(t, marshal(t, tt.req(t))); direct != tt.direct {
				t.Errorf("direct path = %v, want %v", direct, tt.direct)
			}
		})
	}
}

// Encodings a marshaller does not produce but a peer may send: each must decode as proto.Unmarshal decodes it.
func TestUnmarshalHandMadeEncodings(t *testing.T) {
	str := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	msg := func(b []byte, num protowire.Number, m []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	entry := func(k, v string) []byte { return str(str(nil, 1, k), 2, v) }
	check := func(attrs []byte) []byte { return msg(nil, 1, attrs) }
	http := func(h []byte) []byte { return check(msg(nil, 4, msg(nil, 2, h))) }
	// meta is a metadata context whose one namespace "ns" holds the Struct s; field is a Struct's entry k: v.
	meta := func(s []byte) []byte { return check(msg(nil, 11, msg(nil, 1, msg(str(nil, 1, "ns"), 2, s)))) }
	field := func(k string, v []byte) []byte { return msg(nil, 1, msg(str(nil, 1, k), 2, v)) }
	number := protowire.AppendFixed64(protowire.AppendTag(nil, 2, protowire.Fixed64Type), 0x4079c80000000000)
	// nested is a Value holding depth Structs, each inside the one before; the namespace's Struct is one more.
	nested := func(depth int) []byte {
		v := str(nil, 3, "deepest")
		for range depth {
			v = msg(nil, 5, field("k", v))
		}
		return v
	}

	tests := []struct {
		name   string
		b      []byte
		direct bool
	}{
		{"scalar sent twice: the last wins", http(str(str(nil, 2, "GET"), 2, "POST")), true},
		{"header sent twice: the last wins", http(msg(msg(nil, 3, entry("a", "1")), 3, entry("a", "2"))), true},
		{"map entry value before key", http(msg(nil, 3, str(str(nil, 2, "v"), 1, "k"))), true},
		{"map entry without key", http(msg(nil, 3, str(nil, 2, "v"))), true},
		{"map entry without value", http(msg(nil, 3, str(nil, 1, "k"))), true},
		{"empty map entry", http(msg(nil, 3, nil)), true},
		{"map entries apart", http(msg(str(msg(nil, 3, entry("a", "1")), 4, "/p"), 3, entry("b", "2"))), true},
		{"negative size", http(varint(nil, 9, 1<<64-1)), true},
		{"empty raw body", http(msg(nil, 12, nil)), true},
		{"port then named port", check(msg(nil, 1, msg(nil, 1, msg(nil, 1, str(varint(nil, 3, 443), 4, "https"))))), true},
		{"named port then port", check(msg(nil, 1, msg(nil, 1, msg(nil, 1, varint(str(nil, 4, "https"), 3, 443))))), true},
		{"port beyond uint32", check(msg(nil, 1, msg(nil, 1, msg(nil, 1, varint(nil, 3, 1<<40+8))))), true},
		{"unknown protocol", check(msg(nil, 1, msg(nil, 1, msg(nil, 1, varint(nil, 1, 7))))), true},
		{"nanos beyond int32", check(msg(nil, 4, msg(nil, 1, varint(varint(nil, 1, 1<<63), 2, 1<<35+5)))), true},

		{"namespace without a Struct", check(msg(nil, 11, msg(nil, 1, str(nil, 1, "ns")))), true},
		{"Struct entry without a Value", meta(msg(nil, 1, str(nil, 1, "k"))), true},
		{"Struct entry without a key", meta(field("", number)), true},
		{"empty Value", meta(field("k", nil)), true},
		{"null value out of the enum's range", meta(field("k", varint(nil, 1, 1<<40+3))), true},
		{"bool other than 0 or 1", meta(field("k", varint(nil, 4, 7))), true},
		{"Struct key sent twice: the last wins", meta(append(field("k", number), field("k", str(nil, 3, "s"))...)), true},
		{"Structs nested to the limit", meta(field("k", nested(maxStructDepth-1))), true},

		{"Value kind sent twice: proto keeps the last", meta(field("k", str(number, 3, "s"))), false},
		{"Struct value sent twice: proto merges", meta(field("k", msg(msg(nil, 5, field("a", number)), 5, field("b", number)))), false},
		{"Struct sent twice in a namespace: proto merges", check(msg(nil, 11, msg(nil, 1, msg(msg(str(nil, 1, "ns"), 2, nil), 2, nil)))), false},
		{"number with the wrong wire type", meta(field("k", varint(nil, 2, 1))), false},
		{"unknown field in a Value", meta(field("k", str(nil, 7, "x"))), false},
		{"invalid UTF-8 in a Struct key", meta(field("k\xff", number)), false},
		{"invalid UTF-8 in a string value", meta(field("k", str(nil, 3, "\xc3"))), false},
		{"Structs nested past the limit", meta(field("k", nested(maxStructDepth))), false},

		{"map entry value sent twice: proto keeps the last", http(msg(nil, 3, str(entry("k", "1"), 2, "2"))), false},
		{"message sent twice: proto merges", check(msg(msg(nil, 1, str(nil, 2, "a")), 1, str(nil, 4, "p"))), false},
		{"attributes sent twice", append(check(nil), check(msg(nil, 2, nil))...), false},
		{"unknown field", http(str(nil, 99, "x")), false},
		{"unknown field in a map entry", http(msg(nil, 3, str(entry("k", "v"), 3, "x"))), false},
		{"wrong wire type", http(varint(nil, 2, 1)), false},
		{"group", http(protowire.AppendTag(protowire.AppendTag(nil, 20, protowire.StartGroupType), 20, protowire.EndGroupType)), false},

		{"invalid UTF-8 in a string", http(str(nil, 2, "G\xffT")), false},
		{"invalid UTF-8 in a header name", http(msg(nil, 3, entry("a\xff", "1"))), false},
		{"invalid UTF-8 in a header value", http(msg(nil, 3, entry("a", "\xc3"))), false},
		{"truncated length", http(protowire.AppendTag(nil, 2, protowire.BytesType)), false},
		{"length past the end", append(check(nil)[:1], 0x7f), false},
		{"truncated varint", http(append(protowire.AppendTag(nil, 9, protowire.VarintType), 0x80)), false},
		{"field number zero", http([]byte{0x02, 0x00}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if direct := parity(t, tt.b); direct != tt.direct {
				t.Errorf("direct path = %v, want %v", direct, tt.direct)
			}
		})
	}
}

// The decoded request shares no memory with the encoding, which gRPC recycles once decoded.
func TestUnmarshalDoesNotRetainTheEncoding(t *testing.T) {
	b := marshal(t, withEveryField(t))
	var got authv3.CheckRequest
	if err := Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(&got)
	for i := range b {
		b[i] = 0xff
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("overwriting the encoding changed the request:\n%v", &got)
	}
}

// Unmarshal resets the message, as proto.Unmarshal does.
func TestUnmarshalResets(t *testing.T) {
	got := withEveryField(t)
	if err := Unmarshal(marshal(t, &authv3.CheckRequest{}), got); err != nil {
		t.Fatal(err)
	}
	if got.Attributes != nil {
		t.Fatalf("Unmarshal kept the earlier content: %v", got)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(marshal(f, envoyCheck(f)))
	f.Add(marshal(f, withEveryField(f)))
	f.Add(marshal(f, withMetadata(f)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		parity(t, b)
	})
}

// BenchmarkUnmarshal decodes a typical check, and one carrying withMetadata's metadata (a risk engine's Struct),
// with Unmarshal and with proto.Unmarshal.
func BenchmarkUnmarshal(b *testing.B) {
	for _, tc := range []struct {
		suffix string
		req    func(testing.TB) *authv3.CheckRequest
	}{{"", envoyCheck}, {"-metadata", withMetadata}} {
		enc := marshal(b, tc.req(b))
		for _, dec := range []struct {
			name      string
			unmarshal func([]byte, *authv3.CheckRequest) error
		}{
			{"checkwire", Unmarshal},
			{"proto", func(b []byte, req *authv3.CheckRequest) error { return proto.Unmarshal(b, req) }},
		} {
			b.Run(dec.name+tc.suffix, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var req authv3.CheckRequest
					if err := dec.unmarshal(enc, &req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
