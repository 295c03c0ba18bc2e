# METADATA
# title: Decision tests
# description: >-
#   The result object of data.envoy.authz.allow for requests against the shipped
#   route table: every allow, every deny reason, and the precedence between them.
package envoy.authz_test

import data.authz.fixtures_test as fx
import data.envoy.authz

json_headers := {"content-type": "application/json"}

# Headers removed from an allowed bearer request that sets all four identity headers.
removed_from_bearer_requests := [
	"authorization",
	"x-auth-request-email",
	"x-auth-request-user",
	"x-forwarded-access-token",
	"x-forwarded-client-cert",
	"x-forwarded-email",
	"x-forwarded-user",
	"x-jwt-payload",
	"x-remote-user",
	"x-user-id",
]

payment := fx.with_headers(fx.with_token(fx.request("POST", "/payments"), fx.payer), fx.trusted_device)

creditor := "GB29NWBK60161331926819"

# A payment of 2500.00 from a managed, low-risk device, by a customer who passed SCA
# two minutes ago.
large_payment := fx.with_body(payment, {"amount": "2500.00", "currency": "GBP", "creditor_account": creditor})

small_payment := fx.with_body(payment, {"amount": "25.00", "currency": "GBP", "creditor_account": creditor})

# An admin call from the ops operator console inside the bank's network.
admin_call(method) := fx.with_peer(
	fx.with_principal(fx.request(method, "/admin/cache/flush"), fx.ops_operator),
	"10.20.0.7",
)

denial(status, reason, route) := {
	"allowed": false,
	"http_status": status,
	"headers": json_headers,
	"body": sprintf(`{"error":"%s"}`, [reason]),
	"dynamic_metadata": {"reason": reason, "route": route},
}

test_unknown_route_is_denied_with_route_not_found if {
	authz.allow == {
		"allowed": false,
		"http_status": 403,
		"headers": json_headers,
		"body": `{"error":"route_not_found"}`,
		"dynamic_metadata": {"reason": "route_not_found"},
	} with input as fx.with_token(fx.request("GET", "/internal/keys"), fx.customer)
}

test_known_path_with_unlisted_method_is_route_not_found if {
	authz.allow.dynamic_metadata == {"reason": "route_not_found"} with input as fx.request("DELETE", "/fx/rates")
}

test_empty_input_is_denied_by_default if {
	authz.allow.allowed == false with input as {}
}

test_accounts_list_is_allowed_with_only_the_identity_it_needs if {
	req := fx.with_headers(fx.with_token(fx.request("GET", "/accounts"), fx.customer), {
		"authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig",
		"x-user-id": "someone-else",
		"x-scopes": "admin",
	})
	authz.allow == {
		"allowed": true,
		"headers": {
			"x-subject": "cust-1001",
			"x-client-id": "tpp-budget-app",
			"x-scopes": "accounts:read",
			"x-data-fields": "id,currency,nickname,account_type",
		},
		"request_headers_to_remove": removed_from_bearer_requests,
		"dynamic_metadata": {"route": "accounts.list"},
	} with input as req
}

test_missing_token_is_challenged_with_401 if {
	authz.allow == {
		"allowed": false,
		"http_status": 401,
		"headers": {"content-type": "application/json", "www-authenticate": "Bearer"},
		"body": `{"error":"authentication_required"}`,
		"dynamic_metadata": {"reason": "authentication_required", "route": "accounts.list"},
	} with input as fx.request("GET", "/accounts")
}

test_missing_scope_names_the_required_scopes if {
	token := object.union(fx.customer, {"scope": "accounts:read"})
	authz.allow == {
		"allowed": false,
		"http_status": 403,
		"headers": {
			"content-type": "application/json",
			"www-authenticate": `Bearer error="insufficient_scope", scope="transactions:read"`,
		},
		"body": `{"error":"insufficient_scope"}`,
		"dynamic_metadata": {"reason": "insufficient_scope", "route": "transactions.list"},
	} with input as fx.with_token(fx.request("GET", "/accounts/acc-100/transactions"), token)
}

test_transactions_of_a_consented_account_are_allowed_with_their_data_fields if {
	req := fx.with_token(fx.request("GET", "/accounts/acc-200/transactions?limit=50"), fx.customer)
	decision := authz.allow with input as req
	decision.allowed == true
	decision.headers["x-data-fields"] == "id,amount,currency,booked_at"
	decision.headers["x-scopes"] == "transactions:read"
}

