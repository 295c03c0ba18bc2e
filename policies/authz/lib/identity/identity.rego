# METADATA
# title: Authentication and scopes
# description: >-
#   Who the caller is, according to the verified bearer token, and whether its
#   scopes cover the selected route (RFC 9068 scope or scp claims; RFC 6750 §3.1
#   challenges).
package authz.lib.identity

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
reasons := ["authentication_required", "insufficient_scope"]

# METADATA
# title: Bearer token required
# description: >-
#   A route that is neither public nor authenticated by mTLS needs a verified bearer
#   token; without one the request is denied with 401 authentication_required.
# custom:
#   pci_dss: ["8.3.1"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
fails("authentication_required", route) if {
	routing.mode(route) == "bearer"
	not request.authenticated
}

# METADATA
# title: Required scopes
# description: >-
#   The token must hold every all_of scope and, when any_of is set, at least one
#   any_of scope; otherwise the request is denied with 403 insufficient_scope.
# custom:
#   pci_dss: ["7.2.1", "7.2.2"]
#   soc2: ["CC6.1", "CC6.3"]
#   glba: ["314.4(c)(1)"]
fails("insufficient_scope", route) if {
	route.scopes
	not scopes_satisfied(route)
}

# METADATA
# title: Scopes satisfied
# description: The token's scopes cover all_of and, if set, any_of of a route.
# custom:
#   internal: true
scopes_satisfied(route) if {
	every scope in object.get(route, ["scopes", "all_of"], []) {
		scope in token_scopes
	}
	any_of_satisfied(object.get(route, ["scopes", "any_of"], []), token_scopes)
}

# METADATA
# title: No any_of requirement
# description: An empty any_of list asks for nothing.
# custom:
#   internal: true
any_of_satisfied(any_of, _) if count(any_of) == 0

# METADATA
# title: One any_of scope held
# description: At least one of the any_of scopes is granted.
# custom:
#   internal: true
any_of_satisfied(any_of, granted) if {
	some scope in any_of
	scope in granted
}

# METADATA
# title: Token scopes
# description: >-
#   Scopes of the verified token: the space-delimited scope claim (RFC 9068 §2.2.3)
#   and the scp claim some issuers send instead, as a list or a string.
# custom:
#   internal: true
token_scopes contains scope if {
	some claim in ["scope", "scp"]
	some scope in claim_values(request.claims[claim])
}

# METADATA
# title: Scopes the route asks for
# description: >-
#   all_of then any_of scopes of the selected route, each once, in table order: the
#   scope attribute of the insufficient_scope challenge.
# custom:
#   internal: true
route_scopes := scopes_of(routing.route)

# METADATA
# title: Scopes a route asks for
# description: all_of then any_of scopes of a route, each once, in table order.
# custom:
#   internal: true
scopes_of(route) := array.concat(all_of, [scope | some scope in any_of; not scope in all_of]) if {
	all_of := object.get(route, ["scopes", "all_of"], [])
	any_of := object.get(route, ["scopes", "any_of"], [])
}

# METADATA
# title: Granted route scopes
# description: >-
#   The token's scopes that the selected route cares about, sorted; not all of the
#   token's scopes, so the upstream learns no more than it needs.
# custom:
#   gdpr: ["5(1)(c)", "25(2)"]
#   soc2: ["CC6.1"]
granted_scopes := granted(routing.route)

# METADATA
# title: Granted scopes of a route
# description: The token's scopes that a route asks for, sorted.
# custom:
#   internal: true
granted(route) := sort({scope | some scope in scopes_of(route)} & token_scopes)

# METADATA
# title: Insufficient scope challenge
# description: >-
#   The WWW-Authenticate value of an insufficient_scope denial, naming the scopes
#   the route requires (RFC 6750 §3 and §3.1).
# custom:
#   pci_dss: ["8.3.1"]
#   soc2: ["CC6.1"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
scope_challenge := challenge_for(routing.route)

# METADATA
# title: Insufficient scope challenge of a route
# description: The WWW-Authenticate value of an insufficient_scope denial for a route.
# custom:
#   internal: true
challenge_for(route) := sprintf(`Bearer error="insufficient_scope", scope="%s"`, [concat(" ", scopes_of(route))])

# METADATA
# title: Subject
# description: The sub claim of the verified token, when it is a string.
# custom:
#   pci_dss: ["8.2.1"]
#   soc2: ["CC6.1"]
subject := value if {
	value := subject_of(request.claims)
	value != null
}

# METADATA
# title: Subject of claims
# description: The sub claim when it is a string, else null.
# custom:
#   internal: true
subject_of(claims) := string_or_null(object.get(claims, "sub", null))

# METADATA
# title: Client id
# description: >-
#   The OAuth client the token was issued to: client_id (RFC 9068 §2.2) or, from
#   issuers that send only that, azp.
# custom:
#   pci_dss: ["8.2.1"]
#   soc2: ["CC6.1"]
client_id := value if {
	value := client_of(request.claims)
	value != null
}

# METADATA
# title: Client id of claims
# description: The client_id claim when it is a string, else the azp claim when it is one, else null.
# custom:
#   internal: true
client_of(claims) := object.get({true: id}, is_string(id), string_or_null(object.get(claims, "azp", null))) if {
	id := object.get(claims, "client_id", null)
}

# METADATA
# title: String or null
# description: >-
#   The value when it is a string, else null. Written without a condition, so that it
#   is defined either way and partial evaluation keeps it inline.
# custom:
#   internal: true
string_or_null(value) := object.get({true: value}, is_string(value), null)

# METADATA
# title: Space-delimited claim values
# description: A string claim holds space-delimited values (RFC 9068 scope, and claims like it).
# custom:
#   internal: true
claim_values(value) := [v | some v in split(value, " "); v != ""] if is_string(value)

# METADATA
# title: List claim values
# description: A list claim holds its string elements.
# custom:
#   internal: true
claim_values(value) := [v | some v in value; is_string(v)] if is_array(value)
