package envoyreq

import (
	"testing"
)

func TestNewShapesTheRequestAsEnvoyDoes(t *testing.T) {
	req, err := New(Request{
		Method:    "post",
		URL:       "https://api.bank.test/accounts/acc%2F1/transactions?from=2026-01-01&x=1",
		Headers:   []string{"Authorization: Bearer abc", "X-Forwarded-For: 1.2.3.4", "x-forwarded-for: 5.6.7.8"},
		Body:      []byte(`{"amount":"12.00"}`),
		MaxBody:   8,
		Principal: "spiffe://bank.internal/ns/ops/sa/cli",
		Source:    "10.0.0.7:5555",
		RequestID: "r-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	want := map[string]string{
		":authority":                "api.bank.test",
		":method":                   "POST",
		":path":                     "/accounts/acc%2F1/transactions?from=2026-01-01&x=1",
		":scheme":                   "https",
		"authorization":             "Bearer abc",
		"x-forwarded-for":           "1.2.3.4,5.6.7.8",
		"x-request-id":              "r-1",
		"x-envoy-auth-partial-body": "true",
	}
	for k, v := range want {
		if h.GetHeaders()[k] != v {
			t.Errorf("header %s = %q, want %q", k, h.GetHeaders()[k], v)
		}
	}
	if h.GetPath() != want[":path"] || h.GetMethod() != "POST" || h.GetHost() != "api.bank.test" || h.GetId() != "r-1" {
		t.Errorf("http = %v", h)
	}
	if string(h.GetRawBody()) != `{"amount` || h.GetSize() != 18 {
		t.Errorf("body = %q size %d, want the first 8 bytes and the full size", h.GetRawBody(), h.GetSize())
	}
	src := req.GetAttributes().GetSource()
	if src.GetPrincipal() != "spiffe://bank.internal/ns/ops/sa/cli" || src.GetAddress().GetSocketAddress().GetAddress() != "10.0.0.7" ||
		src.GetAddress().GetSocketAddress().GetPortValue() != 5555 {
		t.Errorf("source = %v", src)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"relative URL", Request{URL: "/accounts"}},
		{"non-http scheme", Request{URL: "ftp://x/y"}},
		{"header without colon", Request{URL: "http://x/", Headers: []string{"oops"}}},
		{"source without port", Request{URL: "http://x/", Source: "10.0.0.1"}},
		{"source that is not an IP", Request{URL: "http://x/", Source: "host:1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.req); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestNoBodyWithoutMaxBody(t *testing.T) {
	req, err := New(Request{URL: "http://x/", Body: []byte("abc")})
	if err != nil {
		t.Fatal(err)
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	if len(h.GetRawBody()) != 0 || h.GetHeaders()["x-envoy-auth-partial-body"] != "" {
		t.Errorf("body sent without with_request_body: %v", h)
	}
}