test_transactions_of_another_account_are_not_granted if {
	authz.allow == denial(403, "resource_not_granted", "transactions.list") with input as fx.with_token(
		fx.request("GET", "/accounts/acc-999/transactions"),
		fx.customer,
	)
}

test_balances_are_bound_to_the_accounts_claim if {
	authz.allow.allowed == true with input as fx.with_token(fx.request("GET", "/accounts/acc-100/balances"), fx.customer)
	authz.allow == denial(403, "resource_not_granted", "balances.read") with input as fx.with_token(
		fx.request("GET", "/accounts/acc-300/balances"),
		fx.customer,
	)
}

test_account_read_is_bound_to_the_accounts_claim if {
	authz.allow.allowed == true with input as fx.with_token(fx.request("GET", "/accounts/acc-100"), fx.customer)
	authz.allow == denial(403, "resource_not_granted", "accounts.read") with input as fx.with_token(
		fx.request("GET", "/accounts/acc-300"),
		fx.customer,
	)
}

test_customers_read_only_their_own_profile if {
	authz.allow.allowed == true with input as fx.with_token(fx.request("GET", "/customers/cust-1001"), fx.customer)
	authz.allow == denial(403, "resource_not_granted", "customers.read") with input as fx.with_token(
		fx.request("GET", "/customers/cust-2002"),
		fx.customer,
	)
}

test_payment_over_limit_needs_step_up if {
	token := object.union(fx.payer, {"acr": "urn:openbanking:psd2:ca"})
	authz.allow == {
		"allowed": false,
		"http_status": 401,
		"headers": {
			"content-type": "application/json",
			"www-authenticate": concat(", ", [
				`Bearer error="insufficient_user_authentication"`,
				`acr_values="urn:openbanking:psd2:sca phr"`,
				"max_age=300",
			]),
		},
		"body": `{"error":"step_up_required"}`,
		"dynamic_metadata": {"reason": "step_up_required", "route": "payments.create"},
	} with input as fx.with_token(large_payment, token)
		with time.now_ns as fx.weekday_morning
}

test_payment_over_limit_with_stale_authentication_needs_step_up if {
	token := object.union(fx.payer, {"auth_time": fx.now_s - 301})
	authz.allow.dynamic_metadata.reason == "step_up_required" with input as fx.with_token(large_payment, token)
		with time.now_ns as fx.weekday_morning
}

test_payment_over_limit_with_recent_sca_is_allowed if {
	decision := authz.allow with input as large_payment with time.now_ns as fx.weekday_morning
	decision == {
		"allowed": true,
		"headers": {
			"x-subject": "cust-1001",
			"x-client-id": "tpp-budget-app",
			"x-scopes": "payments:write",
			"x-data-fields": "payment_id,status,created_at",
		},
		"request_headers_to_remove": removed_from_bearer_requests,
		"dynamic_metadata": {"route": "payments.create"},
	}
}

test_payment_under_limit_needs_no_step_up if {
	token := object.union(fx.payer, {"acr": "urn:openbanking:psd2:ca", "auth_time": fx.now_s - 86400})
	authz.allow.allowed == true with input as fx.with_token(small_payment, token)
		with time.now_ns as fx.weekday_morning
}

test_payment_from_an_unmanaged_device_is_denied if {
	req := fx.with_headers(small_payment, {"x-device-posture": "unmanaged"})
	authz.allow == denial(403, "device_posture", "payments.create") with input as req
}

test_payment_with_a_high_risk_score_is_denied if {
	req := fx.with_headers(small_payment, {"x-risk-score": "71"})
	authz.allow == denial(403, "risk_too_high", "payments.create") with input as req
}

test_payment_without_a_risk_score_is_denied if {
	req := json.remove(small_payment, ["attributes/request/http/headers/x-risk-score"])
	authz.allow == denial(403, "risk_too_high", "payments.create") with input as req
}

