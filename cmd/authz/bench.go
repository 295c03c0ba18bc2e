package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/gctune"
	"github.com/finauthz/authz/authz/loadtest"
)

// bench measures a running service under load; with --noop-listen it first measures an in-process no-op server
// with the same load, and reports both and their ratio.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	o := loadtest.Options{Workload: loadtest.WorkloadConfig{Mix: loadtest.DefaultMix}}
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:9191", `gRPC address of the service; "" measures only the no-op server`)
	fs.StringVar(&o.NoopListen, "noop-listen", "", "start a no-op ext_authz server here (e.g. 127.0.0.1:0) and measure it first")
	fs.StringVar(&o.NoopAddr, "noop-addr", "", "measure the no-op server running at this address first (authz noop, a process of its own like the service)")
	fs.IntVar(&o.ServicePID, "pid", 0, "process id of the service: also report its CPU time per check (Linux)")
	fs.IntVar(&o.NoopPID, "noop-pid", 0, "process id of the no-op server (authz noop): also report its CPU time per check (Linux)")
	fs.IntVar(&o.Rounds, "rounds", 1, "repeat the no-op and service runs in turn this many times; the ratio is their median")
	fs.IntVar(&o.Load.Concurrency, "c", loadtest.DefaultConcurrency, "workers, each with one check in flight")
	fs.IntVar(&o.Load.Conns, "conns", loadtest.DefaultConns, "gRPC (HTTP/2) connections shared by the workers")
	fs.DurationVar(&o.Load.Duration, "d", loadtest.DefaultDuration, "measured duration (ignored with -n)")
	fs.Int64Var(&o.Load.Requests, "n", 0, "measured checks (instead of -d)")
	fs.Float64Var(&o.Load.Rate, "rate", 0, "checks per second on a fixed schedule (open loop); 0: closed loop")
	fs.DurationVar(&o.Load.Warmup, "warmup", time.Second, "unmeasured load before each measured run")
	fs.DurationVar(&o.Load.Timeout, "timeout", loadtest.DefaultTimeout, "deadline of each check")
	fs.Var(&o.Workload.Mix, "mix", "relative weights of valid, forbidden, invalid and public requests")
	fs.IntVar(&o.Workload.Subjects, "subjects", 1000, "distinct subjects to mint tokens for")
	cfgPath := fs.String("config", "", "configuration whose dev_issuer.key_file mints the tokens (default: the embedded one)")
	tokens := fs.String("tokens", "", "file of raw tokens, one per line, to send instead of minted ones")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	quiet := fs.Bool("q", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if !*quiet {
		o.Load.Progress = stderr
	}
	if *tokens != "" {
		b, err := os.ReadFile(*tokens)
		if err != nil {
			return err
		}
		if o.Workload.Tokens, err = loadtest.ReadTokens(b); err != nil {
			return fmt.Errorf("%s: %w", *tokens, err)
		}
	} else {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if !cfg.DevIssuer.Enabled {
			return fmt.Errorf("%s: dev_issuer is not enabled: give --tokens FILE instead", cfg.File)
		}
		if o.Workload.Issuer, err = devissuer.Open(cfg.DevIssuer.KeyFile); err != nil {
			return err
		}
	}
	rep, err := loadtest.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteText(stdout)
}

// noop runs a no-op Authorization server until ctx ends.
func noop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("noop", stderr)
	listen := fs.String("listen", "127.0.0.1:9193", "gRPC listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	// The collector settings of authz serve's defaults, so that the two servers differ only in the work of a check.
	if _, err := gctune.Apply(config.DefaultRuntime(), gctune.System()); err != nil {
		return err
	}
	n, err := loadtest.StartNoop(*listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "no-op ext_authz server on %s\n", n.Addr())
	<-ctx.Done()
	n.Stop()
	return nil
}
