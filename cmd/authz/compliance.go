package main

import (
	"context"
	"fmt"
	"io"

	"github.com/finauthz/authz/authz/compliance"
)

// compliance prints the matrix requirement -> rules -> tests read from the policies' METADATA annotations.
func runCompliance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("compliance", stderr)
	dir := fs.String("policies", "policies", "policy directory (Rego, data and _test.rego files)")
	format := fs.String("format", compliance.FormatMarkdown, "output format: markdown, csv or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	m, err := compliance.Generate(ctx, *dir)
	if err != nil {
		return err
	}
	return m.Write(stdout, *format)
}
