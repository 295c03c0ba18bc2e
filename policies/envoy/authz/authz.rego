# METADATA
# title: Envoy external authorization
# description: >-
#   Entry point: data.envoy.authz.allow is the OPA-Envoy result object for every
#   request. It assembles the decision from the route table and the checks of the
#   authz.lib packages, denying by default.
# entrypoint: true
package envoy.authz

import data.authz.lib.grants
import data.authz.lib.identity
import data.authz.lib.minimize
import data.authz.lib.routing
import data.authz.lib.stepup
import data.authz.lib.zerotrust

# Performance note: the rules below refer to the selected route once each and pass
# it on to functions. When the policy engine partially evaluates the policy at load
# time, each rule then unrolls into one body per route in which the route's
# requirements are constants, and a request only evaluates the bodies of its route.

# METADATA
# title: Default deny
# description: >-
#   A request no route matches is denied with 403 route_not_found; so is anything
#   the rules below do not explicitly decide.
# custom:
#   pci_dss: ["7.2.1", "7.3.3"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": `{"error":"route_not_found"}`,
	"dynamic_metadata": {"reason": "route_not_found"},
}

# METADATA
# title: Allow
# description: >-
#   A request that matches a route and fails none of its conditions is allowed, with
#   the token and client identity headers removed and only what the route needs set.
# custom:
#   pci_dss: ["7.2.1", "7.2.2"]
#   soc2: ["CC6.1", "CC6.3"]
#   gdpr: ["5(1)(c)", "25(2)"]
#   glba: ["314.4(c)(1)"]
#   ccpa: ["1798.100(c)"]
allow := {
	"allowed": true,
	"headers": headers,
	"request_headers_to_remove": removed,
	"dynamic_metadata": {"route": route.id},
} if {
	route := routing.route
	count(failures) == 0
	headers := minimize.headers_for(route)
	removed := minimize.removed_from(route, headers)
}

# METADATA
# title: Deny
# description: >-
#   A request that matches a route but fails a condition is denied with the status,
#   headers and JSON body of the highest-precedence failure; the reason and route id
#   go to Envoy's dynamic metadata for the access log.
# custom:
#   pci_dss: ["7.2.1", "10.2.1.4", "10.2.2"]
#   soc2: ["CC6.1", "CC7.2"]
#   glba: ["314.4(c)(1)", "314.4(c)(8)"]
allow := denial(route, first) if {
	count(failures) > 0
	route := routing.route
	first := first_reason(failures)
}

# METADATA
# title: Denial
# description: The result object that denies a request to a route for a reason.
# custom:
#   internal: true
denial(route, reason) := {
	"allowed": false,
	"http_status": object.get(statuses, reason, 403),
	"headers": object.union({"content-type": "application/json"}, {"www-authenticate": c | c := challenge(reason, route)}),
	"body": json.marshal({"error": reason}),
	"dynamic_metadata": object.union({"reason": reason}, {"route": route.id | is_string(route.id)}),
}

# METADATA
# title: Failures
# description: Every condition of the selected route that the request fails, by reason.
# custom:
#   internal: true
failures contains reason if {
	route := routing.route
	some reason in precedence
	fails(reason, route)
}

# METADATA
# title: Identity condition failed
# description: A condition of the identity package fails.
# custom:
#   internal: true
fails(reason, route) if identity.fails(reason, route)

# METADATA
# title: Zero-trust condition failed
# description: A condition of the zero-trust package fails.
# custom:
#   internal: true
fails(reason, route) if zerotrust.fails(reason, route)

# METADATA
# title: Grant condition failed
# description: A condition of the grants package fails.
# custom:
#   internal: true
fails(reason, route) if grants.fails(reason, route)

# METADATA
# title: Step-up condition failed
# description: A condition of the step-up package fails.
# custom:
#   internal: true
fails(reason, route) if stepup.fails(reason, route)

# METADATA
# title: Deny precedence
# description: >-
#   When several conditions fail, the first of these reasons is reported:
#   authentication, then mTLS and principal, network, device, risk, scope, resource,
#   step-up and business hours.
# custom:
#   internal: true
precedence := [
	"authentication_required",
	"mtls_required",
	"principal_not_allowed",
	"network_not_allowed",
	"device_posture",
	"risk_too_high",
	"insufficient_scope",
	"resource_not_granted",
	"step_up_required",
	"outside_business_hours",
]

# METADATA
# title: Deny reason
# description: The highest-precedence reason among the failures.
# custom:
#   pci_dss: ["10.2.1.4"]
#   soc2: ["CC7.2"]
first_reason(failed) := [r | some r in precedence; r in failed][0]

# METADATA
# title: Deny statuses
# description: >-
#   HTTP status by reason, 403 otherwise: 401 asks the client to authenticate, again
#   or more strongly (RFC 9470).
# custom:
#   internal: true
statuses := {
	"authentication_required": 401,
	"step_up_required": 401,
}

# METADATA
# title: Bearer challenge
# description: A request without a token is told to authenticate with a bearer token (RFC 6750 §3).
# custom:
#   pci_dss: ["8.3.1"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc6750#section-3
challenge("authentication_required", _) := "Bearer"

# METADATA
# title: Scope challenge
# description: A token lacking scopes is told which the route requires (RFC 6750 §3.1).
# custom:
#   pci_dss: ["7.2.1"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
challenge("insufficient_scope", route) := identity.challenge_for(route)

# METADATA
# title: Step-up challenge
# description: A token with too weak or too old an authentication is told what would do (RFC 9470).
# custom:
#   pci_dss: ["8.4.2"]
#   glba: ["314.4(c)(5)"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc9470#section-3
challenge("step_up_required", route) := stepup.challenge_for(route.step_up)
