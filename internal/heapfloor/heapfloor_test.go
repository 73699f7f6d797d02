package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// The tests change the process's GC percent, so none runs in parallel.

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// within reports whether got is within 2% of want.
func within(got, want uint64) bool {
	return got >= want-want/50 && got <= want+want/50
}

type tune struct {
	percent int
	live    uint64
}

// waitTune waits for the tune that the cleanup runs after a cycle (not a
// sleep: the channel is the synchronisation; the timeout only bounds a
// broken test).
func waitTune(t *testing.T, ch <-chan tune) int {
	t.Helper()
	select {
	case tu := <-ch:
		return tu.percent
	case <-time.After(10 * time.Second):
		t.Fatal("no tune after a GC cycle")
		return 0
	}
}

func startTraced(t *testing.T, minBytes int64) (*Floor, chan tune) {
	t.Helper()
	runtime.GC()
	f := Start(minBytes)
	if f == nil {
		t.Fatal("Start returned nil")
	}
	t.Cleanup(f.Stop)
	ch := make(chan tune, 64)
	f.mu.Lock()
	f.tuned = func(p int, live uint64) {
		select {
		case ch <- tune{p, live}:
		default:
		}
	}
	f.mu.Unlock()
	return f, ch
}

// TestFloorSetsHeapGoal: with a small live heap, the runtime's heap goal
// is the floor, at once and again after each cycle.
func TestFloorSetsHeapGoal(t *testing.T) {
	const floor = 64 << 20
	_, ch := startTraced(t, floor)
	if g := heapGoal(); !within(g, floor) {
		t.Fatalf("heap goal %d after Start, want about %d", g, floor)
	}
	for range 3 {
		runtime.GC()
		if p := waitTune(t, ch); p <= 100 {
			t.Fatalf("percent %d after a cycle with a small live heap, want above 100", p)
		}
		if g := heapGoal(); !within(g, floor) {
			t.Fatalf("heap goal %d after a cycle, want about %d", g, floor)
		}
	}
}

// TestFloorYieldsToLargeHeap: once the live heap is large enough that GOGC
// alone puts the goal past the floor, the percent is GOGC's; it rises again
// when the live heap is gone. It tunes directly after each runtime.GC: the
// allocations can start cycles of their own, during which the cleanup's
// new sentinel is allocated live, so the cleanup may skip a cycle (the
// next one tunes; TestFloorSetsHeapGoal covers the cleanup).
func TestFloorYieldsToLargeHeap(t *testing.T) {
	const floor = 16 << 20
	f, _ := startTraced(t, floor)
	live := make([][]byte, 24)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	f.tune()
	if p := gcPercent(); p != f.base {
		t.Fatalf("percent %d with 24 MiB live and a 16 MiB floor, want GOGC's %d", p, f.base)
	}
	if g := heapGoal(); g < 2*24<<20 {
		t.Fatalf("heap goal %d with 24 MiB live, want at least twice that", g)
	}
	runtime.KeepAlive(live)
	live = nil
	runtime.GC()
	f.tune()
	if p := gcPercent(); p <= f.base {
		t.Fatalf("percent %d after the live heap was freed, want above %d", p, f.base)
	}
	if g := heapGoal(); !within(g, floor) {
		t.Fatalf("heap goal %d after the live heap was freed, want about %d", g, floor)
	}
}

// TestFloorStopRestores: Stop puts back the percent found at Start, and
// the cleanup after the next cycle changes nothing.
func TestFloorStopRestores(t *testing.T) {
	old := debug.SetGCPercent(150)
	defer debug.SetGCPercent(old)
	runtime.GC()
	f := Start(64 << 20)
	if p := gcPercent(); p <= 150 {
		t.Fatalf("percent %d after Start, want above 150", p)
	}
	f.Stop()
	if p := gcPercent(); p != 150 {
		t.Fatalf("percent %d after Stop, want 150", p)
	}
	runtime.GC()
	runtime.GC()
	if p := gcPercent(); p != 150 {
		t.Fatalf("percent %d after Stop and two cycles, want 150", p)
	}
}

// TestFloorOffCases: no floor leaves the percent alone until Set; with
// the collector off Start changes nothing; a nil Floor's methods do
// nothing.
func TestFloorOffCases(t *testing.T) {
	runtime.GC()
	f := Start(0)
	if p := gcPercent(); p != f.base {
		t.Errorf("percent %d after Start(0), want GOGC's %d", p, f.base)
	}
	f.Set(64 << 20)
	if g := heapGoal(); !within(g, 64<<20) {
		t.Errorf("heap goal %d after Set, want about %d", g, 64<<20)
	}
	f.Set(-1)
	if p := gcPercent(); p != f.base {
		t.Errorf("percent %d after Set(-1), want GOGC's %d", p, f.base)
	}
	f.Stop()

	old := debug.SetGCPercent(-1)
	nf := Start(64 << 20)
	p := gcPercent()
	debug.SetGCPercent(old)
	if nf != nil || p >= 0 {
		t.Errorf("with GOGC=off: Start returned %v and the percent is %d, want nil and off", nf, p)
	}
	nf.Set(1 << 30)
	nf.Stop()
}

func TestPercentFor(t *testing.T) {
	tests := []struct {
		name       string
		min        int64
		live, scan uint64
		base, want int
	}{
		{"small heap", 32 << 20, 2 << 20, 4 << 20, 100, 750},
		{"heap minimum reaches the floor first", 32 << 20, 100 << 10, 300 << 10, 100, 800},
		{"goal past floor already", 32 << 20, 20 << 20, 40 << 20, 100, 100},
		{"live above floor", 32 << 20, 40 << 20, 60 << 20, 100, 100},
		{"higher GOGC kept", 32 << 20, 2 << 20, 4 << 20, 1000, 1000},
		{"nothing scanned yet", 32 << 20, 0, 0, 100, 100},
		{"bounded", 1 << 62, 1, 1, 100, maxPercent},
		{"no floor", 0, 2 << 20, 4 << 20, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentFor(tt.min, tt.live, tt.scan, tt.base); got != tt.want {
				t.Errorf("percentFor(%d, %d, %d, %d) = %d, want %d", tt.min, tt.live, tt.scan, tt.base, got, tt.want)
			}
		})
	}
}
