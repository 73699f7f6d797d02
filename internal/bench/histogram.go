package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of two,
// so a recorded value is known to within 1/64 (about 1.6%).
const subBits = 6

const (
	subCount   = 1 << subBits
	numBuckets = (64 - subBits) * subCount
)

// histogram is a log-linear latency histogram in the spirit of HDR
// histograms: fixed size (no allocation per sample), constant-time Record,
// relative error below 2% at every magnitude from a nanosecond to hours.
// Each worker owns one; Run merges them at the end. It is not safe for
// concurrent use.
type histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64 // nanoseconds
	min    int64
	max    int64
}

// bucketOf maps a non-negative value to its bucket. Values below subCount
// have a bucket each; above, each power of two is split into subCount
// buckets.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)*subCount + int(v>>uint(shift)) - subCount
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	shift := i/subCount - 1
	lo = uint64(subCount+i%subCount) << uint(shift)
	return lo, lo + (1 << uint(shift)) - 1
}

// Record adds one duration. Negative durations count as zero.
func (h *histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(uint64(v))]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every sample of o to h.
func (h *histogram) Merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of samples.
func (h *histogram) Count() uint64 { return h.n }

// Max returns the largest sample, exactly.
func (h *histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the average sample, exactly.
func (h *histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value below which a fraction q (0..1) of the samples
// fall: the midpoint of the bucket holding the sample of that rank, clamped to
// the exact minimum and maximum. It returns 0 for an empty histogram.
func (h *histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return time.Duration(h.min)
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			v := int64(lo + (hi-lo)/2)
			v = max(v, h.min)
			v = min(v, h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
