package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

const testDebounce = 50 * time.Millisecond

// watch runs a Watcher on paths until the test ends and returns a channel that receives one value per OnChange.
func watch(t *testing.T, debounce time.Duration, paths ...string) <-chan struct{} {
	t.Helper()
	calls := make(chan struct{}, 100)
	w, err := New(Config{Paths: paths, Debounce: debounce, OnChange: func(context.Context) { calls <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return calls
}

func waitCall(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no change reported within 5s", what)
	}
}

// noCall asserts that nothing is reported for a few debounce periods.
func noCall(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
		t.Fatalf("%s: a change was reported", what)
	case <-time.After(5 * testDebounce):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// kubeSwap does what Kubernetes' atomic writer does to a mounted ConfigMap or Secret: write the new files into a
// fresh hidden directory, re-point ..data at it with a rename, and remove the old directory.
func kubeSwap(t *testing.T, dir, version string, files map[string]string) {
	t.Helper()
	ts := filepath.Join(dir, "..ts_"+version)
	for name, content := range files {
		write(t, filepath.Join(ts, name), content)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	symlink(t, "..ts_"+version, filepath.Join(dir, "..data_tmp"))
	rename(t, filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			symlink(t, filepath.Join("..data", name), filepath.Join(dir, name))
		}
	}
}

func TestWatcherReportsEachWayOfChangingFiles(t *testing.T) {
	tests := []struct {
		name string
		// setup lays out the files and returns the path to watch.
		setup func(t *testing.T, dir string) string
		// changes are applied one after another; each must be reported.
		changes []func(t *testing.T, dir string)
	}{
		{
			name: "file written in place",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "cert.pem"), "a")
				return filepath.Join(dir, "cert.pem")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "cert.pem"), "b") },
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "cert.pem"), "c") },
			},
		},
		{
			name: "file replaced by a rename, as editors save",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "cert.pem"), "a")
				return filepath.Join(dir, "cert.pem")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) {
					write(t, filepath.Join(dir, ".cert.pem.tmp"), "b")
					rename(t, filepath.Join(dir, ".cert.pem.tmp"), filepath.Join(dir, "cert.pem"))
				},
				func(t *testing.T, dir string) {
					write(t, filepath.Join(dir, ".cert.pem.tmp"), "c")
					rename(t, filepath.Join(dir, ".cert.pem.tmp"), filepath.Join(dir, "cert.pem"))
				},
			},
		},
		{
			name: "symlinked file whose target is rewritten in another directory",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "secrets", "real.pem"), "a")
				if err := os.Mkdir(filepath.Join(dir, "etc"), 0o755); err != nil {
					t.Fatal(err)
				}
				symlink(t, filepath.Join(dir, "secrets", "real.pem"), filepath.Join(dir, "etc", "cert.pem"))
				return filepath.Join(dir, "etc", "cert.pem")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "secrets", "real.pem"), "b") },
			},
		},
		{
			name: "kubernetes secret swap of a watched file",
			setup: func(t *testing.T, dir string) string {
				kubeSwap(t, dir, "1", map[string]string{"tls.crt": "a"})
				return filepath.Join(dir, "tls.crt")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) { kubeSwap(t, dir, "2", map[string]string{"tls.crt": "b"}) },
				func(t *testing.T, dir string) { kubeSwap(t, dir, "3", map[string]string{"tls.crt": "c"}) },
			},
		},
		{
			name: "kubernetes configmap swap of a watched directory",
			setup: func(t *testing.T, dir string) string {
				kubeSwap(t, dir, "1", map[string]string{"policy.rego": "a"})
				return dir
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) { kubeSwap(t, dir, "2", map[string]string{"policy.rego": "b"}) },
				func(t *testing.T, dir string) { kubeSwap(t, dir, "3", map[string]string{"policy.rego": "c"}) },
			},
		},
		{
			name: "file in a watched directory tree, including a new sub-directory",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "policies", "lib", "a.rego"), "a")
				return filepath.Join(dir, "policies")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "policies", "lib", "a.rego"), "b") },
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "policies", "new", "b.rego"), "a") },
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "policies", "new", "b.rego"), "b") },
				func(t *testing.T, dir string) {
					if err := os.Remove(filepath.Join(dir, "policies", "lib", "a.rego")); err != nil {
						t.Fatal(err)
					}
				},
			},
		},
		{
			name: "watched directory removed and created again",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "policies", "a.rego"), "a")
				return filepath.Join(dir, "policies")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) {
					if err := os.RemoveAll(filepath.Join(dir, "policies")); err != nil {
						t.Fatal(err)
					}
				},
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "policies", "a.rego"), "b") },
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "policies", "a.rego"), "c") },
			},
		},
		{
			name: "symlinked directory re-pointed",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "v1", "a.rego"), "a")
				symlink(t, "v1", filepath.Join(dir, "current"))
				return filepath.Join(dir, "current")
			},
			changes: []func(*testing.T, string){
				func(t *testing.T, dir string) {
					write(t, filepath.Join(dir, "v2", "a.rego"), "b")
					symlink(t, "v2", filepath.Join(dir, "current.tmp"))
					rename(t, filepath.Join(dir, "current.tmp"), filepath.Join(dir, "current"))
				},
				func(t *testing.T, dir string) { write(t, filepath.Join(dir, "v2", "a.rego"), "c") },
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			calls := watch(t, testDebounce, tc.setup(t, dir))
			for i, change := range tc.changes {
				change(t, dir)
				waitCall(t, calls, "change "+string(rune('1'+i)))
			}
		})
	}
}

