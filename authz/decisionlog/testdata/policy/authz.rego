# A small policy for the decision log tests, shaped like the shipped library's results: a route id in
# dynamic_metadata, and a reason on deny.
package envoy.authz

default allow := {
	"allowed": false,
	"http_status": 403,
	"dynamic_metadata": {"reason": "route_not_found"},
}

allow := {"allowed": true, "dynamic_metadata": {"route": "transactions.list"}} if {
	some account
	input.parsed_path = ["accounts", account, "transactions"]
	account in input.token.payload.accounts
}

allow := {
	"allowed": false,
	"http_status": 403,
	"dynamic_metadata": {"reason": "resource_not_granted", "route": "transactions.list"},
} if {
	some account
	input.parsed_path = ["accounts", account, "transactions"]
	not account in input.token.payload.accounts
}
