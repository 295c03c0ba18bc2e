# Route table validation tests: the shipped table is valid, and each kind of problem
# is reported.
package authz.lib.routing_test

import data.authz.fixtures_test as fx
import data.authz.lib.routing

minimal := {"id": "r", "methods": ["GET"], "path": "/r"}

# The problem messages of a route, without the position and id prefix.
messages(errors) := {substring(e, count("routes[0] (r): "), -1) | some e in errors}

test_shipped_route_table_is_valid if {
	count(routing.errors) == 0
}

test_minimal_route_is_valid if {
	count(routing.errors) == 0 with data.authz.routes as [minimal]
}

test_misspelled_field_is_unknown if {
	errors := routing.errors with data.authz.routes as [object.union(minimal, {"scope": {"all_of": ["a"]}})]
	messages(errors) == {"scope: unknown field", "scope.all_of: unknown field", "scope.all_of[]: unknown field"}
}

test_field_of_the_wrong_type_is_reported if {
	errors := routing.errors with data.authz.routes as [object.union(minimal, {"scopes": {"all_of": "accounts:read"}})]
	messages(errors) == {"scopes.all_of: must be a array, not a string"}
}

test_missing_required_fields_are_reported if {
	errors := routing.errors with data.authz.routes as [{"id": "r", "device": {"header": "x-device-posture"}}]
	messages(errors) == {"methods: required", "path: required", "device.allowed: required"}
}

test_values_outside_their_set_are_reported if {
	route := object.union(minimal, {
		"methods": ["get"],
		"authentication": "oauth",
		"grants": [{"param": "p", "claim": "c", "match": "prefix"}],
		"path": "/r/{p}",
	})
	errors := routing.errors with data.authz.routes as [route]
	messages(errors) == {
		`methods[]: get is not one of ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]`,
		`authentication: oauth is not one of ["bearer", "mtls"]`,
		`grants[].match: prefix is not one of ["equals", "member"]`,
	}
}

test_values_not_matching_their_pattern_are_reported if {
	route := object.union(minimal, {
		"device": {"header": "X-Device-Posture", "allowed": ["managed"]},
		"mtls": {"principals": ["spiffe://bank.internal"]},
		"scopes": {"any_of": ["accounts read"]},
	})
	errors := routing.errors with data.authz.routes as [route]
	messages(errors) == {
		"device.header: X-Device-Posture does not match ^[a-z0-9][a-z0-9-]*$",
		"mtls.principals[]: spiffe://bank.internal does not match ^spiffe://[a-z0-9._-]+(/[^/]+)+$",
		`scopes.any_of[]: accounts read does not match ^[!#-\[\]-~]+$`,
	}
}

test_numbers_outside_their_range_or_fractional_are_reported if {
	route := object.union(minimal, {
		"risk": {"max": 1000, "header": "x-risk-score"},
		"step_up": {"acr_values": ["phr"], "max_age": 2.5},
	})
	errors := routing.errors with data.authz.routes as [route]
	messages(errors) == {"risk.max: 1000 is outside [0, 999]", "step_up.max_age: 2.5 must be a whole number"}
}

test_empty_lists_that_must_not_be_are_reported if {
	errors := routing.errors with data.authz.routes as [object.union(minimal, {"methods": [], "network": {"cidrs": []}})]
	messages(errors) == {"methods: must not be empty", "network.cidrs: must not be empty"}
}

test_malformed_path_templates_are_reported if {
	errors := routing.errors with data.authz.routes as [object.union(minimal, {"path": "r/{a}/{b=**}/{a}/{c"})]
	messages(errors) == {
		"path: must start with /",
		`path: segment "{b=**}" is not a literal, {name} or a final {name=**}`,
		`path: segment "{c" is not a literal, {name} or a final {name=**}`,
		`path: parameter "a" repeats`,
	}
}

test_public_and_mtls_routes_take_no_token_requirements if {
	public := object.union(minimal, {"public": true, "scopes": {"all_of": ["a"]}, "authentication": "mtls"})
	mtls := {
		"id": "m",
		"methods": ["GET"],
		"path": "/m/{x}",
		"authentication": "mtls",
		"grants": [{"param": "x", "claim": "c"}],
	}
	errors := routing.errors with data.authz.routes as [public, mtls]
	errors == {
		"routes[0] (r): scopes: not allowed on a public route",
		"routes[0] (r): authentication: not allowed on a public route",
		"routes[0] (r): scopes: not allowed with authentication mtls",
		"routes[1] (m): grants: not allowed with authentication mtls",
	}
}

test_grant_must_name_a_path_parameter if {
	route := object.union(minimal, {"grants": [{"param": "account_id", "claim": "accounts"}]})
	errors := routing.errors with data.authz.routes as [route]
	messages(errors) == {"grants[0].param: account_id is not a parameter of the path"}
}

test_context_problems_are_reported if {
	route := object.union(minimal, {
		"network": {"cidrs": ["10.0.0.0/33"]},
		"risk": {"max": 50},
		"business_hours": {"timezone": "Mars/Olympus_Mons", "days": ["Monday"], "start_hour": 18, "end_hour": 8},
	})
	errors := routing.errors with data.authz.routes as [route]
	messages(errors) == {
		"network.cidrs: 10.0.0.0/33 is not a CIDR",
		"risk: set exactly one of header or metadata",
		"business_hours: start_hour must be before end_hour",
		"business_hours.timezone: Mars/Olympus_Mons is unknown",
	}
}

test_route_that_is_not_a_mapping_is_reported if {
	routing.errors == {"routes[0] (): must be a mapping of fields"} with data.authz.routes as ["GET /r"]
}

test_duplicate_ids_are_reported if {
	twin := object.union(minimal, {"path": "/s"})
	routing.errors == {"routes: id r is used 2 times"} with data.authz.routes as [minimal, twin]
}

test_route_table_must_be_a_list if {
	routing.errors == {"routes: must be a list of routes"} with data.authz.routes as {"r": minimal}
}

test_extra_removed_headers_must_be_a_list_of_lower_case_names if {
	errors := routing.errors with data.authz.remove_headers as ["X-Remote-User"]
	errors == {"remove_headers: X-Remote-User is not a lower-case header name"}
	routing.errors == {"remove_headers: must be a list"} with data.authz.remove_headers as "x-remote-user"
}

# The service evaluates routing.errors when it loads a table and refuses to serve one
# with problems, so the policy does not check routes again on every request. These
# are the tables that check stops.

test_table_with_a_misspelt_requirement_is_refused if {
	errors := routing.errors with data.authz.routes as [object.union(minimal, {"scope": "accounts:read"})]
	errors == {"routes[0] (r): scope: unknown field"}
}

test_table_with_a_shared_route_id_is_refused if {
	errors := routing.errors with data.authz.routes as [minimal, object.union(minimal, {"path": "/s"})]
	errors == {"routes: id r is used 2 times"}
}

test_table_with_a_malformed_public_flag_is_refused if {
	errors := routing.errors with data.authz.routes as [object.union(minimal, {"public": "yes"})]
	errors == {"routes[0] (r): public: must be a boolean, not a string"}
}

test_table_with_a_nameless_route_is_refused if {
	errors := routing.errors with data.authz.routes as [{"methods": ["GET"], "path": "/nameless"}]
	errors == {"routes[0] (): id: required"}
}

test_valid_route_is_selected if {
	routing.errors == set() with data.authz.routes as [minimal]
	routing.route == minimal with input as fx.request("GET", "/r") with data.authz.routes as [minimal]
}
