package token

import (
	"crypto"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/MicahParks/jwkset"
)

func TestParseJWKSKeepsOnlyUsableSignatureKeys(t *testing.T) {
	t.Parallel()
	k := testKeys()
	rs := newSigningKey("rs", "RS256", k.rsa1)
	es := newSigningKey("es", "ES256", k.p256a)
	ed := newSigningKey("ed", "EdDSA", k.ed1)
	jwk := func(sk signingKey, edit func(*jwkset.JWKMarshal)) jwkset.JWKMarshal {
		m := sk.jwk(t)
		if edit != nil {
			edit(&m)
		}
		return m
	}
	privateRSA := func() jwkset.JWKMarshal {
		j, err := jwkset.NewJWKFromKey(k.rsa1, jwkset.JWKOptions{
			Marshal:  jwkset.JWKMarshalOptions{Private: true},
			Metadata: jwkset.JWKMetadataOptions{KID: "rs", ALG: jwkset.AlgRS256},
		})
		if err != nil {
			t.Fatal(err)
		}
		return j.Marshal()
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		key      jwkset.JWKMarshal
		usable   bool
		noteHas  string
		verifies string // alg the key must fit when usable
	}{
		{"RSA 2048 key is used", jwk(rs, nil), true, "", "RS256"},
		{"P-256 key is used", jwk(es, nil), true, "", "ES256"},
		{"Ed25519 key is used", jwk(ed, nil), true, "", "EdDSA"},
		{"key without use is used", jwk(es, func(m *jwkset.JWKMarshal) { m.USE = "" }), true, "", "ES256"},
		{"key with key_ops verify is used", jwk(es, func(m *jwkset.JWKMarshal) { m.KEYOPS = []jwkset.KEYOPS{"verify"} }), true, "", "ES256"},
		{"private RSA JWK is used through its public part only", privateRSA(), true, "private key parameters", "RS256"},
		{"RSA 1024 key is dropped", newSigningKey("rs", "RS256", k.rsa1024).jwk(t), false, "RSA key of 1024 bits is below the minimum of 2048", ""},
		{"symmetric key is dropped", jwkset.JWKMarshal{KTY: "oct", KID: "hs", K: "c2VjcmV0", ALG: "HS256"}, false, "symmetric (oct) keys are never used", ""},
		{"encryption key is dropped", jwk(rs, func(m *jwkset.JWKMarshal) { m.USE = "enc"; m.ALG = "" }), false, `key use is "enc"`, ""},
		{"key for sign only is dropped", jwk(es, func(m *jwkset.JWKMarshal) { m.KEYOPS = []jwkset.KEYOPS{"sign"} }), false, "key_ops does not include verify", ""},
		{"key published for an encryption alg is dropped", jwk(rs, func(m *jwkset.JWKMarshal) { m.ALG = "RSA-OAEP" }), false, `key alg "RSA-OAEP"`, ""},
		{"key published for HS256 is dropped", jwk(rs, func(m *jwkset.JWKMarshal) { m.ALG = "HS256" }), false, `key alg "HS256"`, ""},
		{"EC key published for an RSA alg is dropped", jwk(es, func(m *jwkset.JWKMarshal) { m.ALG = "RS256" }), false, "does not fit", ""},
		{"X25519 key is dropped", jwkset.JWKMarshal{KTY: "OKP", CRV: "X25519", KID: "x", X: base64.RawURLEncoding.EncodeToString(x25519.PublicKey().Bytes())}, false, "not a signature key", ""},
		{"private-only EC key without public point is dropped", jwkset.JWKMarshal{KTY: "EC", CRV: "P-256", KID: "d", D: "AQ"}, false, "invalid key", ""},
		{"EC point off its curve is dropped", jwk(es, func(m *jwkset.JWKMarshal) { m.Y = m.X }), false, "invalid key", ""},
		{"unknown key type is dropped", jwkset.JWKMarshal{KTY: "PQC", KID: "q"}, false, `unsupported key type "PQC"`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := mustJSON(t, jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{tc.key}})
			m, notes, err := parseJWKS(body)
			if tc.usable != (err == nil) {
				t.Fatalf("parseJWKS error = %v, want usable %v", err, tc.usable)
			}
			if tc.noteHas != "" && !strings.Contains(noteText(notes), tc.noteHas) {
				t.Errorf("notes %q do not mention %q", noteText(notes), tc.noteHas)
			}
			if tc.noteHas == "" && len(notes) > 0 {
				t.Errorf("unexpected notes: %s", noteText(notes))
			}
			if !tc.usable {
				return
			}
			if len(m.all) != 1 || !keyFits(tc.verifies, m.all[0].key) {
				t.Errorf("kept %d keys; want one that fits %s", len(m.all), tc.verifies)
			}
			if _, isPrivate := m.all[0].key.(crypto.Signer); isPrivate {
				t.Error("a private key was kept")
			}
		})
	}
}