test_payment_status_needs_either_payment_scope if {
	status := fx.request("GET", "/payments/pay-42")
	read_only := object.union(fx.payer, {"scope": "payments:read"})
	decision := authz.allow with input as fx.with_token(status, read_only)
	decision.allowed == true
	decision.headers["x-scopes"] == "payments:read"

	neither := object.union(fx.payer, {"scope": "accounts:read"})
	challenge := authz.allow.headers["www-authenticate"] with input as fx.with_token(status, neither)
	challenge == `Bearer error="insufficient_scope", scope="payments:read payments:write"`
}

test_admin_read_from_an_ops_workload_is_allowed_without_a_token if {
	authz.allow == {
		"allowed": true,
		"headers": {"x-client-id": fx.ops_operator},
		"request_headers_to_remove": [
			"authorization",
			"x-auth-request-email",
			"x-auth-request-user",
			"x-data-fields",
			"x-forwarded-access-token",
			"x-forwarded-email",
			"x-forwarded-user",
			"x-jwt-payload",
			"x-remote-user",
			"x-scopes",
			"x-subject",
			"x-user-id",
		],
		"dynamic_metadata": {"route": "admin.read"},
	} with input as admin_call("GET")
}

test_admin_without_a_client_certificate_needs_mtls if {
	req := json.remove(admin_call("GET"), ["attributes/source/principal"])
	authz.allow == denial(403, "mtls_required", "admin.read") with input as req
}

test_admin_from_another_namespace_is_not_allowed if {
	req := fx.with_principal(admin_call("GET"), "spiffe://bank.internal/ns/payments/sa/api")
	authz.allow == denial(403, "principal_not_allowed", "admin.read") with input as req
}

test_admin_from_outside_the_bank_network_is_denied if {
	req := fx.with_peer(admin_call("GET"), "198.51.100.4")
	authz.allow == denial(403, "network_not_allowed", "admin.read") with input as req
}

test_admin_write_needs_a_listed_workload if {
	authz.allow == denial(403, "principal_not_allowed", "admin.write") with input as admin_call("POST")
		with time.now_ns as fx.weekday_morning

	req := fx.with_principal(admin_call("POST"), "spiffe://bank.internal/ns/ops/sa/change-runner")
	authz.allow.allowed == true with input as req with time.now_ns as fx.weekday_morning
}

test_admin_write_outside_business_hours_is_denied if {
	req := fx.with_principal(admin_call("DELETE"), "spiffe://bank.internal/ns/ops/sa/change-runner")
	authz.allow == denial(403, "outside_business_hours", "admin.write") with input as req
		with time.now_ns as fx.weekday_evening
	authz.allow == denial(403, "outside_business_hours", "admin.write") with input as req
		with time.now_ns as fx.saturday_morning
}

test_fx_rates_are_public if {
	authz.allow == {
		"allowed": true,
		"headers": {},
		"request_headers_to_remove": [
			"authorization",
			"x-auth-request-email",
			"x-auth-request-user",
			"x-client-id",
			"x-data-fields",
			"x-forwarded-access-token",
			"x-forwarded-client-cert",
			"x-forwarded-email",
			"x-forwarded-user",
			"x-jwt-payload",
			"x-remote-user",
			"x-scopes",
			"x-subject",
			"x-user-id",
		],
		"dynamic_metadata": {"route": "fx.rates"},
	} with input as fx.request("GET", "/fx/rates?base=EUR")
}

test_public_route_forwards_no_identity_even_with_a_token if {
	authz.allow.headers == {} with input as fx.with_token(fx.request("GET", "/fx/rates"), fx.customer)
}

test_health_answers_only_the_bank_network if {
	authz.allow.allowed == true with input as fx.with_peer(fx.request("GET", "/healthz"), "10.1.2.3")
	authz.allow.allowed == true with input as fx.with_peer(fx.request("GET", "/healthz"), "::1")
	authz.allow == {
		"allowed": false,
		"http_status": 403,
		"headers": json_headers,
		"body": `{"error":"network_not_allowed"}`,
		"dynamic_metadata": {"reason": "network_not_allowed", "route": "health"},
	} with input as fx.request("GET", "/healthz")
}

test_deny_metadata_leaves_out_a_missing_route_id if {
	routes := [{"methods": ["GET"], "path": "/nameless"}]
	authz.allow.dynamic_metadata == {"reason": "authentication_required"} with input as fx.request("GET", "/nameless")
		with data.authz.routes as routes
}

