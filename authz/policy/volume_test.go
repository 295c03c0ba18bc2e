package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestKubernetesVolumeLoadsOneVersion lays out a ConfigMap volume as the kubelet does (a timestamped version
// directory, "..data" linking to it, and top-level links through "..data") and checks that a load reads every file
// from the version "..data" names, and follows it when the kubelet swaps it.
func TestKubernetesVolumeLoadsOneVersion(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(name, allowed string) {
		v := filepath.Join(dir, name)
		if err := os.MkdirAll(v, 0o700); err != nil {
			t.Fatal(err)
		}
		rego := "package envoy.authz\n\nallow := data.decision.allowed\n"
		if err := os.WriteFile(filepath.Join(v, "policy.rego"), []byte(rego), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(v, "decision"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v, "decision", "data.json"), []byte(`{"allowed": `+allowed+`}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	swap := func(version string) { // the kubelet's atomic swap: a new link renamed over ..data
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2026_11_27_a", "true")
	writeVersion("..2026_11_27_b", "false")
	swap("..2026_11_27_a")
	for _, f := range []string{"policy.rego", "decision"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}

	ctx := context.Background()
	e, err := New(ctx, Config{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	allowed := func() bool {
		d, err := e.Eval(ctx, ast.NewObject())
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed
	}
	if !allowed() {
		t.Fatal("version a allows; the load did not read it")
	}
	revA := e.Revision()

	swap("..2026_11_27_b")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if allowed() {
		t.Fatal("after the swap to version b (deny) the policy still allows")
	}
	if e.Revision() == revA {
		t.Error("revision unchanged across versions with different data")
	}

	// A load that read the top-level links one by one could meet a link still resolving to the old version;
	// pinned to what ..data names, it never does.
	stale := filepath.Join(dir, "decision")
	if err := os.Remove(stale); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..2026_11_27_a", "decision"), stale); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if allowed() {
		t.Fatal("a top-level link to the old version was read instead of the version ..data names")
	}

	swap("..2026_11_27_a")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !allowed() || e.Revision() != revA {
		t.Errorf("back on version a: allowed %v, revision %s, want true and %s", allowed(), e.Revision(), revA)
	}
}
