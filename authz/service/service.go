// Package service assembles the authorization service from its configuration: the development issuer when
// enabled, the token verifier, the policy engine and the gRPC server, and runs it until its context ends.
package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/filewatch"
	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/server"
	"github.com/finauthz/authz/authz/token"
)

// Options are what the configuration file cannot say.
type Options struct {
	// BuiltinPolicies is the policy library compiled into the binary, used when policy.builtin is true.
	BuiltinPolicies fs.FS
	Logger          *slog.Logger

	// OnPolicyReload, when set, is called after each reload of policy.paths that a file change caused: with the
	// new revision and a nil error when a new policy was swapped in, or with the revision still serving and the
	// error when the files did not load or compile (the previous policy keeps serving). A change that leaves the
	// content as it was is not reported. It runs on the watch's goroutine, one call at a time.
	OnPolicyReload func(revision string, err error)
	// OnCertificateReload, when set, is called after each reload of the tls.* files: with the new leaf
	// certificate when it was swapped in, or with nil and the error when the files did not load (the previous
	// certificate keeps serving).
	OnCertificateReload func(leaf *x509.Certificate, err error)
	// OnCheckRejected, when set, is called for each check refused because max_concurrent_checks were in
	// progress. It runs on the request path: keep it cheap.
	OnCheckRejected func()
}

// Service is a configured, started authorization service.
type Service struct {
	cfg      *config.Config
	log      *slog.Logger
	lis      net.Listener
	grpc     *grpc.Server
	srv      *server.Server
	verifier *token.Verifier
	policy   *policy.Engine
	dev      *http.Server
	devLis   net.Listener
	tel      telemetryParts
	watchers []*filewatch.Watcher // policy and certificate files; Run runs them
}

// New builds every component and binds the listeners, so that a port already in use or a policy that does not
// compile stops the start with an error. Nothing is served until Run.
func New(ctx context.Context, cfg *config.Config, opts Options) (_ *Service, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := s.startTelemetry(ctx, &opts); err != nil {
		return nil, err
	}
	log = s.log // redacted (telemetry.go)

	issuers := make([]token.Issuer, 0, len(cfg.JWT.Issuers)+1)
	for _, is := range cfg.JWT.Issuers {
		issuers = append(issuers, token.Issuer{
			Issuer: is.Issuer, JWKSURI: is.JWKSURI, Audiences: is.Audiences, Algorithms: is.Algorithms, Types: is.Types,
		})
	}
	if cfg.DevIssuer.Enabled {
		is, err := s.startDevIssuer()
		if err != nil {
			return nil, err
		}
		issuers = append(issuers, is)
	}

	pc := policy.Config{
		Paths: cfg.Policy.Paths, Query: cfg.Policy.Query, ValidationQuery: cfg.Policy.ValidationQuery, Logger: log,
		DecisionCacheSize: cfg.Policy.DecisionCache.Size, DecisionCacheTTL: cfg.Policy.DecisionCache.TTL.D(),
	}
	if cfg.Policy.Builtin {
		if opts.BuiltinPolicies == nil {
			return nil, errors.New("service: policy.builtin is set but this binary has no builtin policies")
		}
		pc.FS, pc.Paths = opts.BuiltinPolicies, []string{"."}
	}
	if s.policy, err = policy.New(ctx, pc); err != nil {
		return nil, err // the policy package names itself
	}
	if !cfg.Policy.Builtin {
		if err := s.watchPolicy(cfg.Policy.Paths, opts.OnPolicyReload); err != nil {
			return nil, fmt.Errorf("policy.paths: %w", err)
		}
	}

	j := cfg.JWT
	s.verifier, err = token.NewVerifier(context.WithoutCancel(ctx), token.Config{
		Issuers:            issuers,
		Leeway:             j.Leeway.D(),
		MaxTokenBytes:      j.MaxTokenBytes,
		RefreshInterval:    j.RefreshInterval.D(),
		UnknownKIDCooldown: j.UnknownKIDCooldown.D(),
		MaxStale:           j.MaxStale.D(),
		FetchTimeout:       j.FetchTimeout.D(),
		MaxJWKSBytes:       int64(j.MaxJWKSBytes),
		CacheSize:          j.CacheSize,
		Logger:             log,
		OnFetch:            s.jwksFetched(),
	})
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}

	s.srv, err = server.New(s.observe(server.Config{
		Verifier: s.verifier, Policy: s.policy, Logger: log, AllowNonNormalizedPaths: !cfg.RejectNonNormalizedPaths,
		MaxDenialLogsPerSecond: cfg.Log.MaxDenialsPerSecond, // -1: every denial
	}))
	if err != nil {
		return nil, err
	}
	if !cfg.RejectNonNormalizedPaths {
		log.Warn("reject_non_normalized_paths is off: the policy decides on paths as they arrive, which is safe only " +
			"if the application reads every path exactly as the policy does")
	}
	transport, err := s.transportOptions(ctx, opts)
	if err != nil {
		return nil, err
	}
	transport = append(transport, s.srv.ServerOptions()...)
	s.grpc = grpc.NewServer(append(transport,
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Checks run on long-lived workers whose stacks have grown to what a check needs, instead of on a new
		// goroutine per call that grows its stack again each time (about a tenth of the CPU under load).
		grpc.NumStreamWorkers(streamWorkers()),
	)...)
	s.srv.Register(s.grpc)
	if s.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s.lis = s.limitConnections(s.lis)
	return s, nil
}

