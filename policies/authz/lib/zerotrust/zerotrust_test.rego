# METADATA
# title: Zero-trust context tests
# description: mTLS and SPIFFE allow-lists, client networks, device posture, risk scores and business hours.
package authz.lib.zerotrust_test

import data.authz.fixtures_test as fx
import data.authz.lib.zerotrust

ops := "spiffe://bank.internal/ns/ops/sa/console"

route(fields) := [object.union({"id": "r", "methods": ["GET"], "path": "/r"}, fields)]

get := fx.request("GET", "/r")

test_mtls_required_needs_a_client_certificate if {
	zerotrust.failures == {"mtls_required"} with input as get with data.authz.routes as route({"mtls": {"required": true}})
	zerotrust.failures == set() with input as fx.with_principal(get, ops)
		with data.authz.routes as route({"mtls": {"required": true}})
}

test_principal_allow_list_implies_mtls if {
	zerotrust.failures == {"mtls_required"} with input as get
		with data.authz.routes as route({"mtls": {"principals": [ops]}})
	zerotrust.failures == {"mtls_required"} with input as get
		with data.authz.routes as route({"mtls": {"principal_prefixes": ["spiffe://bank.internal/ns/ops/"]}})
}

test_mtls_authentication_implies_mtls if {
	zerotrust.failures == {"mtls_required"} with input as get with data.authz.routes as route({"authentication": "mtls"})
}

test_mtls_not_required_accepts_plain_connections if {
	zerotrust.failures == set() with input as get with data.authz.routes as route({"mtls": {"required": false}})
}

test_listed_principal_is_allowed if {
	zerotrust.failures == set() with input as fx.with_principal(get, ops)
		with data.authz.routes as route({"mtls": {"principals": [ops]}})
}

test_unlisted_principal_is_not_allowed if {
	other := "spiffe://bank.internal/ns/ops/sa/other"
	zerotrust.failures == {"principal_not_allowed"} with input as fx.with_principal(get, other)
		with data.authz.routes as route({"mtls": {"principals": [ops]}})
}

test_principal_under_a_prefix_is_allowed if {
	zerotrust.failures == set() with input as fx.with_principal(get, ops)
		with data.authz.routes as route({"mtls": {"principal_prefixes": ["spiffe://bank.internal/ns/ops/"]}})
	zerotrust.failures == set() with input as fx.with_principal(get, ops)
		with data.authz.routes as route({"mtls": {"principal_prefixes": ["spiffe://bank.internal/ns/ops"]}})
}

test_prefix_matches_whole_path_segments_only if {
	neighbour := "spiffe://bank.internal/ns/ops-sandbox/sa/console"
	zerotrust.failures == {"principal_not_allowed"} with input as fx.with_principal(get, neighbour)
		with data.authz.routes as route({"mtls": {"principal_prefixes": ["spiffe://bank.internal/ns/ops"]}})
	zerotrust.failures == {"principal_not_allowed"} with input as fx.with_principal(get, "spiffe://bank.internal/ns/ops")
		with data.authz.routes as route({"mtls": {"principal_prefixes": ["spiffe://bank.internal/ns/ops/"]}})
}

test_principal_from_another_trust_domain_is_not_allowed if {
	foreign := "spiffe://bank.internal.evil/ns/ops/sa/console"
	zerotrust.failures == {"principal_not_allowed"} with input as fx.with_principal(get, foreign)
		with data.authz.routes as route({"mtls": {"principal_prefixes": ["spiffe://bank.internal/"]}})
}

test_peer_in_an_allowed_network_passes if {
	zerotrust.failures == set() with input as fx.with_peer(get, "10.4.5.6")
		with data.authz.routes as route({"network": {"cidrs": ["192.168.0.0/16", "10.0.0.0/8"]}})
	zerotrust.failures == set() with input as fx.with_peer(get, "fd00::17")
		with data.authz.routes as route({"network": {"cidrs": ["fd00::/8"]}})
}

test_peer_outside_the_allowed_networks_is_denied if {
	zerotrust.failures == {"network_not_allowed"} with input as get
		with data.authz.routes as route({"network": {"cidrs": ["10.0.0.0/8"]}})
}

test_missing_or_unparsable_peer_address_fails_closed if {
	zerotrust.failures == {"network_not_allowed"} with input as fx.with_peer(get, "not-an-ip")
		with data.authz.routes as route({"network": {"cidrs": ["0.0.0.0/0"]}})
	zerotrust.failures == {"network_not_allowed"} with input as json.remove(get, ["attributes/source"])
		with data.authz.routes as route({"network": {"cidrs": ["0.0.0.0/0"]}})
}

test_address_header_set_by_the_edge_replaces_the_peer_address if {
	behind_lb := fx.with_peer(get, "10.0.0.2")
	inside := fx.with_headers(behind_lb, {"x-envoy-external-address": "198.51.100.7"})
	outside := fx.with_headers(behind_lb, {"x-envoy-external-address": "203.0.113.1"})
	edge := route({"network": {"cidrs": ["198.51.100.0/24"], "address_header": "x-envoy-external-address"}})
	zerotrust.failures == set() with input as inside with data.authz.routes as edge
	zerotrust.failures == {"network_not_allowed"} with input as outside with data.authz.routes as edge
}

test_forged_address_header_fails_closed if {
	edge := route({"network": {"cidrs": ["0.0.0.0/0", "::/0"], "address_header": "x-envoy-external-address"}})
	every forged in ["10.0.0.1, 10.0.0.2", "10.0.0.1:443", "10.0.0.0/8", "localhost", ""] {
		zerotrust.failures == {"network_not_allowed"} with input as fx.with_headers(get, {"x-envoy-external-address": forged})
			with data.authz.routes as edge
	}
}

