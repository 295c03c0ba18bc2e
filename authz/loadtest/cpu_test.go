package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// Fields 14 and 15 are utime and stime, in USER_HZ ticks.
	const tail = " S 1 2 3 4 5 6 7 8 9 10 150 27 0 0 20 0 9 0 100 200 300"
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr string
	}{
		{"plain command", "4242 (authz)" + tail, 1770 * time.Millisecond, ""},
		{"a command name with spaces and parentheses", "4242 (a (b) c)" + tail, 1770 * time.Millisecond, ""},
		{"no command name", "4242 authz" + tail, 0, "without a command name"},
		{"truncated", "4242 (authz) S 1 2 3", 0, "want at least 13"},
		{"not a number", "4242 (authz) S 1 2 3 4 5 6 7 8 9 10 x 27", 0, `CPU time "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseStatCPU = %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestProcessCPUOfAMissingProcess(t *testing.T) {
	t.Parallel()
	if _, err := ProcessCPU(-1)(); err == nil {
		t.Fatal("the CPU time of process -1 was read")
	}
}

func TestLoadReportsTheServersAndTheGeneratorsCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	n, err := StartNoop("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	w, err := NewWorkload(WorkloadConfig{Tokens: []string{"a.b.c"}, Mix: Mix{Public: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// The no-op server runs in this process: its CPU is this process's, the generator's included.
	res, err := Load(context.Background(), "noop", n.Addr(), w, LoadConfig{
		Concurrency: 4, Requests: 4000, ServerCPU: ProcessCPU(os.Getpid()), GeneratorCPU: ProcessCPU(os.Getpid()),
	})
	if err != nil {
		t.Fatal(err)
	}
	// One process, read twice a few microseconds apart, to 10 ms: a tick may fall between the reads.
	if diff := res.GeneratorCPU - res.ServerCPU; res.ServerCPU <= 0 || res.CPUPerCheck() <= 0 || diff < -20*time.Millisecond || diff > 20*time.Millisecond {
		t.Fatalf("server CPU %v, %v per check, generator CPU %v: want both measured, and the same (one process)",
			res.ServerCPU, res.CPUPerCheck(), res.GeneratorCPU)
	}
	var text bytes.Buffer
	if err := res.WriteText(&text); err != nil || !strings.Contains(text.String(), "server cpu") || !strings.Contains(text.String(), "generator ") {
		t.Errorf("text report without the server's and the generator's CPU: %v\n%s", err, text.String())
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil || doc["server_cpu_us_per_check"] == nil || doc["generator_cpu_us_per_check"] == nil {
		t.Errorf("JSON report without server_cpu_us_per_check and generator_cpu_us_per_check: %v\n%s", err, b)
	}
}
