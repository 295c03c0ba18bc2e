package config

// Defaults of the runtime section.
const (
	// DefaultGCPercent is the garbage collector's target. The service's live heap (compiled policy, caches) is
	// small and bounded, and a check allocates mostly in gRPC and protobuf decoding: a heap allowed to grow by
	// twice its live size before a collection halves the collections of Go's default (100) for a few tens of
	// MiB. BENCHMARKS.md has the measurements.
	DefaultGCPercent = 200
	// DefaultMemoryLimitRatio is the share of the container's memory limit given to the Go runtime as its soft
	// limit; the rest is left to thread stacks outside the heap, the binary and the kernel's accounting.
	DefaultMemoryLimitRatio = 0.9
)

// Runtime tunes the Go runtime of the serving process (`authz serve`). The environment variables GOGC and
// GOMEMLIMIT, the Go runtime's own settings, win over these keys when set.
type Runtime struct {
	// GCPercent is the garbage collector's target (GOGC): the heap may grow by this percentage of the live heap
	// before the next collection. Higher trades memory for CPU. -1 turns the target off, which is only allowed
	// with MemoryLimitMiB set, so that something still bounds the heap. Default DefaultGCPercent.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimitMiB is the runtime's soft memory limit (GOMEMLIMIT) in MiB: the collector runs as often as it
	// must to stay under it. Absent or 0: MemoryLimitRatio of the container's (cgroup) memory limit when there
	// is one, and no limit otherwise.
	MemoryLimitMiB int `yaml:"memory_limit_mib"`
	// MemoryLimitRatio is the share of the cgroup memory limit used when MemoryLimitMiB is absent. Default
	// DefaultMemoryLimitRatio.
	MemoryLimitRatio float64 `yaml:"memory_limit_ratio"`
}

// DefaultRuntime is the runtime section of a configuration that leaves it out: what `authz serve` runs with by
// default, for the processes measured beside it.
func DefaultRuntime() Runtime {
	var r Runtime
	r.applyDefaults()
	return r
}

func (r *Runtime) applyDefaults() {
	setDefault(&r.GCPercent, DefaultGCPercent)
	setDefault(&r.MemoryLimitRatio, DefaultMemoryLimitRatio)
}

func (c *Config) validateRuntime(bad func(key, format string, args ...any)) {
	r := c.Runtime
	switch {
	case r.GCPercent == -1:
		if r.MemoryLimitMiB <= 0 {
			bad("runtime.gc_percent", "-1 (off) needs runtime.memory_limit_mib, or nothing bounds the heap")
		}
	case r.GCPercent < 25 || r.GCPercent > 2000:
		bad("runtime.gc_percent", "must be -1 (off) or between 25 and 2000 (got %d)", r.GCPercent)
	}
	if m := r.MemoryLimitMiB; m != 0 && (m < 32 || m > 1<<20) {
		// Below 32 MiB the compiled policy and the caches would leave the collector running all the time.
		bad("runtime.memory_limit_mib", "must be between 32 and 1048576, or absent for the container's limit (got %d)", m)
	}
	if r.MemoryLimitRatio <= 0 || r.MemoryLimitRatio > 1 {
		bad("runtime.memory_limit_ratio", "must be above 0 and at most 1 (got %g)", r.MemoryLimitRatio)
	}
}
