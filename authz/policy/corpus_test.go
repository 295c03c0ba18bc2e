package policy

import (
	"math/rand/v2"
	"strings"
	"time"
)

// corpusTimes are the clock readings the corpus is decided at: a weekday inside
// and outside London business hours, a Saturday, and a summer morning (BST).
var corpusTimes = []time.Time{
	time.Date(2026, time.January, 14, 10, 0, 0, 0, time.UTC),
	time.Date(2026, time.January, 14, 19, 30, 0, 0, time.UTC),
	time.Date(2026, time.January, 17, 10, 0, 0, 0, time.UTC),
	time.Date(2026, time.July, 15, 7, 30, 0, 0, time.UTC),
}

// corpus returns n OPA-Envoy inputs for the shipped route table, drawn with a
// fixed seed from every dimension the policy reads: method, path (every route's
// template with good and hostile parameters, and paths no route has), token
// (absent, scopes, accounts, acr and auth_time relative to now, odd claim
// types), edge headers, client certificate, peer address, body and metadata.
// The first inputs are the cross product of method and path with a customer
// token, so that every route is reached with every method.
func corpus(n int, now time.Time) []map[string]any {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...any) any { return xs[r.IntN(len(xs))] }
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", ""}
	params := []string{"acc-123", "acc-456", "acc-999", "alice", "cust-1001", "pay-1", ".", "..", "", "a/b", "a\\b", "x\x00", "%2e%2e"}
	paths := []string{
		"/accounts", "/accounts/", "/Accounts", "/accounts/{p}", "/accounts/{p}/balances", "/accounts/{p}/transactions",
		"/accounts/{p}/transactions/x", "/customers/{p}", "/payments", "/payments/{p}", "/admin", "/admin/",
		"/admin/{p}", "/admin/{p}/{p}/flush", "/fx/rates", "/fx/rates/", "/healthz", "/", "/nowhere", "/internal/keys",
	}
	now64 := now.Unix()
	tokens := []any{
		nil,
		map[string]any{"sub": "alice", "client_id": "bank-app", "scope": "accounts:read balances:read transactions:read profile:read", "accounts": []any{"acc-123", "acc-456"}},
		map[string]any{"sub": "cust-1001", "azp": "spa", "scope": "openid accounts:read", "accounts": "acc-123 acc-456"},
		map[string]any{"sub": "alice", "client_id": 7, "azp": "spa", "scp": []any{"payments:write", "payments:read", 7}, "acr": "urn:openbanking:psd2:sca", "auth_time": now64 - 60},
		map[string]any{"sub": 1001, "scope": "payments:write", "acr": "urn:openbanking:psd2:ca", "auth_time": now64 - 3600},
		map[string]any{"sub": "bob", "client_id": "tpp", "scope": "payments:write", "acr": "urn:openbanking:psd2:ca"},
		map[string]any{"sub": "alice", "client_id": "bank-app", "scope": "payments:write payments:read", "acr": "phr", "auth_time": now64 - 301},
		map[string]any{"sub": "alice", "scope": "payments:write", "acr": "phr", "auth_time": now64 + 61},
		map[string]any{"sub": "alice", "scope": 42, "accounts": map[string]any{"acc-123": true}},
		map[string]any{},
	}
	principals := []any{nil, "", "spiffe://bank.internal/ns/ops/sa/console", "spiffe://bank.internal/ns/ops/sa/change-runner", "spiffe://bank.internal/ns/ops/sa/console", "spiffe://bank.internal/ns/ops/sa/change-runner", "spiffe://bank.internal/ns/ops-dev/sa/x", "spiffe://bank.internal/ns/ops"}
	peers := []any{nil, "10.20.0.7", "10.20.0.7", "203.0.113.10", "::1", "192.168.1.1", "not-an-ip"}
	bodies := []any{nil, map[string]any{"amount": 25}, map[string]any{"amount": "2500.00"}, map[string]any{"amount": 5000}, map[string]any{"amount": "1,500"}, map[string]any{"amount": -5}, []any{1}, "amount=1"}

	var out []map[string]any
	add := func(method, path string, tok any) {
		out = append(out, corpusInput(method, path, tok, nil, nil, nil, nil, false, nil))
	}
	for _, m := range methods {
		for _, p := range paths {
			add(m, strings.ReplaceAll(p, "{p}", "acc-123"), tokens[1])
		}
	}
	// Payments from a trusted device, to reach step-up with every token and body, and
	// admin changes from a listed workload, to reach business hours.
	for _, tok := range tokens {
		for _, body := range bodies {
			out = append(out, corpusInput("POST", "/payments", tok,
				map[string]any{"x-device-posture": "managed", "x-risk-score": "12"}, nil, "203.0.113.10", body, false, nil))
		}
	}
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		out = append(out, corpusInput(method, "/admin/cache/flush", nil, nil,
			"spiffe://bank.internal/ns/ops/sa/change-runner", "10.20.0.7", nil, false, nil))
	}
	// Mostly the table's own routes with their own methods and good parameters, so
	// that every condition gets decided, with the odd hostile request mixed in.
	routed := []struct{ method, path string }{
		{"GET", "/accounts"}, {"GET", "/accounts/{p}"}, {"GET", "/accounts/{p}/balances"},
		{"GET", "/accounts/{p}/transactions"}, {"GET", "/customers/{p}"}, {"POST", "/payments"},
		{"GET", "/payments/{p}"}, {"GET", "/admin/{p}"}, {"HEAD", "/admin/{p}/{p}/flush"},
		{"POST", "/admin/{p}"}, {"DELETE", "/admin/{p}"}, {"GET", "/fx/rates"}, {"GET", "/healthz"},
	}
	good := []string{"acc-123", "acc-456", "acc-999", "alice", "cust-1001", "pay-1"}
	for len(out) < n {
		method, path, values := methods[r.IntN(len(methods))], paths[r.IntN(len(paths))], params
		if r.IntN(4) != 0 {
			rt := routed[r.IntN(len(routed))]
			method, path, values = rt.method, rt.path, good
		}
		for strings.Contains(path, "{p}") {
			path = strings.Replace(path, "{p}", values[r.IntN(len(values))], 1)
		}
		headers := map[string]any{}
		if r.IntN(4) != 0 {
			headers["x-device-posture"] = pick("managed", "compliant", "jailbroken", "managed,jailbroken")
		}
		if r.IntN(4) != 0 {
			headers["x-risk-score"] = pick("12", "70", "70.01", "71", "1e1", "", "low")
		}
		if r.IntN(4) == 0 {
			headers["x-envoy-external-address"] = pick("10.0.0.1", "198.51.100.7", "10.0.0.1, 10.0.0.2")
		}
		var metadata any
		if r.IntN(4) == 0 {
			metadata = map[string]any{"com.bank.risk": map[string]any{"score": pick(40, "40", 99, -1, "high")}}
		}
		out = append(out, corpusInput(
			method, path, pick(tokens...), headers,
			pick(principals...), pick(peers...), pick(bodies...), r.IntN(8) == 0, metadata))
	}
	return out
}

// corpusInput builds one input the way the service lays it out.
func corpusInput(method, path string, token any, headers map[string]any, principal, peer, body any, truncated bool, metadata any) map[string]any {
	if headers == nil {
		headers = map[string]any{}
	}
	headers[":method"] = method
	headers[":path"] = path
	source := map[string]any{}
	if peer != nil {
		source["address"] = map[string]any{"socketAddress": map[string]any{"address": peer, "portValue": 52100}}
	}
	if principal != nil {
		source["principal"] = principal
	}
	attributes := map[string]any{
		"request": map[string]any{"http": map[string]any{"method": method, "path": path, "headers": headers}},
		"source":  source,
	}
	if metadata != nil {
		attributes["metadataContext"] = map[string]any{"filterMetadata": metadata}
	}
	var segments []any
	for s := range strings.SplitSeq(strings.TrimPrefix(path, "/"), "/") {
		segments = append(segments, s)
	}
	in := map[string]any{
		"attributes":     attributes,
		"parsed_path":    segments,
		"parsed_query":   map[string]any{},
		"parsed_body":    body,
		"truncated_body": truncated,
	}
	if token != nil {
		in["token"] = map[string]any{"header": map[string]any{"alg": "ES256"}, "payload": token}
	}
	return in
}
