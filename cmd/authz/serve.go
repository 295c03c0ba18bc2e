package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/finauthz/authz/authz/config"
	"github.com/finauthz/authz/authz/gctune"
	"github.com/finauthz/authz/authz/service"
	"github.com/finauthz/authz/policies"
)

// defaultConfig is what "authz serve" runs without --config: the shipped policies and the development issuer,
// on loopback only.
//
//go:embed default.yaml
var defaultConfig []byte

func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	path := fs.String("config", "", "configuration file (default: the embedded development configuration)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	if *path == "" {
		log.Warn("no --config given: running the embedded development configuration")
	}
	rt, err := gctune.Apply(cfg.Runtime, gctune.System())
	if err != nil {
		return err
	}
	if rt.Warning != "" {
		log.Warn(rt.Warning)
	}
	log.Info("runtime", slog.String("gc_percent", fmt.Sprintf("%d (%s)", rt.GCPercent, rt.GCPercentFrom)),
		slog.String("memory_limit", rt.MemoryLimitText()))
	svc, err := service.New(ctx, cfg, service.Options{BuiltinPolicies: policies.FS, Logger: log})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		return config.Parse(defaultConfig, "(embedded default.yaml)", wd)
	}
	return config.Load(path)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		panic(fmt.Sprintf("log.level %q passed validation", c.Level))
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
