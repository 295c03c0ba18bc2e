# METADATA
# title: Data minimization tests
# description: Which headers an allowed request sets and removes, per authentication mode and route.
package authz.lib.minimize_test

import data.authz.fixtures_test as fx
import data.authz.lib.minimize

routes := [
	{
		"id": "tx",
		"methods": ["GET"],
		"path": "/tx",
		"scopes": {"all_of": ["transactions:read"], "any_of": ["accounts:read", "accounts:admin"]},
		"data_fields": ["id", "amount", "currency", "booked_at"],
		"remove_headers": ["x-legacy-customer"],
	},
	{"id": "plain", "methods": ["GET"], "path": "/plain"},
	{"id": "rates", "methods": ["GET"], "path": "/rates", "public": true, "data_fields": ["pair", "rate"]},
	{"id": "ops", "methods": ["GET"], "path": "/ops", "authentication": "mtls", "trust_xfcc": true},
]

get(path) := fx.request("GET", path)

test_bearer_route_sets_subject_client_scopes_and_data_fields if {
	token := object.union(fx.customer, {"scope": "openid transactions:read accounts:read payments:write"})
	minimize.headers == {
		"x-subject": "cust-1001",
		"x-client-id": "tpp-budget-app",
		"x-scopes": "accounts:read transactions:read",
		"x-data-fields": "id,amount,currency,booked_at",
	} with input as fx.with_token(get("/tx"), token)
		with data.authz.routes as routes
}

test_client_id_falls_back_to_azp if {
	req := fx.with_token(get("/plain"), {"sub": "s", "azp": "spa-client"})
	minimize.headers["x-client-id"] == "spa-client" with input as req with data.authz.routes as routes
}

test_route_without_scopes_sets_no_scopes_header if {
	req := fx.with_token(get("/plain"), fx.customer)
	minimize.headers == {"x-subject": "cust-1001", "x-client-id": "tpp-budget-app"} with input as req
		with data.authz.routes as routes
}

test_identity_headers_are_left_out_when_the_token_lacks_them if {
	minimize.headers == {} with input as fx.with_token(get("/plain"), {"sub": 7})
		with data.authz.routes as routes
}

test_public_route_sets_no_identity_headers if {
	minimize.headers == {"x-data-fields": "pair,rate"} with input as fx.with_token(get("/rates"), fx.customer)
		with data.authz.routes as routes
}

test_mtls_route_names_the_workload_as_client if {
	req := fx.with_token(fx.with_principal(get("/ops"), fx.ops_operator), fx.customer)
	minimize.headers == {"x-client-id": fx.ops_operator} with input as req with data.authz.routes as routes
	minimize.headers == {} with input as get("/ops") with data.authz.routes as routes
}

test_removal_covers_the_token_and_every_identity_header_not_set if {
	minimize.removed == [
		"authorization",
		"x-client-id",
		"x-data-fields",
		"x-forwarded-client-cert",
		"x-remote-user",
		"x-scopes",
		"x-subject",
		"x-user-id",
	] with input as get("/rates")
		with data.authz.routes as [{"id": "rates", "methods": ["GET"], "path": "/rates", "public": true}]
		with data.authz.remove_headers as ["x-remote-user"]
}

test_headers_set_by_the_decision_are_not_also_removed if {
	removed := minimize.removed with input as fx.with_token(get("/tx"), fx.customer)
		with data.authz.routes as routes
		with data.authz.remove_headers as []
	removed == ["authorization", "x-forwarded-client-cert", "x-legacy-customer", "x-user-id"]
}

test_trusted_client_certificate_header_is_kept if {
	removed := minimize.removed with input as fx.with_principal(get("/ops"), fx.ops_operator)
		with data.authz.routes as routes
		with data.authz.remove_headers as []
	removed == ["authorization", "x-data-fields", "x-scopes", "x-subject", "x-user-id"]
}
