# Validation of the route table. The service evaluates errors when it loads a table
# and refuses a table with problems, so that a typo such as "scope:" for "scopes:"
# cannot silently drop a requirement; the policy does not check the table again on
# every request.
package authz.lib.routing

# METADATA
# title: Route table errors
# description: >-
#   Every problem of the route table, each prefixed with the route's position and
#   id; empty for a valid table. The service refuses to serve a table with problems
#   (an unknown field, a field of the wrong type, a missing required field, ...),
#   rather than enforce it without the requirement.
# custom:
#   pci_dss: ["7.2.1", "7.3.3"]
#   soc2: ["CC6.1"]
#   glba: ["314.4(c)(1)"]
errors contains sprintf("routes[%d] (%v): %s", [i, label(r), problem]) if {
	some i, r in data.authz.routes
	some problem in route_problems(r)
}

# METADATA
# title: Duplicate route ids
# description: Route ids identify routes in decision logs and must be unique.
# custom:
#   pci_dss: ["10.2.2"]
#   soc2: ["CC6.1"]
errors contains sprintf("routes: id %v is used %d times", [id, n]) if {
	some id in {r.id | some r in data.authz.routes}
	n := count([r | some r in data.authz.routes; r.id == id])
	n > 1
}

# METADATA
# title: Route table type
# description: The route table is a list, so that first-match order is defined.
# custom:
#   internal: true
errors contains "routes: must be a list of routes" if not table_listed

# METADATA
# title: Extra removed headers
# description: The table-wide remove_headers, when present, is a list of lower-case header names.
# custom:
#   internal: true
errors contains sprintf("remove_headers: %v is not a lower-case header name", [h]) if {
	some h in data.authz.remove_headers
	not regex.match(header_name, h)
}

# METADATA
# title: Extra removed headers type
# description: The table-wide remove_headers, optional, is a list.
# custom:
#   internal: true
errors contains "remove_headers: must be a list" if {
	extra := data.authz.remove_headers
	not is_array(extra)
}

# METADATA
# title: Route table listed
# description: data.authz.routes is present and a list.
# custom:
#   internal: true
table_listed if is_array(data.authz.routes)

# METADATA
# title: Route label
# description: The id of a route entry for error messages; empty when it has none.
# custom:
#   internal: true
label(r) := object.get(r, "id", "") if {
	is_object(r)
} else := ""

# METADATA
# title: Problems of a non-object route
# description: A route entry is a mapping of fields.
# custom:
#   internal: true
route_problems(r) := {"must be a mapping of fields"} if not is_object(r)

# METADATA
# title: Problems of a route
# description: All problems of one route entry; empty for a valid route.
# custom:
#   internal: true
route_problems(r) := problems if {
	is_object(r)
	named := fields(r)
	problems := union({
		shape_problems(named, schema),
		value_problems(named, schema),
		template_problems(r),
		combination_problems(r),
		context_problems(r),
	})
}

# METADATA
# title: Fields of a route
# description: Every value in a route entry, the entry itself included, paired with its field name.
# custom:
#   internal: true
fields(r) := [[field_name(path), value] | [path, value] := walk(r)]

# METADATA
# title: Field name of a walk path
# description: >-
#   Dotted field name of a path into a route, "[]" standing for any list element;
#   the route itself is "".
# custom:
#   internal: true
field_name(path) := concat("", [part | some i, key in path; part := name_part(i, key)])

# METADATA
# title: First name part
# description: A top-level field name stands alone.
# custom:
#   internal: true
name_part(0, key) := key

# METADATA
# title: Nested name part
# description: A nested field name follows a dot.
# custom:
#   internal: true
name_part(i, key) := concat("", [".", key]) if {
	i > 0
	is_string(key)
}

# METADATA
# title: List element name part
# description: List positions collapse to "[]".
# custom:
#   internal: true
name_part(_, key) := "[]" if is_number(key)

# METADATA
# title: Shape problems
# description: >-
#   Fields the schema does not know, known fields of the wrong JSON type, and
#   required fields missing from the route or from a nested mapping that is present.
# custom:
#   internal: true
shape_problems(named, spec) := union({
	{sprintf("%s: unknown field", [f]) |
		some [f, _] in named
		not spec[f]
	},
	{sprintf("%s: must be a %s, not a %s", [f, spec[f].type, type_name(v)]) |
		some [f, v] in named
		type_name(v) != spec[f].type
	},
	{sprintf("%s: required", [qualified(f, k)]) |
		some [f, v] in named
		is_object(v)
		some k in spec[f].required
		not k in object.keys(v)
	},
})

