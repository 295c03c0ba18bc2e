# METADATA
# title: Route matching
# description: >-
#   Selects the route of a request from the route table in data.authz.routes: the
#   first route, in table order, whose methods include the request method and whose
#   path template matches the URL-decoded path segments. No match means no route,
#   and the entry point denies with route_not_found.
package authz.lib.routing

import data.authz.lib.request

# Performance note: every rule below that depends on the request reads the route
# table through plain iteration and functions of one route, never through a rule
# computed from the whole table. The policy engine partially evaluates the policy
# when it loads it, so such loops unroll into one specialised rule per route, and
# the table itself costs nothing per request. Rules that need the selected route
# refer to route once and pass it on to functions (see the other packages).

# METADATA
# title: Matching route indexes
# description: >-
#   The positions in the table of every route whose methods include the request
#   method and whose path template matches the request path. Once partial evaluation
#   has unrolled it into one rule per route, OPA's rule index passes over the routes
#   whose method or literal segments differ, and the set is computed once per request.
# custom:
#   internal: true
matching contains i if {
	some i, candidate in data.authz.routes
	matches(candidate)
}

# METADATA
# title: Selected route index
# description: >-
#   The position of the first matching route in table order; undefined when none
#   matches. Overlapping routes are therefore resolved deterministically, specific
#   before general as the table lists them.
# custom:
#   internal: true
selected := min(matching)

# METADATA
# title: Route matches
# description: >-
#   The route's methods include the request method and its path template matches the
#   request path. Both are compared as the input holds them, so that once the route
#   is a constant, OPA can index on the method and the literal path segments.
# custom:
#   internal: true
matches(candidate) if {
	method_listed(candidate)
	template_matches(template(candidate.path), request.sent_segments)
}

# METADATA
# title: Method listed
# description: >-
#   The route's methods include the request method; compared one by one, so that once
#   the route is a constant each comparison is an indexable equality.
# custom:
#   internal: true
method_listed(candidate) if {
	some method in candidate.methods
	method == request.sent_method
}

# METADATA
# title: Selected route
# description: >-
#   The route table entry that governs the request. Undefined for an unknown route,
#   which leaves the entry point's default deny in force.
# custom:
#   pci_dss: ["7.2.1", "7.3.3"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
route := candidate if {
	some i, candidate in data.authz.routes
	prefiltered(candidate)
	i == selected
}

# METADATA
# title: Route may match
# description: >-
#   The route's methods include the request method and its literal path segments
#   are the request's at their positions: implied by a match, and checked by
#   comparisons of the input with constants once partial evaluation has made the
#   route a constant, so that OPA's rule index can pass over the other routes.
# custom:
#   internal: true
prefiltered(candidate) if {
	method_listed(candidate)
	every i, t in template(candidate.path) {
		literal_at(t, i, request.sent_segments)
	}
}

# METADATA
# title: Non-literal template segment
# description: A parameter or catch-all segment puts no condition on the path here.
# custom:
#   internal: true
literal_at(t, _, _) if contains(t, "{")

# METADATA
# title: Literal template segment
# description: A literal segment is the path segment at its position.
# custom:
#   internal: true
literal_at(t, i, segs) if {
	not contains(t, "{")
	segs[i] == t
}

# METADATA
# title: Path parameters
# description: The values the selected route's template binds, by parameter name.
# custom:
#   internal: true
params[name] := value if {
	tmpl := template(route.path)
	some t in tmpl
	name := template_param(t)
	value := param(tmpl, request.segments, name)
}

# METADATA
# title: Route authentication
# description: >-
#   How the selected route authenticates the caller: "none" for an explicitly public
#   route, "mtls" when the client certificate's SPIFFE ID is the identity, otherwise
#   "bearer" (a verified token is required). Anything but an exact public: true or
#   authentication: mtls falls back to the strictest mode.
# custom:
#   pci_dss: ["8.3.1"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
authentication := mode(route)

# METADATA
# title: Authentication mode of a route
# description: Maps a route entry to none, mtls or bearer; bearer unless stated otherwise.
# custom:
#   internal: true
mode(entry) := "none" if {
	entry.public == true
} else := "mtls" if {
	entry.authentication == "mtls"
} else := "bearer"

