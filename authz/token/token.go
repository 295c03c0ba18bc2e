package token

import (
	"encoding/json"
	"math"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/open-policy-agent/opa/v1/ast"
)

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are treated as malformed rather than trusted to
// survive conversion to time.Time on every platform.
const maxNumericDate = 253402300799

// Token is a verified JWT. A Token may be returned to many callers at once (see the verification cache): it is
// shared, its value included, and must be treated as read-only.
type Token struct {
	// Issuer is the iss claim, which selected the keys the token was verified with.
	Issuer string
	// Subject is the sub claim, or "".
	Subject string
	// Expiry is the exp claim, in whole seconds.
	Expiry time.Time
	// ClientID is the client_id claim (RFC 9068), or else azp, or "".
	ClientID string
	// Digest is the SHA-256 of the raw token. Value is a function of the raw token, so equal digests mean equal
	// values: the decision cache keys on the digest instead of encoding the value.
	Digest [32]byte

	value ast.Value
}

// Value returns the token as the policy input sees it: {"header": {...}, "payload": {...}}, numbers as they
// were written, so that large integers keep every digit. It is built once at verification and is the only form
// of the header and claims the Token keeps (a cached token is held for its lifetime); callers must not modify it.
func (t *Token) Value() ast.Value {
	return t.value
}

func newToken(iss string, header, claims map[string]any) (*Token, error) {
	exp, err := numericDate(claims, "exp")
	if err != nil {
		return nil, err
	}
	sub, _ := claims["sub"].(string)
	clientID, _ := claims["client_id"].(string)
	if clientID == "" {
		clientID, _ = claims["azp"].(string)
	}
	hv, err := ast.InterfaceToValue(header)
	if err != nil {
		return nil, fail(ErrMalformed, "header cannot be represented for policy: %v", err)
	}
	pv, err := ast.InterfaceToValue(claims)
	if err != nil {
		return nil, fail(ErrMalformed, "payload cannot be represented for policy: %v", err)
	}
	return &Token{
		Issuer:   iss,
		Subject:  sub,
		Expiry:   exp,
		ClientID: clientID,
		value: ast.NewObject(
			[2]*ast.Term{ast.StringTerm("header"), ast.NewTerm(hv)},
			[2]*ast.Term{ast.StringTerm("payload"), ast.NewTerm(pv)},
		),
	}, nil
}

// checkClaimTypes rejects registered claims of the wrong type (RFC 7519 §4.1) before anything relies on them.
// Times must be finite, non-negative NumericDates no later than year 9999.
func checkClaimTypes(claims jwt.MapClaims) error {
	for _, name := range []string{"exp", "nbf", "iat"} {
		if _, present := claims[name]; present {
			if _, err := numericDate(claims, name); err != nil {
				return err
			}
		}
	}
	for _, name := range []string{"iss", "sub", "jti"} {
		if v, present := claims[name]; present {
			if _, ok := v.(string); !ok {
				return fail(ErrMalformed, "%s claim is not a string", name)
			}
		}
	}
	if v, present := claims["aud"]; present {
		if _, ok := audiences(v); !ok {
			return fail(ErrMalformed, "aud claim is neither a string nor an array of strings")
		}
	}
	return nil
}

func numericDate(claims map[string]any, name string) (time.Time, error) {
	n, ok := claims[name].(json.Number)
	if !ok {
		return time.Time{}, fail(ErrMalformed, "%s claim is not a number", name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, fail(ErrMalformed, "%s claim is not a NumericDate between 1970 and 9999", name)
	}
	// Whole seconds, as jwt compares them (jwt.TimePrecision), so the cache and the parser agree on exp.
	return time.Unix(int64(f), 0).UTC(), nil
}

// audiences returns the aud claim as a list: a single string or an array of strings (RFC 7519 §4.1.3).
func audiences(v any) ([]string, bool) {
	switch v := v.(type) {
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, a := range v {
			s, ok := a.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	default:
		return nil, false
	}
}

// checkAudience requires one of the issuer's audiences in the aud claim.
func checkAudience(claims jwt.MapClaims, accepted []string) error {
	v, present := claims["aud"]
	if !present {
		return fail(ErrAudience, "token has no aud claim")
	}
	auds, _ := audiences(v)
	for _, a := range auds {
		for _, want := range accepted {
			if a == want {
				return nil
			}
		}
	}
	return fail(ErrAudience, "aud claim names none of the issuer's %d accepted audiences", len(accepted))
}
