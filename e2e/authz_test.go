package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startTimeout bounds how long the service may take to start and report SERVING: it compiles the policy and
// fetches its issuer's keys first.
const startTimeout = 60 * time.Second

// authzProc is a running authz serve process.
type authzProc struct {
	addr   string // gRPC listen address
	config string // path of its configuration file
	env    []string
	cmd    *exec.Cmd
	output *syncBuffer

	done    chan struct{} // closed when the process has exited
	waitErr error
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// processEnv is the environment of the processes a test starts: the test's own, with a home and caches in dir,
// so that nothing is read from or written to the user's.
func processEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "GORACE":
		default:
			env = append(env, kv)
		}
	}
	return append(env,
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		// A race report fails the process's exit status, which the tests check.
		"GORACE=halt_on_error=1",
	)
}

// startAuthz writes a configuration into a temporary directory (loopback ports, the development issuer with its
// key there, the repository's policies) and runs `authz serve --config` until the test ends. It returns once the
// service reports SERVING on grpc.health.v1.
func startAuthz(t *testing.T) *authzProc {
	t.Helper()
	needBinary(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := tryStartAuthz(t)
		if err == nil {
			return p
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatal(lastErr)
	return nil
}

func tryStartAuthz(t *testing.T) (*authzProc, error) {
	dir := t.TempDir()
	for _, d := range []string{"home", "cache", "config", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	config := filepath.Join(dir, "authz.yaml")
	yaml := fmt.Sprintf(`listen: %s
grace_period: 5s
policy:
  paths: [%q]
  validation_query: data.authz.lib.routing.errors
dev_issuer:
  enabled: true
  listen: 127.0.0.1:%d
  key_file: %q
log:
  level: info
  format: json
`, addr, filepath.Join(repoRoot, "policies"), freePort(t), filepath.Join(dir, "dev-issuer.key"))
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		return nil, err
	}

	p := &authzProc{addr: addr, config: config, env: processEnv(dir), output: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(authzBin, "serve", "--config", config)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("authz serve output:\n%s", p.output.String())
		}
	})
	if err := p.waitServing(); err != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("authz serve: %w\n%s", err, p.output.String())
	}
	return p, nil
}

// waitServing polls the gRPC health service until it answers SERVING, the process exits or startTimeout passes.
func (p *authzProc) waitServing() error {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		switch {
		case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
			return nil
		case err == nil:
			last = resp.GetStatus().String()
		default:
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before serving: %v", p.waitErr)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not SERVING after %v (last: %s)", startTimeout, last)
		}
	}
}

// mint runs `authz token --config` with args and returns the token it printed.
func (p *authzProc) mint(t *testing.T, args ...string) string {
	t.Helper()
	tok, err := p.tryMint(args...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (p *authzProc) tryMint(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, authzBin, append([]string{"token", "--config", p.config}, args...)...)
	cmd.Env = p.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("authz token %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	tok := strings.TrimSpace(stdout.String())
	if strings.Count(tok, ".") != 2 {
		return "", fmt.Errorf("authz token %s printed %q, not a compact JWS", strings.Join(args, " "), tok)
	}
	return tok, nil
}

// signal sends sig and waits up to timeout for the process to exit; it returns the exit error.
func (p *authzProc) signal(t *testing.T, sig syscall.Signal, timeout time.Duration) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		t.Fatalf("authz serve did not exit within %v of %v\n%s", timeout, sig, p.output.String())
		return errors.New("unreachable")
	}
}
