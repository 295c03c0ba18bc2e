# A small policy for the service's integration tests: it echoes what it saw so the tests can assert on the
# input document, and it allows everything that carries a verified token (so a 401 proves the policy was
# never consulted).
package envoy.authz

default allow := {"allowed": false, "http_status": 403, "body": "{\"error\":\"no_token\"}", "dynamic_metadata": {"reason": "authentication_required"}}

allow := {"allowed": true, "headers": headers, "request_headers_to_remove": ["authorization"]} if {
	input.token
	not input.parsed_path[0] == "shape"
}

allow := {"allowed": true, "headers": {"x-public": "yes"}} if {
	not input.token
	input.parsed_path[0] == "public"
}

# A wrong result shape must fail closed.
allow := {"allowed": "yes"} if input.parsed_path[0] == "shape"

headers := {
	"x-subject": input.token.payload.sub,
	"x-issuer": input.token.payload.iss,
	"x-alg": input.token.header.alg,
	"x-path": concat("/", input.parsed_path),
	"x-method": input.attributes.request.http.method,
	"x-query-q": concat(",", object.get(input.parsed_query, "q", [])),
	"x-version": input.version.ext_authz,
}
