# METADATA
# title: Zero-trust context
# description: >-
#   Per-route conditions on the connection and its context, each optional: mTLS and a
#   SPIFFE ID allow-list, client networks, device posture, a risk score ceiling and
#   business hours. Headers used here must be set by the edge, which strips any
#   client-sent copy.
package authz.lib.zerotrust

import data.authz.lib.request
import data.authz.lib.routing

# METADATA
# title: Failures
# description: The conditions of this package that the selected route fails, by reason.
# custom:
#   internal: true
failures contains reason if {
	some reason in reasons
	fails(reason, routing.route)
}

# METADATA
# title: Reasons
# description: The deny reasons this package can report.
# custom:
#   internal: true
reasons := [
	"mtls_required",
	"principal_not_allowed",
	"network_not_allowed",
	"device_posture",
	"risk_too_high",
	"outside_business_hours",
]

# METADATA
# title: mTLS required
# description: >-
#   A route that requires mTLS, lists SPIFFE IDs, or authenticates by mTLS needs a
#   client certificate that Envoy verified (a source principal); otherwise 403
#   mtls_required.
# custom:
#   pci_dss: ["8.3.1"]
#   soc2: ["CC6.1", "CC6.7"]
#   glba: ["314.4(c)(1)", "314.4(c)(3)"]
fails("mtls_required", route) if {
	mtls_needed(route)
	request.principal == ""
}

# METADATA
# title: Principal not allowed
# description: >-
#   When the route lists SPIFFE IDs, the client's must equal one of principals or lie
#   under one of principal_prefixes; otherwise 403 principal_not_allowed.
# custom:
#   pci_dss: ["7.2.1", "7.2.5"]
#   soc2: ["CC6.1", "CC6.3"]
#   glba: ["314.4(c)(1)"]
fails("principal_not_allowed", route) if {
	allow_listed(route)
	request.principal != ""
	not principal_listed(route)
}

# METADATA
# title: Network not allowed
# description: >-
#   When the route lists CIDRs, the client address must lie in one of them; otherwise
#   403 network_not_allowed. A missing or unparsable address fails closed.
# custom:
#   pci_dss: ["1.3.1", "1.4.2"]
#   soc2: ["CC6.1", "CC6.6"]
#   glba: ["314.4(c)(1)"]
fails("network_not_allowed", route) if {
	network := route.network
	network
	not network_allowed(network)
}

# METADATA
# title: Device posture
# description: >-
#   When the route names a device posture header, its value must be one of the
#   allowed postures; otherwise 403 device_posture. A missing header fails closed.
# custom:
#   soc2: ["CC6.1", "CC6.8"]
#   glba: ["314.4(c)(1)"]
fails("device_posture", route) if {
	device := route.device
	device
	not device_allowed(device)
}

# METADATA
# title: Risk too high
# description: >-
#   When the route sets a maximum risk score, the score from the edge header or the
#   risk engine's filter metadata must not exceed it; otherwise 403 risk_too_high. A
#   missing or unparsable score fails closed.
# custom:
#   soc2: ["CC6.1", "CC7.2"]
#   glba: ["314.4(c)(1)"]
fails("risk_too_high", route) if {
	risk := route.risk
	risk
	not risk_acceptable(risk)
}

# METADATA
# title: Outside business hours
# description: >-
#   When the route sets business hours, the current weekday and hour in the route's
#   time zone must fall in the window; otherwise 403 outside_business_hours.
# custom:
#   pci_dss: ["7.2.1"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
fails("outside_business_hours", route) if {
	hours := route.business_hours
	hours
	not within_business_hours(hours)
}

# METADATA
# title: Network allowed
# description: >-
#   The client address lies in one of the network's CIDRs. Written positively, so that
#   a missing address or CIDR list leaves it undefined and the check fails closed.
# custom:
#   internal: true
network_allowed(network) if {
	address := client_address(network, request.source_address)
	ip_address(address)
	some cidr in network.cidrs
	net.cidr_contains(cidr, address)
}

# METADATA
# title: IP address
# description: >-
#   The value is a single IPv4 or IPv6 address (with a /32 suffix it forms a valid
#   CIDR in either family). Checked before net.cidr_contains, which raises an error
#   on anything else, so that a forged header cannot make the evaluation fail.
# custom:
#   internal: true
ip_address(value) if net.cidr_is_valid(concat("", [value, "/32"]))

# METADATA
# title: Device allowed
# description: The device posture header holds one of the allowed postures.
# custom:
#   internal: true
device_allowed(device) if request.header(device.header) in device.allowed

# METADATA
# title: Risk acceptable
# description: A risk score is present, parses, and does not exceed the maximum.
# custom:
#   internal: true
risk_acceptable(risk) if risk_score(risk, request.filter_metadata) <= risk.max