# METADATA
# title: Value problems
# description: >-
#   Values outside their allowed set, strings not matching their pattern, numbers
#   outside their inclusive range or fractional where whole, and empty lists that
#   must not be.
# custom:
#   internal: true
value_problems(fields, spec) := union({
	{sprintf("%s: %v is not one of %v", [f, v, allowed]) |
		some [f, v] in fields
		allowed := spec[f].enum
		not v in allowed
	},
	{sprintf("%s: %v does not match %s", [f, v, pattern]) |
		some [f, v] in fields
		pattern := spec[f].pattern
		is_string(v)
		not regex.match(pattern, v)
	},
	{sprintf("%s: %v is outside %v", [f, v, bounds]) |
		some [f, v] in fields
		bounds := spec[f].range
		is_number(v)
		not in_range(v, bounds)
	},
	{sprintf("%s: %v must be a whole number", [f, v]) |
		some [f, v] in fields
		spec[f].integer
		is_number(v)
		v != floor(v)
	},
	{sprintf("%s: must not be empty", [f]) |
		some [f, v] in fields
		spec[f].non_empty
		count(v) == 0
	},
})

# METADATA
# title: Qualified field name
# description: Joins a parent field name and a child key.
# custom:
#   internal: true
qualified("", key) := key

# METADATA
# title: Qualified nested field name
# description: Joins a parent field name and a child key with a dot.
# custom:
#   internal: true
qualified(parent, key) := concat(".", [parent, key]) if parent != ""

# METADATA
# title: Known time zone
# description: The runtime resolves the IANA time zone name (it needs time zone data).
# custom:
#   internal: true
known_timezone(tz) if is_array(time.clock([0, tz]))

# METADATA
# title: Number within a range
# description: Both bounds are inclusive.
# custom:
#   internal: true
in_range(v, [low, high]) if {
	v >= low
	v <= high
}

# METADATA
# title: Path template problems
# description: >-
#   The path is absolute; each segment is a literal without braces, a {name} or a
#   final {name=**}; no parameter name repeats.
# custom:
#   internal: true
template_problems(r) := ({sprintf("path: segment %q is not a literal, {name} or a final {name=**}", [t]) |
	segments := template(r.path)
	some i, t in segments
	not valid_template_segment(t, i == (count(segments) - 1))
} | {"path: must start with /" |
	is_string(r.path)
	not startswith(r.path, "/")
}) | {sprintf("path: parameter %q repeats", [name]) |
	names := [n | some t in template(r.path); n := template_param(t)]
	some name in names
	count([n | some n in names; n == name]) > 1
}

# METADATA
# title: Literal template segment
# description: Literal segments hold no braces.
# custom:
#   internal: true
valid_template_segment(t, _) if regex.match(`^[^{}]*$`, t)

# METADATA
# title: Parameter template segment
# description: A {name} may stand anywhere.
# custom:
#   internal: true
valid_template_segment(t, _) if is_param(t)

# METADATA
# title: Catch-all template segment
# description: A {name=**} may stand only at the end.
# custom:
#   internal: true
valid_template_segment(t, true) if is_rest(t)

# METADATA
# title: Parameter of a template segment
# description: The parameter name a segment declares, whether {name} or {name=**}.
# custom:
#   internal: true
template_param(t) := param_name(t)

# METADATA
# title: Catch-all parameter of a template segment
# description: The parameter name a final {name=**} declares.
# custom:
#   internal: true
template_param(t) := rest_name(t)

# METADATA
# title: Contradicting requirements
# description: >-
#   Scopes, grants and step-up need a bearer token, so public and mtls routes cannot
#   carry them; a public route takes no authentication field.
# custom:
#   internal: true
combination_problems(r) := union({
	{sprintf("%s: not allowed on a public route", [k]) |
		r.public == true
		some k in {"scopes", "grants", "step_up", "authentication"}
		k in object.keys(r)
	},
	{sprintf("%s: not allowed with authentication mtls", [k]) |
		r.authentication == "mtls"
		some k in {"scopes", "grants", "step_up"}
		k in object.keys(r)
	},
	{sprintf("grants[%d].param: %v is not a parameter of the path", [i, g.param]) |
		some i, g in object.get(r, "grants", [])
		not g.param in {n | some t in template(r.path); n := template_param(t)}
	},
})

# METADATA
# title: Zero-trust context problems
# description: >-
#   CIDRs parse, the risk score has exactly one source, business hours form a
#   same-day window in a time zone the runtime knows.
# custom:
#   internal: true
context_problems(r) := union({
	{sprintf("network.cidrs: %v is not a CIDR", [c]) |
		some c in object.get(r, ["network", "cidrs"], [])
		not net.cidr_is_valid(c)
	},
	{"risk: set exactly one of header or metadata" |
		count({"header", "metadata"} & object.keys(r.risk)) != 1
	},
	{"business_hours: start_hour must be before end_hour" |
		r.business_hours.start_hour >= r.business_hours.end_hour
	},
	{sprintf("business_hours.timezone: %v is unknown", [tz]) |
		tz := r.business_hours.timezone
		not known_timezone(tz)
	},
})

