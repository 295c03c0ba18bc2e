# METADATA
# title: Request attribute tests
# description: The accessors read the OPA-Envoy input and default what is absent.
package authz.lib.request_test

import data.authz.fixtures_test as fx
import data.authz.lib.request

full_input := fx.with_metadata(
	fx.with_body(
		fx.with_principal(fx.with_token(fx.request("POST", "/payments?dry_run=true"), {"sub": "cust-1"}), fx.ops_operator),
		{"amount": 10},
	),
	{"com.bank.risk": {"score": 5}},
)

test_accessors_read_the_envoy_input if {
	request.method == "POST" with input as full_input
	request.sent_method == "POST" with input as full_input
	request.sent_segments == ["payments"] with input as full_input
	request.headers == {"user-agent": "policy-tests"} with input as full_input
	request.header("user-agent") == "policy-tests" with input as full_input
	request.segments == ["payments"] with input as full_input
	request.body == {"amount": 10} with input as full_input
	request.source_address == "203.0.113.10" with input as full_input
	request.principal == fx.ops_operator with input as full_input
	request.filter_metadata == {"com.bank.risk": {"score": 5}} with input as full_input
	request.claims == {"sub": "cust-1"} with input as full_input
	request.authenticated with input as full_input
}

test_absent_attributes_default_to_empty_values if {
	request.method == "" with input as {}
	request.headers == {} with input as {}
	not request.header("user-agent") with input as {}
	request.segments == [] with input as {}
	request.body == {} with input as {}
	request.source_address == "" with input as {}
	request.principal == "" with input as {}
	request.filter_metadata == {} with input as {}
	request.claims == {} with input as {}
}

test_absent_method_and_path_are_undefined_as_sent if {
	not request.sent_method with input as {}
	not request.sent_segments with input as {}
}

test_request_without_a_token_is_not_authenticated if {
	not request.authenticated with input as fx.request("GET", "/accounts")
}

test_truncated_body_is_flagged if {
	request.body_truncated with input as object.union(fx.request("POST", "/payments"), {"truncated_body": true})
	not request.body_truncated with input as object.union(fx.request("POST", "/payments"), {"truncated_body": false})
}
