package token

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// FromAuthorization extracts a bearer token from the value of an HTTP Authorization header (RFC 6750 §2.1).
//
// The scheme is matched case-insensitively. A value with another scheme (Basic, DPoP, ...) or an empty value
// carries no bearer token: present is false and err is nil. A Bearer value whose token is empty or is not an
// RFC 6750 b64token is present and malformed. Envoy joins repeated Authorization headers with a comma; a
// joined value that contains a Bearer credential is malformed rather than any one of its tokens being picked.
func FromAuthorization(value string) (raw string, present bool, err error) {
	v := strings.Trim(value, " \t")
	if v == "" {
		return "", false, nil
	}
	scheme, rest := splitScheme(v)
	if !strings.EqualFold(scheme, "Bearer") {
		if hasJoinedBearer(v) {
			return "", true, fail(ErrMalformed, "authorization header joins several credentials, one of them Bearer")
		}
		return "", false, nil
	}
	tok := strings.TrimLeft(rest, " \t")
	switch {
	case tok == "":
		return "", true, fail(ErrMalformed, "authorization header has the Bearer scheme but no token")
	case isB64Token(tok):
	case strings.ContainsAny(tok, ", \t"):
		return "", true, fail(ErrMalformed, "authorization header holds more than one credential")
	default:
		return "", true, fail(ErrMalformed, "bearer token has characters outside the RFC 6750 b64token set")
	}
	return tok, true, nil
}

// splitScheme splits a credential into its auth-scheme and what follows the first SP or HTAB.
func splitScheme(s string) (scheme, rest string) {
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// hasJoinedBearer reports whether a comma-joined header value has a Bearer credential in any of its parts.
func hasJoinedBearer(v string) bool {
	if !strings.Contains(v, ",") {
		return false
	}
	for part := range strings.SplitSeq(v, ",") {
		scheme, _ := splitScheme(strings.Trim(part, " \t"))
		if strings.EqualFold(scheme, "Bearer") {
			return true
		}
	}
	return false
}

// isB64Token reports whether s matches RFC 6750 §2.1:
// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		if !b64tokenChars[body[i]] {
			return false
		}
	}
	return true
}

// b64tokenChars marks the bytes of a b64token before its "=" padding; every byte of a bearer token is looked up.
var b64tokenChars = func() (t [256]bool) {
	for _, r := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/" {
		t[r] = true
	}
	return t
}()

// Fingerprint returns a short, non-reversible identifier of a raw token (the first 12 hex digits of its
// SHA-256) for log lines that must correlate requests without revealing the token.
func Fingerprint(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:6])
}
