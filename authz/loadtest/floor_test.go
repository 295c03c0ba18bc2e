package loadtest

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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

// Flags of BenchmarkLoopbackFloor/open: the shape of authz bench -rate, over raw TCP.
var (
	floorRate  = flag.Float64("floor-rate", 7000, "BenchmarkLoopbackFloor/open: round trips per second, on a fixed schedule")
	floorConns = flag.Int("floor-conns", 64, "BenchmarkLoopbackFloor/open: connections, each with one round trip in flight")
)

// BenchmarkLoopbackFloor is the machine's floor under the latencies of authz bench: round trips of a
// CheckRequest's bytes over loopback TCP to an echo server in another process, with neither gRPC nor any work of a
// server, only what the kernel and the scheduler cost. It reports the round trip's p50 and p99 besides its mean.
//
// serial sends one at a time, as authz bench -c 1 -conns 1 does with gRPC on both ends. open sends them on a fixed
// schedule of -floor-rate per second over -floor-conns connections, as authz bench -rate does, and counts a round
// trip's latency the same way: from when it fell due if no connection was free then (its ns/op is the schedule's
// interval, not a cost).
func BenchmarkLoopbackFloor(b *testing.B) {
	addr := startEcho(b)
	msg := devWorkload(b, 1).seq[0].req.wire.Materialize()
	b.Run("serial", func(b *testing.B) {
		conn := dialFloor(b, addr)
		got := make([]byte, len(msg))
		var h Histogram
		b.ReportAllocs()
		for b.Loop() {
			began := time.Now()
			echo(b, conn, msg, got)
			h.Record(time.Since(began))
		}
		reportFloor(b, &h, msg)
	})
	b.Run("open", func(b *testing.B) {
		if *floorRate <= 0 || *floorConns <= 0 {
			b.Fatal("-floor-rate and -floor-conns must be above 0")
		}
		conns := make(chan net.Conn, *floorConns)
		for range *floorConns {
			conns <- dialFloor(b, addr)
		}
		interval := float64(time.Second) / *floorRate
		var (
			next  atomic.Int64
			mu    sync.Mutex
			total Histogram
		)
		b.SetParallelism((*floorConns + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			var conn net.Conn
			select {
			case conn = <-conns:
			default:
				return // rounding up the parallelism made more goroutines than connections
			}
			got := make([]byte, len(msg))
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			var h Histogram
			for pb.Next() {
				due := start.Add(time.Duration(float64(next.Add(1)-1) * interval))
				began := due
				if wait := time.Until(due); wait > 0 {
					timer.Reset(wait)
					<-timer.C
					began = time.Now()
				}
				echo(b, conn, msg, got)
				h.Record(time.Since(began))
			}
			mu.Lock()
			total.Merge(&h)
			mu.Unlock()
		})
		reportFloor(b, &total, msg)
		b.ReportMetric(float64(total.Quantile(0.999).Nanoseconds()), "p99.9-ns")
	})
}

func dialFloor(b *testing.B, addr string) net.Conn {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// echo sends msg on conn and reads its echo into got, which must be as long.
func echo(b *testing.B, conn net.Conn, msg, got []byte) {
	if _, err := conn.Write(msg); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(conn, got); err != nil {
		b.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		b.Fatal("the echo differs from the message")
	}
}

func reportFloor(b *testing.B, h *Histogram, msg []byte) {
	b.ReportMetric(float64(h.Quantile(0.50).Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(h.Quantile(0.99).Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(len(msg)), "bytes")
}
