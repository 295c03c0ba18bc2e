package server

import (
	"context"
	"net"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/finauthz/authz/authz/checkwire"
	"github.com/finauthz/authz/authz/internal/stacktest"
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

// A risk engine's score, forwarded by Envoy as filter metadata, decides a route that reads it, over real gRPC with
// the service's codec: the metadata is decoded on checkwire's direct path, not by the generic decoder. Not
// parallel, so that no other test moves the process-wide fallback count meanwhile.
func TestRiskScoreFromForwardedMetadata(t *testing.T) {
	f := newFixtureOf(t, stacktest.Policies(t, `
    - id: scored.read
      methods: [GET]
      path: /scored/{item_id}
      scopes:
        all_of: [accounts:read]
      risk:
        max: 70
        metadata:
          namespace: com.bank.risk
          key: score
      data_fields: [id]
`), 0, 0)
	client := serveGRPC(t, f, true)
	raw := f.mint(t, "alice")
	tests := []struct {
		name   string
		risk   map[string]any // the namespace's Struct; nil: not forwarded
		allow  bool
		reason string
	}{
		{"low score", map[string]any{"score": 12.5, "model": map[string]any{"name": "fraud-v7"}}, true, ""},
		{"low score as a string", map[string]any{"score": "12.5"}, true, ""},
		{"score at the maximum", map[string]any{"score": 70}, true, ""},
		{"high score", map[string]any{"score": 85.25, "signals": []any{"new_device", true, nil}}, false, "risk_too_high"},
		{"score of another kind", map[string]any{"score": []any{1.0}}, false, "risk_too_high"},
		{"no score", map[string]any{"band": "low"}, false, "risk_too_high"},
		{"namespace not forwarded", nil, false, "risk_too_high"},
	}
	before := checkwire.Fallbacks()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := stacktest.Request(t, "https://api.bank.test/scored/acc-123", "authorization: Bearer "+raw)
			if tt.risk != nil {
				s, err := structpb.NewStruct(tt.risk)
				if err != nil {
					t.Fatal(err)
				}
				req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"com.bank.risk": s}}
			}
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			allowed := codes.Code(resp.GetStatus().GetCode()) == codes.OK
			reason := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
			if allowed != tt.allow || reason != tt.reason {
				t.Errorf("allowed %v, reason %q; want %v, %q (%v)", allowed, reason, tt.allow, tt.reason, resp)
			}
		})
	}
	if n := checkwire.Fallbacks() - before; n != 0 {
		t.Errorf("%d of the checks went to the generic decoder", n)
	}
}
