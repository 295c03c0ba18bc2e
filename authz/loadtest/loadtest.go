// Package loadtest measures a running authorization service: it sends Envoy-shaped Check calls in a realistic mix,
// in a closed loop or on a fixed schedule, and reports throughput, latency percentiles and outcomes, next to the
// same load against a no-op server that shows the gRPC stack's own limit on the machine.
//
// The generator keeps its own cost per check low, since it shares the machine with the service: requests are
// built and encoded once ([Workload]), sent as pre-encoded bytes and answered into a two-field verdict read
// straight from the wire, and each worker records into its own [Histogram].
package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Options describe a whole benchmark: the targets, the load and the requests.
type Options struct {
	// Addr is the service to measure (host:port). Empty measures only the no-op server.
	Addr string
	// NoopListen, when set, starts a no-op server on this address (port 0 picks one) and measures it first, with
	// the same load, so that the report can set the service against the gRPC stack's limit.
	NoopListen string
	// NoopAddr, when set instead, is a no-op server already running (authz noop), measured first. In a process of
	// its own it shares the machine with the generator as the service does.
	NoopAddr string
	// Rounds repeats the no-op and service runs in turn, so that a change in the machine's other load during one
	// run does not decide the ratio; the report keeps every round's ratio and their median. Zero means one.
	Rounds int
	// ServicePID and NoopPID, when set, are the processes of the service and of the no-op server (authz noop):
	// each run then also reports its server's CPU time per check (ProcessCPU), the steadier figure on a machine
	// whose other load moves requests per second.
	ServicePID, NoopPID int
	Load                LoadConfig
	Workload            WorkloadConfig
}

// Report holds the results of a benchmark.
type Report struct {
	Noop    *Result `json:"noop,omitempty"`
	Service *Result `json:"service,omitempty"`
	// Ratio is the service's checks per second over the no-op server's, when both ran: the median over the
	// rounds. Noop and Service are the results of the last round.
	Ratio float64 `json:"service_to_noop_rps,omitempty"`
	// Ratios are every round's ratio, in order, when there was more than one round.
	Ratios []float64 `json:"round_ratios,omitempty"`
	// NoopCPU and ServiceCPU are each round's server CPU time per check, when measured.
	NoopCPU    []time.Duration `json:"-"`
	ServiceCPU []time.Duration `json:"-"`
	// NoopP99 and ServiceP99 are each round's p99 latency: a tail target is judged on their medians, since one
	// round's tail moves with the machine's other load even more than its throughput does.
	NoopP99    []time.Duration `json:"-"`
	ServiceP99 []time.Duration `json:"-"`
}

