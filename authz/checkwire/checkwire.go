// Package checkwire decodes an envoy.service.auth.v3.CheckRequest from its protobuf encoding into the generated
// message, giving what proto.Unmarshal gives at a fraction of its cost.
//
// proto.Unmarshal decodes the request's maps (the headers) through reflection, with a value conversion per key and
// per value: about 14 µs and 110 allocations for a typical Envoy check, more than the rest of a cached check
// costs. Unmarshal decodes the fields Envoy sends directly, sizes each map once, and allocates the nested messages
// together: about 40% of the time and of the allocations. Every string is allocated on its own, as
// proto.Unmarshal does, so that nothing a cache keeps from a request (a header value in a decision) holds on to
// the rest of it, the bearer token included.
//
// Unmarshal only takes that path for encodings it fully understands: every field known, with its expected wire
// type, valid UTF-8 in every string, no singular message sent twice (which protobuf merges). That includes the
// metadata contexts' filter metadata (google.protobuf.Struct values, such as a risk engine's score) up to a nesting
// depth. Anything else, such as typed metadata (Any values), raw header maps or fields of a newer Envoy, is decoded
// by proto.Unmarshal itself, so the result and the error are always proto.Unmarshal's.
package checkwire

import (
	"sync/atomic"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fallbacks counts the encodings handed to proto.Unmarshal.
var fallbacks atomic.Uint64

// Fallbacks returns how many encodings Unmarshal has handed to proto.Unmarshal since the process started. A count
// that grows with every check means the proxy sends something the direct path does not know, which costs speed,
// never correctness.
func Fallbacks() uint64 { return fallbacks.Load() }

// Unmarshal decodes the protobuf encoding b into req, as proto.Unmarshal(b, req) does. Unmarshal does not
// retain b.
func Unmarshal(b []byte, req *authv3.CheckRequest) error {
	req.Reset()
	d := decoder{b: b}
	if attrs, ok := d.checkRequest(); ok {
		req.Attributes = attrs
		return nil
	}
	fallbacks.Add(1)
	return proto.Unmarshal(b, req)
}

// decoder reads one encoding. Its methods take the bounds of the message they read in b, and report false for
// anything outside the direct path.
type decoder struct {
	b     []byte
	a     *messages
	depth int // nesting of the Struct and ListValue being read (metadata.go)
}

// messages are the messages of a typical check, allocated together.
type messages struct {
	attrs    authv3.AttributeContext
	src, dst authv3.AttributeContext_Peer
	request  authv3.AttributeContext_Request
	http     authv3.AttributeContext_HttpRequest
	time     timestamppb.Timestamp
	addr     [2]corev3.Address
	sock     [2]corev3.SocketAddress
	sockOf   [2]corev3.Address_SocketAddress
	port     [2]corev3.SocketAddress_PortValue
	meta     [2]corev3.Metadata // metadata_context, route_metadata_context
	nAddr    int                // addresses used
}

// field reads the tag at i and returns the field's number and wire type and where its value starts.
func (d *decoder) field(i, end int) (protowire.Number, protowire.Type, int, bool) {
	num, typ, n := protowire.ConsumeTag(d.b[i:end])
	if n < 0 {
		return 0, 0, 0, false
	}
	return num, typ, i + n, true
}

// span reads the length-delimited value at i: its bounds, and where the next field starts.
func (d *decoder) span(typ protowire.Type, i, end int) (start, stop int, ok bool) {
	if typ != protowire.BytesType {
		return 0, 0, false
	}
	v, n := protowire.ConsumeBytes(d.b[i:end])
	if n < 0 {
		return 0, 0, false
	}
	return i + n - len(v), i + n, true
}

// varint reads the varint at i and where the next field starts.
func (d *decoder) varint(typ protowire.Type, i, end int) (uint64, int, bool) {
	if typ != protowire.VarintType {
		return 0, 0, false
	}
	v, n := protowire.ConsumeVarint(d.b[i:end])
	if n < 0 {
		return 0, 0, false
	}
	return v, i + n, true
}

// str reads the string at i, which must be valid UTF-8 as proto3 requires, and where the next field starts.
func (d *decoder) str(typ protowire.Type, i, end int) (string, int, bool) {
	start, next, ok := d.span(typ, i, end)
	if !ok {
		return "", 0, false
	}
	s, ok := d.text(start, next)
	return s, next, ok
}

// text is the string in d.b[start:stop], which must be valid UTF-8 as proto3 requires.
func (d *decoder) text(start, stop int) (string, bool) {
	b := d.b[start:stop]
	if !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}

// once sets the singular message field *field to m and reads m from d.b[start:stop] with read. A message field
// sent twice is merged by protobuf: that is off the direct path.
func once[M any](field **M, m *M, read func(m *M, start, stop int) bool, start, stop int) bool {
	if *field != nil {
		return false
	}
	*field = m
	return read(m, start, stop)
}

func (d *decoder) checkRequest() (*authv3.AttributeContext, bool) {
	var attrs *authv3.AttributeContext
	for i, end := 0, len(d.b); i < end; {
		num, typ, j, ok := d.field(i, end)
		if !ok || num != 1 || attrs != nil {
			return nil, false
		}
		start, stop, ok := d.span(typ, j, end)
		if !ok {
			return nil, false
		}
		d.a = new(messages)
		attrs = &d.a.attrs
		if !d.attributeContext(attrs, start, stop) {
			return nil, false
		}
		i = stop
	}
	return attrs, true
}

func (d *decoder) attributeContext(m *authv3.AttributeContext, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok {
			return false
		}
		if num == 10 {
			if i, ok = d.mapEntry(&m.ContextExtensions, num, typ, i, j, end); !ok {
				return false
			}
			continue
		}
		start, stop, ok := d.span(typ, j, end)
		if !ok {
			return false
		}
		switch num {
		case 1:
			ok = once(&m.Source, &d.a.src, d.peer, start, stop)
		case 2:
			ok = once(&m.Destination, &d.a.dst, d.peer, start, stop)
		case 4:
			ok = once(&m.Request, &d.a.request, d.request, start, stop)
		case 11:
			ok = once(&m.MetadataContext, &d.a.meta[0], d.metadata, start, stop)
		case 13:
			ok = once(&m.RouteMetadataContext, &d.a.meta[1], d.metadata, start, stop)
		case 12:
			ok = once(&m.TlsSession, new(authv3.AttributeContext_TLSSession), d.tlsSession, start, stop)
		default:
			return false
		}
		if !ok {
			return false
		}
		i = stop
	}
	return true
}

