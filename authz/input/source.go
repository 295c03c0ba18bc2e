package input

import (
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Source is the input document of one CheckRequest, built on demand. Lookup
// builds only the part of the document at a path, so that a caller needing a
// few values (the policy engine computing a decision cache key) does not pay
// for the whole document; Value builds the whole document once.
//
// Everything that can make a request unrepresentable is checked by
// NewSource, so neither Lookup nor Value fails, and every value Lookup
// returns is the value Value's document holds at that path.
//
// Lookup must not be called concurrently with Lookup or Value; Value may be
// called from any goroutine once the calls of the goroutine that made the
// Source have happened before it.
type Source struct {
	req  *authv3.CheckRequest
	http *authv3.AttributeContext_HttpRequest
	tok  ast.Value
	b    builder

	path, body *ast.Term
	truncated  bool
	// rawQuery is the checked query string; query its parsed_query, built when first needed.
	rawQuery string
	query    *ast.Term
	// validKeys reports that every header name is valid UTF-8, so that a
	// header is found under its own name (see objectFromMap).
	validKeys bool

	// attrs is the attributes object; built by NewSource when a part that
	// can fail is present, else on the first need.
	attrs ast.Object
	once  sync.Once
	whole ast.Value

	expires     time.Time
	tokenDigest *[32]byte
}

// SetTokenDigest records the SHA-256 of the raw token whose value the document holds at token. The value must
// be a function of the raw token (as token.Token.Value is).
func (s *Source) SetTokenDigest(d *[32]byte) { s.tokenDigest = d }

// Digest returns, for the path token, the digest SetTokenDigest recorded: equal digests mean equal values at
// that path, which spares the decision cache encoding the token's claims. ok is false for any other path.
func (s *Source) Digest(path ast.Ref) (d *[32]byte, ok bool) {
	if s.tokenDigest == nil || s.tok == nil || len(path) != 1 || !path[0].Equal(keyToken) {
		return nil, false
	}
	return s.tokenDigest, true
}

// SetExpires records when the credentials the document holds expire (the verified token's exp).
func (s *Source) SetExpires(t time.Time) { s.expires = t }

// Expires is the time SetExpires recorded, zero when none: the decision cache keeps no decision on the document
// past it.
func (s *Source) Expires() time.Time { return s.expires }

// NewSource checks req as Build does, parses its path, query and body, and
// returns the Source of its input document. Errors wrap ErrInvalidRequest.
func NewSource(req *authv3.CheckRequest, tok ast.Value, opts Options) (*Source, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrInvalidRequest)
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		return nil, fmt.Errorf("%w: missing attributes.request.http", ErrInvalidRequest)
	}
	if tok != nil && isNilPointer(tok) {
		// OPA would panic hashing it; a panic here would take the server down.
		return nil, fmt.Errorf("%w: token value holds a nil pointer", ErrInvalidRequest)
	}
	opts = opts.withDefaults()

	s := &Source{req: req, http: h, tok: tok, validKeys: true}
	// Terms for the path and what a lookup builds; build reserves the rest of the document's.
	s.b.reserve(8 + strings.Count(h.GetPath(), "/"))
	ac := req.GetAttributes()
	if hasEntries(ac.GetMetadataContext()) || hasEntries(ac.GetRouteMetadataContext()) {
		// Metadata holds Any values that may not resolve: build now, so
		// that the error comes from here. (Envoy sends both contexts on
		// every check, mostly empty.)
		attrs, err := s.b.attributeContext(ac)
		if err != nil {
			return nil, err
		}
		s.attrs = attrs
	} else if t := ac.GetRequest().GetTime(); t != nil {
		if err := checkTimestamp(t); err != nil {
			return nil, err
		}
	}
	var err error
	if s.path, s.rawQuery, err = parsePath(&s.b, h.GetPath()); err != nil {
		return nil, err
	}
	if s.body, s.truncated, err = parseBody(&s.b, h, opts); err != nil {
		return nil, err
	}
	for k := range h.GetHeaders() {
		if !utf8.ValidString(k) {
			s.validKeys = false
			break
		}
	}
	return s, nil
}

// hasEntries reports whether m holds any metadata, which is what can fail to
// render.
func hasEntries(m *corev3.Metadata) bool {
	return len(m.GetFilterMetadata()) > 0 || len(m.GetTypedFilterMetadata()) > 0
}

// Value returns the whole input document (see Build).
func (s *Source) Value() ast.Value {
	s.once.Do(s.build)
	return s.whole
}

func (s *Source) build() {
	h := s.http
	s.b.reserve(32 + 2*len(h.GetHeaders()) + 4*len(h.GetHeaderMap().GetHeaders()) + 2*strings.Count(h.GetPath(), "&"))
	attrs := s.attributes()
	var buf [8][2]*ast.Term
	items := append(buf[:0],
		ast.Item(keyAttributes, s.b.term(attrs)),
		ast.Item(keyParsedPath, s.path),
		ast.Item(keyParsedQuery, s.parsedQuery()),
		ast.Item(keyParsedBody, s.body),
		ast.Item(keyTruncatedBody, ast.InternedTerm(s.truncated)),
		ast.Item(keyVersion, versionTerm),
	)
	if p := s.req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		items = append(items, ast.Item(keySourcePrincipal, s.b.str(p)))
	}
	if s.tok != nil {
		items = append(items, ast.Item(keyToken, s.b.term(s.tok)))
	}
	s.whole = ast.NewObject(items...)
}

