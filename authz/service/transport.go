package service

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/filewatch"
	"github.com/finauthz/authz/authz/server"
)

const (
	// handshakeTimeout bounds a new connection's TLS handshake and HTTP/2 preface, so that connections that never
	// finish them cannot pile up.
	handshakeTimeout = 10 * time.Second
	// keepaliveTime and keepaliveTimeout detect a peer that vanished without closing (a killed node): the server
	// pings a connection idle for keepaliveTime and closes it when no answer comes within keepaliveTimeout.
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
	// maxHeaderListBytes bounds the HTTP/2 headers of a call; the CheckRequest itself travels in the body.
	maxHeaderListBytes = 1 << 20
)

// transportOptions returns the gRPC server options for the listener's limits and transport security, and sets up
// the certificate store and its file watch when TLS is configured.
func (s *Service) transportOptions(ctx context.Context, opts Options) ([]grpc.ServerOption, error) {
	cfg := s.cfg
	so := []grpc.ServerOption{
		grpc.MaxSendMsgSize(cfg.MaxResponseBytes),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentChecks)),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.ChainUnaryInterceptor(server.LimitChecks(server.Limits{
			MaxConcurrent: cfg.MaxConcurrentChecks,
			Timeout:       cfg.CheckTimeout.D(),
			OnReject:      opts.OnCheckRejected,
			Logger:        s.log,
		})),
	}
	if cfg.TLS.Mode() == config.TLSModePlaintext {
		if host, _, _ := net.SplitHostPort(cfg.Listen); !config.IsLoopback(host) {
			s.log.LogAttrs(ctx, slog.LevelWarn, "serving plaintext on a non-loopback address (tls.insecure_plaintext): "+
				"only safe when something else secures the connection", slog.String("listen", cfg.Listen))
		}
		return so, nil
	}
	certs, err := newCertStore(ctx, cfg.TLS, s.log, opts.OnCertificateReload)
	if err != nil {
		return nil, err
	}
	w, err := filewatch.New(filewatch.Config{Paths: certs.files(), OnChange: certs.reload, Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.watchers = append(s.watchers, w)
	return append(so, grpc.Creds(credentials.NewTLS(certs.serverConfig()))), nil
}

// runWatchers runs the file watches until ctx ends or the returned function is called; that function returns
// once every watch has stopped.
func (s *Service) runWatchers(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range s.watchers {
		wg.Go(func() { w.Run(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// closeWatchers releases watches that never ran (New failed after setting them up).
func (s *Service) closeWatchers() {
	for _, w := range s.watchers {
		w.Close()
	}
}

// limitConnections bounds the open connections of lis to cfg.MaxConnections (-1: no bound).
func (s *Service) limitConnections(lis net.Listener) net.Listener {
	if s.cfg.MaxConnections < 0 {
		return lis
	}
	return &limitListener{Listener: lis, max: int64(s.cfg.MaxConnections), log: s.log}
}

// limitListener closes a connection beyond max as soon as it is accepted, so that a flood of connections costs an
// accept and a close each, not a handshake, buffers and goroutines; the client sees the connection fail and
// Envoy's status_on_error applies.
type limitListener struct {
	net.Listener
	max      int64
	log      *slog.Logger
	open     atomic.Int64
	lastWarn atomic.Int64 // unix nanoseconds
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitConn{Conn: c, release: sync.OnceFunc(func() { l.open.Add(-1) })}, nil
		}
		l.open.Add(-1)
		c.Close()
		if now, last := time.Now().UnixNano(), l.lastWarn.Load(); now-last > int64(10*time.Second) && l.lastWarn.CompareAndSwap(last, now) {
			l.log.Warn("connection refused: max_connections reached", slog.Int64("max_connections", l.max))
		}
	}
}

type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	c.release()
	return c.Conn.Close()
}
