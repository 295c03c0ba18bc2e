package loadtest

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// Noop is an Authorization server that allows every check at once. Load against it measures what the gRPC stack,
// protobuf decoding and the generator cost on this machine, the ceiling no authorization logic can beat.
type Noop struct {
	srv  *noopServer
	grpc *grpc.Server
	lis  net.Listener
	done chan struct{}
}

// noopServer answers every Check with the same OK response.
type noopServer struct {
	authv3.UnimplementedAuthorizationServer
	ok     *authv3.CheckResponse
	checks atomic.Uint64
}

func (s *noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.checks.Add(1)
	return s.ok, nil
}

// StartNoop listens on addr (host:port; port 0 picks one) and serves until Stop.
func StartNoop(addr string) (*Noop, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("loadtest: noop listen: %w", err)
	}
	// Stream workers as the service uses them, so that the two differ only in the work of a check.
	n := &Noop{
		srv: &noopServer{ok: &authv3.CheckResponse{
			Status:       &rpcstatus.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
		}},
		grpc: grpc.NewServer(grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0)))),
		lis:  lis,
		done: make(chan struct{}),
	}
	authv3.RegisterAuthorizationServer(n.grpc, n.srv)
	go func() {
		defer close(n.done)
		_ = n.grpc.Serve(lis)
	}()
	return n, nil
}

// Addr is the address the server listens on.
func (n *Noop) Addr() string { return n.lis.Addr().String() }

// Checks is how many checks the server has answered.
func (n *Noop) Checks() uint64 { return n.srv.checks.Load() }

// Stop closes the listener and every connection and waits for the server to return.
func (n *Noop) Stop() {
	n.grpc.Stop()
	<-n.done
}
