package checkwire

import (
	"math"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// maxStructDepth bounds the nesting of Struct and ListValue values on the direct path. Deeper values go to
// proto.Unmarshal, which applies protobuf's own recursion limit and error; a risk engine's metadata is a level or
// two deep.
const maxStructDepth = 32

// metadata reads a metadata context (metadata_context, route_metadata_context). Its filter_metadata, a
// map<string, google.protobuf.Struct>, is what Envoy forwards from the namespaces it is configured to send, such as
// a risk engine's score. typed_filter_metadata (Any values) is off the direct path.
func (d *decoder) metadata(m *corev3.Metadata, i, end int) bool {
	return d.each(i, end, func(tag, start, stop int) bool {
		return messageEntry(d, &m.FilterMetadata, tag, start, stop, end)
	})
}

// structValue reads the google.protobuf.Struct in d.b[i:end]: its fields, a map<string, Value>.
func (d *decoder) structValue(m *structpb.Struct, i, end int) bool {
	return d.nested(func() bool {
		return d.each(i, end, func(tag, start, stop int) bool {
			return messageEntry(d, &m.Fields, tag, start, stop, end)
		})
	})
}

// listValue reads the google.protobuf.ListValue in d.b[i:end]: its values, a repeated Value.
func (d *decoder) listValue(m *structpb.ListValue, i, end int) bool {
	return d.nested(func() bool {
		return d.each(i, end, func(tag, start, stop int) bool {
			if m.Values == nil {
				m.Values = make([]*structpb.Value, 0, d.count(1, tag, end))
			}
			v := new(structpb.Value)
			m.Values = append(m.Values, v)
			return d.value(v, start, stop)
		})
	})
}

// nested reads a Struct or a ListValue with read, one level deeper than the one it is in, up to maxStructDepth.
func (d *decoder) nested(read func() bool) bool {
	if d.depth == maxStructDepth {
		return false
	}
	d.depth++
	ok := read()
	d.depth--
	return ok
}

// each calls read with every field of the message in d.b[i:end], which must all be its length-delimited field 1
// (the map of a metadata context or a Struct, the values of a ListValue): where the field's tag is, and the bounds
// of its value.
func (d *decoder) each(i, end int, read func(tag, start, stop int) bool) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok || num != 1 {
			return false
		}
		start, stop, ok := d.span(typ, j, end)
		if !ok || !read(i, start, stop) {
			return false
		}
		i = stop
	}
	return true
}

// messageEntry reads the entry in d.b[start:stop] of a map<string, Struct> or map<string, Value> into *m; the
// entry's tag is at tag in a message that ends at end. The first entry makes the map, sized for every entry the
// message holds. A missing value is an empty message, as in proto.Unmarshal. (The value's reader is chosen by type,
// not passed as a function: a call through a function value would move the decoder to the heap for every check.)
func messageEntry[M structpb.Struct | structpb.Value](d *decoder, m *map[string]*M, tag, start, stop, end int) bool {
	k, vstart, vstop, ok := d.entry(start, stop)
	if !ok {
		return false
	}
	v := new(M)
	if vstart > 0 {
		switch v := any(v).(type) {
		case *structpb.Struct:
			ok = d.structValue(v, vstart, vstop)
		case *structpb.Value:
			ok = d.value(v, vstart, vstop)
		}
		if !ok {
			return false
		}
	}
	if *m == nil {
		*m = make(map[string]*M, d.count(1, tag, end))
	}
	(*m)[k] = v
	return true
}

// value reads the google.protobuf.Value in d.b[i:end]. A Value whose kind is sent twice (protobuf keeps the last,
// or merges two structs or two lists) is off the direct path.
func (d *decoder) value(m *structpb.Value, i, end int) bool {
	for i < end {
		num, typ, j, ok := d.field(i, end)
		if !ok || m.Kind != nil {
			return false
		}
		var (
			n     uint64
			s     string
			start int
		)
		switch num {
		case 1:
			if n, i, ok = d.varint(typ, j, end); ok {
				m.Kind = &structpb.Value_NullValue{NullValue: structpb.NullValue(int32(n))}
			}
		case 2:
			if n, i, ok = d.fixed64(typ, j, end); ok {
				m.Kind = &structpb.Value_NumberValue{NumberValue: math.Float64frombits(n)}
			}
		case 3:
			if s, i, ok = d.str(typ, j, end); ok {
				m.Kind = &structpb.Value_StringValue{StringValue: s}
			}
		case 4:
			if n, i, ok = d.varint(typ, j, end); ok {
				m.Kind = &structpb.Value_BoolValue{BoolValue: n != 0}
			}
		case 5:
			if start, i, ok = d.span(typ, j, end); ok {
				v := new(structpb.Struct)
				m.Kind = &structpb.Value_StructValue{StructValue: v}
				ok = d.structValue(v, start, i)
			}
		case 6:
			if start, i, ok = d.span(typ, j, end); ok {
				v := new(structpb.ListValue)
				m.Kind = &structpb.Value_ListValue{ListValue: v}
				ok = d.listValue(v, start, i)
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

// fixed64 reads the 64-bit value at i (a double's bits) and where the next field starts.
func (d *decoder) fixed64(typ protowire.Type, i, end int) (uint64, int, bool) {
	if typ != protowire.Fixed64Type {
		return 0, 0, false
	}
	v, n := protowire.ConsumeFixed64(d.b[i:end])
	if n < 0 {
		return 0, 0, false
	}
	return v, i + n, true
}
