package input

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxQueryParams is net/url's default limit on query parameters; OPA-Envoy,
// which uses url.ParseQuery, fails the request above it, and so do we.
const maxQueryParams = 10000

var (
	errQuerySemicolon = errors.New("invalid semicolon separator in query")
	errQueryTooMany   = errors.New("number of URL query parameters exceeded limit")
)

// parsePath splits an HTTP :path into parsed_path and its raw query string,
// which it checks but leaves for mustParseQuery to turn into parsed_query
// when a lookup needs it.
//
// parsed_path drops all leading slashes, splits on "/" and percent-decodes
// each segment ("/a/b%20c/" -> ["a", "b c", ""]; "/" -> [""]). OPA-Envoy
// decodes the whole path before splitting, so an encoded slash ("%2F") there
// splits a segment in two; here it stays inside its segment, which is what
// the client sent and what a policy comparing segments should see.
//
// parsed_query follows url.ParseQuery: "&"-separated, "+" is a space, a
// repeated name collects all its values in order, and a semicolon or a bad
// escape is an error (where OPA-Envoy fails the request too).
func parsePath(b *builder, p string) (path *ast.Term, rawQuery string, err error) {
	rawPath, rawQuery, _ := strings.Cut(p, "?")
	segments, err := pathSegments(b, strings.TrimLeft(rawPath, "/"))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrInvalidPath, err)
	}
	if err := scanQuery(rawQuery, nil); err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrInvalidPath, err)
	}
	return b.array(segments), rawQuery, nil
}

func pathSegments(b *builder, p string) ([]*ast.Term, error) {
	terms := make([]*ast.Term, 0, strings.Count(p, "/")+1)
	for {
		seg, rest, more := strings.Cut(p, "/")
		s, err := url.PathUnescape(seg)
		if err != nil {
			return nil, err
		}
		terms = append(terms, b.str(s))
		if !more {
			return terms, nil
		}
		p = rest
	}
}

// parseQuery decodes an application/x-www-form-urlencoded string (a query or
// a form body) into name -> array of values, with url.ParseQuery's rules.
func parseQuery(b *builder, q string) (ast.Object, error) {
	if q == "" {
		return emptyObject, nil
	}
	var buf [16]pair
	pairs := buf[:0]
	if err := scanQuery(q, func(name, value string) { pairs = append(pairs, pair{name, b.str(value)}) }); err != nil {
		return nil, err
	}
	return group(b, pairs), nil
}

// mustParseQuery parses a query string that scanQuery has accepted.
func mustParseQuery(b *builder, q string) ast.Object {
	obj, err := parseQuery(b, q)
	if err != nil {
		panic(fmt.Sprintf("input: query string failed after it was checked: %v", err))
	}
	return obj
}

// scanQuery splits and decodes q with url.ParseQuery's rules, calling pair (when not nil) for each name=value
// in order, and returns the first error.
func scanQuery(q string, pair func(name, value string)) error {
	if q == "" {
		return nil
	}
	if strings.Count(q, "&")+1 > maxQueryParams {
		return errQueryTooMany
	}
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if strings.Contains(kv, ";") {
			return errQuerySemicolon
		}
		if kv == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(kv, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return err
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return err
		}
		if pair != nil {
			pair(name, value)
		}
	}
	return nil
}

// pair is one name=value of a query string or form.
type pair struct {
	name  string
	value *ast.Term
}

// group turns pairs into name -> array of values, each array in the order
// the values came. All arrays share one backing slice.
func group(b *builder, pairs []pair) ast.Object {
	var (
		nameBuf  [16]string
		countBuf [16]int
		names    = nameBuf[:0]
		counts   = countBuf[:0]
		index    map[string]int // position by name, once a scan gets long
		slot     = make([]int, len(pairs))
	)
	for i := range pairs {
		name := validUTF8(pairs[i].name)
		pairs[i].name = name
		j, found := 0, false
		if index != nil {
			j, found = index[name]
		} else {
			for ; j < len(names); j++ {
				if names[j] == name {
					found = true
					break
				}
			}
		}
		if !found {
			j = len(names)
			names = append(names, name)
			counts = append(counts, 0)
			switch {
			case index != nil:
				index[name] = j
			case len(names) > 16:
				index = make(map[string]int, 2*len(names))
				for k, n := range names {
					index[n] = k
				}
			}
		}
		counts[j]++
		slot[i] = j
	}
	// counts -> start offsets, then place each value at its name's next slot.
	offset := 0
	for j, c := range counts {
		counts[j] = offset
		offset += c
	}
	elems := make([]*ast.Term, len(pairs))
	for i, p := range pairs {
		elems[counts[slot[i]]] = p.value
		counts[slot[i]]++
	}
	var itemBuf [16][2]*ast.Term
	items := itemBuf[:0]
	if len(names) > len(itemBuf) {
		items = make([][2]*ast.Term, 0, len(names))
	}
	start := 0
	for j, n := range names {
		end := counts[j]
		items = append(items, ast.Item(b.term(ast.String(n)), b.array(elems[start:end:end])))
		start = end
	}
	return ast.NewObject(items...)
}
