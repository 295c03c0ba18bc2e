package token

import (
	"errors"
	"strings"
	"testing"
)

func TestFromAuthorization(t *testing.T) {
	t.Parallel()
	const jws = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln-_"
	tests := []struct {
		name        string
		value       string
		wantRaw     string
		wantPresent bool
		wantErr     error
	}{
		{"bearer token is extracted", "Bearer " + jws, jws, true, nil},
		{"scheme is case-insensitive", "bEARER " + jws, jws, true, nil},
		{"lower-case scheme is accepted", "bearer " + jws, jws, true, nil},
		{"surrounding whitespace is ignored", " \tBearer " + jws + " \t", jws, true, nil},
		{"several spaces after the scheme are tolerated", "Bearer   " + jws, jws, true, nil},
		{"tab after the scheme is tolerated", "Bearer\t" + jws, jws, true, nil},
		{"b64token with trailing padding is accepted", "Bearer abc+/~==", "abc+/~==", true, nil},
		{"empty header carries no token", "", "", false, nil},
		{"blank header carries no token", "  ", "", false, nil},
		{"basic scheme is not a bearer token", "Basic YWxpY2U6cGFzcw==", "", false, nil},
		{"DPoP scheme is not a bearer token", "DPoP " + jws, "", false, nil},
		{"scheme that merely starts with Bearer is another scheme", "Bearerx " + jws, "", false, nil},
		{"bearer scheme without token is malformed", "Bearer", "", true, ErrMalformed},
		{"bearer scheme with blank token is malformed", "Bearer    ", "", true, ErrMalformed},
		{"two bearer headers joined by Envoy are malformed", "Bearer a.b.c,Bearer d.e.f", "", true, ErrMalformed},
		{"two bearer headers joined with a space are malformed", "Bearer a.b.c, Bearer d.e.f", "", true, ErrMalformed},
		{"basic then bearer joined are malformed", "Basic YWxpY2U6cGFzcw==, Bearer " + jws, "", true, ErrMalformed},
		{"empty bearer then basic joined are malformed", "Bearer, Basic YWxpY2U6cGFzcw==", "", true, ErrMalformed},
		{"two basic headers joined carry no token", "Basic YQ==, Basic Yg==", "", false, nil},
		{"token followed by another word is malformed", "Bearer " + jws + " extra", "", true, ErrMalformed},
		{"token with a quote is malformed", `Bearer "` + jws + `"`, "", true, ErrMalformed},
		{"token with padding inside is malformed", "Bearer ab=cd", "", true, ErrMalformed},
		{"token of padding only is malformed", "Bearer ===", "", true, ErrMalformed},
		{"token with non-ASCII is malformed", "Bearer tök.en.x", "", true, ErrMalformed},
		{"token with a control character is malformed", "Bearer a.b\x00.c", "", true, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, present, err := FromAuthorization(tc.value)
			if raw != tc.wantRaw || present != tc.wantPresent || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("FromAuthorization(%q) = %q, %v, %v; want %q, %v, %v",
					tc.value, raw, present, err, tc.wantRaw, tc.wantPresent, tc.wantErr)
			}
			if err != nil {
				if Reason(err) != "token_malformed" {
					t.Errorf("Reason = %q", Reason(err))
				}
				if strings.Contains(err.Error(), "a.b") || strings.Contains(err.Error(), jws[:16]) {
					t.Errorf("error quotes the header value: %q", err)
				}
			}
		})
	}
}

func TestFingerprintIsShortAndStable(t *testing.T) {
	t.Parallel()
	a, b := Fingerprint("a.b.c"), Fingerprint("a.b.d")
	if len(a) != 12 || a == b || a != Fingerprint("a.b.c") || strings.Contains(a, "a.b") {
		t.Errorf("Fingerprint = %q, %q", a, b)
	}
}

func FuzzFromAuthorization(f *testing.F) {
	for _, seed := range []string{"", "Bearer a.b.c", "bearer  x", "Basic Zm9v", "Bearer a,Bearer b", "Bearer", "Bearer =", "Basic x, Bearer y"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		raw, present, err := FromAuthorization(value)
		switch {
		case err != nil:
			if !present || raw != "" || Reason(err) != "token_malformed" {
				t.Fatalf("error %v with raw %q, present %v", err, raw, present)
			}
		case present:
			if !isB64Token(raw) || !strings.Contains(value, raw) || strings.ContainsAny(raw, ", \t") {
				t.Fatalf("extracted %q from %q", raw, value)
			}
		default:
			if raw != "" {
				t.Fatalf("raw %q without a token", raw)
			}
		}
	})
}