test_missing_address_header_fails_closed if {
	network := {"cidrs": ["0.0.0.0/0"], "address_header": "x-envoy-external-address"}
	zerotrust.failures == {"network_not_allowed"} with input as get with data.authz.routes as route({"network": network})
}

test_network_without_cidrs_fails_closed if {
	zerotrust.failures == {"network_not_allowed"} with input as get with data.authz.routes as route({"network": {}})
}

managed_only := route({"device": {"header": "x-device-posture", "allowed": ["managed", "compliant"]}})

test_allowed_device_posture_passes if {
	zerotrust.failures == set() with input as fx.with_headers(get, {"x-device-posture": "compliant"})
		with data.authz.routes as managed_only
}

test_other_device_posture_is_denied if {
	zerotrust.failures == {"device_posture"} with input as fx.with_headers(get, {"x-device-posture": "jailbroken"})
		with data.authz.routes as managed_only
	zerotrust.failures == {"device_posture"} with input as fx.with_headers(get, {"x-device-posture": "managed,jailbroken"})
		with data.authz.routes as managed_only
}

test_missing_device_posture_fails_closed if {
	zerotrust.failures == {"device_posture"} with input as get with data.authz.routes as managed_only
}

header_risk := route({"risk": {"max": 70, "header": "x-risk-score"}})

metadata_risk := route({"risk": {"max": 70, "metadata": {"namespace": "com.bank.risk", "key": "score"}}})

test_risk_score_at_or_below_the_maximum_passes if {
	zerotrust.failures == set() with input as fx.with_headers(get, {"x-risk-score": "70"})
		with data.authz.routes as header_risk
	zerotrust.failures == set() with input as fx.with_headers(get, {"x-risk-score": "12.5"})
		with data.authz.routes as header_risk
}

test_risk_score_above_the_maximum_is_denied if {
	zerotrust.failures == {"risk_too_high"} with input as fx.with_headers(get, {"x-risk-score": "70.01"})
		with data.authz.routes as header_risk
}

test_missing_or_unparsable_risk_score_fails_closed if {
	every score in ["", "low", "-5", "1e1", "NaN", "Inf", "0x10", "5,99", "1000"] {
		zerotrust.failures == {"risk_too_high"} with input as fx.with_headers(get, {"x-risk-score": score})
			with data.authz.routes as header_risk
	}
	zerotrust.failures == {"risk_too_high"} with input as get with data.authz.routes as header_risk
}

test_risk_score_from_the_risk_engine_metadata if {
	zerotrust.failures == set() with input as fx.with_metadata(get, {"com.bank.risk": {"score": 40}})
		with data.authz.routes as metadata_risk
	zerotrust.failures == set() with input as fx.with_metadata(get, {"com.bank.risk": {"score": "40"}})
		with data.authz.routes as metadata_risk
	zerotrust.failures == {"risk_too_high"} with input as fx.with_metadata(get, {"com.bank.risk": {"score": 71}})
		with data.authz.routes as metadata_risk
}

test_missing_or_invalid_risk_engine_score_fails_closed if {
	every metadata in [{}, {"com.bank.risk": {}}, {"com.bank.risk": {"score": -1}}, {"com.bank.risk": {"score": "high"}}] {
		zerotrust.failures == {"risk_too_high"} with input as fx.with_metadata(get, metadata)
			with data.authz.routes as metadata_risk
	}
}

test_risk_header_ignores_the_metadata_when_both_are_named if {
	both := route({"risk": {"max": 70, "header": "x-risk-score", "metadata": {"namespace": "ns", "key": "score"}}})
	zerotrust.failures == {"risk_too_high"} with input as fx.with_metadata(get, {"ns": {"score": 1}})
		with data.authz.routes as both
}

office_hours := route({"business_hours": {
	"timezone": "Europe/London",
	"days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
	"start_hour": 8,
	"end_hour": 18,
}})

test_request_within_business_hours_passes if {
	zerotrust.failures == set() with input as get with data.authz.routes as office_hours
		with time.now_ns as fx.weekday_morning
}

test_business_hours_follow_the_route_time_zone if {
	# 07:30 UTC is 08:30 in London in July.
	zerotrust.failures == set() with input as get with data.authz.routes as office_hours
		with time.now_ns as fx.summer_morning_utc
}

test_request_after_hours_or_at_the_weekend_is_denied if {
	zerotrust.failures == {"outside_business_hours"} with input as get with data.authz.routes as office_hours
		with time.now_ns as fx.weekday_evening
	zerotrust.failures == {"outside_business_hours"} with input as get with data.authz.routes as office_hours
		with time.now_ns as fx.saturday_morning
}

test_end_hour_is_exclusive if {
	# 10:00 in London.
	nine_to_ten := route({"business_hours": {
		"timezone": "Europe/London",
		"days": ["Wednesday"],
		"start_hour": 9,
		"end_hour": 10,
	}})
	zerotrust.failures == {"outside_business_hours"} with input as get with data.authz.routes as nine_to_ten
		with time.now_ns as fx.weekday_morning
}

test_unknown_time_zone_fails_closed if {
	nowhere := route({"business_hours": {
		"timezone": "Nowhere/Null",
		"days": ["Wednesday"],
		"start_hour": 0,
		"end_hour": 24,
	}})
	zerotrust.failures == {"outside_business_hours"} with input as get with data.authz.routes as nowhere
		with time.now_ns as fx.weekday_morning
}

test_route_without_context_conditions_fails_nothing if {
	zerotrust.failures == set() with input as get with data.authz.routes as route({})
}
