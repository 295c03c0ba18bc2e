package loadtest

import (
	"math/bits"
	"time"
)

// The histogram is log-linear, as HdrHistogram is: values below 2^(subBits+1) ns have a bucket each, and every
// larger power-of-two range [2^k, 2^(k+1)) is split into 2^subBits equal buckets. A bucket's width is then at
// most 1/2^subBits of its lower bound, which bounds the relative error of a reported percentile.
const (
	subBits    = 7
	subBuckets = 1 << subBits // 128: relative error at most 1/128 (0.79%)
	// maxTrackable is the largest value kept apart from its neighbours (2^40 ns, about 18 minutes); longer
	// latencies are counted in the last bucket, and Max still reports them exactly.
	maxTrackable = 1<<40 - 1
	numBuckets   = (40 - subBits + 1) * subBuckets // bucketOf(maxTrackable) + 1
)

// Precision is the largest relative error of a percentile that a Histogram reports: a reported value v stands
// for recorded values in [v/(1+Precision), v].
const Precision = 1.0 / subBuckets

// Histogram counts latencies in log-linear buckets (values below 256 ns exactly, larger ones to within
// [Precision]). Percentiles report the upper bound of their bucket, capped at the largest value recorded, so
// they never understate. Min, Max and the mean are exact. The zero value is an empty histogram, ready to use.
// A Histogram is not safe for concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    int64 // ns; overflows only after 292 years of recorded latency
	min    int64
	max    int64
}

// bucketOf returns the index of the bucket holding v (ns, not negative).
func bucketOf(v int64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	if v > maxTrackable {
		v = maxTrackable
	}
	shift := bits.Len64(uint64(v)) - (subBits + 1)
	return shift*subBuckets + int(v>>shift)
}

// bucketHigh returns the largest value that falls into bucket i.
func bucketHigh(i int) int64 {
	if i < 2*subBuckets {
		return int64(i)
	}
	shift := i/subBuckets - 1
	mantissa := int64(i - shift*subBuckets)
	return (mantissa+1)<<shift - 1
}

// Record adds one latency. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Reset empties h.
func (h *Histogram) Reset() { *h = Histogram{} }

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest value recorded, or 0.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest value recorded, or 0.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average of the values recorded, or 0.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / int64(h.n))
}

// Quantile returns the value at or below which a fraction q (0 to 1) of the recorded values lie: the
// ceil(q*n)-th smallest, rounded up to its bucket's bound and capped at Max. An empty histogram returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) || rank == 0 {
		rank++ // ceil, and at least the first value
	}
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max))
		}
	}
	return time.Duration(h.max)
}
