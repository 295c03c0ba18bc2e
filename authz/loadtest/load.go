package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Defaults applied by [Load] to zero-valued [LoadConfig] fields.
const (
	DefaultConcurrency      = 16
	DefaultConns            = 4
	DefaultDuration         = 10 * time.Second
	DefaultTimeout          = time.Second
	DefaultProgressInterval = time.Second
)

// LoadConfig shapes the load sent to one target.
type LoadConfig struct {
	// Concurrency is the number of workers, each with at most one check in flight. Default 16.
	Concurrency int
	// Conns is the number of gRPC connections (HTTP/2 connections) the workers share round-robin; one
	// connection can be the bottleneck. Default 4.
	Conns int
	// Duration is the length of the measured run when Requests is 0. Default 10s.
	Duration time.Duration
	// Requests, when above 0, is the number of measured checks, and Duration is ignored.
	Requests int64
	// Rate, when above 0, sends checks on a fixed schedule of Rate per second (open loop): check i is due at
	// start + i/Rate whatever happened to the earlier ones, and its latency counts from when it is due if no
	// worker was free then, so a stalled service is charged for the checks it held up (no coordinated
	// omission). A check whose worker was idle and waiting for it counts from when it was sent, so the
	// generator's timer slack is not charged to the service. 0: closed loop, every worker sends its next check
	// as soon as the previous one is answered.
	Rate float64
	// Warmup is a run of the same shape before the measured one, whose checks are not counted: it connects,
	// fills the service's caches and lets the runtime settle. It starts with one closed-loop pass over the
	// workload, so that a slow rate still measures the steady state (every token seen before) rather than
	// first sightings. Default none.
	Warmup time.Duration
	// Timeout is the deadline of every check (Envoy's ext_authz timeout). Default 1s.
	Timeout time.Duration
	// Progress receives a line per ProgressInterval during the measured run; nil for none.
	Progress io.Writer
	// ProgressInterval is the period of progress lines. Default 1s.
	ProgressInterval time.Duration
	// ServerCPU, when set, reads the CPU time the target server has used so far (ProcessCPU); it is read
	// before and after the measured run, and the result reports the server's CPU per check.
	ServerCPU func() (time.Duration, error)
	// GeneratorCPU is ServerCPU for the process that generates the load, to tell how much of the machine the
	// generator itself takes when it shares it with the server.
	GeneratorCPU func() (time.Duration, error)
}

func (c LoadConfig) withDefaults() (LoadConfig, error) {
	if c.Concurrency < 0 || c.Conns < 0 || c.Duration < 0 || c.Requests < 0 || c.Rate < 0 || c.Warmup < 0 || c.Timeout < 0 {
		return c, errors.New("loadtest: concurrency, conns, duration, requests, rate, warmup and timeout must not be negative")
	}
	c.Concurrency = orDefault(c.Concurrency, DefaultConcurrency)
	c.Conns = orDefault(c.Conns, DefaultConns)
	c.Timeout = orDefault(c.Timeout, DefaultTimeout)
	c.ProgressInterval = orDefault(c.ProgressInterval, DefaultProgressInterval)
	if c.Requests == 0 {
		c.Duration = orDefault(c.Duration, DefaultDuration)
	}
	return c, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Load sends the workload's checks to the Authorization service at target (host:port, plaintext gRPC) and
// measures them. name labels the result and the progress lines. It returns early, with the checks answered so far,
// when ctx ends; the result then says Interrupted.
func Load(ctx context.Context, name, target string, w *Workload, cfg LoadConfig) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		// Each ClientConn has its own HTTP/2 connection.
		conns[i], err = grpc.NewClient(target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		)
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("loadtest: %s: %w", target, err)
		}
	}
	defer closeAll(conns)
	// Connect every connection before the clock starts, and find out now whether the target answers at all.
	for _, cc := range conns {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var v verdict
		err := cc.Invoke(cctx, checkMethod, w.seq[0].req, &v)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("loadtest: %s (%s) does not answer Check: %w", name, target, err)
		}
	}
	if cfg.Warmup > 0 {
		unmeasured := cfg
		unmeasured.Progress = nil // a run reads no other field that is only for the measured one
		pass := unmeasured
		pass.Duration, pass.Requests, pass.Rate = 0, int64(w.Len()), 0
		(&run{name: name, target: target, cfg: pass, w: w, conns: conns}).do(ctx)
		warm := unmeasured
		warm.Duration, warm.Requests = cfg.Warmup, 0
		if cfg.Rate > 0 {
			warm.Requests = max(1, int64(cfg.Rate*cfg.Warmup.Seconds()))
		}
		(&run{name: name, target: target, cfg: warm, w: w, conns: conns}).do(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	server, err := startCPU(cfg.ServerCPU)
	if err != nil {
		return nil, err
	}
	generator, err := startCPU(cfg.GeneratorCPU)
	if err != nil {
		return nil, err
	}
	r := &run{name: name, target: target, cfg: cfg, w: w, conns: conns}
	res := r.do(ctx)
	if res.ServerCPU, err = server(); err != nil {
		return nil, err
	}
	if res.GeneratorCPU, err = generator(); err != nil {
		return nil, err
	}
	return res, nil
}

// startCPU reads probe now and returns what reads the CPU time used since; with a nil probe, that is 0.
func startCPU(probe func() (time.Duration, error)) (since func() (time.Duration, error), err error) {
	if probe == nil {
		return func() (time.Duration, error) { return 0, nil }, nil
	}
	t0, err := probe()
	if err != nil {
		return nil, err
	}
	return func() (time.Duration, error) {
		t1, err := probe()
		return t1 - t0, err
	}, nil
}

func closeAll(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		if cc != nil {
			cc.Close()
		}
	}
}

