package authzv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is where buf.yaml and buf.gen.yaml live.
const repoRoot = "../../.."

func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not on PATH", name)
	}
	return path
}

func TestSchemasPassBufLint(t *testing.T) {
	buf := needTool(t, "buf")
	cmd := exec.Command(buf, "lint")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf lint: %v\n%s", err, out)
	}
}

// TestGeneratedCodeIsCurrent regenerates the Go code into a temporary directory and compares it with the
// committed files. It runs only with the protoc-gen-go version that wrote them, whose output it can match.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	buf := needTool(t, "buf")
	plugin := needTool(t, "protoc-gen-go")
	committed, err := os.ReadFile("decision_log.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(plugin, "--version").Output()
	if err != nil {
		t.Fatalf("protoc-gen-go --version: %v", err)
	}
	have := strings.TrimSpace(strings.TrimPrefix(string(out), "protoc-gen-go"))
	m := regexp.MustCompile(`(?m)^// \tprotoc-gen-go (\S+)$`).FindSubmatch(committed)
	if m == nil {
		t.Fatal("decision_log.pb.go names no protoc-gen-go version")
	}
	if want := string(m[1]); have != want {
		t.Skipf("protoc-gen-go on PATH is %s; the committed code was generated with %s", have, want)
	}

	dir := t.TempDir()
	cmd := exec.Command(buf, "generate", "--output", dir)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf generate: %v\n%s", err, out)
	}
	fresh, err := os.ReadFile(filepath.Join(dir, "proto", "authz", "v1", "decision_log.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, committed) {
		t.Error("decision_log.pb.go is stale: run `buf generate` at the repository root and commit the result")
	}
}