func noteText(notes []keyNote) string {
	var b strings.Builder
	for _, n := range notes {
		b.WriteString(n.kid + ": " + n.reason + "; ")
	}
	return b.String()
}

func TestParseJWKSKeepsTheFirstOfDuplicateKIDs(t *testing.T) {
	t.Parallel()
	k := testKeys()
	first := newSigningKey("dup", "ES256", k.p256a)
	second := newSigningKey("dup", "ES256", k.p256b)
	m, notes, err := parseJWKS(jwksBody(t, first, second))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.all) != 1 || !strings.Contains(noteText(notes), "duplicate kid") {
		t.Fatalf("kept %d keys, notes %q", len(m.all), noteText(notes))
	}
	if !k.p256a.PublicKey.Equal(m.all[0].key) {
		t.Error("the second key with the kid was kept")
	}
}

func TestKeySetFingerprintIgnoresOrderButNotKeys(t *testing.T) {
	t.Parallel()
	k := testKeys()
	a := newSigningKey("a", "ES256", k.p256a)
	b := newSigningKey("b", "EdDSA", k.ed1)
	fp := func(keys ...signingKey) [32]byte {
		m, _, err := parseJWKS(jwksBody(t, keys...))
		if err != nil {
			t.Fatal(err)
		}
		return m.fingerprint
	}
	if fp(a, b) != fp(b, a) {
		t.Error("reordering the keys changed the fingerprint")
	}
	if fp(a, b) == fp(a) {
		t.Error("removing a key kept the fingerprint")
	}
	if fp(a) == fp(a.as("a2", "ES256")) {
		t.Error("renaming a key kept the fingerprint")
	}
	if fp(a) == fp(newSigningKey("a", "ES256", k.p256b)) {
		t.Error("replacing the key material under the same kid kept the fingerprint")
	}
}

func TestKeyFitsMatchesKeyTypeAndCurve(t *testing.T) {
	t.Parallel()
	k := testKeys()
	keys := map[string]any{
		"rsa": &k.rsa1.PublicKey, "p256": &k.p256a.PublicKey, "p384": &k.p384.PublicKey,
		"p521": &k.p521.PublicKey, "ed": k.ed1.Public(),
	}
	fits := map[string]string{
		"RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa", "PS384": "rsa", "PS512": "rsa",
		"ES256": "p256", "ES384": "p384", "ES512": "p521", "EdDSA": "ed",
	}
	for _, alg := range append(asymmetricAlgorithms(), "HS256", "none") {
		for name, key := range keys {
			if got, want := keyFits(alg, key), fits[alg] == name; got != want {
				t.Errorf("keyFits(%s, %s) = %v, want %v", alg, name, got, want)
			}
		}
	}
}

func FuzzParseJWKS(f *testing.F) {
	k := testKeys()
	f.Add(jwksBody(f, newSigningKey("a", "ES256", k.p256a), newSigningKey("b", "EdDSA", k.ed1)))
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, _, err := parseJWKS(body)
		if err != nil {
			return
		}
		if len(m.all) == 0 {
			t.Fatal("a key set without keys was accepted")
		}
		for _, key := range m.all {
			fits := false
			for _, alg := range asymmetricAlgorithms() {
				fits = fits || keyFits(alg, key.key)
			}
			if !fits {
				t.Fatalf("kept a key that fits no allowed algorithm: %T", key.key)
			}
		}
	})
}
