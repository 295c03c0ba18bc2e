// Package envoy holds the Envoy configurations that put the authorization service in front of an application
// (sidecar.yaml) or at the edge (gateway.yaml), and loads them the way Envoy would: strictly, every typed_config
// included, so that a misspelt field or @type fails here rather than at Envoy's start.
//
// Sidecar renders sidecar.yaml on other ports for end-to-end tests.
package envoy
