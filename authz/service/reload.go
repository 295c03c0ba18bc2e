package service

import (
	"context"
	"log/slog"

	"github.com/open-policy-agent/opa/v1/loader"

	"github.com/finauthz/authz/authz/filewatch"
)

// watchPolicy sets up the watch of policy.paths: after a burst of changes the engine reloads, which compiles the
// files and swaps the policy in, or keeps the serving policy when they do not compile.
func (s *Service) watchPolicy(paths []string, onReload func(revision string, err error)) error {
	files := make([]string, len(paths))
	for i, p := range paths {
		_, files[i] = loader.SplitPrefix(p) // "a.b:dir" loads dir under data.a.b
	}
	w, err := filewatch.New(filewatch.Config{
		Paths:    files,
		Logger:   s.log,
		OnChange: func(ctx context.Context) { s.reloadPolicy(ctx, onReload) },
	})
	if err != nil {
		return err
	}
	s.watchers = append(s.watchers, w)
	return nil
}

// reloadPolicy reloads the engine, logs a failure and reports every swap or failure to onReload. A reload that
// finds the content unchanged (a file touched, saved twice) is not reported.
func (s *Service) reloadPolicy(ctx context.Context, onReload func(revision string, err error)) {
	before := s.policy.Revision()
	err := s.policy.Reload(ctx)
	if err != nil && ctx.Err() != nil {
		return // stopping
	}
	after := s.policy.Revision()
	if err != nil {
		// The compile error names files, lines and rules; it carries no request data.
		s.log.LogAttrs(ctx, slog.LevelError, "policy reload failed: the previous policy keeps serving",
			slog.String("revision", before), slog.String("error", err.Error()))
	}
	if err == nil && after == before {
		return
	}
	if onReload != nil {
		onReload(after, err)
	}
}
