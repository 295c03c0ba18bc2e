package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/finauthz/authz/authz/config"
)

// testCA is a certificate authority that lives for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leafSpec describes a certificate to issue.
type leafSpec struct {
	serial   int64
	usage    x509.ExtKeyUsage // ServerAuth certificates carry 127.0.0.1 as their SAN
	notAfter time.Time        // zero: in a day
}

// issue returns a certificate and its private key in PEM form.
func (ca *testCA) issue(t testing.TB, l leafSpec) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if l.notAfter.IsZero() {
		l.notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(l.serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("leaf-%d", l.serial)},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     l.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{l.usage},
	}
	if l.usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// clientCert issues a client certificate as a tls.Certificate.
func (ca *testCA) clientCert(t testing.TB, serial int64, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	c, k := ca.issue(t, leafSpec{serial: serial, usage: usage})
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// writeFile replaces path's content with a rename, as cert-manager, editors and config management do.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// runService runs the service configured by yaml, relative paths resolved against dir, until the test ends, and
// returns its gRPC address.
func runService(t testing.TB, yaml, dir string, opts Options) string {
	t.Helper()
	return startObserved(t, yaml, dir, opts).svc.Addr().String()
}

// dial returns an Authorization client over creds.
func dial(t testing.TB, addr string, creds credentials.TransportCredentials) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// checkOnce sends one check for path with a 5s deadline.
func checkOnce(c authv3.AuthorizationClient, path string) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Check(ctx, checkRequest("GET", path, nil))
}

// handshake runs a TLS handshake with the service and returns the server's leaf certificate.
func handshake(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// tlsYAML is a service configuration with a public-path policy, the given tls section and extra keys.
func tlsYAML(t testing.TB, tlsSection string, extra string) string {
	t.Helper()
	p := newIDP(t, newSigner(t, "k", "ES256"))
	return fmt.Sprintf(`
listen: 127.0.0.1:0
grace_period: 2s
policy: {paths: [policy.rego]}
jwt:
  issuers:
    - {issuer: %s, jwks_uri: %s, audiences: [payments-api]}
tls: %s
%s`, issuerA, p.jwksURI(), tlsSection, extra)
}

// tlsDir is a directory holding the test policy and a server certificate of serial 100 from ca.
func tlsDir(t testing.TB, ca *testCA) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("testdata", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key := ca.issue(t, leafSpec{serial: 100, usage: x509.ExtKeyUsageServerAuth})
	for name, data := range map[string][]byte{"policy.rego": b, "server.crt": cert, "server.key": key, "ca.crt": ca.pem()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTLSListenerAcceptsOnlyModernProtocolsAndSuites(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "server CA")
	dir := tlsDir(t, ca)
	addr := runService(t, tlsYAML(t, "{cert_file: server.crt, key_file: server.key}", ""), dir, Options{})

	client := func(min, max uint16, suites ...uint16) *tls.Config {
		return &tls.Config{RootCAs: ca.pool(), MinVersion: min, MaxVersion: max, CipherSuites: suites, NextProtos: []string{"h2"}}
	}
	tests := []struct {
		name    string
		cfg     *tls.Config
		wantErr string // "" for a completed handshake
	}{
		{"TLS 1.3 is served", client(tls.VersionTLS13, tls.VersionTLS13), ""},
		{"TLS 1.2 with ECDHE and AES-GCM is served", client(tls.VersionTLS12, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), ""},
		{"TLS 1.2 with ECDHE and AES-256-GCM is served", client(tls.VersionTLS12, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384), ""},
		{"TLS 1.2 with ECDHE and ChaCha20-Poly1305 is served", client(tls.VersionTLS12, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256), ""},
		{"TLS 1.1 is refused", client(tls.VersionTLS10, tls.VersionTLS11), "protocol version not supported"},
		{"TLS 1.2 offering only CBC suites is refused", client(tls.VersionTLS12, tls.VersionTLS12,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256), "handshake failure"},
		{"TLS 1.2 offering only RSA key exchange is refused", client(tls.VersionTLS12, tls.VersionTLS12,
			tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384), "handshake failure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := handshake(addr, tc.cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tc.wantErr == "" && leaf.SerialNumber.Int64() != 100:
				t.Fatalf("served certificate serial %v, want 100", leaf.SerialNumber)
			case tc.wantErr != "" && err == nil:
				t.Fatal("handshake completed, want it refused")
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("handshake error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}

	t.Run("gRPC over TLS reaches the policy", func(t *testing.T) {
		resp, err := checkOnce(dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: ca.pool()})), "/public/fx")
		if err != nil {
			t.Fatal(err)
		}
		if got := summarise(resp); got.status != 200 {
			t.Fatalf("status %d, want 200", got.status)
		}
	})
	t.Run("plaintext client is refused", func(t *testing.T) {
		_, err := checkOnce(dial(t, addr, insecure.NewCredentials()), "/public/fx")
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("plaintext check: %v, want UNAVAILABLE", err)
		}
	})
	t.Run("client that does not trust the server's CA is refused", func(t *testing.T) {
		_, err := handshake(addr, &tls.Config{RootCAs: newTestCA(t, "other").pool()})
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("handshake: %v, want unknown authority", err)
		}
	})
}

