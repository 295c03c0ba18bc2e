package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// authzBin is the service binary built once for the whole package; empty under -short.
var authzBin string

// repoRoot is the module root, the parent of this package's directory.
var repoRoot string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "authz-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	authzBin = filepath.Join(dir, "authz")
	args := []string{"build", "-o", authzBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/authz")...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/authz: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// needBinary skips end-to-end tests under -short, where the service is not built.
func needBinary(t *testing.T) {
	t.Helper()
	if authzBin == "" {
		t.Skip("end-to-end tests need the authz binary, which -short does not build")
	}
}