test_route_without_an_id_is_never_allowed if {
	routes := [{"methods": ["GET"], "path": "/nameless", "public": true}]
	authz.allow == {
		"allowed": false,
		"http_status": 403,
		"headers": json_headers,
		"body": `{"error":"route_not_found"}`,
		"dynamic_metadata": {"reason": "route_not_found"},
	} with input as fx.request("GET", "/nameless")
		with data.authz.routes as routes
}

test_route_with_a_malformed_public_flag_needs_a_token if {
	routes := [{"id": "x", "methods": ["GET"], "path": "/x", "public": "yes"}]
	authz.allow.dynamic_metadata.reason == "authentication_required" with input as fx.request("GET", "/x")
		with data.authz.routes as routes
}

# Precedence: a route that fails every condition at once, then each failure fixed in turn.
strict_route := {
	"id": "strict",
	"methods": ["POST"],
	"path": "/strict/{account_id}",
	"scopes": {"all_of": ["strict:write"]},
	"grants": [{"param": "account_id", "claim": "accounts"}],
	"mtls": {"principals": ["spiffe://bank.internal/ns/ops/sa/allowed"]},
	"network": {"cidrs": ["10.0.0.0/8"]},
	"device": {"header": "x-device-posture", "allowed": ["managed"]},
	"risk": {"max": 10, "header": "x-risk-score"},
	"step_up": {"acr_values": ["phr"]},
	"business_hours": {
		"timezone": "Europe/London",
		"days": ["Monday"],
		"start_hour": 9,
		"end_hour": 10,
	},
}

strict_fixes := [
	{"reason": "authentication_required", "fix": {"token": {"header": {}, "payload": {"sub": "s", "acr": "ca"}}}},
	{"reason": "mtls_required", "fix": source({"principal": "spiffe://bank.internal/ns/ops/sa/other"})},
	{"reason": "principal_not_allowed", "fix": source({"principal": "spiffe://bank.internal/ns/ops/sa/allowed"})},
	{"reason": "network_not_allowed", "fix": source({"address": {"socketAddress": {"address": "10.9.9.9"}}})},
	{"reason": "device_posture", "fix": request_headers({"x-device-posture": "managed"})},
	{"reason": "risk_too_high", "fix": request_headers({"x-risk-score": "3"})},
	{"reason": "insufficient_scope", "fix": {"token": {"payload": {"scope": "strict:write"}}}},
	{"reason": "resource_not_granted", "fix": {"token": {"payload": {"accounts": ["acc-1"]}}}},
	{"reason": "step_up_required", "fix": {"token": {"payload": {"acr": "phr"}}}},
	{"reason": "outside_business_hours", "fix": {}},
]

source(attributes) := {"attributes": {"source": attributes}}

request_headers(headers) := {"attributes": {"request": {"http": {"headers": headers}}}}

test_deny_reasons_follow_the_documented_precedence if {
	every n, step in strict_fixes {
		req := object.union_n(array.concat(
			[fx.request("POST", "/strict/acc-1")],
			[f.fix | some f in array.slice(strict_fixes, 0, n)],
		))
		authz.allow.dynamic_metadata.reason == step.reason with input as req
			with data.authz.routes as [strict_route]
			with time.now_ns as fx.weekday_morning
	}
}

test_route_failing_nothing_after_all_fixes_is_allowed if {
	req := object.union_n(array.concat([fx.request("POST", "/strict/acc-1")], [f.fix | some f in strict_fixes]))
	open_hours := object.union(strict_route, {"business_hours": {"days": ["Wednesday"], "end_hour": 11}})
	authz.allow.allowed == true with input as req
		with data.authz.routes as [open_hours]
		with time.now_ns as fx.weekday_morning
}

test_every_denial_has_a_json_body_and_its_reason_in_metadata if {
	every req in [
		fx.request("GET", "/accounts"),
		fx.request("GET", "/nowhere"),
		fx.with_token(fx.request("GET", "/accounts/acc-9/balances"), fx.customer),
		fx.request("GET", "/admin/x"),
	] {
		decision := authz.allow with input as req
		decision.allowed == false
		decision.headers["content-type"] == "application/json"
		json.unmarshal(decision.body).error == decision.dynamic_metadata.reason
	}
}
