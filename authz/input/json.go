package input

import (
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// parseJSON decodes one JSON document straight into an ast.Value. It gives
// what OPA-Envoy gets from util.UnmarshalJSON and ast.InterfaceToValue
// (encoding/json underneath) without the detour through map[string]any:
// numbers keep their text, a repeated key keeps its last value, invalid UTF-8
// and unpaired surrogates become U+FFFD, and a number OPA cannot hold (a
// huge exponent) is an error. Anything but white space after the value is an
// error too, where OPA's decoder lets "null" and whatever follows it through:
// a body the upstream may read differently is refused, not half-read.
// Arrays and objects nested deeper than maxDepth are an error.
func parseJSON(b *builder, s string, maxDepth int) (ast.Value, error) {
	b.reserve(min(len(s)/8, 1024))
	p := jsonParser{b: b, s: s, maxDepth: maxDepth}
	p.skipSpace()
	t, err := p.value()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return nil, p.errorf("invalid character after top-level value")
	}
	return t.Value, nil
}

type jsonParser struct {
	b        *builder
	s        string
	i        int
	depth    int
	maxDepth int

	// Scratch space reused across nested containers.
	elems []*ast.Term
	items [][2]*ast.Term
	buf   []byte

	// recent holds short strings already made into terms, by a cheap hash:
	// keys repeat in every element of an array of records, and so do values
	// such as currencies, so a hit saves an allocation.
	recent [32]*ast.Term
}

const maxRecentLen = 24

// strTerm makes a term of a decoded string, reusing a recent identical one.
func (p *jsonParser) strTerm(s string) *ast.Term {
	if s == "" {
		return emptyString
	}
	if len(s) > maxRecentLen {
		return p.b.term(ast.String(s))
	}
	h := (len(s)*31 + int(s[0])*7 + int(s[len(s)-1])) % len(p.recent)
	if t := p.recent[h]; t != nil && string(t.Value.(ast.String)) == s {
		return t
	}
	t := p.b.term(ast.String(s))
	p.recent[h] = t
	return t
}

// jsonSyntaxError reports where a body stopped being JSON; it never quotes
// the body.
type jsonSyntaxError struct {
	msg    string
	offset int
}

func (e *jsonSyntaxError) Error() string {
	return fmt.Sprintf("json: %s at offset %d", e.msg, e.offset)
}

func (p *jsonParser) errorf(msg string) error {
	return &jsonSyntaxError{msg: msg, offset: p.i}
}

func (p *jsonParser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 (never valid here) at the end.
func (p *jsonParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *jsonParser) value() (*ast.Term, error) {
	switch c := p.peek(); {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return p.strTerm(s), nil
	case c == 't':
		return p.literal("true", ast.InternedTerm(true))
	case c == 'f':
		return p.literal("false", ast.InternedTerm(false))
	case c == 'n':
		return p.literal("null", ast.InternedNullTerm)
	case c == '-' || isDigit(c):
		return p.number()
	case c == 0 && p.i == len(p.s):
		return nil, p.errorf("unexpected end of JSON input")
	default:
		return nil, p.errorf("invalid character looking for beginning of value")
	}
}

func (p *jsonParser) literal(lit string, t *ast.Term) (*ast.Term, error) {
	if !strings.HasPrefix(p.s[p.i:], lit) {
		return nil, p.errorf("invalid literal")
	}
	p.i += len(lit)
	return t, nil
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > p.maxDepth {
		return p.errorf(fmt.Sprintf("nesting deeper than %d", p.maxDepth))
	}
	return nil
}

func (p *jsonParser) object() (*ast.Term, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.i++ // {
	start := len(p.items)
	p.skipSpace()
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			p.skipSpace()
			if p.peek() != '"' {
				return nil, p.errorf("expected string for object key")
			}
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			p.skipSpace()
			if p.peek() != ':' {
				return nil, p.errorf("expected ':' after object key")
			}
			p.i++
			p.skipSpace()
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			p.items = append(p.items, ast.Item(p.strTerm(k), v))
			p.skipSpace()
			c := p.peek()
			if c == '}' {
				p.i++
				break
			}
			if c != ',' {
				return nil, p.errorf("expected ',' or '}' after object value")
			}
			p.i++
		}
	}
	obj := ast.NewObject(lastByKey(p.items[start:])...)
	clear(p.items[start:])
	p.items = p.items[:start]
	p.depth--
	return p.b.term(obj), nil
}

