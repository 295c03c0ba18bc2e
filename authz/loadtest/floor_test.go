package loadtest

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// echoEnv, set in the environment of this test binary, makes it an echo server instead of running tests (see
// TestMain), so that BenchmarkLoopbackFloor crosses a process boundary as the load of authz bench does.
const echoEnv = "AUTHZ_LOADTEST_ECHO"

func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) != "" {
		if err := serveEcho(); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveEcho listens on a loopback port, prints its address on a line of its own, and echoes every connection's
// bytes back until stdin closes (its parent has gone).
func serveEcho() error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	if _, err := os.Stdout.WriteString(lis.Addr().String() + "\n"); err != nil {
		return err
	}
	for {
		conn, err := lis.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			_, _ = io.Copy(conn, conn)
		}()
	}
}

// startEcho runs this test binary as an echo server in a process of its own and returns its address.
func startEcho(tb testing.TB) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), echoEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			tb.Errorf("echo server: %v", err)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("echo server did not say its address: %v", err)
	}
	return strings.TrimSpace(line)
}

// BenchmarkLoopbackFloor is the machine's floor under the latencies of authz bench: one round trip of a
// CheckRequest's bytes over loopback TCP to an echo server in another process, one at a time (authz bench -c 1
// -conns 1 does the same with gRPC on both ends). It reports the round trip's p50 and p99 besides its mean:
// what the kernel and the scheduler cost, with neither gRPC nor any work of a server.
func BenchmarkLoopbackFloor(b *testing.B) {
	addr := startEcho(b)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	msg := devWorkload(b, 1).seq[0].req.wire.Materialize()
	got := make([]byte, len(msg))
	var h Histogram
	b.ReportAllocs()
	for b.Loop() {
		began := time.Now()
		if _, err := conn.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, got); err != nil {
			b.Fatal(err)
		}
		h.Record(time.Since(began))
	}
	if string(got) != string(msg) {
		b.Fatal("the echo differs from the message")
	}
	b.ReportMetric(float64(h.Quantile(0.50).Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(h.Quantile(0.99).Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(len(msg)), "bytes")
}
