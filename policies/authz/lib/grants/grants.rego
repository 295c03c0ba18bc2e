# METADATA
# title: Resource grants
# description: >-
#   Binds path parameters of the selected route to claims of the verified token, so
#   that a caller reaches only the resources the token names (an account in the
#   accounts claim, the customer who is the subject).
package authz.lib.grants

import data.authz.lib.identity
import data.authz.lib.request
import data.authz.lib.routing

# METADATA
# title: Failures
# description: The conditions of this package that the selected route fails, by reason.
# custom:
#   internal: true
failures contains "resource_not_granted" if fails("resource_not_granted", routing.route)

# METADATA
# title: Resource not granted
# description: >-
#   Every grant of the selected route must hold; otherwise the request is denied with
#   403 resource_not_granted.
# custom:
#   pci_dss: ["7.2.1", "7.3.1"]
#   soc2: ["CC6.1", "CC6.3"]
#   glba: ["314.4(c)(1)"]
#   gdpr: ["32(1)(b)"]
#   ccpa: ["1798.150(a)(1)"]
fails("resource_not_granted", route) if {
	route.grants
	not all_granted(route)
}

# METADATA
# title: All grants hold
# description: >-
#   Every grant of a route holds for the path parameters and the token's claims; a
#   route without grants needs none.
# custom:
#   internal: true
all_granted(route) if {
	every grant in object.get(route, "grants", []) {
		granted(grant, routing.route_param(route, grant.param), request.claims)
	}
}

# METADATA
# title: Member grant
# description: >-
#   The parameter value is one of the claim's values: an element of a list claim, or
#   one of the space-delimited values of a string claim. The default match.
# custom:
#   internal: true
granted(grant, value, claims) if {
	object.get(grant, "match", "member") == "member"
	value in identity.claim_values(claims[grant.claim])
}

# METADATA
# title: Equality grant
# description: The parameter value equals the claim, e.g. a customer id that must be the sub claim.
# custom:
#   internal: true
granted(grant, value, claims) if {
	grant.match == "equals"
	value == claims[grant.claim]
}
