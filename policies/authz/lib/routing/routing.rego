# METADATA
# title: Route matching
# description: >-
#   Selects the route of a request from the route table in data.authz.routes: the
#   first route, in table order, whose methods include the request method and whose
#   path template matches the URL-decoded path segments. No match means no route,
#   and the entry point denies with route_not_found.
package authz.lib.routing

import data.authz.lib.request

# METADATA
# title: Matching routes
# description: >-
#   Index of every route whose methods and path template match the request, mapped
#   to the path parameters the template binds.
# custom:
#   internal: true
matches[i] := bindings(template(candidate.path), request.segments) if {
	some i, candidate in data.authz.routes
	request.method in candidate.methods
}

# METADATA
# title: Selected route index
# description: >-
#   The first matching route in table order; overlapping routes are therefore
#   resolved deterministically, specific before general as the table lists them.
# custom:
#   internal: true
index := min(object.keys(matches))

# METADATA
# title: Selected route
# description: >-
#   The route table entry that governs the request. Undefined for an unknown route,
#   which leaves the entry point's default deny in force.
# custom:
#   pci_dss: ["7.2.1", "7.3.3"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
route := data.authz.routes[index]

# METADATA
# title: Path parameters
# description: The values the selected route's template binds, by parameter name.
# custom:
#   internal: true
params := matches[index]

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
# title: Path template
# description: The segments of a path template, split like the service splits request paths.
# custom:
#   internal: true
template(path) := split(trim_prefix(path, "/"), "/")

# METADATA
# title: Bind a template without a catch-all
# description: A template without {name=**} matches paths with exactly as many segments.
# custom:
#   internal: true
bindings(tmpl, segs) := fixed_bindings(tmpl, segs) if count(tmpl) == count(segs)

# METADATA
# title: Bind a template ending in a catch-all
# description: >-
#   A final {name=**} (Envoy's URI template syntax) binds the remaining zero or more
#   segments, joined with "/", after the fixed segments before it matched.
# custom:
#   internal: true
bindings(tmpl, segs) := object.union(fixed_bindings(fixed, segs), {name: concat("/", rest)}) if {
	n := count(tmpl) - 1
	is_rest(tmpl[n])
	count(segs) >= n
	rest := array.slice(segs, n, count(segs))
	every segment in rest {
		safe_segment(segment)
	}
	fixed := array.slice(tmpl, 0, n)
	name := rest_name(tmpl[n])
}

# METADATA
# title: Bind fixed template segments
# description: >-
#   Every template segment matches the path segment at its position; the result maps
#   each {name} to its segment.
# custom:
#   internal: true
fixed_bindings(tmpl, segs) := {name: segs[i] | some i, t in tmpl; name := param_name(t)} if {
	every i, t in tmpl {
		segment_matches(t, segs[i])
	}

	# A template repeating a name (a table error) matches nothing rather than
	# binding one name twice, which would be an evaluation error.
	names := [name | some t in tmpl; name := param_name(t)]
	count(names) == count({name | some name in names})
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
