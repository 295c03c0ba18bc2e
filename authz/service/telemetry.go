package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"

	"github.com/finauthz/authz/authz/checkwire"
	"github.com/finauthz/authz/authz/decisionlog"
	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/telemetry"
)

// telemetryFlushTimeout bounds how long a stopping service waits for decision logs and spans to be written.
const telemetryFlushTimeout = 5 * time.Second

// minSaltBytes is the shortest subject salt accepted: the salt is what keeps hashed subjects from being
// recomputed from a list of customer ids.
const minSaltBytes = 16

// telemetryParts are the service's observability components. metrics is always set; the others are nil when
// the configuration leaves them off.
type telemetryParts struct {
	metrics  *telemetry.Metrics
	tracing  *telemetry.Tracing
	dlog     *decisionlog.Logger
	admin    *http.Server
	adminLis net.Listener
}

// startTelemetry sets up redacted logging, metrics, tracing and the decision log, and binds the admin listener.
// It wraps opts.OnPolicyReload and opts.OnCheckRejected so that policy reloads and checks refused by
// max_concurrent_checks are counted too.
func (s *Service) startTelemetry(ctx context.Context, opts *Options) error {
	cfg := s.cfg
	s.log = slog.New(telemetry.NewRedactingHandler(s.log.Handler()))
	m := telemetry.NewMetrics()
	s.tel.metrics = m
	onReload := opts.OnPolicyReload
	opts.OnPolicyReload = func(revision string, err error) {
		m.PolicyReloaded(revision, err)
		if onReload != nil {
			onReload(revision, err)
		}
	}
	onReject := opts.OnCheckRejected
	opts.OnCheckRejected = func() {
		m.CheckRejected()
		if onReject != nil {
			onReject()
		}
	}

	if t := cfg.Tracing; t.Enabled {
		tr, err := telemetry.NewTracing(ctx, telemetry.TracingConfig{
			Endpoint:       t.Endpoint,
			SampleRatio:    t.Ratio(),
			ServiceName:    t.ServiceName,
			ServiceVersion: buildVersion(),
		})
		if err != nil {
			return err
		}
		s.tel.tracing = tr
	}
	if cfg.DecisionLog.Enabled {
		dl, err := s.newDecisionLog(ctx, opts)
		if err != nil {
			return err
		}
		s.tel.dlog = dl
		m.WatchDecisionLog(func() telemetry.DecisionLogCounts {
			c := dl.Counts()
			return telemetry.DecisionLogCounts{Written: c.Written, BufferFull: c.BufferFull, SinkFailed: c.SinkFailed}
		})
	}
	if cfg.Admin.On() {
		lis, err := net.Listen("tcp", cfg.Admin.Listen)
		switch {
		case err != nil && cfg.Admin.ListenDefaulted:
			// Another instance on this host holds the default port. Authorization must not fail over an
			// auxiliary listener that nobody configured; operators who rely on it set admin.listen.
			s.log.Warn("admin listener not started: its default address is in use; set admin.listen",
				slog.String("listen", cfg.Admin.Listen), slog.String("error", err.Error()))
		case err != nil:
			return fmt.Errorf("admin.listen: %w", err)
		default:
			s.tel.adminLis = lis
		}
	}
	return nil
}

// newDecisionLog builds the decision log and its sink from decision_log.*.
func (s *Service) newDecisionLog(ctx context.Context, opts *Options) (*decisionlog.Logger, error) {
	d := s.cfg.DecisionLog
	decisionPath := strings.ReplaceAll(strings.TrimPrefix(s.cfg.Policy.Query, "data."), ".", "/")
	rec := decisionlog.RecordOptions{
		IncludeInput: d.IncludeInput,
		IncludePath:  d.IncludePath,
		HashSubject:  d.HashSubject,
		DecisionPath: decisionPath,
	}
	if d.HashSubject {
		salt, err := os.ReadFile(d.SubjectSaltFile)
		if err != nil {
			return nil, fmt.Errorf("decision_log.subject_salt_file: %w", err)
		}
		if rec.SubjectSalt = bytes.TrimSpace(salt); len(rec.SubjectSalt) < minSaltBytes {
			return nil, fmt.Errorf("decision_log.subject_salt_file: %s holds %d bytes, want at least %d",
				d.SubjectSaltFile, len(rec.SubjectSalt), minSaltBytes)
		}
	}
	if d.IncludeInput {
		mc := decisionlog.RegoMaskerConfig{Paths: s.cfg.Policy.Paths, Query: d.MaskQuery}
		if s.cfg.Policy.Builtin {
			mc.FS, mc.Paths = opts.BuiltinPolicies, []string{"."}
		}
		masker, err := decisionlog.NewRegoMasker(ctx, mc)
		if err != nil {
			return nil, fmt.Errorf("decision_log.mask_query: %w", err)
		}
		rec.Masker = masker
	}

	lc := decisionlog.Config{Buffer: d.Buffer, Record: rec, Logger: s.log}
	switch d.Sink {
	case "stdout":
		lc.Sink = decisionlog.NewLinesSink(os.Stdout)
	case "file":
		sink, err := decisionlog.OpenFileSink(d.File)
		if err != nil {
			return nil, fmt.Errorf("decision_log.file: %w", err)
		}
		lc.Sink = sink
	case "http":
		h := d.HTTP
		sink, err := decisionlog.NewHTTPSink(decisionlog.HTTPSinkConfig{
			URL:             h.URL,
			Timeout:         h.Timeout.D(),
			MaxRetries:      h.Retries(),
			BearerTokenFile: h.BearerTokenFile,
			Labels:          map[string]string{"id": uuid.NewString(), "app": "authz", "version": buildVersion()},
			DecisionPath:    decisionPath,
		})
		if err != nil {
			return nil, fmt.Errorf("decision_log.http: %w", err)
		}
		lc.Sink, lc.BatchSize, lc.FlushInterval = sink, h.BatchSize, h.FlushInterval.D()
	default:
		return nil, fmt.Errorf("decision_log.sink: %q passed validation", d.Sink)
	}
	return decisionlog.New(lc)
}

