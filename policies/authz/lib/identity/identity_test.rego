# METADATA
# title: Authentication and scope tests
# description: Token requirement, all_of and any_of scopes, scope claims, and the identity read from the token.
package authz.lib.identity_test

import data.authz.fixtures_test as fx
import data.authz.lib.identity

routes := [
	{"id": "read", "methods": ["GET"], "path": "/read", "scopes": {"all_of": ["accounts:read", "balances:read"]}},
	{"id": "either", "methods": ["GET"], "path": "/either", "scopes": {"any_of": ["payments:read", "payments:write"]}},
	{
		"id": "both",
		"methods": ["GET"],
		"path": "/both",
		"scopes": {"all_of": ["accounts:read"], "any_of": ["accounts:read", "audit:read"]},
	},
	{"id": "open", "methods": ["GET"], "path": "/open", "public": true},
	{"id": "workload", "methods": ["GET"], "path": "/workload", "authentication": "mtls"},
	{"id": "any-token", "methods": ["GET"], "path": "/any-token"},
]

get(path, claims) := fx.with_token(fx.request("GET", path), claims)

test_bearer_route_without_a_token_needs_authentication if {
	"authentication_required" in identity.failures with input as fx.request("GET", "/any-token")
		with data.authz.routes as routes
}

test_bearer_route_with_a_verified_token_is_authenticated if {
	identity.failures == set() with input as get("/any-token", {"sub": "s"}) with data.authz.routes as routes
}

test_public_and_mtls_routes_need_no_token if {
	identity.failures == set() with input as fx.request("GET", "/open") with data.authz.routes as routes
	identity.failures == set() with input as fx.request("GET", "/workload") with data.authz.routes as routes
}

test_unknown_route_fails_nothing_here if {
	identity.failures == set() with input as fx.request("GET", "/elsewhere") with data.authz.routes as routes
}

test_all_of_needs_every_scope if {
	identity.failures == set() with input as get("/read", {"scope": "accounts:read balances:read"})
		with data.authz.routes as routes
	identity.failures == {"insufficient_scope"} with input as get("/read", {"scope": "accounts:read"})
		with data.authz.routes as routes
}

test_any_of_needs_one_scope if {
	identity.failures == set() with input as get("/either", {"scope": "payments:write"})
		with data.authz.routes as routes
	identity.failures == {"insufficient_scope"} with input as get("/either", {"scope": "accounts:read"})
		with data.authz.routes as routes
}

test_all_of_and_any_of_combine if {
	identity.failures == set() with input as get("/both", {"scope": "accounts:read"}) with data.authz.routes as routes
	identity.failures == {"insufficient_scope"} with input as get("/both", {"scope": "audit:read"})
		with data.authz.routes as routes
}

test_scopes_come_from_scope_or_scp_in_any_form if {
	identity.token_scopes == {"a", "b"} with input as get("/read", {"scope": " a  b "})
	identity.token_scopes == {"a", "b"} with input as get("/read", {"scp": ["a", "b", 7]})
	identity.token_scopes == {"a", "b"} with input as get("/read", {"scp": "a b"})
	identity.token_scopes == {"a", "b", "c"} with input as get("/read", {"scope": ["a"], "scp": ["b", "c"]})
	identity.token_scopes == set() with input as get("/read", {"scope": 42})
}

test_challenge_names_all_of_then_any_of_scopes_once if {
	identity.route_scopes == ["accounts:read", "audit:read"] with input as get("/both", {})
		with data.authz.routes as routes
	challenge := identity.scope_challenge with input as get("/both", {}) with data.authz.routes as routes
	challenge == `Bearer error="insufficient_scope", scope="accounts:read audit:read"`
}

test_granted_scopes_are_only_those_the_route_asks_for if {
	token := {"scope": "openid payments:write accounts:read payments:read"}
	identity.granted_scopes == ["payments:read", "payments:write"] with input as get("/either", token)
		with data.authz.routes as routes
}

test_subject_is_the_sub_claim_when_a_string if {
	identity.subject == "cust-1001" with input as get("/read", fx.customer)
	not identity.subject with input as get("/read", {"sub": 1001})
}

test_client_id_prefers_client_id_over_azp if {
	identity.client_id == "tpp" with input as get("/read", {"client_id": "tpp", "azp": "other"})
	identity.client_id == "other" with input as get("/read", {"azp": "other"})
	not identity.client_id with input as get("/read", {"sub": "s"})
}

test_claim_values_accept_lists_and_space_delimited_strings if {
	identity.claim_values("acc-1 acc-2") == ["acc-1", "acc-2"]
	identity.claim_values(["acc-1", {"id": "acc-2"}]) == ["acc-1"]
	not identity.claim_values({"acc-1": true})
}
