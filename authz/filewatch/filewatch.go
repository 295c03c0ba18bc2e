// Package filewatch calls a function after files change on disk, once per burst of changes.
//
// It follows the ways files are replaced in practice: written in place, written beside and renamed over (editors,
// config management), and swapped through a symlink as Kubernetes does for mounted ConfigMaps and Secrets
// (file -> ..data/file, with ..data re-pointed at a new timestamped directory). The function is not told what
// changed: it re-reads what it needs and decides for itself whether anything did.
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long the files must stay quiet before the function runs, when Config.Debounce is zero.
const DefaultDebounce = 200 * time.Millisecond

// Config configures a Watcher.
type Config struct {
	// Paths are files or directories. A directory is watched with everything below it, except hidden
	// sub-directories (the policy loader skips those too). A file is watched through its directory, and through
	// the directory of its symlink target if it has one, so a replaced or re-pointed file is seen.
	Paths []string
	// Debounce is the quiet time after the last change before OnChange runs; DefaultDebounce when zero.
	Debounce time.Duration
	// OnChange runs after each burst of changes, on Run's goroutine: never concurrently with itself, and Run
	// returns only after it did. Its ctx is Run's.
	OnChange func(ctx context.Context)
	// Logger receives watch errors; slog.Default() when nil.
	Logger *slog.Logger
}

// Watcher watches Config.Paths. New sets the watches up; Run delivers the changes until its context ends.
type Watcher struct {
	fs       *fsnotify.Watcher
	roots    []root
	debounce time.Duration
	onChange func(context.Context)
	log      *slog.Logger

	// watched maps each watched directory to why it is watched. Only Run's goroutine touches it after New.
	watched   map[string]role
	closeOnce sync.Once
}

// root is one configured path.
type root struct {
	path string // absolute, as configured (may be a symlink)
	dir  bool
}

// role says which events in a watched directory count as changes.
type role int

const (
	// roleParent: the directory holds a watched directory root; only events naming that root count (it was
	// removed, replaced or re-pointed).
	roleParent role = iota + 1
	// roleAll: every event counts (inside a watched tree, or beside a watched file).
	roleAll
)

// New sets up watches for every path. A path that does not exist is an error.
func New(cfg Config) (*Watcher, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("filewatch: no paths")
	}
	if cfg.OnChange == nil {
		return nil, errors.New("filewatch: OnChange is required")
	}
	w := &Watcher{
		debounce: cfg.Debounce,
		onChange: cfg.OnChange,
		log:      cfg.Logger,
		watched:  map[string]role{},
	}
	if w.debounce <= 0 {
		w.debounce = DefaultDebounce
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	for _, p := range cfg.Paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("filewatch: %w", err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("filewatch: %w", err)
		}
		w.roots = append(w.roots, root{path: abs, dir: fi.IsDir()})
	}
	var err error
	if w.fs, err = fsnotify.NewWatcher(); err != nil {
		return nil, fmt.Errorf("filewatch: %w", err)
	}
	if err := w.sync(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Run delivers changes to OnChange until ctx ends, then releases the watches. Call it once.
func (w *Watcher) Run(ctx context.Context) {
	defer w.Close()
	timer := time.NewTimer(w.debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if w.counts(ev) {
				timer.Reset(w.debounce)
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.log.LogAttrs(ctx, slog.LevelWarn, "file watch error", slog.String("error", err.Error()))
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				timer.Reset(w.debounce) // events were lost: assume something changed
			}
		case <-timer.C:
			// Directories may have come or gone (a new sub-directory, a re-pointed symlink); watch what is there
			// now before the function reads it, so no later change goes unseen.
			if err := w.sync(); err != nil {
				w.log.LogAttrs(ctx, slog.LevelWarn, "file watch error", slog.String("error", err.Error()))
			}
			if ctx.Err() != nil {
				return
			}
			w.onChange(ctx)
		}
	}
}

// Close releases the watches, for a Watcher whose Run will not be called; Run calls it when it returns. Calling it
// again, or while Run runs (which makes Run return), is harmless.
func (w *Watcher) Close() {
	w.closeOnce.Do(func() { w.fs.Close() })
}

// counts reports whether ev may have changed the content of a watched path.
func (w *Watcher) counts(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod { // attribute changes only (touch, chmod): content is the same
		return false
	}
	switch w.watched[filepath.Dir(ev.Name)] {
	case roleAll:
		return true
	case roleParent:
		for _, r := range w.roots {
			if r.dir && r.path == ev.Name {
				return true
			}
		}
	}
	// The event of a watched directory itself (removed, renamed) names the directory.
	_, ok := w.watched[ev.Name]
	return ok
}

// sync makes the set of watched directories match the paths as they are on disk now.
func (w *Watcher) sync() error {
	want := map[string]role{}
	mark := func(dir string, r role) {
		if want[dir] < r {
			want[dir] = r
		}
	}
	for _, r := range w.roots {
		if !r.dir {
			mark(filepath.Dir(r.path), roleAll)
			if real, err := filepath.EvalSymlinks(r.path); err == nil {
				mark(filepath.Dir(real), roleAll)
			}
			continue
		}
		mark(filepath.Dir(r.path), roleParent)
		real, err := filepath.EvalSymlinks(r.path)
		if err != nil {
			continue // gone for now; the parent's watch sees it come back
		}
		// Walk the resolved directory: WalkDir does not follow a symlinked root, and events then carry the
		// resolved names that the watch table holds.
		err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // vanished while walking: the next sync sees what replaced it
			}
			if !d.IsDir() {
				return nil
			}
			if p != real && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			mark(p, roleAll)
			return nil
		})
		if err != nil {
			return fmt.Errorf("filewatch: %w", err)
		}
	}

	var errs []error
	for dir, r := range want {
		if _, ok := w.watched[dir]; !ok {
			if err := w.fs.Add(dir); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					delete(want, dir) // removed since the walk; its parent's watch reports it
					continue
				}
				errs = append(errs, fmt.Errorf("filewatch: watch %s: %w", dir, err))
				delete(want, dir)
				continue
			}
		}
		want[dir] = r
	}
	for dir := range w.watched {
		if _, ok := want[dir]; !ok {
			_ = w.fs.Remove(dir) // fails when the directory is gone, which removed the watch already
		}
	}
	w.watched = want
	return errors.Join(errs...)
}
