package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "regenerate docs/compliance-matrix.md from the shipped policies")

// TestComplianceMatrixIsCurrent regenerates the committed compliance matrix from the shipped policies and fails
// when the committed copy is stale. Run `go test ./cmd/authz -run ComplianceMatrix -update` after changing a policy.
func TestComplianceMatrixIsCurrent(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"compliance", "--policies", "../../policies", "--format", "markdown"}, &out, &errOut); code != 0 {
		t.Fatalf("authz compliance exited %d: %s", code, errOut.String())
	}
	path := filepath.Join("..", "..", "docs", "compliance-matrix.md")
	if *update {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, out.Bytes()) {
		t.Fatalf("%s is stale: run `go test ./cmd/authz -run ComplianceMatrix -update` and commit the result", path)
	}
	if !strings.Contains(out.String(), "## PCI DSS") {
		t.Errorf("matrix has no PCI DSS section")
	}
}

func TestUsageAndUnknownCommand(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no command prints usage and fails", nil, 2},
		{"help succeeds", []string{"help"}, 0},
		{"unknown command fails", []string{"frobnicate"}, 2},
		{"compliance with an unknown format fails", []string{"compliance", "--policies", "../../policies", "--format", "pdf"}, 1},
		{"compliance of a missing directory fails", []string{"compliance", "--policies", "does-not-exist"}, 1},
		{"check without a URL is an error", []string{"check"}, 2},
		{"check with a bad header is an error", []string{"check", "-H", "nocolon", "http://x/"}, 2},
		{"check with a client certificate but no CA is an error", []string{"check", "--cert", "c.pem", "--key", "k.pem", "http://x/"}, 2},
		{"check with a missing CA file is an error", []string{"check", "--cacert", "missing.pem", "http://x/"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut); code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errOut.String())
			}
		})
	}
}
