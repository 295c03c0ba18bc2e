package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
)

// bundleFiles is what one load read: parsed modules, data documents, and
// the revision of the files they came from.
type bundleFiles struct {
	modules   map[string]*ast.Module
	documents map[string]any
	revision  string
	count     int
}

// loadFiles reads paths with OPA's loader, so data files land where
// `opa eval -d` and `opa test` put them: a file's directory below the given
// path becomes its data path, and "a.b:path" loads path under data.a.b.
// fsys nil means the operating system's files.
func loadFiles(fsys fs.FS, paths []string) (*bundleFiles, error) {
	if fsys == nil {
		paths = pinVolumes(paths)
	}
	rec := &recordingFS{fsys: fsys}
	res, err := loader.NewFileLoader().
		WithFS(rec).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered(paths, skipFile)
	if err != nil {
		return nil, fmt.Errorf("policy: load: %w", err)
	}
	return &bundleFiles{
		modules:   res.ParsedModules(),
		documents: res.Documents,
		revision:  revision(paths, rec.files),
		count:     len(rec.files),
	}, nil
}

// pinVolumes replaces each directory that is a Kubernetes ConfigMap or Secret volume by the version its "..data"
// link names at this moment. The volume's files are links through "..data", which the kubelet swaps atomically;
// reading them one by one across a swap would compile old and new files together. Reading from the resolved
// version directory gives every file of one load from one version; the next swap triggers the next load.
func pinVolumes(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = p
		prefix, root := loader.SplitPrefix(p)
		link := filepath.Join(root, "..data")
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		version, err := filepath.EvalSymlinks(link)
		if err != nil {
			continue // a swap in progress: the loader reports what it cannot read
		}
		if len(prefix) > 0 {
			version = strings.Join(prefix, ".") + ":" + version
		}
		out[i] = version
	}
	return out
}

// skipFile leaves out Rego tests, which are for `opa test` and not for
// serving, and hidden files and directories below the given paths, such as
// the "..data" links and timestamped copies of a Kubernetes ConfigMap
// volume, which would otherwise load every file twice.
func skipFile(_ string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if depth > 0 && strings.HasPrefix(name, ".") {
		return true
	}
	return !info.IsDir() && strings.HasSuffix(name, "_test.rego")
}

// readFile is one file the loader read.
type readFile struct {
	name string
	sum  [sha256.Size]byte
}

// recordingFS hands files to the loader and records the digest of each file
// it read, so the revision describes exactly the content that was compiled,
// even if a file changes while it is loaded. With fsys nil it passes names
// to the os package unchanged, as the loader does without an fs.FS.
type recordingFS struct {
	fsys  fs.FS
	files []readFile
}

func (r *recordingFS) Open(name string) (fs.File, error) {
	if r.fsys == nil {
		return os.Open(name)
	}
	return r.fsys.Open(name)
}

func (r *recordingFS) Stat(name string) (fs.FileInfo, error) {
	if r.fsys == nil {
		return os.Stat(name)
	}
	return fs.Stat(r.fsys, name)
}

func (r *recordingFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if r.fsys == nil {
		return os.ReadDir(name)
	}
	return fs.ReadDir(r.fsys, name)
}

func (r *recordingFS) ReadFile(name string) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	if r.fsys == nil {
		b, err = os.ReadFile(name)
	} else {
		b, err = fs.ReadFile(r.fsys, name)
	}
	if err != nil {
		return nil, err
	}
	r.files = append(r.files, readFile{name: name, sum: sha256.Sum256(b)})
	return b, nil
}

// revision hashes the names and contents of the files read. Names are taken
// relative to the configured path they were found under (with its data
// prefix), so the same policy tree has the same revision wherever it is
// mounted.
func revision(paths []string, files []readFile) string {
	type entry struct {
		name string
		sum  [sha256.Size]byte
	}
	entries := make([]entry, len(files))
	for i, f := range files {
		entries[i] = entry{name: displayName(paths, f.name), sum: f.sum}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(strings.Compare(a.name, b.name), slices.Compare(a.sum[:], b.sum[:]))
	})
	h := sha256.New()
	for _, e := range entries {
		h.Write([]byte(e.name))
		h.Write([]byte{0})
		h.Write(e.sum[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func displayName(paths []string, file string) string {
	file = filepath.Clean(file)
	for _, p := range paths {
		prefix, root := loader.SplitPrefix(p)
		rel, err := filepath.Rel(filepath.Clean(root), file)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		if rel == "." {
			rel = filepath.Base(file)
		}
		if len(prefix) > 0 {
			return strings.Join(prefix, ".") + ":" + filepath.ToSlash(rel)
		}
		return filepath.ToSlash(rel)
	}
	return filepath.ToSlash(file)
}
