package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/finauthz/authz/authz/config"
)

// tls12CipherSuites are the TLS 1.2 suites offered: forward secrecy (ECDHE) and authenticated encryption only.
// RFC 9325 §4.2 (BCP 195) recommends these AES-GCM suites; ChaCha20-Poly1305 is the AEAD for clients without AES
// hardware. No CBC, no RSA key exchange. TLS 1.3 suites are all AEAD and not configurable in crypto/tls.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// certStore holds the listener's certificate and client CAs, read from the tls.* files, and swaps them when the
// files change: each handshake takes the snapshot current when it starts, and a file that does not load keeps
// the previous snapshot serving.
type certStore struct {
	cfg      config.TLS
	log      *slog.Logger
	onReload func(leaf *x509.Certificate, err error)

	current atomic.Pointer[tlsSnapshot]
	mu      sync.Mutex // serialises reloads
}

// tlsSnapshot is one loaded set of files, immutable once published.
type tlsSnapshot struct {
	config *tls.Config
	leaf   *x509.Certificate
	digest [sha256.Size]byte // of the files' contents, to skip a reload that changes nothing
}

func newCertStore(ctx context.Context, cfg config.TLS, log *slog.Logger, onReload func(*x509.Certificate, error)) (*certStore, error) {
	c := &certStore{cfg: cfg, log: log, onReload: onReload}
	snap, err := c.load(time.Now())
	if err != nil {
		return nil, err
	}
	c.current.Store(snap)
	log.LogAttrs(ctx, slog.LevelInfo, "tls certificate loaded", append(leafAttrs(snap.leaf), slog.String("mode", string(cfg.Mode())))...)
	return c, nil
}

// files are the paths to watch.
func (c *certStore) files() []string {
	files := []string{c.cfg.CertFile, c.cfg.KeyFile}
	if c.cfg.ClientCAFile != "" {
		files = append(files, c.cfg.ClientCAFile)
	}
	return files
}

// serverConfig is the listener's tls.Config: every handshake gets the current snapshot.
func (c *certStore) serverConfig() *tls.Config {
	cfg := baseTLSConfig(c.cfg)
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return c.current.Load().config, nil }
	return cfg
}

// reload re-reads the files and swaps the snapshot in when they load and differ from the serving one.
func (c *certStore) reload(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.current.Load()
	snap, err := c.load(time.Now())
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelError, "tls certificate reload failed: the previous certificate keeps serving",
			append(leafAttrs(old.leaf), slog.String("error", err.Error()))...)
		if c.onReload != nil {
			c.onReload(nil, err)
		}
		return
	}
	if snap.digest == old.digest {
		return
	}
	c.current.Store(snap)
	c.log.LogAttrs(ctx, slog.LevelInfo, "tls certificate reloaded", leafAttrs(snap.leaf)...)
	if c.onReload != nil {
		c.onReload(snap.leaf, nil)
	}
}

// load reads the files into a snapshot. Errors name the configuration key; they never quote key material.
func (c *certStore) load(now time.Time) (*tlsSnapshot, error) {
	certPEM, err := os.ReadFile(c.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(c.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file, tls.key_file: %w", err)
	}
	leaf := cert.Leaf
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tls.cert_file: certificate %x expired at %s", leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)

	cfg := baseTLSConfig(c.cfg)
	cfg.Certificates = []tls.Certificate{cert}
	if c.cfg.ClientCAFile != "" {
		caPEM, err := os.ReadFile(c.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool, err := certPool(caPEM)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file %s: %w", c.cfg.ClientCAFile, err)
		}
		h.Write(caPEM)
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	snap := &tlsSnapshot{config: cfg, leaf: leaf}
	h.Sum(snap.digest[:0])
	return snap, nil
}

// baseTLSConfig holds the protocol settings shared by the listener's config and every snapshot.
func baseTLSConfig(t config.TLS) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12CipherSuites,
		NextProtos:   []string{"h2"},
		// A resumed session skips certificate verification, so a client CA removed from client_ca_file would
		// keep admitting its clients until their tickets expire. Envoy's gRPC connections are long-lived; a full
		// handshake per connection costs little.
		SessionTicketsDisabled: true,
	}
	if t.MinVersion == "tls1.3" {
		cfg.MinVersion = tls.VersionTLS13
	}
	return cfg
}

// certPool parses every CERTIFICATE block of pemData; anything else in the file, or no certificate at all, is an
// error rather than a silently smaller trust set.
func certPool(pemData []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := bytes.TrimSpace(pemData); len(rest) > 0; rest = bytes.TrimSpace(rest) {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("not PEM")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("no certificates")
	}
	return pool, nil
}

func leafAttrs(leaf *x509.Certificate) []slog.Attr {
	return []slog.Attr{
		slog.String("serial", fmt.Sprintf("%x", leaf.SerialNumber)),
		slog.String("subject", leaf.Subject.String()),
		slog.Time("not_after", leaf.NotAfter),
	}
}
