# METADATA
# title: Step-up authentication
# description: >-
#   Sensitive operations need a strong and recent user authentication: an acr value
#   from the route's list and an auth_time no older than max_age (RFC 9470), for all
#   requests of the route or only above a body amount.
package authz.lib.stepup

import data.authz.lib.request
import data.authz.lib.routing

# METADATA
# title: Failures
# description: The conditions of this package that the selected route fails, by reason.
# custom:
#   internal: true
failures contains "step_up_required" if fails("step_up_required", routing.route)

# METADATA
# title: Step-up required
# description: >-
#   The route needs step-up for this request and the token's acr or auth_time falls
#   short; the request is denied with 401 step_up_required and an RFC 9470 challenge.
# custom:
#   pci_dss: ["8.4.2"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(5)"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc9470#section-3
fails("step_up_required", route) if {
	step_up := route.step_up
	step_up
	not exempt(step_up)
	not stepped_up(step_up)
}

# METADATA
# title: Stepped up
# description: The token's authentication satisfies the step-up requirement now.
# custom:
#   internal: true
stepped_up(step_up) if satisfied(step_up, request.claims, time.now_ns())

# METADATA
# title: Exempt from step-up
# description: >-
#   The route limits step-up to amounts above a threshold and the complete body's
#   amount is not above it. A missing, unparsable or truncated amount needs step-up.
# custom:
#   internal: true
exempt(step_up) if {
	not request.body_truncated
	below_threshold(step_up.when, request.body)
}

# METADATA
# title: Below the step-up threshold
# description: The body is a JSON object whose amount field holds a number not above the threshold.
# custom:
#   internal: true
below_threshold(when, body) if {
	is_object(body)
	amount := parse_amount(object.get(body, split(when.body_field, "."), null))
	amount <= when.above
}

# METADATA
# title: Numeric amount
# description: A non-negative JSON number.
# custom:
#   internal: true
parse_amount(value) := value if {
	is_number(value)
	value >= 0
}

# METADATA
# title: String amount
# description: A decimal string such as "1500.00", as payment APIs often send amounts.
# custom:
#   internal: true
parse_amount(value) := to_number(value) if {
	is_string(value)
	regex.match(`^[0-9]{1,15}(\.[0-9]{1,6})?$`, value)
}

# METADATA
# title: Step-up satisfied
# description: >-
#   The token's acr is one of the route's acr_values and, when max_age is set, its
#   auth_time is at most max_age seconds old (and not more than a minute ahead).
# custom:
#   internal: true
satisfied(step_up, claims, now_ns) if {
	claims.acr in step_up.acr_values
	recent(object.get(step_up, "max_age", null), claims, now_ns)
}

# METADATA
# title: No age limit
# description: Without max_age, any auth_time will do.
# custom:
#   internal: true
recent(null, _, _)

# METADATA
# title: Recent authentication
# description: >-
#   auth_time (seconds since the epoch) lies within max_age seconds of now, allowing
#   60 seconds of clock skew into the future.
# custom:
#   internal: true
recent(max_age, claims, now_ns) if {
	is_number(claims.auth_time)
	age := (now_ns / 1000000000) - claims.auth_time
	age <= max_age
	age >= -60
}

# METADATA
# title: Step-up challenge
# description: >-
#   The WWW-Authenticate value of a step_up_required denial: the acr values that would
#   do and, when set, the maximum authentication age (RFC 9470 §3).
# custom:
#   pci_dss: ["8.4.2"]
#   glba: ["314.4(c)(5)"]
# related_resources:
#   - ref: https://www.rfc-editor.org/rfc/rfc9470#section-3
challenge := challenge_for(routing.route.step_up)

# METADATA
# title: Step-up challenge of a requirement
# description: The RFC 9470 challenge for one step-up requirement.
# custom:
#   internal: true
challenge_for(step_up) := concat(", ", array.concat(
	[
		`Bearer error="insufficient_user_authentication"`,
		sprintf(`acr_values="%s"`, [concat(" ", step_up.acr_values)]),
	],
	[sprintf("max_age=%d", [age]) | age := step_up.max_age],
))