# METADATA
# title: Route schema
# description: >-
#   Every field a route may carry, by dotted name ("" is the route itself, "[]" any
#   list element): its JSON type and, where they apply, required keys, allowed
#   values, pattern, inclusive range, whole-number and non-empty constraints.
#   README.md documents each field.
# custom:
#   internal: true
schema := {
	"": {"type": "object", "required": ["id", "methods", "path"]},
	"id": {"type": "string", "pattern": `^[a-z0-9][a-z0-9._-]*$`},
	"description": {"type": "string"},
	"methods": {"type": "array", "non_empty": true},
	"methods[]": {"type": "string", "enum": ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]},
	"path": {"type": "string"},
	"public": {"type": "boolean"},
	"authentication": {"type": "string", "enum": ["bearer", "mtls"]},
	"scopes": {"type": "object"},
	"scopes.all_of": {"type": "array"},
	"scopes.all_of[]": {"type": "string", "pattern": scope_token},
	"scopes.any_of": {"type": "array"},
	"scopes.any_of[]": {"type": "string", "pattern": scope_token},
	"grants": {"type": "array"},
	"grants[]": {"type": "object", "required": ["param", "claim"]},
	"grants[].param": {"type": "string"},
	"grants[].claim": {"type": "string", "pattern": `^[A-Za-z0-9_:.-]+$`},
	"grants[].match": {"type": "string", "enum": ["equals", "member"]},
	"mtls": {"type": "object"},
	"mtls.required": {"type": "boolean"},
	"mtls.principals": {"type": "array"},
	"mtls.principals[]": {"type": "string", "pattern": `^spiffe://[a-z0-9._-]+(/[^/]+)+$`},
	"mtls.principal_prefixes": {"type": "array"},
	"mtls.principal_prefixes[]": {"type": "string", "pattern": `^spiffe://[a-z0-9._-]+(/[^/]+)*/?$`},
	"network": {"type": "object", "required": ["cidrs"]},
	"network.cidrs": {"type": "array", "non_empty": true},
	"network.cidrs[]": {"type": "string"},
	"network.address_header": {"type": "string", "pattern": header_name},
	"device": {"type": "object", "required": ["header", "allowed"]},
	"device.header": {"type": "string", "pattern": header_name},
	"device.allowed": {"type": "array", "non_empty": true},
	"device.allowed[]": {"type": "string"},
	"risk": {"type": "object", "required": ["max"]},
	"risk.max": {"type": "number", "range": [0, 999]},
	"risk.header": {"type": "string", "pattern": header_name},
	"risk.metadata": {"type": "object", "required": ["namespace", "key"]},
	"risk.metadata.namespace": {"type": "string"},
	"risk.metadata.key": {"type": "string"},
	"step_up": {"type": "object", "required": ["acr_values"]},
	"step_up.acr_values": {"type": "array", "non_empty": true},
	"step_up.acr_values[]": {"type": "string", "pattern": scope_token},
	"step_up.max_age": {"type": "number", "range": [0, 86400], "integer": true},
	"step_up.when": {"type": "object", "required": ["body_field", "above"]},
	"step_up.when.body_field": {"type": "string", "pattern": `^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`},
	"step_up.when.above": {"type": "number", "range": [0, 1000000000000]},
	"business_hours": {"type": "object", "required": ["timezone", "days", "start_hour", "end_hour"]},
	"business_hours.timezone": {"type": "string"},
	"business_hours.days": {"type": "array", "non_empty": true},
	"business_hours.days[]": {"type": "string", "enum": weekdays},
	"business_hours.start_hour": {"type": "number", "range": [0, 23], "integer": true},
	"business_hours.end_hour": {"type": "number", "range": [1, 24], "integer": true},
	"data_fields": {"type": "array"},
	"data_fields[]": {"type": "string", "pattern": `^[A-Za-z0-9_.]+$`},
	"remove_headers": {"type": "array"},
	"remove_headers[]": {"type": "string", "pattern": header_name},
	"trust_xfcc": {"type": "boolean"},
}

# METADATA
# title: Weekdays
# description: Weekday names as time.weekday returns them.
# custom:
#   internal: true
weekdays := ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# METADATA
# title: Lower-case header name
# description: Envoy hands the policy lower-case header names, so configured names must be lower case to match.
# custom:
#   internal: true
header_name := `^[a-z0-9][a-z0-9-]*$`

# METADATA
# title: Scope or acr value
# description: >-
#   RFC 6749 scope-token characters (printable ASCII except space, quote and
#   backslash), which also keeps values safe inside a quoted WWW-Authenticate parameter.
# custom:
#   internal: true
scope_token := `^[!#-\[\]-~]+$`