# METADATA
# title: Within business hours now
# description: The current time falls in the business hours.
# custom:
#   internal: true
within_business_hours(hours) if within_hours(hours, time.now_ns())

# METADATA
# title: mTLS needed
# description: The route requires mTLS explicitly, through an allow-list, or as its authentication.
# custom:
#   internal: true
mtls_needed(route) if route.mtls.required == true

# METADATA
# title: mTLS needed for an allow-list
# description: A SPIFFE ID allow-list can only be checked with a client certificate.
# custom:
#   internal: true
mtls_needed(route) if allow_listed(route)

# METADATA
# title: mTLS needed for mTLS authentication
# description: A route authenticated by mTLS has no other identity.
# custom:
#   internal: true
mtls_needed(route) if routing.mode(route) == "mtls"

# METADATA
# title: SPIFFE ID allow-list
# description: The route lists SPIFFE IDs or SPIFFE ID prefixes.
# custom:
#   internal: true
allow_listed(route) if count(allowed_principals(route)) + count(allowed_prefixes(route)) > 0

# METADATA
# title: Allowed SPIFFE IDs
# description: SPIFFE IDs a route accepts exactly.
# custom:
#   internal: true
allowed_principals(route) := object.get(route, ["mtls", "principals"], [])

# METADATA
# title: Allowed SPIFFE ID prefixes
# description: SPIFFE ID paths under which a route accepts any workload.
# custom:
#   internal: true
allowed_prefixes(route) := object.get(route, ["mtls", "principal_prefixes"], [])

# METADATA
# title: Principal listed
# description: The client's SPIFFE ID is on the route's allow-list.
# custom:
#   internal: true
principal_listed(route) if principal_allowed(request.principal, allowed_principals(route), allowed_prefixes(route))

# METADATA
# title: Exact SPIFFE ID
# description: The principal is one of the listed SPIFFE IDs.
# custom:
#   internal: true
principal_allowed(principal, exact, _) if principal in exact

# METADATA
# title: SPIFFE ID under a prefix
# description: >-
#   The principal lies under a listed prefix, on a path segment boundary, so that
#   spiffe://td/ns/ops admits spiffe://td/ns/ops/sa/x but not spiffe://td/ns/ops-x/sa/y.
# custom:
#   internal: true
principal_allowed(principal, _, prefixes) if {
	some prefix in prefixes
	startswith(principal, concat("", [trim_suffix(prefix, "/"), "/"]))
}

# METADATA
# title: Client address from the peer
# description: Without an address header, the client address is the TCP peer's.
# custom:
#   internal: true
client_address(network, peer) := peer if not network.address_header

# METADATA
# title: Client address from the edge
# description: >-
#   With an address_header, the client address is that header's value, which the edge
#   sets to the original client's single IP address (e.g. x-envoy-external-address).
# custom:
#   internal: true
client_address(network, _) := request.header(network.address_header)

# METADATA
# title: Risk score from a header
# description: >-
#   The score in the route's risk header: a plain decimal number, anything else is no
#   score.
# custom:
#   internal: true
risk_score(risk, _) := to_number(value) if {
	value := request.header(risk.header)
	regex.match(decimal_score, value)
}

# METADATA
# title: Risk score from filter metadata
# description: >-
#   The score the risk engine left in Envoy filter metadata under the route's
#   namespace and key: a non-negative number, or a string holding one. Used only when
#   the route names no risk header.
# custom:
#   internal: true
risk_score(risk, metadata) := score if {
	not risk.header
	value := metadata[risk.metadata.namespace][risk.metadata.key]
	score := metadata_number(value)
}

# METADATA
# title: Numeric metadata score
# description: A number from protobuf Struct metadata.
# custom:
#   internal: true
metadata_number(value) := value if {
	is_number(value)
	value >= 0
}

# METADATA
# title: String metadata score
# description: A score sent as a string holds a plain decimal number.
# custom:
#   internal: true
metadata_number(value) := to_number(value) if {
	is_string(value)
	regex.match(decimal_score, value)
}

# METADATA
# title: Decimal score
# description: >-
#   A score as text: up to three digits and an optional fraction. Exponents, signs,
#   hex, NaN and Inf, which to_number would accept, are not scores.
# custom:
#   internal: true
decimal_score := `^[0-9]{1,3}(\.[0-9]{1,6})?$`

# METADATA
# title: Within business hours
# description: >-
#   The weekday is listed and the hour lies in [start_hour, end_hour), both in the
#   route's IANA time zone; an unknown time zone is never within hours.
# custom:
#   internal: true
within_hours(hours, now_ns) if {
	time.weekday([now_ns, hours.timezone]) in hours.days
	[hour, _, _] := time.clock([now_ns, hours.timezone])
	hour >= hours.start_hour
	hour < hours.end_hour
}