func TestMTLSListenerRequiresAVerifiedClientCertificate(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "bank CA")
	dir := tlsDir(t, ca)
	addr := runService(t, tlsYAML(t, "{cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}", ""), dir, Options{})

	other := newTestCA(t, "other CA")
	tests := []struct {
		name  string
		certs []tls.Certificate
		want  codes.Code
	}{
		{"client certificate from the client CA is served", []tls.Certificate{ca.clientCert(t, 7, x509.ExtKeyUsageClientAuth)}, codes.OK},
		{"client without a certificate is refused", nil, codes.Unavailable},
		{"client certificate from another CA is refused", []tls.Certificate{other.clientCert(t, 8, x509.ExtKeyUsageClientAuth)}, codes.Unavailable},
		{"certificate not issued for client authentication is refused", []tls.Certificate{ca.clientCert(t, 9, x509.ExtKeyUsageServerAuth)}, codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				creds := credentials.NewTLS(&tls.Config{RootCAs: ca.pool(), Certificates: tc.certs, MaxVersion: version})
				resp, err := checkOnce(dial(t, addr, creds), "/public/fx")
				if got := status.Code(err); got != tc.want {
					t.Fatalf("TLS %x: check: %v, want %v", version, err, tc.want)
				}
				if err == nil && summarise(resp).status != 200 {
					t.Fatalf("TLS %x: status %d, want 200", version, summarise(resp).status)
				}
			}
		})
	}
}

// reloadEvent is one OnCertificateReload call.
type reloadEvent struct {
	leaf *x509.Certificate
	err  error
}