func TestWatcherIgnoresWhatCannotChangeContent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "tls", "cert.pem"), "a")
	write(t, filepath.Join(dir, "policies", "a.rego"), "a")
	write(t, filepath.Join(dir, "policies", ".git", "HEAD"), "a")
	write(t, filepath.Join(dir, "elsewhere", "x"), "a")
	calls := watch(t, testDebounce, filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "policies"))

	write(t, filepath.Join(dir, "elsewhere", "x"), "b")
	noCall(t, calls, "a file in an unwatched directory")
	write(t, filepath.Join(dir, "config.yaml"), "b")
	noCall(t, calls, "a file beside a watched directory")
	write(t, filepath.Join(dir, "policies", ".git", "HEAD"), "b")
	noCall(t, calls, "a file in a hidden sub-directory")
	if err := os.Chmod(filepath.Join(dir, "tls", "cert.pem"), 0o400); err != nil {
		t.Fatal(err)
	}
	noCall(t, calls, "a mode change")
}

func TestWatcherDebouncesABurst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.rego"), "0")
	// A debounce well above the time 20 writes take, so that scheduling noise cannot split the burst.
	calls := watch(t, 300*time.Millisecond, dir)
	for i := range 20 {
		write(t, filepath.Join(dir, "a.rego"), string(rune('a'+i)))
		write(t, filepath.Join(dir, "b.rego"), string(rune('a'+i)))
	}
	waitCall(t, calls, "burst")
	select {
	case <-calls:
		t.Fatal("one burst of writes was reported more than once")
	case <-time.After(time.Second):
	}
}

func TestNewRejectsMissingPaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no paths", Config{OnChange: func(context.Context) {}}},
		{"missing file", Config{Paths: []string{filepath.Join(dir, "nope.pem")}, OnChange: func(context.Context) {}}},
		{"no function", Config{Paths: []string{dir}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if w, err := New(tc.cfg); err == nil {
				w.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

// TestRunReleasesEverythingWhenContextEnds would see a goroutine leaked by Run or by the watch it holds.
func TestRunReleasesEverythingWhenContextEnds(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a", "b", "c.rego"), "a")
	before := runtime.NumGoroutine()

	for range 5 {
		started := make(chan struct{}, 1)
		w, err := New(Config{Paths: []string{dir}, Debounce: time.Millisecond, OnChange: func(context.Context) {
			select {
			case started <- struct{}{}:
			default:
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			w.Run(ctx)
			close(done)
		}()
		write(t, filepath.Join(dir, "a", "b", "c.rego"), "b")
		<-started
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of cancel")
		}
	}
	// A watcher that is never run is released by Close.
	w, err := New(Config{Paths: []string{dir}, OnChange: func(context.Context) {}})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
