package input

import (
	"fmt"
	"math/rand/v2"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// paths lists every path into v, prefixes included, and beside each object a
// key it does not have, and beside each array an index past its end.
func paths(v ast.Value, prefix ast.Ref, out []ast.Ref) []ast.Ref {
	out = append(out, prefix.Copy())
	switch x := v.(type) {
	case ast.Object:
		out = append(out, prefix.Append(ast.StringTerm("no-such-key")))
		x.Foreach(func(k, v *ast.Term) { out = paths(v.Value, prefix.Append(k), out) })
	case *ast.Array:
		out = append(out, prefix.Append(ast.InternedTerm(x.Len())))
		for i := range x.Len() {
			out = paths(x.Elem(i).Value, prefix.Append(ast.InternedTerm(i)), out)
		}
	case ast.String:
		out = append(out, prefix.Append(ast.InternedTerm(0)))
	}
	return out
}

// lookupPaths are paths policies read that the document may not have.
var lookupPaths = []ast.Ref{
	ast.MustParseRef(`input.attributes.request.http.headers["x-device-posture"]`),
	ast.MustParseRef(`input.attributes.request.http.headers["content-type"]`),
	ast.MustParseRef(`input.attributes.request.http.headers[1]`),
	ast.MustParseRef(`input.attributes.request.http.method`),
	ast.MustParseRef(`input.attributes.request.http.method[0]`),
	ast.MustParseRef(`input.attributes.source.principal`),
	ast.MustParseRef(`input.attributes.source.address.socketAddress.address`),
	ast.MustParseRef(`input.attributes.destination`),
	ast.MustParseRef(`input.attributes.request.time`),
	ast.MustParseRef(`input.attributes.request.grpc`),
	ast.MustParseRef(`input.attributes.metadataContext.filterMetadata`),
	ast.MustParseRef(`input.attributes.routeMetadataContext`),
	ast.MustParseRef(`input.attributes.contextExtensions.cluster`),
	ast.MustParseRef(`input.source_principal`),
	ast.MustParseRef(`input.token.payload.sub`),
	ast.MustParseRef(`input.parsed_path[0]`),
	ast.MustParseRef(`input.parsed_body.amount`),
	ast.MustParseRef(`input.nothing`),
	ast.MustParseRef(`input[0]`),
}

// assertLookupsMatch checks that a fresh Source looks up at every path of
// the document (at most paths of them when paths > 0, spread evenly), and at
// paths it lacks, exactly the value the document built by Build holds there.
func assertLookupsMatch(t *testing.T, req *authv3.CheckRequest, opts Options, whole ast.Value, most int) {
	t.Helper()
	all := paths(whole, ast.InputRootRef, nil)
	if most > 0 && len(all) > most {
		step := len(all) / most
		for i := range most {
			all[i] = all[i*step]
		}
		all = all[:most]
	}
	all = append(all, lookupPaths...)
	for _, p := range all {
		src, err := NewSource(req, tokenOf(whole), opts)
		if err != nil {
			t.Fatalf("NewSource fails where Build succeeds: %v", err)
		}
		got, want := src.Lookup(p[1:]), find(whole, p[1:])
		if (got == nil) != (want == nil) || (got != nil && got.Compare(want) != 0) {
			t.Fatalf("Lookup(%v) = %v, want %v", p, got, want)
		}
	}
}

func tokenOf(whole ast.Value) ast.Value {
	if t := whole.(ast.Object).Get(keyToken); t != nil {
		return t.Value
	}
	return nil
}

func TestSourceLookupsMatchTheDocument(t *testing.T) {
	t.Parallel()
	tok := ast.MustParseTerm(`{"header": {"alg": "ES256"}, "payload": {"sub": "alice", "accounts": ["a-1"]}}`).Value
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		tok  ast.Value
	}{
		{"typical request with a token", typicalRequest(), tok},
		{"typical request without a token", typicalRequest(), nil},
		{"JSON body", jsonRequest(), tok},
		{"every attribute set", fullRequest(t), tok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			whole, err := Build(tc.req, tc.tok, Options{})
			if err != nil {
				t.Fatal(err)
			}
			assertLookupsMatch(t, tc.req, Options{}, whole, 0)
		})
	}
}

