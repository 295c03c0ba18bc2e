// Package e2e runs the authorization service as its users do: the real authz binary, started with a
// configuration file, minting tokens with its own token command, behind an Envoy sidecar that runs
// envoy/sidecar.yaml, in front of an upstream application that records what reaches it.
//
// The sidecar is real Envoy when an envoy binary is on PATH, and always the Go stand-in of package envoyproxy
// configured from the same sidecar.yaml. The scenarios are one table run against both.
package e2e
