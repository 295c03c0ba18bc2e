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
	"headers": minimize.headers,
	"request_headers_to_remove": minimize.removed,
	"dynamic_metadata": {"route": routing.route.id},
} if {
	routing.route
	count(failures) == 0
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
allow := {
	"allowed": false,
	"http_status": object.get(statuses, reason, 403),
	"headers": object.union({"content-type": "application/json"}, {"www-authenticate": c | some c in challenge}),
	"body": json.marshal({"error": object.get(public_errors, reason, reason)}),
	"dynamic_metadata": object.union({"reason": reason}, {"route": routing.route.id | is_string(routing.route.id)}),
} if {
	routing.route
	count(failures) > 0
}

# METADATA
# title: Failures
# description: Every condition of the selected route that the request fails, by reason.
# custom:
#   internal: true
failures := union({routing.failures, identity.failures, zerotrust.failures, grants.failures, stepup.failures})

# METADATA
# title: Deny precedence
# description: >-
#   When several conditions fail, the first of these reasons is reported: the route
#   itself, then authentication, mTLS and principal, network, device, risk, scope,
#   resource, step-up and business hours.
# custom:
#   internal: true
precedence := [
	"route_invalid",
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
# description: The highest-precedence failure.
# custom:
#   pci_dss: ["10.2.1.4"]
#   soc2: ["CC7.2"]
reason := [r | some r in precedence; r in failures][0]

# METADATA
# title: Deny statuses
# description: >-
#   HTTP status by reason, 403 otherwise: 401 asks the client to authenticate (again,
#   or more strongly per RFC 9470); 500 says the route table is at fault.
# custom:
#   internal: true
statuses := {
	"authentication_required": 401,
	"step_up_required": 401,
	"route_invalid": 500,
}

# METADATA
# title: Public error codes
# description: >-
#   The error code in a deny body is the reason, except where the reason would tell
#   the client about the configuration.
# custom:
#   internal: true
public_errors := {"route_invalid": "server_error"}

# METADATA
# title: Bearer challenge
# description: A request without a token is told to authenticate with a bearer token (RFC 6750 §3).
# custom:
#   pci_dss: ["8.3.1"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc6750#section-3
challenge contains "Bearer" if reason == "authentication_required"

# METADATA
# title: Scope challenge
# description: A token lacking scopes is told which the route requires (RFC 6750 §3.1).
# custom:
#   pci_dss: ["7.2.1"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
challenge contains identity.scope_challenge if reason == "insufficient_scope"

# METADATA
# title: Step-up challenge
# description: A token with too weak or too old an authentication is told what would do (RFC 9470).
# custom:
#   pci_dss: ["8.4.2"]
#   glba: ["314.4(c)(5)"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc9470#section-3
challenge contains stepup.challenge if reason == "step_up_required"
