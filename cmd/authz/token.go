package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/finauthz/authz/authz/devissuer"
)

// claimFlags collects repeated --claim k=v; a value that parses as JSON is used as JSON (lists, numbers).
type claimFlags map[string]any

func (c claimFlags) String() string { return "" }

func (c claimFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want name=value, got %q", s)
	}
	var j any
	if err := json.Unmarshal([]byte(v), &j); err == nil {
		c[k] = j
	} else {
		c[k] = v
	}
	return nil
}

func mintToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	sub := fs.String("sub", "dev-user", "subject")
	scope := fs.String("scope", "", "space-delimited scopes")
	aud := fs.String("aud", devissuer.Audience, "audience")
	clientID := fs.String("client-id", "authz-cli", "client_id claim")
	ttl := fs.Duration("ttl", 15*time.Minute, "lifetime")
	cfgPath := fs.String("config", "", "configuration whose dev_issuer.key_file to use (default: the embedded one)")
	extra := claimFlags{}
	fs.Var(extra, "claim", "extra claim name=value (repeatable; JSON values allowed, e.g. accounts='[\"acc-1\"]')")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if !cfg.DevIssuer.Enabled {
		return fmt.Errorf("%s: dev_issuer is not enabled: the service would not accept its tokens", cfg.File)
	}
	iss, err := devissuer.Open(cfg.DevIssuer.KeyFile)
	if err != nil {
		return err
	}
	tok, err := iss.Mint(devissuer.Claims{
		Subject: *sub, Scope: *scope, Audience: *aud, ClientID: *clientID, TTL: *ttl, Extra: extra,
	}, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
