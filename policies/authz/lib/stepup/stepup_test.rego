# METADATA
# title: Step-up tests
# description: acr values, authentication age, amount thresholds and the RFC 9470 challenge.
package authz.lib.stepup_test

import data.authz.fixtures_test as fx
import data.authz.lib.stepup

sca := "urn:openbanking:psd2:sca"

payments := [{
	"id": "pay",
	"methods": ["POST"],
	"path": "/pay",
	"step_up": {
		"acr_values": [sca, "phr"],
		"max_age": 300,
		"when": {"body_field": "amount", "above": 1000},
	},
}]

strong := {"acr": sca, "auth_time": fx.now_s - 60}

weak := {"acr": "urn:openbanking:psd2:ca", "auth_time": fx.now_s - 60}

pay(body, claims) := fx.with_token(fx.with_body(fx.request("POST", "/pay"), body), claims)

# A strong authentication at now + offset seconds.
strong_at(offset) := object.union(strong, {"auth_time": fx.now_s + offset})

test_payment_over_limit_needs_step_up if {
	stepup.failures == {"step_up_required"} with input as pay({"amount": 1000.01}, weak)
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_payment_over_limit_with_a_strong_recent_authentication_passes if {
	stepup.failures == set() with input as pay({"amount": 5000}, strong)
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
	stepup.failures == set() with input as pay({"amount": 5000}, object.union(strong, {"acr": "phr"}))
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_payment_over_limit_with_an_old_authentication_needs_step_up if {
	stepup.failures == {"step_up_required"} with input as pay({"amount": 5000}, strong_at(-301))
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_authentication_at_exactly_max_age_passes if {
	stepup.failures == set() with input as pay({"amount": 5000}, strong_at(-300))
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_auth_time_may_run_a_minute_ahead_but_no_more if {
	stepup.failures == set() with input as pay({"amount": 5000}, strong_at(60))
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
	stepup.failures == {"step_up_required"} with input as pay({"amount": 5000}, strong_at(61))
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_missing_acr_or_auth_time_needs_step_up if {
	stepup.failures == {"step_up_required"} with input as pay({"amount": 5000}, {"auth_time": fx.now_s})
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
	stepup.failures == {"step_up_required"} with input as pay({"amount": 5000}, {"acr": sca})
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
	stepup.failures == {"step_up_required"} with input as pay({"amount": 5000}, {"acr": sca, "auth_time": "recently"})
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_payment_at_or_under_limit_needs_no_step_up if {
	every amount in [1000, 999.99, 0, "1000.00", "12.5"] {
		stepup.failures == set() with input as pay({"amount": amount}, weak)
			with data.authz.routes as payments
			with time.now_ns as fx.weekday_morning
	}
}

test_string_amount_over_limit_needs_step_up if {
	stepup.failures == {"step_up_required"} with input as pay({"amount": "1500.00"}, weak)
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_missing_or_unparsable_amount_needs_step_up if {
	every body in [{}, {"amount": "1,500.00"}, {"amount": "1e2"}, {"amount": -5}, {"amount": "-5"}, {"amount": null}] {
		stepup.failures == {"step_up_required"} with input as pay(body, weak)
			with data.authz.routes as payments
			with time.now_ns as fx.weekday_morning
	}
}

test_body_that_is_not_an_object_needs_step_up if {
	every body in [[{"amount": 1}], "amount=1", 1] {
		stepup.failures == {"step_up_required"} with input as pay(body, weak)
			with data.authz.routes as payments
			with time.now_ns as fx.weekday_morning
	}
}

test_truncated_body_needs_step_up if {
	truncated := object.union(pay({"amount": 10}, weak), {"truncated_body": true})
	stepup.failures == {"step_up_required"} with input as truncated
		with data.authz.routes as payments
		with time.now_ns as fx.weekday_morning
}

test_amount_can_sit_deeper_in_the_body if {
	nested := [object.union(payments[0], {"step_up": {"when": {"body_field": "instructed_amount.amount"}}})]
	body := {"instructed_amount": {"amount": "10.00", "currency": "EUR"}}
	stepup.failures == set() with input as pay(body, weak)
		with data.authz.routes as nested
		with time.now_ns as fx.weekday_morning
	stepup.failures == {"step_up_required"} with input as pay({"amount": "10.00"}, weak)
		with data.authz.routes as nested
		with time.now_ns as fx.weekday_morning
}

test_route_without_threshold_always_needs_step_up if {
	always := [{"id": "close", "methods": ["POST"], "path": "/pay", "step_up": {"acr_values": [sca], "max_age": 300}}]
	stepup.failures == {"step_up_required"} with input as pay({"amount": 1}, weak)
		with data.authz.routes as always
		with time.now_ns as fx.weekday_morning
	stepup.failures == set() with input as pay({"amount": 1}, strong)
		with data.authz.routes as always
		with time.now_ns as fx.weekday_morning
}

test_route_without_max_age_checks_acr_only if {
	acr_only := [{"id": "acr", "methods": ["POST"], "path": "/pay", "step_up": {"acr_values": [sca]}}]
	stepup.failures == set() with input as pay({}, {"acr": sca})
		with data.authz.routes as acr_only
		with time.now_ns as fx.weekday_morning
}

test_route_without_step_up_fails_nothing if {
	plain := [{"id": "x", "methods": ["POST"], "path": "/pay"}]
	stepup.failures == set() with input as pay({}, {}) with data.authz.routes as plain
}

test_challenge_lists_acr_values_and_max_age if {
	challenge := stepup.challenge with input as pay({}, {}) with data.authz.routes as payments
	challenge == `Bearer error="insufficient_user_authentication", acr_values="urn:openbanking:psd2:sca phr", max_age=300`
}

test_challenge_leaves_out_an_unset_max_age if {
	acr_only := [{"id": "acr", "methods": ["POST"], "path": "/pay", "step_up": {"acr_values": ["phr"]}}]
	challenge := stepup.challenge with input as pay({}, {}) with data.authz.routes as acr_only
	challenge == `Bearer error="insufficient_user_authentication", acr_values="phr"`
}
