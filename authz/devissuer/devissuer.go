// Package devissuer is a development OAuth token issuer: an ES256 signing key kept in a local file, its JWKS
// served over loopback HTTP, and a way to mint access tokens for trying the service.
//
// It exists so a new user can run the service and send a real allowed and denied request in a minute. It is
// enabled only by the embedded default configuration or an explicit dev_issuer.enabled, never by a production
// configuration, and it serves only on loopback.
package devissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// The development issuer's identity. The ".invalid" name (RFC 2606) can never be a real issuer.
const (
	IssuerURL = "https://dev-issuer.authz.invalid"
	Audience  = "authz-dev"
	JWKSPath  = "/.well-known/jwks.json"
)

// Issuer signs development tokens.
type Issuer struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks []byte
}

// DefaultKeyFile is where the signing key lives unless configured: the user's cache directory.
func DefaultKeyFile() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	return filepath.Join(dir, "authz", "dev-issuer-es256.pem"), nil
}

// Open loads the signing key from keyFile, creating the file (mode 0600) with a new P-256 key when it does not
// exist. An empty keyFile means DefaultKeyFile.
func Open(keyFile string) (*Issuer, error) {
	if keyFile == "" {
		var err error
		if keyFile, err = DefaultKeyFile(); err != nil {
			return nil, err
		}
	}
	key, err := readKey(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKey(keyFile)
	}
	if err != nil {
		return nil, err
	}
	return newIssuer(key)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("devissuer: %s: not a PEM PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %s: %w", path, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("devissuer: %s: want a P-256 key", path)
	}
	return ec, nil
}

func createKey(path string) (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	// O_EXCL: when two processes start at once, one creates and the other reads what was created.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	return key, nil
}

func newIssuer(key *ecdsa.PrivateKey) (*Issuer, error) {
	// RFC 7638 thumbprint as kid: stable for the key, different for every developer's key.
	thumb := thumbprint(&key.PublicKey)
	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256, USE: jwkset.UseSig, KID: thumb},
	})
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	store := jwkset.NewMemoryStorage()
	if err := store.KeyWrite(context.Background(), jwk); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	jwks, err := store.JSONPublic(context.Background())
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	return &Issuer{key: key, kid: thumb, jwks: jwks}, nil
}

// KeyID is the kid of the signing key.
func (i *Issuer) KeyID() string { return i.kid }

// JWKS is the public JWK Set, as served.
func (i *Issuer) JWKS() []byte { return i.jwks }

// Handler serves the JWKS at JWKSPath.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(i.jwks)
	})
	return mux
}

// Claims describes a token to mint. Subject and Scope are the common ones; Extra adds or overrides any claim.
type Claims struct {
	Subject  string
	Scope    string // space-delimited (RFC 9068)
	ClientID string
	Audience string // default Audience
	TTL      time.Duration
	Extra    map[string]any
}

// Mint signs an RFC 9068 access token (typ at+jwt) with the development key.
func (i *Issuer) Mint(c Claims, now time.Time) (string, error) {
	if c.TTL <= 0 {
		c.TTL = 15 * time.Minute
	}
	if c.Audience == "" {
		c.Audience = Audience
	}
	if c.ClientID == "" {
		c.ClientID = "authz-cli"
	}
	jti := make([]byte, 12)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	claims := jwt.MapClaims{
		"iss":       IssuerURL,
		"sub":       c.Subject,
		"aud":       c.Audience,
		"client_id": c.ClientID,
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"auth_time": now.Unix(),
		"exp":       now.Add(c.TTL).Unix(),
		"jti":       fmt.Sprintf("%x", jti),
	}
	if c.Scope != "" {
		claims["scope"] = c.Scope
	}
	maps.Copy(claims, c.Extra)
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = i.kid
	t.Header["typ"] = "at+jwt"
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	return s, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of a P-256 public key: SHA-256 over the required members in
// lexicographic order, without white space.
func thumbprint(pub *ecdsa.PublicKey) string {
	raw, _ := pub.Bytes() // uncompressed point: 0x04 || X || Y, 32 bytes each for P-256
	b64 := base64.RawURLEncoding.EncodeToString
	canon := `{"crv":"P-256","kty":"EC","x":"` + b64(raw[1:33]) + `","y":"` + b64(raw[33:65]) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}
