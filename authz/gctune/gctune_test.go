package gctune

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/finauthz/authz/authz/config"
)

// keepRuntime restores the process's collector settings after a test that changes them.
func keepRuntime(t *testing.T) {
	t.Helper()
	pct, limit := gcPercent(), debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(pct)
		debug.SetMemoryLimit(limit)
	})
}

func host(env map[string]string, limit uint64, err error) Host {
	return Host{
		Getenv:      func(k string) string { return env[k] },
		CgroupLimit: func() (uint64, error) { return limit, err },
	}
}

var defaults = config.DefaultRuntime()

func TestApply(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name       string
		cfg        config.Runtime
		host       Host
		before     func() // the runtime's state as GOGC/GOMEMLIMIT would have left it
		want       Settings
		wantLimit  int64 // the runtime's limit after Apply
		wantWarned bool
	}{
		{
			name:      "defaults outside a container: the configured target, no limit",
			cfg:       defaults,
			host:      host(nil, 0, memlimit.ErrNoLimit),
			want:      Settings{GCPercent: 200, GCPercentFrom: FromConfig},
			wantLimit: math.MaxInt64,
		},
		{
			name:      "a container's limit: its configured share",
			cfg:       defaults,
			host:      host(nil, gib, nil),
			want:      Settings{GCPercent: 200, GCPercentFrom: FromConfig, MemoryLimit: gib * 9 / 10, MemoryLimitFrom: FromCgroup},
			wantLimit: gib * 9 / 10,
		},
		{
			name:      "a configured limit wins over the container's",
			cfg:       config.Runtime{GCPercent: 100, MemoryLimitMiB: 512, MemoryLimitRatio: 0.9},
			host:      host(nil, gib, nil),
			want:      Settings{GCPercent: 100, GCPercentFrom: FromConfig, MemoryLimit: 512 << 20, MemoryLimitFrom: FromConfig},
			wantLimit: 512 << 20,
		},
		{
			name:      "GOGC and GOMEMLIMIT win and are left as the runtime read them",
			cfg:       config.Runtime{GCPercent: 300, MemoryLimitMiB: 512, MemoryLimitRatio: 0.9},
			host:      host(map[string]string{"GOGC": "150", "GOMEMLIMIT": "300MiB"}, gib, nil),
			before:    func() { debug.SetGCPercent(150); debug.SetMemoryLimit(300 << 20) },
			want:      Settings{GCPercent: 150, GCPercentFrom: FromEnvironment, MemoryLimit: 300 << 20, MemoryLimitFrom: FromEnvironment},
			wantLimit: 300 << 20,
		},
		{
			name:      "GOGC=off with a container's limit",
			cfg:       defaults,
			host:      host(map[string]string{"GOGC": "off"}, gib, nil),
			before:    func() { debug.SetGCPercent(-1) },
			want:      Settings{GCPercent: -1, GCPercentFrom: FromEnvironment, MemoryLimit: gib * 9 / 10, MemoryLimitFrom: FromCgroup},
			wantLimit: gib * 9 / 10,
		},
		{
			name:       "an unreadable cgroup is a warning, not a limit",
			cfg:        defaults,
			host:       host(nil, 0, errors.New("open /sys/fs/cgroup/memory.max: permission denied")),
			want:       Settings{GCPercent: 200, GCPercentFrom: FromConfig},
			wantLimit:  math.MaxInt64,
			wantWarned: true,
		},
		{
			name:      "not in a cgroup is no warning",
			cfg:       defaults,
			host:      host(nil, 0, fmt.Errorf("reading: %w", memlimit.ErrNoCgroup)),
			want:      Settings{GCPercent: 200, GCPercentFrom: FromConfig},
			wantLimit: math.MaxInt64,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keepRuntime(t)
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			if tt.before != nil {
				tt.before()
			}
			got, err := Apply(tt.cfg, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if (got.Warning != "") != tt.wantWarned {
				t.Errorf("warning = %q, want one: %v", got.Warning, tt.wantWarned)
			}
			got.Warning = ""
			if got != tt.want {
				t.Errorf("Apply = %+v, want %+v", got, tt.want)
			}
			wantText := "none"
			if got.MemoryLimit > 0 {
				wantText = "MiB (" + got.MemoryLimitFrom + ")"
			}
			if text := got.MemoryLimitText(); !strings.HasSuffix(text, wantText) {
				t.Errorf("MemoryLimitText = %q, want it to end in %q", text, wantText)
			}
			if p := gcPercent(); p != tt.want.GCPercent {
				t.Errorf("runtime GC percent = %d, want %d", p, tt.want.GCPercent)
			}
			if l := debug.SetMemoryLimit(-1); l != tt.wantLimit {
				t.Errorf("runtime memory limit = %d, want %d", l, tt.wantLimit)
			}
		})
	}
}

func TestApplyRefusesAnUnboundedHeap(t *testing.T) {
	keepRuntime(t)
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(math.MaxInt64)
	_, err := Apply(defaults, host(map[string]string{"GOGC": "off"}, 0, memlimit.ErrNoLimit))
	if err == nil || !strings.Contains(err.Error(), "nothing would bound the heap") {
		t.Fatalf("Apply = %v, want the unbounded heap refused", err)
	}
	if p := gcPercent(); p != -1 {
		t.Errorf("a refused Apply changed the GC percent to %d", p)
	}
}
