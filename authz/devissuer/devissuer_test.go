package devissuer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

func TestOpenCreatesKeyOnceWithPrivateMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key.pem")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() {
		t.Errorf("reopened key has kid %q, want %q", b.KeyID(), a.KeyID())
	}
}

func TestOpenRejectsAFileThatIsNotAKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil {
		t.Fatal("Open accepted a file without a PEM key")
	}
}

func TestMintedTokenVerifiesAgainstServedJWKS(t *testing.T) {
	iss, err := Open(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/jwk-set+json" {
		t.Errorf("content-type = %q", ct)
	}
	kf, err := keyfunc.NewJWKSetJSON(body)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := iss.Mint(Claims{Subject: "alice", Scope: "accounts:read", Extra: map[string]any{"accounts": []string{"acc-1"}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse(raw, kf.Keyfunc, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(IssuerURL),
		jwt.WithAudience(Audience), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	claims := tok.Claims.(jwt.MapClaims)
	if claims["sub"] != "alice" || claims["scope"] != "accounts:read" {
		t.Errorf("claims = %v", claims)
	}
	if tok.Header["typ"] != "at+jwt" || tok.Header["kid"] != iss.KeyID() {
		t.Errorf("header = %v", tok.Header)
	}
}

func TestThumbprintIsStableBase64URLSHA256(t *testing.T) {
	iss, err := Open(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(iss.KeyID()); got != 43 {
		t.Errorf("kid length = %d, want 43 (unpadded base64url of 32 bytes)", got)
	}
}