// streamWorkers is the number of gRPC stream workers: a few per CPU, so that calls waiting on a JWKS fetch do
// not hold up the others (a call finding every worker busy runs on a goroutine of its own).
func streamWorkers() uint32 { return uint32(4 * runtime.GOMAXPROCS(0)) }

// startDevIssuer serves the development issuer's JWKS on its loopback listener and returns it as an issuer.
func (s *Service) startDevIssuer() (token.Issuer, error) {
	dev, err := devissuer.Open(s.cfg.DevIssuer.KeyFile)
	if err != nil {
		return token.Issuer{}, err
	}
	if s.devLis, err = net.Listen("tcp", s.cfg.DevIssuer.Listen); err != nil {
		return token.Issuer{}, fmt.Errorf("dev_issuer.listen: %w", err)
	}
	s.dev = &http.Server{Handler: dev.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.dev.Serve(s.devLis) }()
	s.log.Warn("development issuer enabled: never use this configuration in production",
		slog.String("issuer", devissuer.IssuerURL), slog.String("jwks", "http://"+s.devLis.Addr().String()+devissuer.JWKSPath))
	return token.Issuer{
		Issuer:     devissuer.IssuerURL,
		JWKSURI:    "http://" + s.devLis.Addr().String() + devissuer.JWKSPath,
		Audiences:  []string{devissuer.Audience},
		Algorithms: []string{"ES256"},
	}, nil
}

// Addr is the gRPC listener's address.
func (s *Service) Addr() net.Addr { return s.lis.Addr() }

// Ready reports whether the service can decide: the policy is compiled (it is, once New returned) and every
// issuer has keys.
func (s *Service) Ready() (bool, string) { return s.verifier.Ready() }

// Run serves until ctx ends, then stops accepting, lets in-flight checks finish within the grace period, and
// releases everything. It returns nil after a clean drain.
func (s *Service) Run(ctx context.Context) error {
	defer s.close()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.srv.WatchReadiness(watchCtx, s.Ready, 250*time.Millisecond)
	stopWatchers := s.runWatchers(ctx)
	defer stopWatchers()

	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	s.serveAdmin()
	s.log.Info("serving", slog.String("listen", s.lis.Addr().String()))

	select {
	case err := <-errc:
		return fmt.Errorf("grpc: %w", err)
	case <-ctx.Done():
	}
	stopWatch()
	s.srv.Shutdown()
	s.log.Info("draining", slog.Duration("grace_period", s.cfg.GracePeriod.D()))
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.GracePeriod.D()):
		s.log.Warn("grace period over: closing remaining connections")
		s.grpc.Stop()
	}
	return nil
}

func (s *Service) close() {
	s.closeWatchers()
	if s.grpc != nil {
		s.grpc.Stop()
	} else if s.lis != nil {
		s.lis.Close()
	}
	if s.dev != nil {
		s.dev.Close()
	} else if s.devLis != nil {
		s.devLis.Close()
	}
	if s.verifier != nil {
		s.verifier.Close()
	}
	s.closeTelemetry()
}
