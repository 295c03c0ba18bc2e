# METADATA
# title: Data minimization
# description: >-
#   What an allowed request carries upstream: the bearer token and every client-sent
#   identity header are removed, and only the identity and data fields the route needs
#   are set, from the verified token or client certificate.
package authz.lib.minimize

import data.authz.lib.identity
import data.authz.lib.request
import data.authz.lib.routing

# METADATA
# title: Baseline removed headers
# description: >-
#   Headers that are never forwarded as the client sent them: the credential itself
#   and the identity headers this policy owns.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   soc2: ["CC6.1", "CC6.7"]
baseline := {
	"authorization",
	"x-user-id",
	"x-subject",
	"x-client-id",
	"x-scopes",
	"x-data-fields",
	"x-forwarded-client-cert",
}

# METADATA
# title: Set headers
# description: >-
#   The headers an allowed request of the selected route carries upstream, each only
#   when its value is known: identity from the token on bearer routes or from the
#   client certificate on mtls routes, and the route's data fields.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   soc2: ["CC6.1"]
headers := headers_for(routing.route)

# METADATA
# title: Set headers of a route
# description: >-
#   The headers set for an allowed request of a route: each candidate header whose
#   value is known.
# custom:
#   internal: true
headers_for(route) := object.remove(candidates, {name | some name, value in candidates; value == null}) if {
	candidates := object.union(identity_headers(routing.mode(route), route), data_fields_header(route))
}

# METADATA
# title: Identity headers on bearer routes
# description: Subject, client and granted scopes, from the verified token; null when unknown.
# custom:
#   internal: true
identity_headers("bearer", route) := headers if {
	claims := request.claims
	granted := identity.granted(route)
	headers := {
		"x-subject": subject_header(claims),
		"x-client-id": token_client_header(claims),
		"x-scopes": scopes_header(granted),
	}
}

# METADATA
# title: Identity headers on mtls routes
# description: The client, from the client certificate; null when unknown.
# custom:
#   internal: true
identity_headers("mtls", _) := {"x-client-id": certificate_client_header}

# METADATA
# title: Identity headers on public routes
# description: None, as a public route forwards no identity.
# custom:
#   internal: true
identity_headers("none", _) := {}

# METADATA
# title: Subject header
# description: x-subject carries the token's sub claim on bearer routes.
# custom:
#   pci_dss: ["8.2.1"]
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
subject_header(claims) := identity.subject_of(claims)

# METADATA
# title: Client header from the token
# description: x-client-id carries the token's client_id (or azp) on bearer routes.
# custom:
#   pci_dss: ["8.2.1"]
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
token_client_header(claims) := identity.client_of(claims)

# METADATA
# title: Client header from the certificate
# description: x-client-id carries the client certificate's SPIFFE ID on mtls routes.
# custom:
#   pci_dss: ["8.2.1"]
#   soc2: ["CC6.1"]
certificate_client_header := object.get({false: request.principal}, request.principal == "", null)

# METADATA
# title: Scopes header
# description: >-
#   x-scopes carries, space-delimited, the granted scopes the route asks for; not the
#   token's other scopes.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   soc2: ["CC6.1"]
scopes_header(granted) := object.get({true: concat(" ", granted)}, count(granted) > 0, null)

# METADATA
# title: Data fields header
# description: >-
#   x-data-fields lists, comma-separated, the response fields the route may return;
#   the upstream returns no others.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   ccpa: ["1798.100(c)"]
#   glba: ["314.4(c)(1)"]
data_fields_header(route) := {"x-data-fields": concat(",", fields) |
	fields := route.data_fields
	count(fields) > 0
}

# METADATA
# title: Removed headers
# description: >-
#   Sorted request headers to remove: the baseline (x-forwarded-client-cert kept when
#   the route trusts it), the table-wide and the route's remove_headers. Headers set
#   by this decision are left out, because Envoy removes after it sets.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   ccpa: ["1798.100(c)"]
#   soc2: ["CC6.1", "CC6.7"]
removed := removed_from(routing.route, headers)

# METADATA
# title: Removed headers of a route
# description: >-
#   The request headers an allowed request of a route has removed, sorted, given the
#   headers it sets.
# custom:
#   internal: true
removed_from(route, set_headers) := sort(removable(route) - object.keys(set_headers))

# METADATA
# title: Removable headers of a route
# description: >-
#   The baseline (x-forwarded-client-cert kept when the route trusts it), the
#   table-wide and the route's remove_headers.
# custom:
#   internal: true
removable(route) := ((baseline - trusted(route)) | table_extra) | route_extra(route)

# METADATA
# title: Trusted client certificate header
# description: The route trusts the x-forwarded-client-cert header that Envoy sets.
# custom:
#   internal: true
trusted(route) := {"x-forwarded-client-cert" | route.trust_xfcc == true}

# METADATA
# title: Table-wide removed headers
# description: Headers the route table removes from every allowed request.
# custom:
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
table_extra contains name if some name in data.authz.remove_headers

# METADATA
# title: Route removed headers
# description: Headers a route removes in addition.
# custom:
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
route_extra(route) := {name | some name in object.get(route, "remove_headers", [])}