# METADATA
# title: Path parameter of a route
# description: >-
#   The value the template of a route entry binds to a parameter name in the request
#   path; undefined when the template has no such parameter. Grants read parameters
#   through this function so that, once the route is known, the lookup is a fixed
#   position in the path.
# custom:
#   internal: true
route_param(entry, name) := param(template(entry.path), request.sent_segments, name)

# METADATA
# title: Path template
# description: The segments of a path template, split like the service splits request paths.
# custom:
#   internal: true
template(path) := split(trim_prefix(path, "/"), "/")

# METADATA
# title: Template without a catch-all matches
# description: >-
#   A template without {name=**} matches paths with exactly as many segments, each
#   template segment matching the path segment at its position.
# custom:
#   internal: true
template_matches(tmpl, segs) if {
	count(tmpl) == count(segs)
	distinct_names(tmpl)
	every i, t in tmpl {
		segment_matches(t, segs[i])
	}
}

# METADATA
# title: Template ending in a catch-all matches
# description: >-
#   A final {name=**} (Envoy's URI template syntax) matches the remaining zero or
#   more segments, each of them safe, after the fixed segments before it matched.
# custom:
#   internal: true
template_matches(tmpl, segs) if {
	n := count(tmpl) - 1
	is_rest(tmpl[n])
	count(segs) >= n
	distinct_names(tmpl)
	every i, t in array.slice(tmpl, 0, n) {
		segment_matches(t, segs[i])
	}
	every segment in array.slice(segs, n, count(segs)) {
		safe_segment(segment)
	}
}

# METADATA
# title: Distinct parameter names
# description: >-
#   A template repeating a parameter name (a table error) matches nothing rather than
#   binding one name twice.
# custom:
#   internal: true
distinct_names(tmpl) if {
	names := [name | some t in tmpl; name := template_param(t)]
	count(names) == count({name | some name in names})
}

# METADATA
# title: Bound parameter
# description: A {name} segment binds the path segment at its position.
# custom:
#   internal: true
param(tmpl, segs, name) := segs[i] if {
	some i, t in tmpl
	param_name(t) == name
}

# METADATA
# title: Bound catch-all parameter
# description: A final {name=**} binds the remaining segments, joined with "/".
# custom:
#   internal: true
param(tmpl, segs, name) := concat("/", array.slice(segs, n, count(segs))) if {
	n := count(tmpl) - 1
	rest_name(tmpl[n]) == name
}

# METADATA
# title: Parameter segment matches
# description: A {name} segment matches any safe segment.
# custom:
#   internal: true
segment_matches(t, segment) if {
	is_param(t)
	safe_segment(segment)
}

# METADATA
# title: Literal segment matches
# description: A literal segment matches itself only, case-sensitively.
# custom:
#   internal: true
segment_matches(t, segment) if {
	not contains(t, "{")
	t == segment
}

# METADATA
# title: Safe parameter value
# description: >-
#   A parameter never binds an empty or dot segment, nor one holding a decoded "/",
#   backslash or control character, so that a bound value cannot change which
#   upstream resource the path names.
# custom:
#   pci_dss: ["7.2.1"]
#   soc2: ["CC6.1"]
safe_segment(segment) if {
	regex.match(`^[^/\\\x00-\x1f\x7f]+$`, segment)
	not segment in {".", ".."}
}

# METADATA
# title: Parameter segment
# description: A template segment of the form {name}.
# custom:
#   internal: true
is_param(t) if regex.match(`^\{[a-z][a-z0-9_]*\}$`, t)

# METADATA
# title: Parameter name
# description: The name inside a {name} segment.
# custom:
#   internal: true
param_name(t) := trim(t, "{}") if is_param(t)

# METADATA
# title: Catch-all segment
# description: A template segment of the form {name=**}.
# custom:
#   internal: true
is_rest(t) if regex.match(`^\{[a-z][a-z0-9_]*=\*\*\}$`, t)

# METADATA
# title: Catch-all name
# description: The name inside a {name=**} segment.
# custom:
#   internal: true
rest_name(t) := trim_suffix(trim_prefix(t, "{"), "=**}") if is_rest(t)
