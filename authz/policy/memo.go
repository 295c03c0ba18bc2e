package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/finauthz/authz/authz/cache"
)

// Defaults of the decision cache.
const (
	DefaultDecisionCacheSize = 10000
	DefaultDecisionCacheTTL  = time.Minute
)

// memo remembers the decisions of one revision. A decision is a function of
// the input values at the revision's dependency paths, the revision's data,
// and the results of non-deterministic builtins; decisions whose evaluation
// called none of those builtins (time.now_ns, http.send, io.jwt.decode_verify,
// ...) are stored under the SHA-256 of the values at the dependency paths,
// and served to any input with the same values there. Inputs that differ only
// elsewhere, such as in a request id or trace header the policy never reads,
// get the stored decision without an evaluation.
type memo struct {
	paths []ast.Ref
	ttl   time.Duration
	m     *cache.Map[*memoEntry]
	stats *MemoStats
}

type memoEntry struct {
	d       *Decision
	derived any // what EvalDerive's caller derived from d
	expires time.Time
}

func (e *memoEntry) live(now time.Time) bool { return now.Before(e.expires) }

// MemoStats counts the lookups of the decision cache, over every revision.
type MemoStats struct {
	// Hits are evaluations served from the cache.
	Hits atomic.Uint64
	// Misses are evaluations of a cacheable revision that ran the policy.
	Misses atomic.Uint64
	// Uncacheable are evaluations whose decision was not stored because it
	// called a non-deterministic builtin, read a value the key cannot
	// represent, or came from the fallback evaluation of the policy as
	// written.
	Uncacheable atomic.Uint64
}

func newMemo(deps inputDeps, size int, ttl time.Duration, stats *MemoStats) *memo {
	if deps.off != "" || size < 0 {
		return nil
	}
	return &memo{
		paths: deps.paths,
		ttl:   ttl,
		m:     cache.New(size, (*memoEntry).live),
		stats: stats,
	}
}

// digester is a Source that knows, for some paths, a SHA-256 that determines the value there (such as the
// digest of the raw token whose decoded form the path holds), cheaper to key on than the value's encoding.
type digester interface {
	Digest(path ast.Ref) (*[32]byte, bool)
}

// keyEncoders encode the values a key is the hash of.
var keyEncoders = sync.Pool{New: func() any { return newKeyEncoder() }}

// key computes the key of input into k. It reports false when a value at a
// dependency path holds a term the encoding does not cover (only a policy
// that builds its input by hand can produce one).
func (m *memo) key(src Source, k *cache.Key) bool {
	enc := keyEncoders.Get().(*keyEncoder)
	enc.b, enc.ok = enc.b[:0], true
	dg, _ := src.(digester)
	for _, p := range m.paths {
		if dg != nil {
			if d, ok := dg.Digest(p[1:]); ok {
				enc.b = append(append(enc.b, 'd'), d[:]...)
				continue
			}
		}
		if v := src.Lookup(p[1:]); v != nil {
			enc.value(v)
		} else {
			enc.b = append(enc.b, 'u')
		}
	}
	ok := enc.ok
	if ok {
		*k = sha256.Sum256(enc.b)
	}
	// The values can be secrets (a policy may read the authorization header): none stays in a pooled buffer.
	clear(enc.b)
	keyEncoders.Put(enc)
	return ok
}

func (m *memo) get(k *cache.Key, now time.Time) (*memoEntry, bool) {
	return m.m.Get(k, now)
}

// expirer is a Source whose document holds credentials that expire: a decision on it is not remembered past
// their expiry, even though no request could be served it then (the credentials are checked before the policy).
type expirer interface{ Expires() time.Time }

// ttlSpread is the share of the TTL by which the lifetimes of decisions differ: decisions made together (the
// traffic after a start or a reload) expire over the last fifth of the TTL, and are evaluated again over that
// time, instead of all in the same instant.
const ttlSpread = 5

// lifetime is how long the decision under k is remembered: the TTL less up to a fifth of it, by the key's first
// bits (as good as random for a SHA-256, and the same each time for the same inputs).
func (m *memo) lifetime(k *cache.Key) time.Duration {
	f := float64(binary.BigEndian.Uint16(k[:2])) / (1 << 16)
	return m.ttl - time.Duration(f*float64(m.ttl/ttlSpread))
}

func (m *memo) put(k *cache.Key, d *Decision, derived any, src Source, now time.Time) {
	expires := now.Add(m.lifetime(k))
	if e, ok := src.(expirer); ok {
		if t := e.Expires(); !t.IsZero() && t.Before(expires) {
			expires = t
		}
	}
	m.m.Put(k, &memoEntry{d: d, derived: derived, expires: expires}, now)
}

// keyEncoder appends to b an encoding of values that differs for any two
// values that differ: a tag, then lengths before variable-length contents.
// Equal values may encode differently (1 and 1.0, objects built in another
// key order), which costs a cache miss, never a wrong decision. ok turns
// false at a term that is not a value (a variable or reference).
type keyEncoder struct {
	b    []byte
	ok   bool
	pair func(k, v *ast.Term) // e.pairTerm, bound once so that walking an object does not allocate
	elem func(t *ast.Term)    // e.elemTerm
}

func newKeyEncoder() *keyEncoder {
	e := &keyEncoder{b: make([]byte, 0, 1024), ok: true}
	e.pair, e.elem = e.pairTerm, e.elemTerm
	return e
}

func (e *keyEncoder) pairTerm(k, v *ast.Term) {
	e.value(k.Value)
	e.value(v.Value)
}

func (e *keyEncoder) elemTerm(t *ast.Term) { e.value(t.Value) }

func (e *keyEncoder) value(v ast.Value) {
	if !e.ok {
		return
	}
	switch x := v.(type) {
	case ast.Null:
		e.b = append(e.b, 'z')
	case ast.Boolean:
		if x {
			e.b = append(e.b, 't')
		} else {
			e.b = append(e.b, 'f')
		}
	case ast.Number:
		e.str('n', string(x))
	case ast.String:
		e.str('s', string(x))
	case *ast.Array:
		e.length('a', x.Len())
		x.Foreach(e.elem)
	case ast.Object:
		e.length('o', x.Len())
		x.Foreach(e.pair)
	case ast.Set:
		e.length('e', x.Len())
		x.Foreach(e.elem)
	default:
		e.ok = false
	}
}

func (e *keyEncoder) length(tag byte, n int) {
	e.b = binary.AppendUvarint(append(e.b, tag), uint64(n))
}

func (e *keyEncoder) str(tag byte, s string) {
	e.length(tag, len(s))
	e.b = append(e.b, s...)
}

// ndbCaches are the per-evaluation records of non-deterministic builtin
// calls; an evaluation that leaves its record empty called none.
var ndbCaches = sync.Pool{New: func() any { return builtins.NDBCache{} }}
