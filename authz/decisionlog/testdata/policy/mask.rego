# The decision log mask rule, as OPA reads it: JSON pointers into the decision event.
package system.log

mask contains "/input/attributes/request/http/headers/x-api-key"

# Denied requests keep their user agent; allowed ones lose it.
mask contains {"op": "remove", "path": "/input/attributes/request/http/headers/user-agent"} if input.result.allowed
