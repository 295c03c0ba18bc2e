package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/finauthz/authz/e2e/echo"
	"github.com/finauthz/authz/e2e/envoyproxy"
	"github.com/finauthz/authz/e2e/testpki"
	"github.com/finauthz/authz/envoy"
)

// checkTimeout replaces the sidecar's ext_authz timeout in the Go stand-in. The sidecar's budget is meant for a
// production node; here the service shares two cores with the rest of the test run, often under the race
// detector, and a check that misses it would fail a scenario for the wrong reason. The timeout path itself is
// tested in package envoyproxy.
const checkTimeout = 5 * time.Second

// frontend is the sidecar in front of the upstream: real Envoy or the Go stand-in.
type frontend interface {
	// baseURL is the sidecar's plaintext listener, as callers reach it.
	baseURL() string
	// mtls returns the base URL of a listener that verifies client certificates and a client presenting cert
	// (none when nil); ok is false when the sidecar has no such listener.
	mtls(cert *tls.Certificate) (base string, client *http.Client, ok bool)
}

// sidecarSetup is what a frontend is built from.
type sidecarSetup struct {
	authzAddr    string // the authz process's gRPC address
	upstreamAddr string // the echo server's address
	pki          *pki
}

// variant is one kind of sidecar.
type variant struct {
	name string
	// unavailable says why the variant cannot run on this machine; "" when it can.
	unavailable func() string
	start       func(t *testing.T, s sidecarSetup) frontend
}

var variants = []variant{
	{name: "go-stand-in", unavailable: func() string { return "" }, start: startStandIn},
	{name: "envoy", unavailable: envoyUnavailable, start: startEnvoy},
}

// forEachVariant runs f as a subtest per variant, skipping the variants this machine cannot run before anything starts.
func forEachVariant(t *testing.T, f func(t *testing.T, v variant)) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if why := v.unavailable(); why != "" {
				t.Skip(why)
			}
			f(t, v)
		})
	}
}

func envoyUnavailable() string {
	if _, err := exec.LookPath("envoy"); err != nil {
		return "no envoy binary on PATH"
	}
	return ""
}

// renderSidecar renders envoy/sidecar.yaml on the given ports.
func renderSidecar(t *testing.T, s sidecarSetup, listener, admin int) []byte {
	t.Helper()
	port := func(addr string) uint32 {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(n)
	}
	yaml, err := envoy.Sidecar(envoy.Ports{
		Listener: uint32(listener), Authz: port(s.authzAddr), App: port(s.upstreamAddr), Admin: uint32(admin),
	})
	if err != nil {
		t.Fatal(err)
	}
	return yaml
}

// sidecarConfig is the stand-in's configuration read from the rendered sidecar.yaml.
func sidecarConfig(t *testing.T, s sidecarSetup) envoyproxy.Config {
	t.Helper()
	b, err := envoy.Load(renderSidecar(t, s, freePort(t), freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := envoyproxy.FromBootstrap(b, "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// standIn is the Go stand-in running sidecar.yaml: a plaintext listener as in the file, and an mTLS listener
// with the same configuration for the scenarios that need a client certificate.
type standIn struct {
	plain, tls string
	roots      *tls.Config
}

func startStandIn(t *testing.T, s sidecarSetup) frontend {
	t.Helper()
	cfg := sidecarConfig(t, s)
	if cfg.Timeout < checkTimeout {
		cfg.Timeout = checkTimeout
	}
	serve := func(cfg envoyproxy.Config) string {
		p, err := envoyproxy.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Serve(l) }()
		t.Cleanup(func() { _ = p.Close(); <-done })
		return l.Addr().String()
	}
	f := &standIn{plain: "http://" + serve(cfg)}
	tlsCfg := cfg
	tlsCfg.TLS = &tls.Config{
		Certificates: []tls.Certificate{s.pki.server},
		ClientCAs:    s.pki.ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}
	f.tls = "https://" + serve(tlsCfg)
	f.roots = &tls.Config{RootCAs: s.pki.ca.Pool(), ServerName: pkiServerName}
	return f
}

func (f *standIn) baseURL() string { return f.plain }

func (f *standIn) mtls(cert *tls.Certificate) (string, *http.Client, bool) {
	cfg := f.roots.Clone()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return f.tls, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, true
}

// envoyProc is real Envoy running the rendered sidecar.yaml.
type envoyProc struct{ base string }

func startEnvoy(t *testing.T, s sidecarSetup) frontend {
	t.Helper()
	bin, err := exec.LookPath("envoy")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	listener, admin := freePort(t), freePort(t)
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, renderSidecar(t, s, listener, admin), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	// No hot restart: its shared memory would clash between Envoys started by parallel tests.
	cmd := exec.Command(bin, "-c", path, "--disable-hot-restart", "--log-level", "warn")
	cmd.Env = processEnv(dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("envoy output:\n%s", out.String())
		}
	})

	// Ready: the admin interface says LIVE and the ext_authz cluster's only host passed its health check, so
	// that the first scenario is not answered status_on_error by a cluster still warming.
	adminURL := "http://127.0.0.1:" + strconv.Itoa(admin)
	healthy := "ext_authz::" + s.authzAddr + "::health_flags::healthy"
	deadline := time.Now().Add(startTimeout)
	for {
		ready := adminGet(adminURL+"/ready") == "LIVE" && strings.Contains(adminGet(adminURL+"/clusters"), healthy)
		if ready {
			break
		}
		select {
		case <-done:
			t.Fatalf("envoy exited before it was ready:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("envoy not ready after %v:\n%s", startTimeout, out.String())
		}
	}
	return &envoyProc{base: "http://127.0.0.1:" + strconv.Itoa(listener)}
}

func adminGet(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (e *envoyProc) baseURL() string { return e.base }

func (e *envoyProc) mtls(*tls.Certificate) (string, *http.Client, bool) { return "", nil, false }

// startUpstream runs the echo application on loopback until the test ends.
func startUpstream(t *testing.T) (*echo.Server, string) {
	t.Helper()
	e := &echo.Server{}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, strings.TrimPrefix(srv.URL, "http://")
}

// pkiServerName is the name the sidecar's server certificate is issued to.
const pkiServerName = "sidecar.test"

// pki is the mesh CA of the tests and the certificates it issued.
type pki struct {
	ca     *testpki.CA
	server tls.Certificate
	// ops is a workload of the ops namespace, the only one the admin routes admit.
	ops tls.Certificate
	// payments is a workload of another namespace.
	payments tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := testpki.NewCA("e2e mesh CA")
	if err != nil {
		t.Fatal(err)
	}
	must := func(c tls.Certificate, err error) tls.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &pki{
		ca: ca,
		server: must(ca.Server(testpki.Leaf{
			CommonName: pkiServerName, DNSNames: []string{pkiServerName},
			SPIFFEID: "spiffe://bank.internal/ns/api/sa/sidecar",
		})),
		ops:      must(ca.Client(testpki.Leaf{CommonName: "change-runner", SPIFFEID: "spiffe://bank.internal/ns/ops/sa/change-runner"})),
		payments: must(ca.Client(testpki.Leaf{CommonName: "payments-api", SPIFFEID: "spiffe://bank.internal/ns/payments/sa/api"})),
	}
}

// describe names a request in failure messages.
func describe(method, path string) string { return fmt.Sprintf("%s %s", method, path) }
