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
# title: Subject header
# description: x-subject carries the token's sub claim on bearer routes.
# custom:
#   pci_dss: ["8.2.1"]
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
headers["x-subject"] := identity.subject if routing.authentication == "bearer"

# METADATA
# title: Client header from the token
# description: x-client-id carries the token's client_id (or azp) on bearer routes.
# custom:
#   pci_dss: ["8.2.1"]
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
headers["x-client-id"] := identity.client_id if routing.authentication == "bearer"

# METADATA
# title: Client header from the certificate
# description: x-client-id carries the client certificate's SPIFFE ID on mtls routes.
# custom:
#   pci_dss: ["8.2.1"]
#   soc2: ["CC6.1"]
headers["x-client-id"] := request.principal if {
	routing.authentication == "mtls"
	request.principal != ""
}

# METADATA
# title: Scopes header
# description: >-
#   x-scopes carries, space-delimited, the granted scopes the route asks for; not the
#   token's other scopes.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   soc2: ["CC6.1"]
headers["x-scopes"] := concat(" ", identity.granted_scopes) if {
	routing.authentication == "bearer"
	count(identity.granted_scopes) > 0
}

# METADATA
# title: Data fields header
# description: >-
#   x-data-fields lists, comma-separated, the response fields the route may return;
#   the upstream returns no others.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   ccpa: ["1798.100(c)"]
#   glba: ["314.4(c)(1)"]
headers["x-data-fields"] := concat(",", routing.route.data_fields) if count(routing.route.data_fields) > 0

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
removed := sort(((baseline - trusted) | extra) - object.keys(headers))

# METADATA
# title: Trusted client certificate header
# description: The route trusts the x-forwarded-client-cert header that Envoy sets.
# custom:
#   internal: true
trusted contains "x-forwarded-client-cert" if routing.route.trust_xfcc == true

# METADATA
# title: Table-wide removed headers
# description: Headers the route table removes from every allowed request.
# custom:
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
extra contains name if some name in data.authz.remove_headers

# METADATA
# title: Route removed headers
# description: Headers the selected route removes in addition.
# custom:
#   gdpr: ["5(1)(c)"]
#   soc2: ["CC6.1"]
extra contains name if some name in routing.route.remove_headers
