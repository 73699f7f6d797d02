// Package heapfloor keeps Go's garbage collector from running until the heap
// has reached a floor, while the live heap is small (#13).
//
// With GOGC=100 the collector starts a cycle each time the heap has grown by
// the live heap plus the goroutine stacks and globals, and at 4 MiB at the
// latest. An edge proxy under handshake load keeps little alive (the
// connections in flight: a few MB) and allocates fast (crypto/tls allocates
// every handshake message), so it collects dozens of times a second; each
// cycle costs a fixed amount (stacks scanned, the world stopped twice, mark
// workers started) however little is live. Profiles of a resumed TLS 1.2
// handshake showed 13–15% of edgeproxy's CPU in the collector.
//
// A Floor sets the GC percent after every cycle so that the next cycle
// starts when the heap reaches the floor, or later when GOGC as found at
// Start says later: it only ever raises the percent. Once the live heap is
// large (many idle connections), twice the live heap plus stacks is past the
// floor, the percent is GOGC's own, and the floor costs no memory. While the
// live heap is small the heap grows to about the floor before each cycle,
// which is the memory the floor trades for CPU. A memory limit (GOMEMLIMIT)
// still applies: the collector runs at the limit whatever the percent.
//
// It is Uber's GOGCTuner and ByteDance's gctuner
// (github.com/bytedance/gopkg/util/gctuner) with two differences that led us
// to write the 100 lines instead of importing that module: it reads the
// figures the runtime paces by (runtime/metrics: live heap, scanned stacks
// and globals) instead of HeapInuse through runtime.ReadMemStats, which
// stops the world and counts garbage not yet swept; and it never lowers the
// percent below the configured GOGC (gctuner goes down to 50 above its
// threshold, trading CPU for memory where the heap is large).
package heapfloor

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultMinHeapBytes is the floor when Config.MinHeapBytes is zero. At
// 32 MiB a node under handshake load collects a few times a second instead
// of dozens; a node with more than about 10,000 idle connections is past
// it on GOGC alone.
const DefaultMinHeapBytes = 32 << 20

// Config is the gc section of the configuration file.
type Config struct {
	// MinHeapBytes is the heap size below which the collector does not
	// start a cycle (see the package doc). If zero, DefaultMinHeapBytes is
	// used; -1 turns the floor off (Go's own pacing). The floor is off
	// too when the GOGC environment variable is set: the operator chose.
	MinHeapBytes int64 `yaml:"min_heap_bytes"`
}

// Validate checks c without side effects.
func (c Config) Validate() error {
	if c.MinHeapBytes < -1 {
		return fmt.Errorf("gc.min_heap_bytes: must be positive, or -1 for no floor, got %d", c.MinHeapBytes)
	}
	return nil
}

// Floor is the floor in bytes c asks for; 0 for none.
func (c Config) Floor() int64 {
	switch c.MinHeapBytes {
	case 0:
		return DefaultMinHeapBytes
	case -1:
		return 0
	}
	return c.MinHeapBytes
}

// maxPercent bounds the percent a Floor sets: with a live heap of a few
// hundred kB, a 32 MiB floor asks for about 10000.
const maxPercent = 1 << 20

// heapMinimum is the runtime's heap goal at GOGC=100 when little is live
// (runtime.defaultHeapMinimum); it scales with the percent.
const heapMinimum = 4 << 20

// Floor keeps the collector from starting a cycle below a heap size. Its
// methods are safe for concurrent use, and a nil *Floor does nothing.
type Floor struct {
	min atomic.Int64 // bytes

	// mu protects base, set, samples and stopped, and orders tune with
	// Stop.
	mu      sync.Mutex
	base    int // the GC percent found at Start; never set lower
	set     int // the percent last set
	samples []metrics.Sample
	stopped bool

	// tuned, if set (tests), is called after each cycle's tune, once the
	// next cycle's cleanup is armed, with the percent set and the live heap
	// it was computed from.
	tuned func(percent int, live uint64)
}

// sentinel is the object whose cleanup runs once per GC cycle. It holds a
// pointer so that it is not batched with other small objects in one block,
// which could keep it alive past the cycle that found it unreachable.
type sentinel struct{ _ *byte }

// Start sets the GC percent so that the heap may grow to minBytes before
// the next cycle, and again after every cycle, until Stop. The percent is
// never set below the one found (GOGC, 100 by default); a minBytes that is
// not positive leaves it there until Set. Start returns nil, and changes
// nothing, when the collector is off (GOGC=off).
func Start(minBytes int64) *Floor {
	base := gcPercent()
	if base < 0 {
		return nil
	}
	f := &Floor{base: base, set: base, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}}
	f.min.Store(minBytes)
	f.tune()
	f.arm()
	return f
}

// Set changes the floor; it takes effect at once. A minBytes that is not
// positive leaves the percent at the one found at Start.
func (f *Floor) Set(minBytes int64) {
	if f == nil {
		return
	}
	f.min.Store(minBytes)
	f.tune()
}

// Stop ends the tuning and restores the GC percent found at Start.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	debug.SetGCPercent(f.base)
}

// arm registers a cleanup that runs after the next cycle: it tunes and arms
// again. A cycle that starts before the cleanup has armed finds the new
// sentinel allocated during it, live; the cycle after it tunes.
func (f *Floor) arm() {
	runtime.AddCleanup(&sentinel{}, func(f *Floor) {
		percent, live, running := f.tune()
		if !running {
			return
		}
		f.arm()
		f.mu.Lock()
		tuned := f.tuned
		f.mu.Unlock()
		if tuned != nil {
			tuned(percent, live)
		}
	}, f)
}

// tune sets the percent for the cycle to come and returns it, with the live
// heap it was computed from; running is false once f has stopped.
func (f *Floor) tune() (percent int, live uint64, running bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return 0, 0, false
	}
	metrics.Read(f.samples)
	live = f.samples[0].Value.Uint64()
	scan := live + f.samples[1].Value.Uint64() + f.samples[2].Value.Uint64()
	want := percentFor(f.min.Load(), live, scan, f.base)
	if want != f.set {
		debug.SetGCPercent(want)
		f.set = want
	}
	return want, live, true
}

// percentFor is the GC percent at which the runtime's heap goal reaches
// floor; base if that is lower. The goal is the larger of
// live + scan*percent/100 (scan: the live heap plus the stacks and globals
// the collector scans) and the heap minimum, 4 MiB*percent/100: the
// percent is the smaller of the two that each reach floor.
func percentFor(floor int64, live, scan uint64, base int) int {
	if floor <= 0 || scan == 0 || uint64(floor) <= live {
		return base
	}
	fl := min(uint64(floor), 1<<50) // no overflow below
	p := min((fl-live)*100/scan, fl*100/heapMinimum, maxPercent)
	return max(base, int(p))
}

// gcPercent is the current GC percent, negative when the collector is off.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
