package cache

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"
)

type entry struct{ expiry time.Time }

func liveEntry(e *entry, now time.Time) bool { return now.Before(e.expiry) }

func key(s string) *Key {
	k := sha256.Sum256([]byte(s))
	return &k
}

func TestCapacityIsSplitWithoutExceedingTheSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2, 10, 63, 64, 65, 1000, 100000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := New(size, liveEntry)
			if n := c.Capacity(); n > size || n < size/2 || len(c.shards)&(len(c.shards)-1) != 0 {
				t.Errorf("%d shards of %d entries for size %d", len(c.shards), c.shardCap, size)
			}
		})
	}
}

func TestMapNeverHoldsMoreThanItsSize(t *testing.T) {
	t.Parallel()
	now := time.Unix(2_000_000_000, 0)
	for _, size := range []int{1, 10, 100} {
		c := New(size, liveEntry)
		for i := range 20 * size {
			c.Put(key(fmt.Sprint(i)), &entry{now.Add(time.Hour)}, now)
			if n := c.Len(); n > size {
				t.Fatalf("size %d: holds %d entries", size, n)
			}
		}
	}
}

func TestEntriesAreServedWhileLive(t *testing.T) {
	t.Parallel()
	now := time.Unix(2_000_000_000, 0)
	c := New(10, liveEntry)
	e := &entry{now.Add(time.Minute)}
	c.Put(key("a"), e, now)
	if got, ok := c.Get(key("a"), now.Add(time.Minute-time.Nanosecond)); !ok || got != e {
		t.Fatalf("Get before expiry = %v, %v", got, ok)
	}
	if _, ok := c.Get(key("b"), now); ok {
		t.Fatal("Get of a key never put succeeded")
	}
	if got, ok := c.Get(key("a"), now.Add(time.Minute)); ok || got != nil {
		t.Fatalf("Get at expiry = %v, %v; want a miss", got, ok)
	}
	if c.Len() != 0 {
		t.Errorf("a dead entry stays after a Get: %d entries", c.Len())
	}
}

func TestFullShardEvictsDeadEntriesFirst(t *testing.T) {
	t.Parallel()
	now := time.Unix(2_000_000_000, 0)
	c := New(1, liveEntry) // one shard, one entry
	dead, live := &entry{now}, &entry{now.Add(time.Hour)}
	tests := []struct {
		name string
		old  *entry
	}{
		{"a dead entry", dead},
		{"a live entry when nothing is dead", live},
	}
	for i, tc := range tests {
		t.Run(tc.name+" makes room", func(t *testing.T) {
			c.Clear()
			oldKey, newKey := key(fmt.Sprint(i, "old")), key(fmt.Sprint(i, "new"))
			c.Put(oldKey, tc.old, now)
			fresh := &entry{now.Add(time.Hour)}
			c.Put(newKey, fresh, now)
			if got, ok := c.Get(newKey, now); c.Len() != 1 || !ok || got != fresh {
				t.Errorf("holds %d entries; the new one present: %v", c.Len(), ok)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	now := time.Unix(2_000_000_000, 0)
	c := New(64, liveEntry)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := key(fmt.Sprint(w, i%100))
				if i%3 == 0 {
					c.Put(k, &entry{now.Add(time.Duration(i%2) * time.Hour)}, now)
				} else if e, ok := c.Get(k, now); ok && !liveEntry(e, now) {
					t.Error("Get returned a dead entry")
					return
				}
			}
		})
	}
	wg.Wait()
	if c.Len() > 64 {
		t.Errorf("holds %d entries, size 64", c.Len())
	}
}

func BenchmarkGet(b *testing.B) {
	now := time.Unix(2_000_000_000, 0)
	c := New(10000, liveEntry)
	k := key("a")
	c.Put(k, &entry{now.Add(time.Hour)}, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := c.Get(k, now); !ok {
			b.Fatal("miss")
		}
	}
}