// run is one phase of load: its workers, their shared schedule and the progress reporter.
type run struct {
	name, target string
	cfg          LoadConfig
	w            *Workload
	conns        []*grpc.ClientConn

	limit       int64 // checks to send; 0: until stop
	next        atomic.Int64
	stop        atomic.Bool
	interrupted atomic.Bool // the run's context ended before the run did
	start       time.Time
	workers     []*worker
}

// worker is one sender. Its counters are guarded by mu, which only the progress reporter contends for, once per
// interval.
type worker struct {
	conn *grpc.ClientConn

	mu     sync.Mutex
	total  Histogram
	window Histogram
	counts [numClasses][numOutcomes]uint64
	late   uint64
	errs   map[codes.Code]*ErrorCount
}

func (r *run) do(ctx context.Context) *Result {
	r.limit = r.cfg.Requests
	if r.cfg.Rate > 0 && r.limit == 0 {
		r.limit = max(1, int64(r.cfg.Rate*r.cfg.Duration.Seconds()))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.workers = make([]*worker, r.cfg.Concurrency)
	for i := range r.workers {
		r.workers[i] = &worker{conn: r.conns[i%len(r.conns)], errs: map[codes.Code]*ErrorCount{}}
	}
	r.start = time.Now()
	if r.limit == 0 {
		t := time.AfterFunc(r.cfg.Duration, func() { r.stop.Store(true) })
		defer t.Stop()
	}
	stopOnCancel := context.AfterFunc(ctx, func() { r.interrupted.Store(true); r.stop.Store(true) })
	defer stopOnCancel()

	var wg sync.WaitGroup
	for _, wk := range r.workers {
		wg.Go(func() { r.work(ctx, wk) })
	}
	var progress sync.WaitGroup
	progressDone := make(chan struct{})
	if r.cfg.Progress != nil {
		progress.Go(func() { r.report(progressDone) })
	}
	wg.Wait()
	elapsed := time.Since(r.start)
	close(progressDone)
	progress.Wait()
	return r.result(elapsed, r.interrupted.Load())
}

// work sends checks until the run's limit or stop. Of its own it allocates only each check's deadline context;
// the rest is gRPC's.
func (r *run) work(ctx context.Context, wk *worker) {
	var (
		interval float64
		timer    *time.Timer
	)
	if r.cfg.Rate > 0 {
		interval = float64(time.Second) / r.cfg.Rate
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	deadline, hasDeadline := ctx.Deadline()
	seq := r.w.seq
	var v verdict // reused: as an interface argument it would otherwise be allocated per check
	for !r.stop.Load() {
		i := r.next.Add(1) - 1
		if r.limit > 0 && i >= r.limit {
			return
		}
		e := &seq[i%int64(len(seq))]
		var began time.Time
		late := false
		if interval > 0 {
			due := r.start.Add(time.Duration(float64(i) * interval))
			if wait := time.Until(due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					r.interrupted.Store(true)
					return
				}
				began = time.Now()
			} else {
				// No worker was free when the check fell due: the wait since then is part of its latency.
				began, late = due, wait < -lateAfter
			}
		} else {
			began = time.Now()
		}
		cctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		err := wk.conn.Invoke(cctx, checkMethod, e.req, &v)
		cancel()
		lat := time.Since(began)
		if err != nil && (ctx.Err() != nil || hasDeadline && !time.Now().Before(deadline)) {
			// Interrupted: the check was cut short by the run's end, not answered by the service. The check's
			// own deadline can fire a moment before the run's context reports the same one.
			r.interrupted.Store(true)
			return
		}
		out := outcomeOf(err, v)
		wk.mu.Lock()
		wk.total.Record(lat)
		wk.window.Record(lat)
		wk.counts[e.class][out]++
		if late {
			wk.late++
		}
		if err != nil {
			wk.recordError(err)
		}
		wk.mu.Unlock()
	}
}

func outcomeOf(err error, v verdict) Outcome {
	switch {
	case err != nil:
		return Failed
	case v.code == int32(codes.OK):
		return Allowed
	case v.httpStatus == 401:
		return Unauthorized
	}
	return Denied
}

// lateAfter is how far behind its schedule a check must start to count as late: a worker that takes a check a
// few microseconds after it fell due was free, only busy with the previous bookkeeping.
const lateAfter = time.Millisecond

// maxErrorExample bounds the example message kept per gRPC code.
const maxErrorExample = 200

func (wk *worker) recordError(err error) {
	code := status.Code(err)
	e := wk.errs[code]
	if e == nil {
		msg := status.Convert(err).Message()
		if len(msg) > maxErrorExample {
			msg = msg[:maxErrorExample] + "..."
		}
		e = &ErrorCount{Example: msg}
		wk.errs[code] = e
	}
	e.Count++
}

// report writes a progress line per interval until done: checks per second and percentiles over the last
// interval, counts by outcome since the start.
func (r *run) report(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	var window Histogram
	last := time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			window.Reset()
			var counts [numOutcomes]uint64
			for _, wk := range r.workers {
				wk.mu.Lock()
				window.Merge(&wk.window)
				wk.window.Reset()
				for c := range numClasses {
					for o := range numOutcomes {
						counts[o] += wk.counts[c][o]
					}
				}
				wk.mu.Unlock()
			}
			secs := now.Sub(last).Seconds()
			last = now
			fmt.Fprintf(r.cfg.Progress, "%-8s %5.0fs %9.0f req/s  p50 %s  p99 %s  max %s  allowed %d  denied %d  401 %d  errors %d\n",
				r.name, now.Sub(r.start).Seconds(), float64(window.Count())/secs,
				ms(window.Quantile(0.50)), ms(window.Quantile(0.99)), ms(window.Max()),
				counts[Allowed], counts[Denied], counts[Unauthorized], counts[Failed])
		}
	}
}

