package telemetry

import (
	"context"
	"fmt"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/token"
)

// Span names.
const (
	spanCheck  = "envoy.service.auth.v3.Authorization/Check"
	spanVerify = "authz.token.verify"
	spanEval   = "authz.policy.eval"
)

// instrumentationName names the tracer, as OpenTelemetry asks: the instrumenting package's import path.
const instrumentationName = "github.com/finauthz/authz/authz/telemetry"

// TracingConfig configures Tracing.
type TracingConfig struct {
	// Endpoint is the OTLP/gRPC collector URL; http:// means plaintext. Ignored when Exporter is set.
	Endpoint string
	// SampleRatio is the share of checks traced that arrive without a trace context; a parent's sampling
	// decision is always followed.
	SampleRatio float64
	// ServiceName and ServiceVersion describe this service in the resource of every span.
	ServiceName    string
	ServiceVersion string
	// Exporter replaces the OTLP exporter (tests). Spans are exported in batches either way, from a bounded
	// queue that drops rather than blocks when the collector is slow.
	Exporter sdktrace.SpanExporter
}

// Tracing traces checks with OpenTelemetry. As a server.Observer it starts the check's span as a child of the
// W3C trace context the request carries; Verifier and Evaluator wrap the two phases in child spans. Span
// attributes are reason codes, route ids, issuers and revisions: never a token, a header value or a path.
type Tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

// NewTracing sets up a tracer provider that exports to cfg's collector. It does not connect yet: the exporter
// dials on first export, so a collector that is down costs spans, not the start.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	exp := cfg.Exporter
	if exp == nil {
		var err error
		exp, err = otlptracegrpc.New(ctx,
			otlptracegrpc.WithEndpointURL(cfg.Endpoint),
			otlptracegrpc.WithCompressor("gzip"),
			otlptracegrpc.WithTimeout(10*time.Second),
		)
		if err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Tracing{provider: tp, tracer: tp.Tracer(instrumentationName)}, nil
}

// Shutdown exports the spans still queued, within ctx, and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	return t.provider.Shutdown(ctx)
}

// CheckStart implements server.Observer: it starts the check's server span. Its parent is the trace context
// of the request's traceparent and tracestate headers; without those, the one in the gRPC metadata of the
// call (the trace context of Envoy's own ext_authz span, when Envoy traces).
func (t *Tracing) CheckStart(ctx context.Context, req *authv3.CheckRequest) context.Context {
	parent := t.prop.Extract(ctx, propagation.MapCarrier(req.GetAttributes().GetRequest().GetHttp().GetHeaders()))
	if !trace.SpanContextFromContext(parent).IsValid() {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			parent = t.prop.Extract(ctx, metadataCarrier(md))
		}
	}
	ctx, _ = t.tracer.Start(parent, spanCheck,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("rpc.system", "grpc"),
			attribute.String("rpc.service", "envoy.service.auth.v3.Authorization"),
			attribute.String("rpc.method", "Check"),
		))
	return ctx
}

// CheckDone implements server.Observer: it records the outcome on the check's span and ends it.
func (t *Tracing) CheckDone(ctx context.Context, info *server.CheckInfo) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		span.End()
		return
	}
	decision, reason, httpStatus := info.Outcome()
	attrs := []attribute.KeyValue{attribute.String("authz.decision", decision)}
	if reason != "" {
		attrs = append(attrs, attribute.String("authz.reason", reasonLabel(reason)))
	}
	if httpStatus != 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", httpStatus))
	}
	if m := info.Request.GetAttributes().GetRequest().GetHttp().GetMethod(); m != "" {
		attrs = append(attrs, attribute.String("http.request.method", methodLabel(m)))
	}
	if d := info.Decision; d != nil {
		if route, ok := d.DynamicMetadata["route"].(string); ok && route != "" {
			attrs = append(attrs, attribute.String("authz.route", Redact(truncate(route, 128))))
		}
		attrs = append(attrs, attribute.String("authz.policy.revision", d.Revision))
	}
	span.SetAttributes(attrs...)
	if decision == server.DecisionError {
		span.SetStatus(codes.Error, reason)
	}
	span.End()
}

// Verifier wraps v so that every verification is a span, with the issuer on success and the reason code on
// failure.
func (t *Tracing) Verifier(v server.Verifier) server.Verifier { return &tracedVerifier{t: t, next: v} }

// Evaluator wraps e so that every policy evaluation is a span, with the revision and the verdict.
func (t *Tracing) Evaluator(e server.Evaluator) server.Evaluator {
	return &tracedEvaluator{t: t, next: e}
}

type tracedVerifier struct {
	t    *Tracing
	next server.Verifier
}

func (v *tracedVerifier) Verify(ctx context.Context, raw string) (*token.Token, error) {
	ctx, span := v.t.tracer.Start(ctx, spanVerify)
	defer span.End()
	tok, err := v.next.Verify(ctx, raw)
	if err != nil {
		// The reason code only: a verification error may quote an issuer or kid taken from the token.
		span.SetAttributes(attribute.String("authz.reason", token.Reason(err)))
		span.SetStatus(codes.Error, token.Reason(err))
		return nil, err
	}
	span.SetAttributes(attribute.String("authz.token.issuer", tok.Issuer))
	return tok, nil
}

type tracedEvaluator struct {
	t    *Tracing
	next server.Evaluator
}

func (e *tracedEvaluator) EvalDerive(ctx context.Context, src policy.Source, derive func(*policy.Decision) any) (*policy.Decision, any, error) {
	ctx, span := e.t.tracer.Start(ctx, spanEval)
	defer span.End()
	d, derived, err := e.next.EvalDerive(ctx, src, derive)
	if err != nil {
		// Policy errors can quote input values; the span gets a fixed description.
		span.SetStatus(codes.Error, "policy evaluation failed")
		return nil, nil, err
	}
	span.SetAttributes(attribute.Bool("authz.allowed", d.Allowed), attribute.String("authz.policy.revision", d.Revision))
	return d, derived, nil
}

// reasonLabel maps a reason to the allow-list, as the metrics do.
func reasonLabel(reason string) string {
	for _, r := range knownReasons {
		if r == reason {
			return r
		}
	}
	return ReasonOther
}

// methodLabel keeps the standard HTTP methods and folds anything else into "_OTHER", as OpenTelemetry's HTTP
// semantic conventions ask.
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE":
		return m
	}
	return "_OTHER"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// metadataCarrier reads a trace context from gRPC metadata.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
