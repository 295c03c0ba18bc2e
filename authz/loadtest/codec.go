package loadtest

import (
	"errors"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// checkMethod is the full gRPC method name of Envoy's ext_authz Check.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// preEncoded is a CheckRequest marshalled once, before the run, so that sending it costs no marshalling and no
// allocation in the generator.
type preEncoded struct {
	wire mem.BufferSlice
}

func newPreEncoded(b []byte) *preEncoded {
	// A SliceBuffer is not reference counted (Free is a no-op), so gRPC can "free" it after every send while
	// the bytes stay valid for the next one.
	return &preEncoded{wire: mem.BufferSlice{mem.SliceBuffer(b)}}
}

// verdict is what the generator reads from a CheckResponse: the gRPC status code in CheckResponse.status (0:
// allowed) and, for a denied check, the HTTP status Envoy would send (0 when the response sets none; Envoy then
// answers 403).
type verdict struct {
	code       int32
	httpStatus int32
}

// rawCodec sends preEncoded requests as they are and reads only the verdict of a CheckResponse, so that the
// generator's own cost per request is gRPC's framing and nothing else. It keeps the "proto" content-subtype:
// on the wire the request is the same as protobuf's codec would send.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*preEncoded)
	if !ok {
		return nil, errors.New("loadtest: rawCodec marshals only pre-encoded requests")
	}
	return p.wire, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	out, ok := v.(*verdict)
	if !ok {
		return errors.New("loadtest: rawCodec unmarshals only into a verdict")
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		b = data.Materialize()
	}
	return parseVerdict(b, out)
}

var errBadResponse = errors.New("loadtest: malformed CheckResponse")

// parseVerdict reads CheckResponse{status: google.rpc.Status{code: 1}, denied_response: 2{status: HttpStatus{code:
// 1}}} from its wire form, skipping every other field.
func parseVerdict(b []byte, out *verdict) error {
	*out = verdict{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errBadResponse
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			msg, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errBadResponse
			}
			b = b[n:]
			var err error
			if num == 1 { // google.rpc.Status
				out.code, err = int32Field(msg, 1)
			} else { // DeniedHttpResponse.status: HttpStatus
				var status []byte
				if status, err = bytesField(msg, 1); err == nil {
					out.httpStatus, err = int32Field(status, 1)
				}
			}
			if err != nil {
				return err
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errBadResponse
		}
		b = b[n:]
	}
	return nil
}

// int32Field returns the last varint field num of msg, or 0 (proto3's default) when absent.
func int32Field(msg []byte, num protowire.Number) (int32, error) {
	var v int32
	for len(msg) > 0 {
		n0, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return 0, errBadResponse
		}
		msg = msg[n:]
		if n0 == num && typ == protowire.VarintType {
			x, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return 0, errBadResponse
			}
			v, msg = int32(x), msg[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(n0, typ, msg); n < 0 {
			return 0, errBadResponse
		}
		msg = msg[n:]
	}
	return v, nil
}

// bytesField returns the last length-delimited field num of msg, or nil when absent.
func bytesField(msg []byte, num protowire.Number) ([]byte, error) {
	var v []byte
	for len(msg) > 0 {
		n0, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, errBadResponse
		}
		msg = msg[n:]
		if n0 == num && typ == protowire.BytesType {
			x, n := protowire.ConsumeBytes(msg)
			if n < 0 {
				return nil, errBadResponse
			}
			v, msg = x, msg[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(n0, typ, msg); n < 0 {
			return nil, errBadResponse
		}
		msg = msg[n:]
	}
	return v, nil
}
