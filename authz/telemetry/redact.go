package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// minPANDigits is the shortest digit run masked as a possible card number (ISO/IEC 7812 PANs have 13 to 19
// digits). Longer runs are masked too: they may hold one.
const minPANDigits = 13

// Masks that replace what Redact finds.
const (
	maskJWT = "[jwt]"
)

// Redact returns s with what must never reach a log masked: digit runs that may be card numbers (13 or more
// digits, also when grouped by single spaces or dashes, as "4111 1111 1111 1111") keep only their last four
// digits, as PCI DSS 3.4 allows; JWTs (compact JWS starting "eyJ") become "[jwt]". It returns s itself, without
// allocating, when there is nothing to mask.
func Redact(s string) string {
	if !needsRedaction(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if n := jwtLen(s[i:]); n > 0 && (i == 0 || !isB64URL(s[i-1])) {
			b.WriteString(maskJWT)
			i += n
			continue
		}
		if isDigit(s[i]) && (i == 0 || !isDigit(s[i-1])) {
			n, digits := digitRun(s[i:])
			if digits >= minPANDigits {
				b.WriteString("****")
				b.WriteString(lastDigits(s[i:i+n], 4))
				i += n
				continue
			}
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// needsRedaction is the allocation-free first pass of Redact.
func needsRedaction(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			run++
			if run >= minPANDigits {
				return true
			}
		case (c == ' ' || c == '-') && run > 0 && i+1 < len(s) && isDigit(s[i+1]):
			// A single separator inside a grouped number keeps the run going.
		default:
			run = 0
			if c == 'e' && strings.HasPrefix(s[i:], "eyJ") && jwtLen(s[i:]) > 0 {
				return true
			}
		}
	}
	return false
}

// digitRun measures the number at the start of s, digits grouped by single spaces or dashes included: its
// length in bytes and its count of digits.
func digitRun(s string) (n, digits int) {
	for n < len(s) {
		c := s[n]
		switch {
		case isDigit(c):
			digits++
			n++
		case (c == ' ' || c == '-') && n+1 < len(s) && isDigit(s[n+1]):
			n++
		default:
			return n, digits
		}
	}
	return n, digits
}

func lastDigits(s string, k int) string {
	out := make([]byte, 0, k)
	for i := len(s) - 1; i >= 0 && len(out) < k; i-- {
		if isDigit(s[i]) {
			out = append(out, s[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}

// jwtLen returns the length of the JWT (two or three base64url segments, the first a JSON object: "eyJ") at
// the start of s, or 0.
func jwtLen(s string) int {
	if !strings.HasPrefix(s, "eyJ") {
		return 0
	}
	n, dots := 0, 0
	for n < len(s) {
		c := s[n]
		if c == '.' {
			if dots == 2 {
				break
			}
			dots++
		} else if !isB64URL(c) {
			break
		}
		n++
	}
	if dots == 0 {
		return 0
	}
	return n
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isB64URL reports whether c may appear in a JWT segment: base64url without padding (RFC 7515 §2).
func isB64URL(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_'
}

// RedactingHandler is a slog.Handler that passes every record on with Redact applied to its message and to
// every string, error and Stringer value of its attributes, groups included.
type RedactingHandler struct {
	next slog.Handler
}

// NewRedactingHandler wraps next.
func NewRedactingHandler(next slog.Handler) *RedactingHandler {
	return &RedactingHandler{next: next}
}

// Enabled implements slog.Handler.
func (h *RedactingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (h *RedactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler.
func (h *RedactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = redactAttr(a)
	}
	return &RedactingHandler{next: h.next.WithAttrs(clean)}
}

// WithGroup implements slog.Handler.
func (h *RedactingHandler) WithGroup(name string) slog.Handler {
	return &RedactingHandler{next: h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); needsRedaction(s) {
			return slog.String(a.Key, Redact(s))
		}
	case slog.KindGroup:
		group := v.Group()
		clean := make([]slog.Attr, len(group))
		for i, g := range group {
			clean[i] = redactAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(clean...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, Redact(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, Redact(x.String()))
		case []byte:
			return slog.String(a.Key, Redact(string(x)))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
