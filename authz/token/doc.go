// Package token extracts bearer tokens from Authorization headers and verifies them as JWTs signed by
// configured issuers, whose JSON Web Key Sets it fetches, caches and refreshes in the background.
//
// A [Verifier] trusts a fixed list of issuers. A token is checked only against the keys of the issuer named
// by its iss claim, with that issuer's algorithms, audiences and token types. Asymmetric algorithms only:
// "none" and the HMAC family are refused at configuration time, and key-carrying JOSE headers (jku, x5u,
// jwk, x5c) are never consulted.
//
// Every verification failure wraps exactly one of the sentinel errors of this package, so callers can branch
// with [errors.Is] and map a failure to a stable reason code with [Reason]. Error texts never contain the raw
// token.
package token
