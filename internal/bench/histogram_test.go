package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketBounds(i)
		if int64(lo) != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d: [%d, %d] after %d: buckets must tile the range", i, lo, hi, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d: bucketOf(%d)=%d, bucketOf(%d)=%d", i, lo, bucketOf(lo), hi, bucketOf(hi))
		}
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-9 {
			t.Fatalf("bucket %d: width %d at %d is more than 1/%d", i, hi-lo+1, lo, subCount)
		}
		prevHi = int64(hi)
		if hi == math.MaxUint64 {
			break
		}
	}
	if bucketOf(math.MaxInt64) >= numBuckets {
		t.Fatal("MaxInt64 has no bucket")
	}
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var h, a, b histogram
	samples := make([]time.Duration, 20000)
	for i := range samples {
		// Log-normal around 1ms with a long tail, like handshake latencies.
		samples[i] = time.Duration(math.Exp(rnd.NormFloat64()*0.8) * float64(time.Millisecond))
		h.Record(samples[i])
		if i%2 == 0 {
			a.Record(samples[i])
		} else {
			b.Record(samples[i])
		}
	}
	a.Merge(&b)
	slices.Sort(samples)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999} {
		exact := samples[int(math.Ceil(q*float64(len(samples))))-1]
		for name, hh := range map[string]*histogram{"single": &h, "merged": &a} {
			got := hh.Quantile(q)
			if rel := math.Abs(float64(got-exact)) / float64(exact); rel > 0.02 {
				t.Errorf("%s q%.3f: %v, exact %v (%.1f%% off, want < 2%%)", name, q, got, exact, 100*rel)
			}
		}
	}
	if h.Max() != samples[len(samples)-1] || h.Quantile(1) != h.Max() || h.Quantile(0) != samples[0] {
		t.Fatalf("max %v / q1 %v / q0 %v, want %v and %v", h.Max(), h.Quantile(1), h.Quantile(0), samples[len(samples)-1], samples[0])
	}
	if a.Count() != h.Count() || a.Max() != h.Max() {
		t.Fatal("merged histogram differs from the single one")
	}
	var empty histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Fatal("empty histogram must report zero")
	}
}

func BenchmarkRecord(b *testing.B) {
	var h histogram
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i * 1000))
	}
}