func TestSourceLookupsMatchTheDocumentRandom(t *testing.T) {
	t.Parallel()
	n := 300
	if testing.Short() {
		n = 50
	}
	built := 0
	for seed := range n {
		f := filler{rnd: rand.New(rand.NewPCG(uint64(seed), 0x50c))}
		req := &authv3.CheckRequest{}
		f.message(req.ProtoReflect(), 0)
		if req.GetAttributes().GetRequest().GetHttp() == nil {
			continue
		}
		whole, err := Build(req, nil, Options{})
		if err != nil {
			continue
		}
		built++
		t.Run(fmt.Sprint(seed), func(t *testing.T) { assertLookupsMatch(t, req, Options{}, whole, 0) })
		if t.Failed() {
			return
		}
	}
	if built < n/4 {
		t.Errorf("only %d of %d random requests could be built", built, n)
	}
}

func TestSourceValueIsBuiltOnce(t *testing.T) {
	t.Parallel()
	src, err := NewSource(typicalRequest(), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if src.Value() != src.Value() {
		t.Error("Value built the document twice")
	}
}

// A decision cache key is a few lookups: each must build its part of the
// document only, also on the empty metadata contexts Envoy sends with every
// check.
func TestSourceLookupsBuildTheirPartOnly(t *testing.T) {
	t.Parallel()
	req := typicalRequest()
	req.Attributes.MetadataContext = &corev3.Metadata{}
	req.Attributes.RouteMetadataContext = &corev3.Metadata{}
	for _, r := range []string{
		`input.attributes.request.http.method`,
		`input.attributes.request.http.headers["x-device-posture"]`,
		`input.attributes.source.address.socketAddress.address`,
		`input.attributes.destination.principal`,
		`input.attributes.metadataContext.filterMetadata`,
		`input.attributes.routeMetadataContext`,
		`input.attributes.contextExtensions`,
		`input.parsed_path`,
		`input.parsed_query.limit`,
		`input.source_principal`,
	} {
		src, err := NewSource(req, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		src.Lookup(ast.MustParseRef(r)[1:])
		if src.whole != nil || src.attrs != nil {
			t.Errorf("Lookup(%s) built the whole document", r)
		}
	}
}

func BenchmarkSourceLookup(b *testing.B) {
	req := typicalRequest()
	var refs []ast.Ref
	for _, r := range []string{
		`input.attributes.request.http.method`,
		`input.attributes.request.http.headers["x-device-posture"]`,
		`input.attributes.source.address.socketAddress.address`,
		`input.parsed_path`,
	} {
		refs = append(refs, ast.MustParseRef(r)[1:])
	}
	b.ReportAllocs()
	for b.Loop() {
		src, err := NewSource(req, nil, Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range refs {
			src.Lookup(r)
		}
	}
}

func TestSourceDigestStandsForTheTokenOnly(t *testing.T) {
	t.Parallel()
	tok := ast.MustParseTerm(`{"header": {}, "payload": {"sub": "alice"}}`).Value
	d := [32]byte{1, 2, 3}
	tests := []struct {
		name   string
		tok    ast.Value
		digest *[32]byte
		path   string
		want   bool
	}{
		{"the token with a digest", tok, &d, "input.token", true},
		{"a path below the token", tok, &d, "input.token.payload", false},
		{"another path", tok, &d, "input.parsed_path", false},
		{"no digest recorded", tok, nil, "input.token", false},
		{"no token", nil, &d, "input.token", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewSource(typicalRequest(), tc.tok, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.digest != nil {
				src.SetTokenDigest(tc.digest)
			}
			got, ok := src.Digest(ast.MustParseRef(tc.path)[1:])
			if ok != tc.want || (ok && *got != d) {
				t.Errorf("Digest(%s) = %v, %v; want ok %v", tc.path, got, ok, tc.want)
			}
		})
	}
}
