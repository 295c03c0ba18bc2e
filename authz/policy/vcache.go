package policy

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// virtualCache is a topdown.VirtualCache, the per-evaluation memo of rule and
// function results, whose nodes outlive the evaluation: OPA's own allocates a
// node and a hash map for every result it records, on every evaluation, which
// is a good share of what evaluating a policy allocates. Engine.Eval takes one
// from virtualCaches and returns it reset.
//
// Like OPA's, it is a trie over the terms of a reference, one per frame (a
// frame is pushed for the duration of a with statement).
type virtualCache struct {
	frames []*vcNode
	nodes  []*vcNode // nodes[:used] are in the trie; nodes[used:] are free
	used   int
}

type vcNode struct {
	value     *ast.Term
	undefined bool
	children  []vcChild
	// byHash indexes children by key hash once a node has many; nil until then.
	byHash map[int][]int32
}

type vcChild struct {
	hash int
	key  *ast.Term
	node *vcNode
}

// vcIndexAt is the number of children from which a node indexes them by hash:
// below it a linear scan is cheaper than a map.
const vcIndexAt = 16

var virtualCaches = sync.Pool{New: func() any {
	c := &virtualCache{}
	c.Push()
	return c
}}

// reset empties the cache, keeping its nodes for the next evaluation, and
// drops every reference to the terms of the last one.
func (c *virtualCache) reset() {
	for _, n := range c.nodes[:c.used] {
		n.value, n.undefined = nil, false
		clear(n.children)
		n.children = n.children[:0]
		clear(n.byHash)
	}
	c.used = 0
	clear(c.frames)
	c.frames = c.frames[:0]
	c.Push()
}

func (c *virtualCache) newNode() *vcNode {
	if c.used == len(c.nodes) {
		c.nodes = append(c.nodes, &vcNode{})
	}
	n := c.nodes[c.used]
	c.used++
	return n
}

// Push pushes a new, empty frame.
func (c *virtualCache) Push() { c.frames = append(c.frames, c.newNode()) }

// Pop discards the top frame.
func (c *virtualCache) Pop() {
	c.frames[len(c.frames)-1] = nil
	c.frames = c.frames[:len(c.frames)-1]
}

// Get returns the value recorded for ref: the value and false when it is
// defined, nil and true when it is recorded as undefined, nil and false when
// nothing is recorded.
func (c *virtualCache) Get(ref ast.Ref) (*ast.Term, bool) {
	n := c.frames[len(c.frames)-1]
	for _, k := range ref {
		if n = n.child(k); n == nil {
			return nil, false
		}
	}
	if n.undefined {
		return nil, true
	}
	return n.value, false
}

// Put records value for ref; nil records ref as undefined.
func (c *virtualCache) Put(ref ast.Ref, value *ast.Term) {
	n := c.frames[len(c.frames)-1]
	for _, k := range ref {
		next := n.child(k)
		if next == nil {
			next = c.newNode()
			n.add(k, next)
		}
		n = next
	}
	if value != nil {
		n.value = value
	} else {
		n.undefined = true
	}
}

// Keys returns the references with a recorded value in the top frame.
func (c *virtualCache) Keys() []ast.Ref {
	return c.frames[len(c.frames)-1].keys(nil, nil)
}

func (n *vcNode) keys(prefix ast.Ref, out []ast.Ref) []ast.Ref {
	for _, ch := range n.children {
		ref := append(prefix[:len(prefix):len(prefix)], ch.key)
		if ch.node.value != nil {
			out = append(out, ref)
		}
		out = ch.node.keys(ref, out)
	}
	return out
}

func (n *vcNode) child(k *ast.Term) *vcNode {
	h := k.Hash()
	if n.byHash != nil && len(n.children) >= vcIndexAt {
		for _, i := range n.byHash[h] {
			if ch := n.children[i]; ch.key.Equal(k) {
				return ch.node
			}
		}
		return nil
	}
	for _, ch := range n.children {
		if ch.hash == h && ch.key.Equal(k) {
			return ch.node
		}
	}
	return nil
}

func (n *vcNode) add(k *ast.Term, child *vcNode) {
	h := k.Hash()
	n.children = append(n.children, vcChild{hash: h, key: k, node: child})
	switch {
	case len(n.children) < vcIndexAt:
	case len(n.children) == vcIndexAt:
		if n.byHash == nil {
			n.byHash = make(map[int][]int32, 2*vcIndexAt)
		}
		for i, ch := range n.children {
			n.byHash[ch.hash] = append(n.byHash[ch.hash], int32(i))
		}
	default:
		n.byHash[h] = append(n.byHash[h], int32(len(n.children)-1))
	}
}
