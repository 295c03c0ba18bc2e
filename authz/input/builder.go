package input

import (
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// termBlock is how many terms a builder allocates at a time when no reserve
// sized the next block.
const termBlock = 64

// builder makes the terms of one input document. It hands them out from
// blocks allocated together, as OPA's util.NewPtrSlice does, rather than one
// allocation each: a document is built once, then only read.
type builder struct {
	free []ast.Term
	next int // size of the next block (reserve); termBlock when zero
}

// reserve sizes the next block for about n more terms.
func (b *builder) reserve(n int) {
	if n > len(b.free) {
		b.next = n
	}
}

func (b *builder) term(v ast.Value) *ast.Term {
	if len(b.free) == 0 {
		n := b.next
		if n <= 0 {
			n = termBlock
		}
		b.free = make([]ast.Term, n)
		b.next = 0
	}
	t := &b.free[0]
	b.free = b.free[1:]
	t.Value = v
	return t
}

// Shared, never modified: most requests have no query string, and many
// headers or JSON strings are empty.
var (
	emptyString = ast.StringTerm("")
	emptyObject = ast.InternedEmptyObjectValue.(ast.Object)
)

// str makes a string term that is valid UTF-8. Strings that reach us over
// gRPC already are (proto3 decoding rejects anything else); this guards
// in-process callers and bytes produced by percent-decoding, replacing each
// invalid byte with U+FFFD as encoding/json does.
func (b *builder) str(s string) *ast.Term {
	if s == "" {
		return emptyString
	}
	return b.term(ast.String(validUTF8(s)))
}

func (b *builder) object(items ...[2]*ast.Term) *ast.Term {
	return b.term(ast.NewObject(items...))
}

// array makes an array term that keeps elems, which must not be reused.
func (b *builder) array(elems []*ast.Term) *ast.Term {
	return b.term(ast.NewArray(elems...))
}

// lastByKey drops, in place, every item whose key comes again later, so
// that the last value wins as in encoding/json. ast.NewObject needs unique
// keys: it would keep both. (ast.Object.Insert replaces, but rehashes the
// whole object on each replacement, which a body of repeated keys turns
// quadratic.)
func lastByKey(items [][2]*ast.Term) [][2]*ast.Term {
	key := func(i int) ast.String { return items[i][0].Value.(ast.String) }
	out := items[:0]
	if len(items) <= 16 {
	next:
		for i := range items {
			for j := i + 1; j < len(items); j++ {
				if key(j) == key(i) {
					continue next
				}
			}
			out = append(out, items[i])
		}
		return out
	}
	last := make(map[ast.String]int, len(items))
	for i := range items {
		last[key(i)] = i
	}
	if len(last) == len(items) {
		return items
	}
	for i := range items {
		if last[key(i)] == i {
			out = append(out, items[i])
		}
	}
	return out
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s) + 2*utf8.UTFMax)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.WriteString(s[i : i+size])
		}
		i += size
	}
	return sb.String()
}
