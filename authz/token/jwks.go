package token

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// minRSABits is the smallest RSA modulus accepted from a JWKS (NIST SP 800-131A).
const minRSABits = 2048

// keyMaterial is the usable part of one JWKS document: immutable once built.
type keyMaterial struct {
	// lookup finds a key by the token's kid and checks the JWK's alg against the token's (keyfunc).
	lookup jwt.Keyfunc
	kids   map[string]struct{}
	// all lists every usable key, for tokens without a kid.
	all []publicKey
	// fingerprint identifies the usable keys (kid, alg, public key), whatever the document's formatting.
	fingerprint [sha256.Size]byte
}

type publicKey struct {
	kid string
	alg string // the JWK's alg; "" when the JWK does not restrict it
	key any
}

// keyNote records a key that was skipped or used only in part, for the log.
type keyNote struct {
	kid    string
	reason string
}

// parseJWKS keeps the keys of a JWKS document that can verify an allowed algorithm: RSA of at least 2048 bits,
// EC on P-256/P-384/P-521 and Ed25519, with use "sig" or none and key_ops including "verify" or none. Private
// parameters are ignored. A document with no usable key is an error.
func parseJWKS(body []byte) (*keyMaterial, []keyNote, error) {
	var doc jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	var notes []keyNote
	storage := jwkset.NewMemoryStorage()
	m := &keyMaterial{kids: make(map[string]struct{}, len(doc.Keys))}
	for _, raw := range doc.Keys {
		jwk, pub, reason := usableJWK(raw)
		if reason != "" {
			notes = append(notes, keyNote{kid: raw.KID, reason: reason})
			continue
		}
		if raw.D != "" {
			notes = append(notes, keyNote{kid: raw.KID, reason: "JWK publishes private key parameters; only its public part is used"})
		}
		if raw.KID != "" {
			if _, dup := m.kids[raw.KID]; dup {
				notes = append(notes, keyNote{kid: raw.KID, reason: "duplicate kid; the first key with it is used"})
				continue
			}
			m.kids[raw.KID] = struct{}{}
		}
		// Writing to a memory storage cannot fail.
		_ = storage.KeyWrite(context.Background(), jwk)
		m.all = append(m.all, publicKey{kid: raw.KID, alg: string(raw.ALG), key: pub})
	}
	if len(m.all) == 0 {
		return nil, notes, fmt.Errorf("no usable signature key among %d keys", len(doc.Keys))
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: storage})
	if err != nil {
		return nil, notes, fmt.Errorf("key lookup: %w", err)
	}
	m.lookup = kf.KeyfuncCtx(context.Background())
	m.fingerprint, err = fingerprintKeys(m.all)
	if err != nil {
		return nil, notes, err
	}
	return m, notes, nil
}

// usableJWK returns the public key of a JWK, or why it cannot be used.
func usableJWK(raw jwkset.JWKMarshal) (jwkset.JWK, any, string) {
	switch raw.KTY {
	case jwkset.KtyRSA, jwkset.KtyEC, jwkset.KtyOKP:
	case jwkset.KtyOct:
		return jwkset.JWK{}, nil, "symmetric (oct) keys are never used"
	default:
		return jwkset.JWK{}, nil, fmt.Sprintf("unsupported key type %s", quote(string(raw.KTY)))
	}
	if raw.USE != "" && raw.USE != jwkset.UseSig {
		return jwkset.JWK{}, nil, fmt.Sprintf("key use is %s, not sig", quote(string(raw.USE)))
	}
	if len(raw.KEYOPS) > 0 && !slices.Contains(raw.KEYOPS, jwkset.KeyOpsVerify) {
		return jwkset.JWK{}, nil, "key_ops does not include verify"
	}
	if raw.ALG != "" && !slices.Contains(asymmetricAlgorithms(), string(raw.ALG)) {
		return jwkset.JWK{}, nil, fmt.Sprintf("key alg %s is not an allowed signature algorithm", quote(string(raw.ALG)))
	}
	jwk, err := jwkset.NewJWKFromMarshal(raw, jwkset.JWKMarshalOptions{Private: false}, jwkset.JWKValidateOptions{})
	if err != nil {
		return jwkset.JWK{}, nil, fmt.Sprintf("invalid key: %v", err)
	}
	pub := jwk.Key()
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits {
			return jwkset.JWK{}, nil, fmt.Sprintf("RSA key of %d bits is below the minimum of %d", bits, minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return jwkset.JWK{}, nil, fmt.Sprintf("%T is not a signature key", pub)
	}
	if raw.ALG != "" && !keyFits(string(raw.ALG), pub) {
		return jwkset.JWK{}, nil, fmt.Sprintf("key alg %s does not fit a %s key", quote(string(raw.ALG)), raw.KTY)
	}
	return jwk, pub, ""
}

// keyFits reports whether key can verify alg: the key type, and for ECDSA the curve, must match (RFC 7518 §3).
func keyFits(alg string, key any) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		_, ok := key.(*rsa.PublicKey)
		return ok
	case "ES256":
		return onCurve(key, "P-256")
	case "ES384":
		return onCurve(key, "P-384")
	case "ES512":
		return onCurve(key, "P-521")
	case "EdDSA":
		k, ok := key.(ed25519.PublicKey)
		return ok && len(k) == ed25519.PublicKeySize
	default:
		return false
	}
}

func onCurve(key any, curve string) bool {
	k, ok := key.(*ecdsa.PublicKey)
	return ok && k.Curve != nil && k.Curve.Params().Name == curve
}

// keysFor returns the keys that may verify a token without kid: those that fit alg and whose JWK does not
// name another alg. jwt tries them in turn.
func (m *keyMaterial) keysFor(alg string) []jwt.VerificationKey {
	var keys []jwt.VerificationKey
	for _, k := range m.all {
		if (k.alg == "" || k.alg == alg) && keyFits(alg, k.key) {
			keys = append(keys, k.key)
		}
	}
	return keys
}

func fingerprintKeys(keys []publicKey) ([sha256.Size]byte, error) {
	type entry struct{ kid, alg, der []byte }
	entries := make([]entry, 0, len(keys))
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.key)
		if err != nil {
			return [sha256.Size]byte{}, fmt.Errorf("encode public key %s: %w", quote(k.kid), err)
		}
		entries = append(entries, entry{[]byte(k.kid), []byte(k.alg), der})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(bytes.Compare(a.kid, b.kid), bytes.Compare(a.alg, b.alg), bytes.Compare(a.der, b.der))
	})
	h := sha256.New()
	for _, e := range entries {
		for _, part := range [][]byte{e.kid, e.alg, e.der} {
			fmt.Fprintf(h, "%d:", len(part))
			h.Write(part)
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, nil
}
