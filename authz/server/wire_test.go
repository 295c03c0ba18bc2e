package server

import (
	"context"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// serveGRPC serves f's server on loopback over real gRPC, with its ServerOptions when preEncoded is set, and
// returns a client.
func serveGRPC(t *testing.T, f *fixture, preEncoded bool) authv3.AuthorizationClient {
	t.Helper()
	var opts []grpc.ServerOption
	if preEncoded {
		opts = f.srv.ServerOptions()
	}
	gs := grpc.NewServer(opts...)
	f.srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func TestPreEncodedResponsesAreTheResponses(t *testing.T) {
	t.Parallel()
	// One Server on two gRPC servers, with and without the codec: the cached responses are the same objects.
	encoded := newFixture(t, 0)
	plainClient, encodedClient := serveGRPC(t, encoded, false), serveGRPC(t, encoded, true)
	ctx := context.Background()
	alice := encoded.mint(t, "alice")
	requests := []*authv3.CheckRequest{
		transactionsRequestID(t, alice, 1),
		transactionsRequestID(t, alice, 2), // the same decision, served from the cache
		transactionsRequestID(t, alice, 3),
		transactionsRequestID(t, encoded.mint(t, "bob"), 4), // another token, another key
		transactionsRequestID(t, "not.a.token", 5),          // 401, never pre-encoded
		transactionsRequestID(t, alice+"x", 6),              // a bad signature
		transactionsRequest(t, encoded.mint(t, "carol")),    // allowed again, for another subject
	}
	for i, req := range requests {
		got, err := encodedClient.Check(ctx, req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		// The same request checked in-process, and over gRPC without pre-encoding, answer the same.
		direct, err := encoded.srv.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		want, err := plainClient.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, direct) || !proto.Equal(got, want) {
			t.Errorf("request %d: pre-encoded answer\n%v\nin-process\n%v\nwithout pre-encoding\n%v", i, got, direct, want)
		}
	}
}
