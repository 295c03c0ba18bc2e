package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

const testJWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.MEUCIQDx3vJ-abc_def"

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"a 16-digit card number keeps its last four", "/cards/4111111111111111/limits", "/cards/****1111/limits"},
		{"a 13-digit number is masked", "pan=4222222222222", "pan=****2222"},
		{"a 19-digit number is masked", "4000000000000000006", "****0006"},
		{"a longer run is masked too", "12345678901234567890123", "****0123"},
		{"grouped by spaces", "card 4111 1111 1111 1111 declined", "card ****1111 declined"},
		{"grouped by dashes", "4111-1111-1111-1111", "****1111"},
		{"twelve digits stay", "id 123456789012 ok", "id 123456789012 ok"},
		{"dates and times stay", "2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z"},
		{"a uuid stays", "9f6c1d2e-2c7b-4e0a-9d6a-3f1f5c1d2e7b", "9f6c1d2e-2c7b-4e0a-9d6a-3f1f5c1d2e7b"},
		{"a JWT is replaced", "token " + testJWT + " rejected", "token [jwt] rejected"},
		{"a JWT without signature is replaced", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", "[jwt]"},
		{"eyJ inside a word is left alone", "keyJar", "keyJar"},
		{"a JWT in a query string is replaced", "/public?access_token=" + testJWT + "&x=1", "/public?access_token=[jwt]&x=1"},
		{"nothing to mask", "check denied", "check denied"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Redact(tc.in); got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactDoesNotAllocateWhenThereIsNothingToMask(t *testing.T) {
	s := "check denied: reason=insufficient_scope method=GET request_id=9f6c1d2e-2c7b-4e0a-9d6a-3f1f5c1d2e7b"
	if n := testing.AllocsPerRun(100, func() { _ = Redact(s) }); n != 0 {
		t.Errorf("Redact allocated %v times on a clean string", n)
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestRedactingHandlerMasksEveryStringItPasses(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewRedactingHandler(slog.NewJSONHandler(&buf, nil)))
	log = log.With(slog.String("preset", "4111111111111111"))
	log.WithGroup("req").Info("denied for 4111111111111111",
		slog.String("path", "/cards/5500005555555559"),
		slog.Any("error", errors.New("kid in "+testJWT)),
		slog.Any("stringer", stringer("4111 1111 1111 1111")),
		slog.Group("nested", slog.String("id", "340000000000009")),
		slog.Int("count", 3),
	)
	out := buf.String()
	for _, leak := range []string{"4111111111111111", "5500005555555559", "340000000000009", "4111 1111", testJWT[:20]} {
		if strings.Contains(out, leak) {
			t.Errorf("log line holds %q: %s", leak, out)
		}
	}
	for _, want := range []string{`"msg":"denied for ****1111"`, `"path":"/cards/****5559"`, `"id":"****0009"`, `"count":3`, `"error":"kid in [jwt]"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
}

func TestRedactingHandlerKeepsLevels(t *testing.T) {
	h := NewRedactingHandler(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelWarn) {
		t.Error("the redacting handler does not follow the wrapped handler's level")
	}
}
