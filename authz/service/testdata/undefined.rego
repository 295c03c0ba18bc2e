package envoy.authz

# No default: the decision is undefined unless the path is /defined.
allow if input.parsed_path[0] == "defined"
