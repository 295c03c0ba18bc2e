package loadtest

import (
	"context"
	"fmt"
	"net"
	"runtime"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// Noop is an Authorization server that allows every check at once. Load against it measures what the gRPC stack,
// protobuf decoding and the generator cost on this machine, the ceiling no authorization logic can beat.
type Noop struct {
	grpc *grpc.Server
	lis  net.Listener
	done chan struct{}
}

// noopServer answers every Check with the same OK response.
type noopServer struct {
	authv3.UnimplementedAuthorizationServer
	ok *authv3.CheckResponse
}

func (s *noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.ok, nil
}

// StartNoop listens on addr (host:port; port 0 picks one) and serves until Stop.
func StartNoop(addr string) (*Noop, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("loadtest: noop listen: %w", err)
	}
	// Stream workers as the service uses them, so that the two differ only in the work of a check.
	n := &Noop{grpc: grpc.NewServer(grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0)))), lis: lis, done: make(chan struct{})}
	authv3.RegisterAuthorizationServer(n.grpc, &noopServer{ok: &authv3.CheckResponse{
		Status:       &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}})
	go func() {
		defer close(n.done)
		_ = n.grpc.Serve(lis)
	}()
	return n, nil
}

// Addr is the address the server listens on.
func (n *Noop) Addr() string { return n.lis.Addr().String() }

// Stop closes the listener and every connection and waits for the server to return.
func (n *Noop) Stop() {
	n.grpc.Stop()
	<-n.done
}
