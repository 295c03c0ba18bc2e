# METADATA
# title: Request attributes
# description: >-
#   Defaulted accessors for the OPA-Envoy input document. The other packages read
#   the request only through these rules, so the input contract lives in one place.
package authz.lib.request

# METADATA
# title: HTTP method
# description: The request method as Envoy sent it, upper case; empty when absent.
# custom:
#   internal: true
method := object.get(input, ["attributes", "request", "http", "method"], "")

# METADATA
# title: HTTP method as sent
# description: >-
#   The request method exactly as the input holds it; undefined when absent. Route
#   matching compares it with the methods of each route: an equality between input
#   and a constant is what OPA's rule index can use, which the defaulted method is
#   not.
# custom:
#   internal: true
sent_method := input.attributes.request.http.method

# METADATA
# title: Path segments as sent
# description: >-
#   The URL-decoded path segments exactly as the input holds them; undefined when
#   absent (no route matches). Route matching reads them directly, for the same
#   reason as the method.
# custom:
#   internal: true
sent_segments := input.parsed_path

# METADATA
# title: Request headers
# description: >-
#   Request headers, names lower case, duplicates joined with a comma by the
#   service; empty when absent.
# custom:
#   internal: true
headers := object.get(input, ["attributes", "request", "http", "headers"], {})

# METADATA
# title: Request header
# description: >-
#   The value of one request header by its lower-case name; undefined when absent.
#   Rules that need a header read it through this function rather than from
#   headers, so that once partial evaluation has made the name a constant the
#   decision depends on that header alone, and decisions can be memoized across
#   requests that differ in other headers (request ids, trace context).
# custom:
#   internal: true
header(name) := input.attributes.request.http.headers[name]

# METADATA
# title: Path segments
# description: >-
#   URL-decoded path segments without the query, as the service parsed them; no
#   segments (so no route matches) when absent.
# custom:
#   internal: true
segments := object.get(input, "parsed_path", [])

# METADATA
# title: Parsed body
# description: The JSON request body when the route sends it; empty object when absent.
# custom:
#   internal: true
body := object.get(input, "parsed_body", {})

# METADATA
# title: Truncated body
# description: Envoy buffered only part of the body, so parsed body fields cannot be trusted.
# custom:
#   internal: true
body_truncated if input.truncated_body == true

# METADATA
# title: Peer address
# description: The address of the TCP peer as Envoy saw it; empty when absent.
# custom:
#   internal: true
source_address := object.get(input, ["attributes", "source", "address", "socketAddress", "address"], "")

# METADATA
# title: Peer principal
# description: >-
#   The SPIFFE ID (URI SAN) of the client certificate when Envoy terminated mTLS;
#   empty when the connection carried no client certificate.
# custom:
#   internal: true
principal := object.get(input, ["attributes", "source", "principal"], "")

# METADATA
# title: Filter metadata
# description: Envoy dynamic metadata forwarded to ext_authz, by namespace; empty when absent.
# custom:
#   internal: true
filter_metadata := object.get(input, ["attributes", "metadataContext", "filterMetadata"], {})

# METADATA
# title: Verified bearer token present
# description: >-
#   The service verified a bearer token (signature, iss, aud, exp, nbf) and passed
#   it in; requests with an invalid token never reach the policy.
# custom:
#   pci_dss: ["8.3.1"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
authenticated if is_object(input.token)

# METADATA
# title: Token claims
# description: Claims of the verified token; empty object without a token.
# custom:
#   internal: true
claims := object.get(input, ["token", "payload"], {})
