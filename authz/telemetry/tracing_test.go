package telemetry

import (
	"context"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/finauthz/authz/authz/internal/stacktest"
)

const (
	envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpanID  = "00f067aa0ba902b7"
	testPAN      = "4111111111111111"
	apiKey       = "sk_live_5f2b9c1e0a7d4e3b"
)

func newTestTracing(t *testing.T, ratio float64) (*Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := NewTracing(context.Background(), TracingConfig{Exporter: exp, SampleRatio: ratio, ServiceName: "authz-test"})
	if err != nil {
		t.Fatal(err)
	}
	return tr, exp
}

func TestCheckSpanIsAChildOfTheRequestsTraceContext(t *testing.T) {
	tr, exp := newTestTracing(t, 1)
	st := newStack(t, nil)
	srv := st.server(t, tr, tr.Verifier(st.verifier), tr.Evaluator(st.policy))
	raw := st.mint(t, "alice")
	resp, err := srv.Check(context.Background(), stacktest.Request(t, "https://api.bank.test/accounts/acc-123/transactions?card="+testPAN,
		"authorization: Bearer "+raw,
		"x-api-key: "+apiKey,
		"traceparent: 00-"+envoyTraceID+"-"+envoySpanID+"-01",
		"tracestate: vendor=opaque",
	))
	if err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("check: %v %v", err, resp)
	}
	spans := flush(t, tr, exp)
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	check, verify, eval := byName[spanCheck], byName[spanVerify], byName[spanEval]
	if len(spans) != 3 || check.Name == "" || verify.Name == "" || eval.Name == "" {
		t.Fatalf("spans = %v, want %s, %s and %s", names(spans), spanCheck, spanVerify, spanEval)
	}
	if got := check.Parent.TraceID().String(); got != envoyTraceID || check.Parent.SpanID().String() != envoySpanID {
		t.Errorf("check span's parent = %s/%s, want the traceparent's %s/%s", got, check.Parent.SpanID(), envoyTraceID, envoySpanID)
	}
	if !check.Parent.IsRemote() || check.SpanContext.TraceState().Get("vendor") != "opaque" {
		t.Error("the parent is not the remote context of the headers, or tracestate was lost")
	}
	for _, child := range []tracetest.SpanStub{verify, eval} {
		if child.Parent.SpanID() != check.SpanContext.SpanID() {
			t.Errorf("%s is not a child of the check span", child.Name)
		}
	}
	attrs := attrMap(check.Attributes)
	if attrs["authz.decision"] != "allow" || attrs["authz.route"] != "transactions.list" || attrs["http.request.method"] != "GET" {
		t.Errorf("check span attributes = %v", attrs)
	}
	if attrMap(verify.Attributes)["authz.token.issuer"] == "" || attrMap(eval.Attributes)["authz.allowed"] != "true" {
		t.Errorf("verify attributes %v, eval attributes %v", verify.Attributes, eval.Attributes)
	}

	sig := raw[strings.LastIndex(raw, ".")+1:]
	for _, s := range spans {
		for k, v := range attrMap(s.Attributes) {
			for _, secret := range []string{raw[:20], sig[:20], testPAN, apiKey, "/accounts/acc-123", "alice"} {
				if strings.Contains(v, secret) {
					t.Errorf("span %s attribute %s = %q holds %q", s.Name, k, v, secret)
				}
			}
		}
	}
}

func TestSampling(t *testing.T) {
	tests := []struct {
		name      string
		ratio     float64
		header    string
		wantSpans int
	}{
		{"a sampled parent is followed whatever the ratio", 0, "00-" + envoyTraceID + "-" + envoySpanID + "-01", 1},
		{"an unsampled parent is followed whatever the ratio", 1, "00-" + envoyTraceID + "-" + envoySpanID + "-00", 0},
		{"without a parent the ratio decides: 1", 1, "", 1},
		{"without a parent the ratio decides: 0", 0, "", 0},
		{"a malformed traceparent counts as none", 1, "00-zz-" + envoySpanID + "-01", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, exp := newTestTracing(t, tc.ratio)
			var headers []string
			if tc.header != "" {
				headers = append(headers, "traceparent: "+tc.header)
			}
			req := stacktest.Request(t, "https://api.bank.test/fx/rates", headers...)
			ctx := tr.CheckStart(context.Background(), req)
			tr.CheckDone(ctx, checkInfo(req))
			if got := len(flush(t, tr, exp)); got != tc.wantSpans {
				t.Errorf("%d spans exported, want %d", got, tc.wantSpans)
			}
		})
	}
}

func TestTraceContextFromGRPCMetadataWhenTheHeadersHaveNone(t *testing.T) {
	tr, exp := newTestTracing(t, 0)
	req := stacktest.Request(t, "https://api.bank.test/fx/rates")
	ctx := metadata.NewIncomingContext(context.Background(),
		metadata.Pairs("traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01"))
	tr.CheckDone(tr.CheckStart(ctx, req), checkInfo(req))
	spans := flush(t, tr, exp)
	if len(spans) != 1 || spans[0].Parent.TraceID().String() != envoyTraceID {
		t.Fatalf("spans = %v, want one child of the metadata's trace context", names(spans))
	}
}

// collector is an OTLP/gRPC trace receiver on loopback.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
	trace []string
	got   chan struct{}
}

func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.names = append(c.names, s.GetName())
				c.trace = append(c.trace, hex.EncodeToString(s.GetTraceId()))
			}
		}
	}
	select {
	case c.got <- struct{}{}:
	default:
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func TestSpansReachAnOTLPCollector(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{got: make(chan struct{}, 1)}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, col)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	tr, err := NewTracing(context.Background(), TracingConfig{
		Endpoint: "http://" + lis.Addr().String(), SampleRatio: 1, ServiceName: "authz-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	req := stacktest.Request(t, "https://api.bank.test/fx/rates", "traceparent: 00-"+envoyTraceID+"-"+envoySpanID+"-01")
	tr.CheckDone(tr.CheckStart(context.Background(), req), checkInfo(req))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-col.got:
	case <-ctx.Done():
		t.Fatal("the collector received nothing")
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.names) != 1 || col.names[0] != spanCheck || col.trace[0] != envoyTraceID {
		t.Errorf("collector got spans %v in traces %v", col.names, col.trace)
	}
}

func TestNewTracingDoesNotNeedTheCollectorUp(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	tr, err := NewTracing(context.Background(), TracingConfig{Endpoint: "http://" + addr, SampleRatio: 1, ServiceName: "authz"})
	if err != nil {
		t.Fatalf("NewTracing with the collector down: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = tr.Shutdown(ctx) // bounded by ctx even though the export cannot succeed
}

// flush exports the spans ended so far and returns what the exporter holds. (Shutdown would empty it.)
func flush(t *testing.T, tr *Tracing, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	if err := tr.provider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return exp.GetSpans()
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}