func (p *jsonParser) array() (*ast.Term, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.i++ // [
	start := len(p.elems)
	p.skipSpace()
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			p.skipSpace()
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			p.elems = append(p.elems, v)
			p.skipSpace()
			c := p.peek()
			if c == ']' {
				p.i++
				break
			}
			if c != ',' {
				return nil, p.errorf("expected ',' or ']' after array element")
			}
			p.i++
		}
	}
	// ast.NewArray keeps the slice it is given, so it gets its own.
	elems := make([]*ast.Term, len(p.elems)-start)
	copy(elems, p.elems[start:])
	clear(p.elems[start:])
	p.elems = p.elems[:start]
	p.depth--
	return p.b.array(elems), nil
}

func (p *jsonParser) number() (*ast.Term, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case isDigit(c):
		p.digits()
	default:
		return nil, p.errorf("invalid character in numeric literal")
	}
	if p.peek() == '.' {
		p.i++
		if !isDigit(p.peek()) {
			return nil, p.errorf("invalid character after decimal point in numeric literal")
		}
		p.digits()
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if !isDigit(p.peek()) {
			return nil, p.errorf("invalid character in exponent of numeric literal")
		}
		p.digits()
	}
	text := p.s[start:p.i]
	if t := ast.InternedIntNumberTermFromString(text); t != nil {
		return t, nil
	}
	n, err := ast.NumberChecked(text)
	if err != nil {
		return nil, &jsonSyntaxError{msg: "number out of range", offset: start}
	}
	return p.b.term(n), nil
}

func (p *jsonParser) digits() {
	for isDigit(p.peek()) {
		p.i++
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// str reads a string literal. The common case, with no escapes and only
// ASCII, is a substring of the input.
func (p *jsonParser) str() (string, error) {
	p.i++ // "
	start := p.i
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == '"':
			p.i++
			return p.s[start : p.i-1], nil
		case c == '\\' || c >= utf8.RuneSelf:
			return p.strSlow(start)
		case c < 0x20:
			return "", p.errorf("invalid character in string literal")
		}
		p.i++
	}
	return "", p.errorf("unexpected end of JSON input")
}

func (p *jsonParser) strSlow(start int) (string, error) {
	b := append(p.buf[:0], p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			p.buf = b
			return string(b), nil
		case c == '\\':
			if p.i+1 >= len(p.s) {
				return "", p.errorf("unexpected end of JSON input")
			}
			switch e := p.s[p.i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := p.hex4(p.i + 2)
				if !ok {
					return "", p.errorf("invalid character in \\u hexadecimal character escape")
				}
				p.i += 6
				if utf16.IsSurrogate(r) {
					// A pair is consumed whole; anything else leaves the next
					// escape to be read on its own, as encoding/json does.
					if p.peek() == '\\' && p.i+1 < len(p.s) && p.s[p.i+1] == 'u' {
						if r2, ok := p.hex4(p.i + 2); ok {
							if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
								b = utf8.AppendRune(b, dec)
								p.i += 6
								continue
							}
						}
					}
					r = utf8.RuneError
				}
				b = utf8.AppendRune(b, r)
				continue
			default:
				return "", p.errorf("invalid character in string escape code")
			}
			p.i += 2
		case c < 0x20:
			return "", p.errorf("invalid character in string literal")
		case c < utf8.RuneSelf:
			b = append(b, c)
			p.i++
		default:
			r, size := utf8.DecodeRuneInString(p.s[p.i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, p.s[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
	return "", p.errorf("unexpected end of JSON input")
}

func (p *jsonParser) hex4(at int) (rune, bool) {
	if at+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(p.s[at : at+4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
