package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Result is the measurement of one run against one target.
type Result struct {
	Name        string        `json:"name"`
	Target      string        `json:"target"`
	Mode        string        `json:"mode"` // "closed" or "open" (rate-limited)
	Concurrency int           `json:"concurrency"`
	Conns       int           `json:"conns"`
	Rate        float64       `json:"rate,omitempty"` // requested checks per second, open loop
	Mix         string        `json:"mix"`
	Elapsed     time.Duration `json:"-"`
	// Requests counts the checks answered or failed; it equals the sum of Outcomes.
	Requests uint64  `json:"requests"`
	RPS      float64 `json:"rps"`
	Latency  Latency `json:"latency"`
	// Outcomes counts checks by outcome: "allowed", "denied" (403 and any status but 401), "401", "errors".
	Outcomes map[string]uint64 `json:"outcomes"`
	// Classes counts, per class of the mix, the checks by outcome.
	Classes map[string]map[string]uint64 `json:"classes"`
	// Unexpected counts answered checks whose outcome is not the one their class expects.
	Unexpected uint64 `json:"unexpected"`
	// Errors counts failed checks by gRPC status code, with one message as example.
	Errors map[string]*ErrorCount `json:"errors"`
	// Late counts open-loop checks that started more than a millisecond after they fell due, because every
	// worker was busy: when it is a large share, the service could not keep up (or Concurrency is too low for
	// Rate times the latency). Their latency counts from when they fell due.
	Late uint64 `json:"late,omitempty"`
	// ServerCPU is the CPU time the target server used during the run, when LoadConfig.ServerCPU was set.
	ServerCPU time.Duration `json:"-"`
	// GeneratorCPU is the CPU time the generating process used during the run, when LoadConfig.GeneratorCPU
	// was set.
	GeneratorCPU time.Duration `json:"-"`
	Interrupted  bool          `json:"interrupted,omitempty"`
	Histogram    *Histogram    `json:"-"`
}

// ErrorCount is how often one kind of error happened.
type ErrorCount struct {
	Count   uint64 `json:"count"`
	Example string `json:"example"`
}

// Latency summarises a run's latency distribution. Percentiles are within [Precision] of the recorded values.
type Latency struct {
	Min, Mean, P50, P90, P99, P999, Max time.Duration
}

// MarshalJSON writes the latencies in milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Min  float64 `json:"min_ms"`
		P50  float64 `json:"p50_ms"`
		P90  float64 `json:"p90_ms"`
		P99  float64 `json:"p99_ms"`
		P999 float64 `json:"p99.9_ms"`
		Max  float64 `json:"max_ms"`
		Mean float64 `json:"mean_ms"`
	}{msf(l.Min), msf(l.P50), msf(l.P90), msf(l.P99), msf(l.P999), msf(l.Max), msf(l.Mean)})
}

// MarshalJSON adds the elapsed time in seconds and, when measured, the server's and the generator's CPU per
// check in microseconds.
func (r *Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		*plain
		ElapsedSeconds       float64  `json:"elapsed_s"`
		CPUPerCheck          *float64 `json:"server_cpu_us_per_check,omitempty"`
		GeneratorCPUPerCheck *float64 `json:"generator_cpu_us_per_check,omitempty"`
	}{(*plain)(r), math.Round(r.Elapsed.Seconds()*1000) / 1000, r.microseconds(r.ServerCPU), r.microseconds(r.GeneratorCPU)})
}

// microseconds is cpu per check of the run in microseconds, nil when it was not measured.
func (r *Result) microseconds(cpu time.Duration) *float64 {
	if cpu <= 0 || r.Requests == 0 {
		return nil
	}
	us := math.Round(r.perCheck(cpu).Seconds()*1e7) / 10
	return &us
}

// CPUPerCheck is the server's CPU time per check of the run; 0 when it was not measured.
func (r *Result) CPUPerCheck() time.Duration { return r.perCheck(r.ServerCPU) }

func (r *Result) perCheck(cpu time.Duration) time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return cpu / time.Duration(r.Requests)
}

func msf(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// ms formats d in milliseconds with three significant digits or more.
func ms(d time.Duration) string {
	v := float64(d) / 1e6
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.2fms", v)
}

// WriteText writes r for a person.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := fmt.Sprintf("closed loop, %d workers", r.Concurrency)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop at %.0f req/s, up to %d in flight", r.Rate, r.Concurrency)
	}
	fmt.Fprintf(&b, "%s (%s): %s, %d connections, mix %s\n", r.Name, r.Target, mode, r.Conns, r.Mix)
	if r.Interrupted {
		b.WriteString("  interrupted: the figures cover the checks answered until then\n")
	}
	fmt.Fprintf(&b, "  requests   %d in %.2fs = %.0f req/s\n", r.Requests, r.Elapsed.Seconds(), r.RPS)
	l := r.Latency
	fmt.Fprintf(&b, "  latency    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (min %s, mean %s)\n",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), ms(l.Min), ms(l.Mean))
	for _, c := range []struct {
		what string
		cpu  time.Duration
	}{{"server cpu", r.ServerCPU}, {"generator ", r.GeneratorCPU}} {
		if c.cpu > 0 {
			fmt.Fprintf(&b, "  %s %.1f µs per check (%.2f cores)\n", c.what, float64(r.perCheck(c.cpu))/1e3, c.cpu.Seconds()/r.Elapsed.Seconds())
		}
	}
	fmt.Fprintf(&b, "  outcomes   allowed %d  denied %d  401 %d  errors %d\n",
		r.Outcomes["allowed"], r.Outcomes["denied"], r.Outcomes["401"], r.Outcomes["errors"])
	b.WriteString("  by class  ")
	for _, c := range classNames {
		byOutcome, ok := r.Classes[c]
		if !ok {
			continue
		}
		var total uint64
		var parts []string
		for _, o := range outcomeNames {
			if n := byOutcome[o]; n > 0 {
				total += n
				parts = append(parts, fmt.Sprintf("%s %d", o, n))
			}
		}
		fmt.Fprintf(&b, " %s %d (%s)", c, total, strings.Join(parts, ", "))
	}
	b.WriteString("\n")
	if r.Unexpected > 0 {
		fmt.Fprintf(&b, "  UNEXPECTED %d answers differ from what their class expects (stale tokens? another policy or key?)\n", r.Unexpected)
	}
	if r.Mode == "open" {
		fmt.Fprintf(&b, "  late       %d checks started over 1ms behind schedule, every worker being busy\n", r.Late)
	}
	codes := make([]string, 0, len(r.Errors))
	for c := range r.Errors {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		fmt.Fprintf(&b, "  error      %s x%d: %s\n", c, r.Errors[c].Count, r.Errors[c].Example)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
