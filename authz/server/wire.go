package server

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/finauthz/authz/authz/checkwire"
)

// ServerOptions returns the options the grpc.Server that Register registers s on should be made with: a codec
// that decodes CheckRequests with checkwire, and sends a cached decision's CheckResponse as the bytes encoded
// when the decision was made instead of encoding it again for every check. Without them every message is
// decoded and encoded as usual.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(wireCodec{proto: encoding.GetCodecV2("proto")})}
}

// wireCodec is gRPC's protobuf codec, except that it decodes a CheckRequest with checkwire (the same message,
// for under half the CPU) and sends a *wireResponse as its encoded bytes.
type wireCodec struct{ proto encoding.CodecV2 }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*wireResponse); ok && w.wire != nil {
		// Shared by every check served the decision; gRPC only reads it, and a SliceBuffer's Free is a no-op.
		return mem.BufferSlice{mem.SliceBuffer(w.wire)}, nil
	}
	return c.proto.Marshal(v) // a *wireResponse without bytes encodes as its CheckResponse
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*authv3.CheckRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return checkwire.Unmarshal(buf.ReadOnlyData(), req) // retains nothing of buf
}

func (c wireCodec) Name() string { return c.proto.Name() }

// authorizationService is envoy.service.auth.v3.Authorization with a Check handler that answers with the
// pre-encoded response when there is one.
var authorizationService = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(authv3.CheckRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.checkWire(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.checkWire(ctx, req.(*authv3.CheckRequest))
	})
}

// checkWire is Check, answering with the response's remembered encoding when there is one.
func (s *Server) checkWire(ctx context.Context, req *authv3.CheckRequest) (any, error) {
	resp, w, err := s.serve(ctx, req)
	if err != nil {
		return nil, err
	}
	if w != nil {
		return w, nil
	}
	return resp, nil
}
