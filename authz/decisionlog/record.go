package decisionlog

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/open-policy-agent/opa/v1/ast"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/telemetry"
	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

// Bounds on strings a client controls, so one request cannot make a huge record.
const (
	maxIDBytes     = 128
	maxReasonBytes = 128
	maxMethodBytes = 32
	maxPathBytes   = 2048
)

// RecordOptions say what goes into a record beyond the fixed fields.
type RecordOptions struct {
	// IncludeInput logs the policy input, less the authorization headers and what Masker names.
	IncludeInput bool
	// Masker names what else to remove from a logged input (the policy's mask rule); nil removes only the
	// authorization headers.
	Masker Masker
	// DecisionPath is the decision's path as OPA writes it ("envoy/authz/allow"), for the event that the
	// mask rule sees.
	DecisionPath string
	// IncludePath logs the request path without its query. Off, records carry only the policy's route id.
	IncludePath bool
	// HashSubject replaces the subject, in the record and in a logged input, with its HMAC-SHA-256 keyed with
	// SubjectSalt, so that records of one subject can be correlated without naming them.
	HashSubject bool
	SubjectSalt []byte
	// MaxInputBytes bounds the request (path, headers and body) whose input is logged; a larger one is logged
	// without input, as erased "/input". It bounds what a stalled sink makes the buffer hold.
	// DefaultMaxInputBytes when 0.
	MaxInputBytes int
}

// DefaultMaxInputBytes is the default of RecordOptions.MaxInputBytes.
const DefaultMaxInputBytes = 64 << 10

// recorder turns what a check handed over into a record. It runs on the Logger's goroutine only.
type recorder struct {
	opts RecordOptions
	log  *slog.Logger
}

func newRecorder(opts RecordOptions, log *slog.Logger) (recorder, error) {
	if opts.HashSubject && len(opts.SubjectSalt) == 0 {
		return recorder{}, errors.New("decisionlog: hashing the subject needs a salt")
	}
	return recorder{opts: opts, log: log}, nil
}

// entry is what a check hands over: the few strings a record needs, copied out on the request path so that
// a buffered record does not hold on to the request (whose body may be megabytes), and the policy input only
// when it is to be logged and small enough.
type entry struct {
	start     time.Time
	duration  time.Duration
	decision  string
	reason    string
	status    int
	requestID string
	method    string
	path      string // only with IncludePath
	tracePar  string // traceparent header, for the trace id when tracing is off
	span      trace.SpanContext
	issuer    string
	subject   string
	clientID  string
	route     string
	revision  string
	input     ast.Value // only with IncludeInput
	inputSkip bool      // the input was too large to keep
}

// capture runs on the request path: map lookups and string copies only.
func (r recorder) capture(ctx context.Context, info *server.CheckInfo) entry {
	httpReq := info.Request.GetAttributes().GetRequest().GetHttp()
	headers := httpReq.GetHeaders()
	e := entry{
		start:     info.Start,
		duration:  info.Duration,
		requestID: firstNonEmpty(headers["x-request-id"], httpReq.GetId()),
		method:    httpReq.GetMethod(),
		tracePar:  headers["traceparent"],
		span:      trace.SpanContextFromContext(ctx),
	}
	e.decision, e.reason, e.status = info.Outcome()
	if r.opts.IncludePath {
		e.path, _, _ = strings.Cut(httpReq.GetPath(), "?")
	}
	if tok := info.Token; tok != nil {
		e.issuer, e.subject = tok.Issuer, tok.Subject
		e.clientID = tok.ClientID
	}
	if d := info.Decision; d != nil {
		e.revision = d.Revision
		e.route, _ = d.DynamicMetadata["route"].(string)
	}
	if r.opts.IncludeInput && info.Input != nil {
		if requestBytes(httpReq) > r.maxInputBytes() {
			e.inputSkip = true
		} else {
			e.input = info.Input.Value()
		}
	}
	return e
}

// requestBytes estimates the size of a request's input from what dominates it: path, headers and body.
func requestBytes(r interface {
	GetPath() string
	GetHeaders() map[string]string
	GetBody() string
	GetRawBody() []byte
}) int {
	n := len(r.GetPath()) + len(r.GetBody()) + len(r.GetRawBody())
	for k, v := range r.GetHeaders() {
		n += len(k) + len(v)
	}
	return n
}

func (r recorder) maxInputBytes() int {
	if r.opts.MaxInputBytes > 0 {
		return r.opts.MaxInputBytes
	}
	return DefaultMaxInputBytes
}

// record builds the record of an entry, on the Logger's goroutine.
func (r recorder) record(ctx context.Context, e entry) *authzv1.DecisionLog {
	rec := &authzv1.DecisionLog{
		Timestamp:      timestamppb.New(e.start),
		DecisionId:     uuid.NewString(),
		RequestId:      clean(e.requestID, maxIDBytes),
		Issuer:         clean(e.issuer, maxIDBytes*4),
		ClientId:       clean(e.clientID, maxIDBytes),
		Method:         clean(e.method, maxMethodBytes),
		Route:          clean(e.route, maxIDBytes),
		Path:           clean(e.path, maxPathBytes),
		Decision:       decisionEnum(e.decision),
		Reason:         clean(e.reason, maxReasonBytes),
		HttpStatus:     int32(e.status),
		PolicyRevision: e.revision,
		Latency:        durationpb.New(e.duration),
	}
	rec.Subject, rec.SubjectHashed = r.subject(e.subject)
	if e.span.IsValid() {
		rec.TraceId, rec.SpanId = e.span.TraceID().String(), e.span.SpanID().String()
	} else if e.tracePar != "" {
		// Tracing is off: the trace Envoy (or the client) started still ties this record to it.
		carrier := propagation.MapCarrier{"traceparent": e.tracePar}
		if sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(ctx, carrier)); sc.IsValid() {
			rec.TraceId = sc.TraceID().String()
		}
	}
	switch {
	case e.input != nil:
		rec.Input, rec.Erased = r.input(ctx, rec, e.input)
	case e.inputSkip:
		rec.Erased = []string{"/input"}
	}
	return rec
}

// subject returns the subject to log and whether it is hashed.
func (r recorder) subject(sub string) (string, bool) {
	if sub == "" {
		return "", false
	}
	if !r.opts.HashSubject {
		return clean(sub, maxIDBytes*2), false
	}
	return hashSubject(r.opts.SubjectSalt, sub), true
}

func hashSubject(salt []byte, sub string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(sub))
	return hex.EncodeToString(m.Sum(nil))
}

func decisionEnum(d string) authzv1.Decision {
	switch d {
	case server.DecisionAllow:
		return authzv1.Decision_DECISION_ALLOW
	case server.DecisionDeny:
		return authzv1.Decision_DECISION_DENY
	}
	return authzv1.Decision_DECISION_ERROR
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// clean bounds a client-controlled string and masks what may be a card number or a token in it.
func clean(s string, limit int) string {
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "")
	}
	return telemetry.Redact(s)
}