func TestCertificateReload(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "server CA")
	dir := tlsDir(t, ca)
	events := make(chan reloadEvent, 16)
	logs := &lockedBuffer{}
	addr := runService(t, tlsYAML(t, "{cert_file: server.crt, key_file: server.key}", ""), dir, Options{
		Logger:              slog.New(slog.NewTextHandler(logs, nil)),
		OnCertificateReload: func(leaf *x509.Certificate, err error) { events <- reloadEvent{leaf, err} },
	})
	client := &tls.Config{RootCAs: ca.pool()}
	serial := func() int64 {
		t.Helper()
		leaf, err := handshake(addr, client)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return leaf.SerialNumber.Int64()
	}
	waitSerial := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for got := serial(); got != want; got = serial() {
			if time.Now().After(deadline) {
				t.Fatalf("new handshakes still see serial %d, want %d", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	drain := func() {
		for {
			select {
			case <-events:
			default:
				return
			}
		}
	}
	waitFailedReload := func(want string) {
		t.Helper()
		for {
			select {
			case ev := <-events:
				// Files written one after the other may be read half-way: skip what a step in between caused.
				if ev.err != nil && strings.Contains(ev.err.Error(), want) {
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no failed reload reported within 5s (want %q)", want)
			}
		}
	}
	if got := serial(); got != 100 {
		t.Fatalf("serial at start = %d, want 100", got)
	}

	// Replaced certificate and key: new handshakes see the new certificate, without a restart.
	cert, key := ca.issue(t, leafSpec{serial: 200, usage: x509.ExtKeyUsageServerAuth})
	writeFile(t, filepath.Join(dir, "server.key"), key)
	writeFile(t, filepath.Join(dir, "server.crt"), cert)
	waitSerial(200)

	// A broken certificate file keeps the previous certificate serving, and says why.
	drain()
	writeFile(t, filepath.Join(dir, "server.crt"), []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"))
	waitFailedReload("tls.cert_file, tls.key_file")
	if got := serial(); got != 200 {
		t.Fatalf("after a broken certificate file: serial %d, want the previous 200", got)
	}

	// A certificate whose key has not been written yet is refused until the key arrives.
	drain()
	cert, key = ca.issue(t, leafSpec{serial: 300, usage: x509.ExtKeyUsageServerAuth})
	writeFile(t, filepath.Join(dir, "server.crt"), cert)
	waitFailedReload("private key does not match public key")
	if got := serial(); got != 200 {
		t.Fatalf("with a mismatched key: serial %d, want the previous 200", got)
	}
	writeFile(t, filepath.Join(dir, "server.key"), key)
	waitSerial(300)

	// An expired certificate is not swapped in.
	drain()
	cert, key = ca.issue(t, leafSpec{serial: 400, usage: x509.ExtKeyUsageServerAuth, notAfter: time.Now().Add(-time.Minute)})
	if err := os.WriteFile(filepath.Join(dir, "server.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), cert, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFailedReload("expired")
	if got := serial(); got != 300 {
		t.Fatalf("with an expired certificate: serial %d, want the previous 300", got)
	}

	out := logs.String()
	for _, want := range []string{"tls certificate reloaded", "tls certificate reload failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("log quotes key material:\n%s", out)
	}
}

func TestTLSFilesThatDoNotLoadStopTheStart(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "server CA")
	dir := tlsDir(t, ca)
	other, otherKey := ca.issue(t, leafSpec{serial: 5, usage: x509.ExtKeyUsageServerAuth})
	expired, expiredKey := ca.issue(t, leafSpec{serial: 6, usage: x509.ExtKeyUsageServerAuth, notAfter: time.Now().Add(-time.Hour)})
	for name, data := range map[string][]byte{
		"other.crt": other, "other.key": otherKey, "expired.crt": expired, "expired.key": expiredKey,
		"garbage.pem": []byte("not pem"), "key-as-ca.pem": otherKey,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		tls  string
		want string
	}{
		{"missing certificate file", "{cert_file: nope.crt, key_file: server.key}", "tls.cert_file: open "},
		{"missing key file", "{cert_file: server.crt, key_file: nope.key}", "tls.key_file: open "},
		{"key of another certificate", "{cert_file: server.crt, key_file: other.key}", "tls.cert_file, tls.key_file: tls: private key does not match public key"},
		{"expired certificate", "{cert_file: expired.crt, key_file: expired.key}", "tls.cert_file: certificate 6 expired at"},
		{"client CA file that is not PEM", "{cert_file: server.crt, key_file: server.key, client_ca_file: garbage.pem}", "tls.client_ca_file " + filepath.Join(dir, "garbage.pem") + ": not PEM"},
		{"client CA file holding a key", "{cert_file: server.crt, key_file: server.key, client_ca_file: key-as-ca.pem}", `unexpected PEM block "PRIVATE KEY"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tlsYAML(t, tc.tls, "")), "test.yaml", dir)
			if err != nil {
				t.Fatal(err)
			}
			svc, err := New(context.Background(), cfg, Options{})
			if err == nil {
				svc.close()
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestTLS12SuitesAreForwardSecretAEAD pins the suite list itself: grpc-go also drops suites HTTP/2 forbids, but
// the listener must not depend on that.
func TestTLS12SuitesAreForwardSecretAEAD(t *testing.T) {
	t.Parallel()
	for _, id := range tls12CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.HasPrefix(name, "TLS_ECDHE_") || !(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("%s is not ECDHE with AEAD", name)
		}
	}
	if cfg := baseTLSConfig(config.TLS{}); cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if cfg := baseTLSConfig(config.TLS{MinVersion: "tls1.3"}); cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion with tls1.3 = %x, want TLS 1.3", cfg.MinVersion)
	}
}