func (r *run) result(elapsed time.Duration, interrupted bool) *Result {
	res := &Result{
		Name:        r.name,
		Target:      r.target,
		Mode:        "closed",
		Concurrency: r.cfg.Concurrency,
		Conns:       r.cfg.Conns,
		Rate:        r.cfg.Rate,
		Elapsed:     elapsed,
		Interrupted: interrupted,
		Histogram:   &Histogram{},
		Outcomes:    map[string]uint64{},
		Classes:     map[string]map[string]uint64{},
		Errors:      map[string]*ErrorCount{},
		Mix:         r.w.mix.String(),
	}
	if r.cfg.Rate > 0 {
		res.Mode = "open"
	}
	var counts [numClasses][numOutcomes]uint64
	for _, wk := range r.workers {
		res.Histogram.Merge(&wk.total)
		res.Late += wk.late
		for c := range numClasses {
			for o := range numOutcomes {
				counts[c][o] += wk.counts[c][o]
			}
		}
		for code, e := range wk.errs {
			agg := res.Errors[code.String()]
			if agg == nil {
				agg = &ErrorCount{Example: e.Example}
				res.Errors[code.String()] = agg
			}
			agg.Count += e.Count
		}
	}
	for o := range numOutcomes {
		res.Outcomes[outcomeNames[o]] = 0
	}
	for c := range numClasses {
		if r.w.mix[c] == 0 {
			continue
		}
		byOutcome := map[string]uint64{}
		for o := range numOutcomes {
			n := counts[c][o]
			res.Requests += n
			res.Outcomes[outcomeNames[o]] += n
			if n > 0 {
				byOutcome[outcomeNames[o]] = n
			}
			if r.w.judged[c] && Outcome(o) != Failed && Outcome(o) != expected[c] {
				res.Unexpected += n
			}
		}
		res.Classes[classNames[c]] = byOutcome
	}
	if elapsed > 0 {
		res.RPS = float64(res.Requests) / elapsed.Seconds()
	}
	h := res.Histogram
	res.Latency = Latency{
		Min: h.Min(), Mean: h.Mean(), P50: h.Quantile(0.50), P90: h.Quantile(0.90),
		P99: h.Quantile(0.99), P999: h.Quantile(0.999), Max: h.Max(),
	}
	return res
}
