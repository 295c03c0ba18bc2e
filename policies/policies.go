// Package policies embeds the shipped Rego policy library: the envoy.authz entry
// point, the authz.lib packages it is built from, their tests, and the default
// route table, routes.yaml (README.md documents its fields).
package policies

import "embed"

// Query is the decision the service evaluates for every request. Its value is an
// OPA-Envoy result object, and it is always defined.
const Query = "data.envoy.authz.allow"

// ValidationQuery evaluates to the set of problems of the loaded route table, one
// message each. A table is fit to serve when the set is empty; evaluate it once
// after loading, before serving (policy.Config.ValidationQuery), so that a broken
// table is rejected at start: the policy does not check the table per request.
const ValidationQuery = "data.authz.lib.routing.errors"

// FS holds the Rego modules, their _test.rego files and routes.yaml, at their paths
// relative to this directory. Loaded from its root, routes.yaml lands at
// data.authz.
//
//go:embed routes.yaml envoy authz
var FS embed.FS
