# METADATA
# title: Resource grant tests
# description: Path parameters bound to token claims, by membership or equality.
package authz.lib.grants_test

import data.authz.fixtures_test as fx
import data.authz.lib.grants

routes := [
	{
		"id": "balances",
		"methods": ["GET"],
		"path": "/accounts/{account_id}/balances",
		"grants": [{"param": "account_id", "claim": "accounts"}],
	},
	{
		"id": "profile",
		"methods": ["GET"],
		"path": "/customers/{customer_id}",
		"grants": [{"param": "customer_id", "claim": "sub", "match": "equals"}],
	},
	{
		"id": "statement",
		"methods": ["GET"],
		"path": "/customers/{customer_id}/accounts/{account_id}",
		"grants": [
			{"param": "customer_id", "claim": "sub", "match": "equals"},
			{"param": "account_id", "claim": "accounts"},
		],
	},
	{"id": "open", "methods": ["GET"], "path": "/open/{x}"},
]

get(path, claims) := fx.with_token(fx.request("GET", path), claims)

test_account_in_the_accounts_list_is_granted if {
	grants.failures == set() with input as get("/accounts/acc-2/balances", {"accounts": ["acc-1", "acc-2"]})
		with data.authz.routes as routes
}

test_account_in_a_space_delimited_accounts_claim_is_granted if {
	grants.failures == set() with input as get("/accounts/acc-2/balances", {"accounts": "acc-1 acc-2"})
		with data.authz.routes as routes
}

test_account_missing_from_the_claim_is_not_granted if {
	grants.failures == {"resource_not_granted"} with input as get("/accounts/acc-3/balances", {"accounts": ["acc-1"]})
		with data.authz.routes as routes
}

test_missing_claim_grants_nothing if {
	grants.failures == {"resource_not_granted"} with input as get("/accounts/acc-1/balances", {"sub": "acc-1"})
		with data.authz.routes as routes
	grants.failures == {"resource_not_granted"} with input as fx.request("GET", "/accounts/acc-1/balances")
		with data.authz.routes as routes
}

test_customer_id_must_equal_the_subject if {
	grants.failures == set() with input as get("/customers/cust-1", {"sub": "cust-1"}) with data.authz.routes as routes
	grants.failures == {"resource_not_granted"} with input as get("/customers/cust-2", {"sub": "cust-1"})
		with data.authz.routes as routes
}

test_equality_does_not_split_the_claim if {
	grants.failures == {"resource_not_granted"} with input as get("/customers/cust-1", {"sub": "cust-1 cust-2"})
		with data.authz.routes as routes
}

test_every_grant_of_a_route_must_hold if {
	token := {"sub": "cust-1", "accounts": ["acc-1"]}
	grants.failures == set() with input as get("/customers/cust-1/accounts/acc-1", token) with data.authz.routes as routes
	grants.failures == {"resource_not_granted"} with input as get("/customers/cust-1/accounts/acc-2", token)
		with data.authz.routes as routes
	grants.failures == {"resource_not_granted"} with input as get("/customers/cust-2/accounts/acc-1", token)
		with data.authz.routes as routes
}

test_route_without_grants_needs_none if {
	grants.failures == set() with input as get("/open/anything", {}) with data.authz.routes as routes
}
