# METADATA
# title: Route matching tests
# description: Path templates, methods, first-match order and authentication modes.
package authz.lib.routing_test

import data.authz.fixtures_test as fx
import data.authz.lib.routing

routes := [
	{"id": "accounts.summary", "methods": ["GET"], "path": "/accounts/summary"},
	{"id": "accounts.read", "methods": ["GET"], "path": "/accounts/{account_id}"},
	{"id": "transactions.read", "methods": ["GET"], "path": "/accounts/{account_id}/transactions/{transaction_id}"},
	{"id": "admin", "methods": ["GET", "POST"], "path": "/admin/{operation=**}"},
	{"id": "reports", "methods": ["GET"], "path": "/reports/{year}/{rest=**}"},
	{"id": "root", "methods": ["GET"], "path": "/"},
]

# The input for a GET whose URL-decoded segments the service produced.
decoded(segments) := object.union(fx.request("GET", "/"), {"parsed_path": segments})

test_first_matching_route_in_table_order_wins if {
	routing.route.id == "accounts.summary" with input as fx.request("GET", "/accounts/summary")
		with data.authz.routes as routes
	routing.route.id == "accounts.read" with input as fx.request("GET", "/accounts/acc-1")
		with data.authz.routes as routes
}

test_parameters_bind_one_segment_each if {
	req := fx.request("GET", "/accounts/acc-1/transactions/tx-9")
	routing.params == {"account_id": "acc-1", "transaction_id": "tx-9"} with input as req with data.authz.routes as routes
}

test_literal_segments_match_exactly if {
	not routing.route with input as fx.request("GET", "/Accounts/acc-1") with data.authz.routes as routes
	not routing.route with input as fx.request("GET", "/accounts/acc-1/transaction/tx-9") with data.authz.routes as routes
}

test_segment_count_must_match if {
	not routing.route with input as fx.request("GET", "/accounts/acc-1/transactions") with data.authz.routes as routes
	not routing.route with input as fx.request("GET", "/accounts/a/transactions/t/x") with data.authz.routes as routes
	not routing.route with input as fx.request("GET", "/accounts/acc-1/") with data.authz.routes as routes
}

test_method_must_be_listed if {
	not routing.route with input as fx.request("DELETE", "/accounts/acc-1") with data.authz.routes as routes
	routing.route.id == "admin" with input as fx.request("POST", "/admin/cache") with data.authz.routes as routes
}

test_root_template_matches_the_root_path if {
	routing.route.id == "root" with input as fx.request("GET", "/") with data.authz.routes as routes
}

test_catch_all_binds_the_remaining_segments if {
	routing.params == {"operation": "cache/flush/all"} with input as fx.request("GET", "/admin/cache/flush/all")
		with data.authz.routes as routes
	routing.params == {"year": "2026", "rest": "q1/summary"} with input as fx.request("GET", "/reports/2026/q1/summary")
		with data.authz.routes as routes
}

test_catch_all_binds_zero_segments if {
	routing.params == {"operation": ""} with input as fx.request("GET", "/admin") with data.authz.routes as routes
}

test_catch_all_still_needs_the_fixed_segments if {
	not routing.route with input as fx.request("GET", "/reports") with data.authz.routes as routes
}

test_parameters_never_bind_dot_or_empty_segments if {
	not routing.route with input as fx.request("GET", "/accounts/..") with data.authz.routes as routes
	not routing.route with input as fx.request("GET", "/accounts/.") with data.authz.routes as routes
	not routing.route with input as fx.request("GET", "/accounts//transactions/tx-1") with data.authz.routes as routes
	not routing.route with input as fx.request("GET", "/admin/cache/../../accounts") with data.authz.routes as routes
}

test_parameters_never_bind_decoded_slashes_or_control_characters if {
	not routing.route with input as decoded(["accounts", "acc-1/../acc-2"]) with data.authz.routes as routes
	not routing.route with input as decoded(["accounts", "acc\u0000"]) with data.authz.routes as routes
	not routing.route with input as decoded(["admin", "a\\b"]) with data.authz.routes as routes
}

test_no_route_without_a_route_table if {
	not routing.route with input as fx.request("GET", "/accounts/acc-1") with data.authz.routes as null
}

test_authentication_is_bearer_unless_stated_otherwise if {
	routing.mode({"id": "r"}) == "bearer"
	routing.mode({"public": "true"}) == "bearer"
	routing.mode({"authentication": "MTLS"}) == "bearer"
	routing.mode({"authentication": "bearer"}) == "bearer"
}

test_public_routes_need_no_authentication if {
	routing.mode({"public": true}) == "none"
	routing.mode({"public": true, "authentication": "mtls"}) == "none"
}

test_mtls_routes_authenticate_by_client_certificate if {
	routing.mode({"authentication": "mtls"}) == "mtls"
	routing.authentication == "mtls" with input as fx.request("GET", "/admin/x")
		with data.authz.routes as [{"id": "a", "methods": ["GET"], "path": "/admin/x", "authentication": "mtls"}]
}

test_template_repeating_a_parameter_matches_nothing if {
	twice := [{"id": "twice", "methods": ["GET"], "path": "/a/{x}/b/{x}"}]
	not routing.route with input as fx.request("GET", "/a/1/b/2") with data.authz.routes as twice
}