// Run builds the workload, measures the no-op server when asked to, then the service at o.Addr. When ctx ends
// it stops the current run and returns what was measured so far.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Addr == "" && o.NoopListen == "" && o.NoopAddr == "" {
		return nil, errors.New("loadtest: nothing to measure: set the service address, a no-op address, or both")
	}
	if o.NoopListen != "" && o.NoopAddr != "" {
		return nil, errors.New("loadtest: set a no-op listen address or a no-op server address, not both")
	}
	if o.Workload.TTL == 0 {
		// Minted tokens must outlive both runs (no-op and service), warm-ups included.
		o.Workload.TTL = max(time.Hour, 2*(o.Load.Warmup+o.Load.Duration)+10*time.Minute)
	}
	w, err := NewWorkload(o.Workload)
	if err != nil {
		return nil, err
	}
	var n *Noop
	noopAddr := o.NoopAddr
	if o.NoopListen != "" {
		if n, err = StartNoop(o.NoopListen); err != nil {
			return nil, err
		}
		defer n.Stop()
		noopAddr = n.Addr()
	}
	// The no-op server allows everything: its answers say nothing about the mix.
	unjudged := *w
	unjudged.judged = [numClasses]bool{}
	noopLoad, serviceLoad := o.Load, o.Load
	if o.NoopPID > 0 {
		noopLoad.ServerCPU = ProcessCPU(o.NoopPID)
	}
	if o.ServicePID > 0 {
		serviceLoad.ServerCPU = ProcessCPU(o.ServicePID)
	}
	if o.NoopListen == "" && runtime.GOOS == "linux" {
		// An in-process no-op server would count as the generator's own work.
		noopLoad.GeneratorCPU = ProcessCPU(os.Getpid())
		serviceLoad.GeneratorCPU = noopLoad.GeneratorCPU
	}
	rep := &Report{}
	for range max(o.Rounds, 1) {
		if noopAddr != "" {
			if rep.Noop, err = Load(ctx, "noop", noopAddr, &unjudged, noopLoad); err != nil {
				return nil, err
			}
			if rep.Noop.Interrupted {
				return rep, nil
			}
			if rep.Noop.ServerCPU > 0 {
				rep.NoopCPU = append(rep.NoopCPU, rep.Noop.CPUPerCheck())
			}
			rep.NoopP99 = append(rep.NoopP99, rep.Noop.Latency.P99)
		}
		if o.Addr != "" {
			if rep.Service, err = Load(ctx, "service", o.Addr, w, serviceLoad); err != nil {
				return rep, err
			}
			if rep.Service.Interrupted {
				return rep, nil
			}
			if rep.Service.ServerCPU > 0 {
				rep.ServiceCPU = append(rep.ServiceCPU, rep.Service.CPUPerCheck())
			}
			rep.ServiceP99 = append(rep.ServiceP99, rep.Service.Latency.P99)
		}
		if rep.Noop != nil && rep.Service != nil && rep.Noop.RPS > 0 {
			rep.Ratios = append(rep.Ratios, rep.Service.RPS/rep.Noop.RPS)
		}
	}
	if len(rep.Ratios) > 0 {
		rep.Ratio = median(rep.Ratios)
	}
	if len(rep.Ratios) < 2 {
		rep.Ratios = nil
	}
	return rep, nil
}

// median returns the median of xs, which must not be empty.
func median[T ~float64 | ~int64](xs []T) T {
	sorted := slices.Sorted(slices.Values(xs))
	if n := len(sorted); n%2 == 0 {
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return sorted[len(sorted)/2]
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	for _, res := range []*Result{r.Noop, r.Service} {
		if res == nil {
			continue
		}
		if err := res.WriteText(w); err != nil {
			return err
		}
	}
	if len(r.NoopCPU) > 0 && len(r.ServiceCPU) > 0 {
		n, s := median(r.NoopCPU), median(r.ServiceCPU)
		if _, err := fmt.Fprintf(w, "server cpu per check: service %.1f µs, noop %.1f µs (medians of %d rounds): service / noop %.2f\n",
			float64(s)/1e3, float64(n)/1e3, len(r.ServiceCPU), float64(s)/float64(n)); err != nil {
			return err
		}
	}
	if len(r.NoopP99) > 1 || len(r.ServiceP99) > 1 {
		if _, err := fmt.Fprintf(w, "p99 per round: service %s; noop %s\n", medianOf(r.ServiceP99), medianOf(r.NoopP99)); err != nil {
			return err
		}
	}
	switch {
	case len(r.Ratios) > 1:
		rounds := make([]string, len(r.Ratios))
		for i, x := range r.Ratios {
			rounds[i] = fmt.Sprintf("%.3f", x)
		}
		_, err := fmt.Fprintf(w, "service / noop: %.3f, the median of %d rounds (%s)\n", r.Ratio, len(r.Ratios), strings.Join(rounds, ", "))
		return err
	case r.Ratio > 0:
		_, err := fmt.Fprintf(w, "service / noop: %.3f (%.0f / %.0f req/s)\n", r.Ratio, r.Service.RPS, r.Noop.RPS)
		return err
	}
	return nil
}

// medianOf lists a run's per-round latencies and their median, or says there were none.
func medianOf(rounds []time.Duration) string {
	if len(rounds) == 0 {
		return "not measured"
	}
	each := make([]string, len(rounds))
	for i, d := range rounds {
		each[i] = ms(d)
	}
	return fmt.Sprintf("median %s (%s)", ms(median(rounds)), strings.Join(each, ", "))
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