func (s *Source) parsedQuery() *ast.Term {
	if s.query == nil {
		s.query = s.b.term(mustParseQuery(&s.b, s.rawQuery))
	}
	return s.query
}

func (s *Source) attributes() ast.Object {
	if s.attrs == nil {
		attrs, err := s.b.attributeContext(s.req.GetAttributes())
		if err != nil {
			// NewSource checked every part that can fail.
			panic(fmt.Sprintf("input: attributes failed after NewSource accepted them: %v", err))
		}
		s.attrs = attrs
	}
	return s.attrs
}

// Lookup returns the value at path in the input document (path starts below
// input: parsed_path, not input.parsed_path), or nil when the document has
// nothing there.
func (s *Source) Lookup(path ast.Ref) ast.Value {
	if s.whole == nil {
		if v, ok := s.part(path); ok {
			return v
		}
	}
	return find(s.Value(), path)
}

// part builds only what path needs, for the paths where that is cheaper than
// the whole document; ok is false for the others.
func (s *Source) part(path ast.Ref) (v ast.Value, ok bool) {
	if len(path) == 0 {
		return nil, false
	}
	key, _ := path[0].Value.(ast.String)
	rest := path[1:]
	switch key {
	case "attributes":
		return s.attributePart(rest)
	case "parsed_path":
		return find(s.path.Value, rest), true
	case "parsed_query":
		return find(s.parsedQuery().Value, rest), true
	case "parsed_body":
		return find(s.body.Value, rest), true
	case "truncated_body":
		return find(ast.Boolean(s.truncated), rest), true
	case "version":
		return find(versionTerm.Value, rest), true
	case "source_principal":
		return omitEmpty(s.req.GetAttributes().GetSource().GetPrincipal(), rest), true
	case "token":
		if s.tok == nil {
			return nil, true
		}
		return find(s.tok, rest), true
	}
	// The document has no other keys.
	return nil, true
}

func (s *Source) attributePart(path ast.Ref) (ast.Value, bool) {
	if s.attrs != nil {
		return find(s.attrs, path), true
	}
	if len(path) == 0 {
		return nil, false
	}
	ac := s.req.GetAttributes()
	switch key, _ := path[0].Value.(ast.String); key {
	case "source", "destination":
		p := ac.GetSource()
		if key == "destination" {
			p = ac.GetDestination()
		}
		if p == nil {
			return nil, true
		}
		if v, ok := peerString(p, path[1:]); ok {
			return v, true
		}
		return find(s.b.peer(p).Value, path[1:]), true
	case "metadataContext", "routeMetadataContext":
		m := ac.GetMetadataContext()
		if key == "routeMetadataContext" {
			m = ac.GetRouteMetadataContext()
		}
		if m == nil {
			return nil, true
		}
		// Metadata with entries made NewSource build attrs: this context
		// is empty, as Envoy sends it unless told to forward some.
		t, err := s.b.metadata(string(key), m)
		if err != nil {
			return nil, false
		}
		return find(t.Value, path[1:]), true
	case "contextExtensions":
		if len(ac.ContextExtensions) == 0 {
			return nil, true
		}
		return find(s.b.stringMap(ac.ContextExtensions).Value, path[1:]), true
	case "request":
		// attributes.request.http is there: NewSource checked it.
		if len(path) < 3 || !path[1].Equal(jHTTP) {
			return nil, false
		}
		return s.httpPart(path[2:])
	}
	return nil, false
}

func (s *Source) httpPart(path ast.Ref) (ast.Value, bool) {
	switch key, _ := path[0].Value.(ast.String); key {
	case "method":
		return omitEmpty(s.http.Method, path[1:]), true
	case "headers":
		if len(path) == 1 || !s.validKeys {
			return nil, false
		}
		name, ok := path[1].Value.(ast.String)
		if !ok {
			return nil, true // header names are strings
		}
		v, ok := s.http.Headers[string(name)]
		if !ok {
			return nil, true
		}
		return find(ast.String(validUTF8(v)), path[2:]), true
	}
	return nil, false
}

// peerString looks up the two strings of a peer that policies read most, the
// principal and the socket address, without building the peer.
func peerString(p *authv3.AttributeContext_Peer, path ast.Ref) (ast.Value, bool) {
	switch {
	case len(path) == 1 && path[0].Equal(jPrincipal):
		return omitEmpty(p.Principal, nil), true
	case len(path) == 3 && path[0].Equal(jAddress) && path[1].Equal(jSocketAddress) && path[2].Equal(jAddress):
		return omitEmpty(p.GetAddress().GetSocketAddress().GetAddress(), nil), true
	}
	return nil, false
}

// omitEmpty is the value at path below a string field, which the document leaves out when it is empty (as
// protojson does, and as builder.appendString does).
func omitEmpty(v string, path ast.Ref) ast.Value {
	if v == "" {
		return nil
	}
	return find(ast.String(validUTF8(v)), path)
}

// find is v.Find(path), nil where the path leads nowhere.
func find(v ast.Value, path ast.Ref) ast.Value {
	if len(path) == 0 {
		return v
	}
	x, err := v.Find(path)
	if err != nil {
		return nil
	}
	return x
}