// observe adds the observers to the server's configuration, and wraps the verifier and the policy in spans
// when tracing is on.
func (s *Service) observe(sc server.Config) server.Config {
	var obs observers
	if tr := s.tel.tracing; tr != nil {
		sc.Verifier, sc.Policy = tr.Verifier(sc.Verifier), tr.Evaluator(sc.Policy)
		obs = append(obs, tr) // first, so that the others see the check's span in the context
	}
	issuers := make([]string, 0, len(s.cfg.JWT.Issuers)+1)
	for _, is := range s.cfg.JWT.Issuers {
		issuers = append(issuers, is.Issuer)
	}
	if s.cfg.DevIssuer.Enabled {
		issuers = append(issuers, devissuer.IssuerURL)
	}
	s.tel.metrics.WatchVerifier(s.verifier, issuers)
	s.tel.metrics.WatchDecisionCache(s.policy.DecisionCache())
	s.tel.metrics.WatchCheckDecoding(checkwire.Fallbacks)
	obs = append(obs, s.tel.metrics)
	if s.tel.dlog != nil {
		obs = append(obs, s.tel.dlog)
	}
	sc.Observer = obs
	return sc
}

// jwksFetched is the token verifier's OnFetch.
func (s *Service) jwksFetched() func(issuer string, err error) {
	return s.tel.metrics.JWKSFetched
}

// serveAdmin serves the admin listener until close.
func (s *Service) serveAdmin() {
	if s.tel.adminLis == nil {
		return
	}
	s.tel.admin = telemetry.AdminServer(telemetry.AdminConfig{
		Metrics: s.tel.metrics.Handler(),
		Ready:   s.srv.Serving,
		PProf:   s.cfg.Admin.PProf,
	})
	s.tel.admin.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	s.log.Info("admin listener serving", slog.String("listen", s.tel.adminLis.Addr().String()),
		slog.Bool("pprof", s.cfg.Admin.PProf))
	go func() {
		if err := s.tel.admin.Serve(s.tel.adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", slog.String("error", err.Error()))
		}
	}()
}

// AdminAddr is the admin listener's address, or nil when it does not run.
func (s *Service) AdminAddr() net.Addr {
	if s.tel.adminLis == nil {
		return nil
	}
	return s.tel.adminLis.Addr()
}

// closeTelemetry stops the admin listener, then writes the decision logs and spans still queued, each within
// telemetryFlushTimeout. Checks have stopped by then.
func (s *Service) closeTelemetry() {
	if s.tel.admin != nil {
		s.tel.admin.Close()
	} else if s.tel.adminLis != nil {
		s.tel.adminLis.Close()
	}
	if s.tel.dlog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), telemetryFlushTimeout)
		if err := s.tel.dlog.Close(ctx); err != nil {
			s.log.Warn("decision log not fully written at stop", slog.String("error", err.Error()))
		}
		cancel()
		if c := s.tel.dlog.Counts(); c.BufferFull+c.SinkFailed > 0 {
			s.log.Warn("decision log records were dropped",
				slog.Uint64("buffer_full", c.BufferFull), slog.Uint64("sink_error", c.SinkFailed))
		}
	}
	if s.tel.tracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), telemetryFlushTimeout)
		if err := s.tel.tracing.Shutdown(ctx); err != nil {
			s.log.Warn("spans not fully exported at stop", slog.String("error", err.Error()))
		}
		cancel()
	}
}

// observers calls several observers: CheckStart in order, CheckDone in reverse, so that the first (the
// tracing span) encloses the others.
type observers []server.Observer

func (o observers) CheckStart(ctx context.Context, req *authv3.CheckRequest) context.Context {
	for _, x := range o {
		ctx = x.CheckStart(ctx, req)
	}
	return ctx
}

func (o observers) CheckDone(ctx context.Context, info *server.CheckInfo) {
	for i := len(o) - 1; i >= 0; i-- {
		o[i].CheckDone(ctx, info)
	}
}

// buildVersion is the main module's version, "(devel)" in a development build.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
