package ticketkeys

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewRing(t *testing.T) {
	t.Parallel()
	a, b := testKey(1), testKey(2)
	tooMany := make([]*Key, MaxKeys+1)
	for i := range tooMany {
		tooMany[i] = testKey(byte(i))
	}
	tests := []struct {
		name    string
		keys    []*Key
		wantErr string
	}{
		{"one key", []*Key{a}, ""},
		{"two keys", []*Key{a, b}, ""},
		{"empty", nil, "at least one key"},
		{"nil key", []*Key{a, nil}, "key 1 is nil"},
		{"duplicate name", []*Key{a, testKey(1)}, "appears twice"},
		{"too many", tooMany, "at most 64 keys, got 65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRing(tt.keys...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewRing error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Current() != tt.keys[0] || r.Len() != len(tt.keys) {
				t.Fatalf("Current/Len = %p/%d, want first key and %d", r.Current(), r.Len(), len(tt.keys))
			}
			for _, k := range tt.keys {
				if r.Lookup(k.Name) != k {
					t.Errorf("Lookup(%s) did not find the key", k.Name)
				}
			}
			if r.Lookup(testKey(99).Name) != nil {
				t.Error("Lookup of an unknown name found a key")
			}
		})
	}
	if _, err := NewRing(); !errors.Is(err, ErrEmptyRing) {
		t.Errorf("NewRing() = %v, want ErrEmptyRing", err)
	}
}

func TestHolderZeroesRetiredKeysAfterGrace(t *testing.T) {
	t.Parallel()
	h, sched := newManualHolder()
	a, b, c := testKey(1), testKey(2), testKey(3)
	if h.Ring() != nil {
		t.Fatal("empty holder returned a ring")
	}
	h.Store(mustRing(t, a, b))
	h.Store(mustRing(t, c, a)) // b leaves
	if got := h.Ring().Current(); got != c {
		t.Fatalf("current = %s, want %s", got.Name, c.Name)
	}
	if isZero(b) {
		t.Fatal("retired key zeroed before the grace period ended")
	}
	if len(sched.grace) != 1 || sched.grace[0] != 3*time.Second {
		t.Fatalf("scheduled %v, want one zeroing after the 3s grace", sched.grace)
	}
	sched.run()
	if !isZero(b) {
		t.Error("retired key not zeroed after the grace period")
	}
	if isZero(a) || isZero(c) {
		t.Error("a key still in the ring was zeroed")
	}
	if b.Name != testKey(2).Name {
		t.Error("zeroing changed the public name")
	}

	h.Close()
	if !isZero(a) || !isZero(c) {
		t.Error("Close did not zero the current ring")
	}
	if h.Ring() != nil {
		t.Error("Ring after Close is not nil")
	}
	h.Store(mustRing(t, testKey(4)))
	if h.Ring() != nil {
		t.Error("Store after Close published a ring")
	}
}

func TestHolderKeyComingBackIsNotZeroed(t *testing.T) {
	t.Parallel()
	h, sched := newManualHolder()
	a, b := testKey(1), testKey(2)
	h.Store(mustRing(t, a, b))
	h.Store(mustRing(t, a)) // b retires
	h.Store(mustRing(t, b, a))
	sched.run()
	if isZero(b) {
		t.Error("a key stored again was zeroed by its earlier retirement")
	}
}

func TestHolderCloseZeroesPendingKeys(t *testing.T) {
	t.Parallel()
	h, sched := newManualHolder()
	a, b := testKey(1), testKey(2)
	h.Store(mustRing(t, a))
	h.Store(mustRing(t, b))
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if !isZero(a) || !isZero(b) {
		t.Error("Close left a retired or current key unzeroed")
	}
	sched.run() // the cancelled callback must not run
	for _, s := range sched.fns {
		if s.ran {
			t.Error("zeroing callback ran after Close cancelled it")
		}
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestHolderRealTimerZeroes(t *testing.T) {
	t.Parallel()
	// The default schedule is time.AfterFunc; with a tiny grace the
	// callback runs, and Close waits for it.
	h := NewHolder(HolderConfig{RetireGrace: time.Nanosecond})
	a := testKey(1)
	h.Store(mustRing(t, a))
	h.Store(mustRing(t, testKey(2)))
	h.Close()
	if !isZero(a) {
		t.Error("retired key not zeroed")
	}
}

func TestHolderRingDoesNotAllocate(t *testing.T) {
	// Not parallel: testing.AllocsPerRun refuses to run in a parallel test.
	var h Holder
	h.Store(mustRing(t, testKey(1)))
	if n := testing.AllocsPerRun(100, func() { _ = h.Ring().Current() }); n != 0 {
		t.Errorf("Ring allocates %v times per call", n)
	}
}

// TestHolderConcurrent runs readers that seal with the current key while a
// writer swaps rings; run with -race. Keys are zeroed only after the readers
// stop (the grace period outlasts them), which Close then proves.
func TestHolderConcurrent(t *testing.T) {
	t.Parallel()
	h, sched := newManualHolder()
	h.Store(mustRing(t, testKey(0)))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sealed atomic.Int64
	// Each reader reads once before the writes start, so the readers are
	// running when the writes begin: on a loaded machine they could
	// otherwise all be scheduled after the last write ("readers never ran").
	var started sync.WaitGroup
	started.Add(4)
	for range 4 {
		wg.Go(func() {
			ready := sync.OnceFunc(started.Done)
			defer ready() // also when a check fails on the first read
			for first := true; first || !stop.Load(); first = false {
				r := h.Ring()
				k := r.Current()
				if isZero(k) {
					t.Error("a reader saw a zeroed current key")
					return
				}
				if r.Lookup(k.Name) != k {
					t.Error("ring lookup of its own current key failed")
					return
				}
				sealed.Add(1)
				ready()
			}
		})
	}
	started.Wait()
	var all []*Key
	for i := 1; i <= 500; i++ {
		k := testKey(byte(i))
		k.Name[1] = byte(i >> 8)
		all = append(all, k)
		prev := h.Ring().Current()
		h.Store(mustRing(t, k, prev))
	}
	// On a loaded machine the writer can finish before a reader was
	// scheduled: let at least one read happen before stopping them.
	for sealed.Load() == 0 {
		runtime.Gosched()
	}
	stop.Store(true)
	wg.Wait()
	sched.run()
	h.Close()
	for _, k := range all {
		if !isZero(k) {
			t.Fatalf("key %s not zeroed after Close", k.Name)
		}
	}
	if sealed.Load() == 0 {
		t.Error("readers never ran")
	}
}
