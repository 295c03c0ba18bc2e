package token

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by [Verifier.Verify] and [FromAuthorization] wraps exactly one of
// them; test with [errors.Is].
var (
	// ErrMalformed: the token is not a well-formed compact JWS or has claims of the wrong type.
	ErrMalformed = errors.New("token malformed")
	// ErrTooLarge: the token is longer than Config.MaxTokenBytes.
	ErrTooLarge = errors.New("token too large")
	// ErrUnknownIssuer: the iss claim is missing or names no configured issuer.
	ErrUnknownIssuer = errors.New("unknown token issuer")
	// ErrUnknownKey: the issuer's key set has no key for the token's kid, even after a refresh.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrAlgorithm: the token's alg is not allowed for its issuer or does not fit the selected key.
	ErrAlgorithm = errors.New("signing algorithm not allowed")
	// ErrSignature: the signature does not verify with the issuer's key.
	ErrSignature = errors.New("bad token signature")
	// ErrExpired: the exp claim is in the past, beyond the leeway.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: the nbf claim is in the future, beyond the leeway.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrIssuedInFuture: the iat claim is in the future, beyond the leeway.
	ErrIssuedInFuture = errors.New("token issued in the future")
	// ErrMissingExpiry: the token has no exp claim.
	ErrMissingExpiry = errors.New("token has no expiry")
	// ErrAudience: the aud claim names none of the issuer's audiences.
	ErrAudience = errors.New("token audience not accepted")
	// ErrType: the typ header is not one of the issuer's accepted types.
	ErrType = errors.New("token type not allowed")
	// ErrKeysUnavailable: the issuer has no key set yet, or its last good key set is older than
	// Config.MaxStale.
	ErrKeysUnavailable = errors.New("issuer keys unavailable")
)

// Reason maps an error to a short, stable, machine-readable reason code suitable for metrics labels,
// WWW-Authenticate details and decision logs. It returns "" for a nil error and "invalid_token" for an error
// that wraps none of this package's sentinels.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMalformed):
		return "token_malformed"
	case errors.Is(err, ErrTooLarge):
		return "token_too_large"
	case errors.Is(err, ErrUnknownIssuer):
		return "unknown_issuer"
	case errors.Is(err, ErrUnknownKey):
		return "unknown_key"
	case errors.Is(err, ErrAlgorithm):
		return "algorithm_not_allowed"
	case errors.Is(err, ErrSignature):
		return "bad_signature"
	case errors.Is(err, ErrExpired):
		return "token_expired"
	case errors.Is(err, ErrNotYetValid):
		return "token_not_yet_valid"
	case errors.Is(err, ErrIssuedInFuture):
		return "token_issued_in_future"
	case errors.Is(err, ErrMissingExpiry):
		return "token_missing_exp"
	case errors.Is(err, ErrAudience):
		return "audience_mismatch"
	case errors.Is(err, ErrType):
		return "token_type_not_allowed"
	case errors.Is(err, ErrKeysUnavailable):
		return "keys_unavailable"
	default:
		return "invalid_token"
	}
}

// fail wraps a sentinel with a detail. Details are written by this package and quote token-derived values
// only through [quote].
func fail(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// quote renders an untrusted, token-derived string (a kid, an issuer) for an error or log line: at most 64
// bytes, Go-quoted so control characters cannot forge log lines.
func quote(s string) string { return quoteN(s, 64) }

// quoteAlg renders an alg header value; real ones are at most 5 bytes.
func quoteAlg(s string) string { return quoteN(s, 16) }

func quoteN(s string, limit int) string {
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}

// truncate shortens a value for a structured log attribute; the slog handler does the escaping.
func truncate(s string, limit int) string {
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
