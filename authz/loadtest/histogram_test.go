package loadtest

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    int64
		want int
	}{
		{"zero has the first bucket", 0, 0},
		{"values below 256 ns are exact", 255, 255},
		{"256 ns starts the first two-wide bucket", 256, 256},
		{"257 ns shares it", 257, 256},
		{"258 ns starts the next one", 258, 257},
		{"512 ns starts the four-wide buckets", 512, 384},
		{"beyond the trackable range lands in the last bucket", 1 << 50, numBuckets - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := bucketOf(tc.v); got != tc.want {
				t.Errorf("bucketOf(%d) = %d, want %d", tc.v, got, tc.want)
			}
		})
	}
}

func TestHistogramBucketBoundsHoldTheirValues(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := rng.Int64N(maxTrackable)
		if rng.IntN(2) == 0 {
			v = rng.Int64N(1 << 24) // dense in the µs-ms range that matters
		}
		i := bucketOf(v)
		high := bucketHigh(i)
		if high < v {
			t.Fatalf("bucket %d of %d ends at %d, below its value", i, v, high)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Fatalf("bucket %d of %d: the previous bucket already ends at %d", i, v, bucketHigh(i-1))
		}
		if float64(high-v) > Precision*float64(v) {
			t.Fatalf("bucket of %d ends at %d: more than %.2f%% above", v, high, 100*Precision)
		}
	}
}

func TestHistogramQuantilesMatchTheSortedValues(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	var h Histogram
	values := make([]int64, 10001)
	for i := range values {
		// Log-normal-ish latencies around 1 ms with a long tail.
		values[i] = int64(float64(time.Millisecond) * rng.ExpFloat64() * rng.ExpFloat64())
		h.Record(time.Duration(values[i]))
	}
	slices.Sort(values)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := int(q * float64(len(values)))
		if float64(rank) < q*float64(len(values)) || rank == 0 {
			rank++
		}
		want := values[rank-1]
		got := int64(h.Quantile(q))
		if got < want || float64(got-want) > Precision*float64(want) {
			t.Errorf("Quantile(%v) = %d, want %d within +%.2f%%", q, got, want, 100*Precision)
		}
	}
	if h.Min() != time.Duration(values[0]) || h.Max() != time.Duration(values[len(values)-1]) {
		t.Errorf("min/max = %v/%v, want %v/%v", h.Min(), h.Max(), values[0], values[len(values)-1])
	}
	if h.Count() != uint64(len(values)) {
		t.Errorf("Count = %d, want %d", h.Count(), len(values))
	}
}

func TestHistogramMergeEqualsRecordingEverything(t *testing.T) {
	t.Parallel()
	var a, b, all Histogram
	for i := range 5000 {
		d := time.Duration(i*i) * time.Nanosecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var merged Histogram
	merged.Merge(&a)
	merged.Merge(&b)
	merged.Merge(&Histogram{}) // merging an empty histogram changes nothing
	if merged != all {
		t.Fatalf("merged: n %d min %v max %v mean %v; want n %d min %v max %v mean %v",
			merged.Count(), merged.Min(), merged.Max(), merged.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
}

func TestHistogramEdges(t *testing.T) {
	t.Parallel()
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Fatal("an empty histogram reports something other than 0")
	}
	h.Record(-time.Second)
	if h.Min() != 0 || h.Quantile(0.5) != 0 {
		t.Errorf("a negative duration was not counted as 0: min %v", h.Min())
	}
	h.Record(2 * time.Hour) // beyond maxTrackable
	if h.Max() != 2*time.Hour || h.Quantile(1) != 2*time.Hour {
		t.Errorf("max = %v, want 2h kept exactly", h.Max())
	}
	if q := h.Quantile(0.99); q > 2*time.Hour || q < maxTrackable {
		t.Errorf("p99 = %v, want the last bucket, capped at the max", q)
	}
	h.Reset()
	if h.Count() != 0 {
		t.Error("Reset left values")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	d := 730 * time.Microsecond
	for b.Loop() {
		h.Record(d)
		d += 17
	}
}
