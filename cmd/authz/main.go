// Command authz is the Envoy external authorization service and its companion tools.
//
//	authz serve   [--config FILE]           run the ext_authz gRPC service (embedded default without --config)
//	authz token   --sub S --scope "a b" ...  mint a development access token
//	authz check   [-H ...] URL               send one Envoy-shaped CheckRequest and print the decision
//	authz bench   [flags]                    load a running service, next to a no-op server
//	authz noop    [--listen ADDR]            run a no-op ext_authz server (the baseline of authz bench)
//	authz compliance --policies DIR          print the compliance matrix of a policy library
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	// Business-hours rules name IANA time zones; the binary must not depend on the host's zoneinfo.
	_ "time/tzdata"
)

const usage = `authz: Envoy external authorization service for financial APIs

Usage:
  authz serve [--config FILE]               run the service (without --config: embedded development default)
  authz token [flags]                       mint a token from the development issuer
  authz check [flags] URL                   send one CheckRequest shaped as Envoy would; print the decision
                                            (exit 0 allowed, 1 denied, 2 error)
  authz compliance --policies DIR [--format markdown|csv|json]
                                            print requirement -> rules -> tests from policy annotations
  authz bench [flags]                       measure a running service under load, next to a no-op server
  authz noop [--listen ADDR]                run a no-op ext_authz server that allows everything, for bench

Run "authz COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one subcommand and returns the process exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":      serve,
		"token":      mintToken,
		"check":      check,
		"compliance": runCompliance,
		"bench":      bench,
		"noop":       noop,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "authz: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(exitError)):
		return int(err.(exitError))
	}
	fmt.Fprintf(stderr, "authz %s: %v\n", args[0], err)
	return 1
}

// exitError ends a command with a status and no message (the command has printed what it had to say).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("authz "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