func (d *decoder) peer(m *authv3.AttributeContext_Peer, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok {
			return false
		}
		switch num {
		case 1:
			if m.Address != nil {
				return false
			}
			start, stop, ok := d.span(typ, j, end)
			if !ok || d.a.nAddr == len(d.a.addr) {
				return false
			}
			n := d.a.nAddr
			d.a.nAddr++
			m.Address = &d.a.addr[n]
			if !d.address(m.Address, n, start, stop) {
				return false
			}
			i = stop
		case 2:
			m.Service, i, ok = d.str(typ, j, end)
		case 3:
			i, ok = d.mapEntry(&m.Labels, num, typ, i, j, end)
		case 4:
			m.Principal, i, ok = d.str(typ, j, end)
		case 5:
			m.Certificate, i, ok = d.str(typ, j, end)
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

// address reads an envoy.config.core.v3.Address, the nth of the request; only its socket_address is on the
// direct path.
func (d *decoder) address(m *corev3.Address, n, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok || num != 1 || m.Address != nil {
			return false
		}
		start, stop, ok := d.span(typ, j, end)
		if !ok {
			return false
		}
		d.a.sockOf[n].SocketAddress = &d.a.sock[n]
		m.Address = &d.a.sockOf[n]
		if !d.socketAddress(&d.a.sock[n], n, start, stop) {
			return false
		}
		i = stop
	}
	return true
}

func (d *decoder) socketAddress(m *corev3.SocketAddress, n, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok {
			return false
		}
		var v uint64
		switch num {
		case 1:
			v, i, ok = d.varint(typ, j, end)
			m.Protocol = corev3.SocketAddress_Protocol(int32(v))
		case 2:
			m.Address, i, ok = d.str(typ, j, end)
		case 3:
			v, i, ok = d.varint(typ, j, end)
			d.a.port[n].PortValue = uint32(v)
			m.PortSpecifier = &d.a.port[n]
		case 4:
			var s string
			s, i, ok = d.str(typ, j, end)
			m.PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: s}
		case 5:
			m.ResolverName, i, ok = d.str(typ, j, end)
		case 6:
			v, i, ok = d.varint(typ, j, end)
			m.Ipv4Compat = v != 0
		case 7:
			m.NetworkNamespaceFilepath, i, ok = d.str(typ, j, end)
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

func (d *decoder) request(m *authv3.AttributeContext_Request, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok {
			return false
		}
		start, stop, ok := d.span(typ, j, end)
		if !ok {
			return false
		}
		switch num {
		case 1:
			ok = once(&m.Time, &d.a.time, d.timestamp, start, stop)
		case 2:
			ok = once(&m.Http, &d.a.http, d.httpRequest, start, stop)
		default:
			return false
		}
		if !ok {
			return false
		}
		i = stop
	}
	return true
}

func (d *decoder) timestamp(m *timestamppb.Timestamp, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok {
			return false
		}
		var v uint64
		switch num {
		case 1:
			v, i, ok = d.varint(typ, j, end)
			m.Seconds = int64(v)
		case 2:
			v, i, ok = d.varint(typ, j, end)
			m.Nanos = int32(v)
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

func (d *decoder) httpRequest(m *authv3.AttributeContext_HttpRequest, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok {
			return false
		}
		switch num {
		case 1:
			m.Id, i, ok = d.str(typ, j, end)
		case 2:
			m.Method, i, ok = d.str(typ, j, end)
		case 3:
			i, ok = d.mapEntry(&m.Headers, num, typ, i, j, end)
		case 4:
			m.Path, i, ok = d.str(typ, j, end)
		case 5:
			m.Host, i, ok = d.str(typ, j, end)
		case 6:
			m.Scheme, i, ok = d.str(typ, j, end)
		case 7:
			m.Query, i, ok = d.str(typ, j, end)
		case 8:
			m.Fragment, i, ok = d.str(typ, j, end)
		case 9:
			var v uint64
			v, i, ok = d.varint(typ, j, end)
			m.Size = int64(v)
		case 10:
			m.Protocol, i, ok = d.str(typ, j, end)
		case 11:
			m.Body, i, ok = d.str(typ, j, end)
		case 12:
			var start int
			start, i, ok = d.span(typ, j, end)
			if ok {
				// A bytes field is the caller's to modify: it gets its own copy, nil when empty as proto gives it.
				m.RawBody = append([]byte(nil), d.b[start:i]...)
			}
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

func (d *decoder) tlsSession(m *authv3.AttributeContext_TLSSession, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok || num != 1 {
			return false
		}
		if m.Sni, i, ok = d.str(typ, j, end); !ok {
			return false
		}
	}
	return true
}

// mapEntry reads one entry of the map<string, string> field num, whose tag is at tag and entry at i, into *m,
// and returns where the next field starts. The first entry makes the map, sized for every entry the message
// holds. A missing key or value is "", and a later entry with the same key replaces an earlier one, as in
// proto.Unmarshal.
func (d *decoder) mapEntry(m *map[string]string, num protowire.Number, typ protowire.Type, tag, i, end int) (int, bool) {
	start, stop, ok := d.span(typ, i, end)
	if !ok {
		return 0, false
	}
	k, vstart, vstop, ok := d.entry(start, stop)
	if !ok {
		return 0, false
	}
	var v string
	if vstart > 0 {
		if v, ok = d.text(vstart, vstop); !ok {
			return 0, false
		}
	}
	if *m == nil {
		*m = make(map[string]string, d.count(num, tag, end))
	}
	(*m)[k] = v
	return stop, true
}

// entry reads the map entry in d.b[start:stop]: its string key (the last one if sent twice, as in
// proto.Unmarshal), and the bounds of its value, which is length-delimited (a string or a message); vstart is 0
// when the entry has none. A value sent twice (protobuf keeps the last string, or merges two messages) is off the
// direct path.
func (d *decoder) entry(start, stop int) (k string, vstart, vstop int, ok bool) {
	for j := start; j < stop; {
		num, typ, next, ok := d.field(j, stop)
		if !ok {
			return "", 0, 0, false
		}
		switch {
		case num == 1:
			k, j, ok = d.str(typ, next, stop)
		case num == 2 && vstart == 0:
			vstart, vstop, ok = d.span(typ, next, stop)
			j = vstop
		default:
			ok = false
		}
		if !ok {
			return "", 0, 0, false
		}
	}
	return k, vstart, vstop, true
}

// count returns how many length-delimited fields numbered num the message in d.b[i:end] holds, to size a map;
// it stops early at anything malformed, which the decoding that follows reports.
func (d *decoder) count(num protowire.Number, i, end int) int {
	n := 0
	for i < end {
		got, typ, j, ok := d.field(i, end)
		if !ok {
			break
		}
		size := protowire.ConsumeFieldValue(got, typ, d.b[j:end])
		if size < 0 {
			break
		}
		if got == num && typ == protowire.BytesType {
			n++
		}
		i = j + size
	}
	return n
}
