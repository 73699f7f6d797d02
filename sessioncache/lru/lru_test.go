package lru_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

var epoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func TestConformance(t *testing.T) {
	t.Parallel()
	clk := storetest.NewClock(epoch)
	storetest.Run(t, func(t *testing.T) sessioncache.Store {
		s, err := lru.New(lru.Config{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.Options{Advance: clk.Advance})
}

func TestConformanceZeroStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) sessioncache.Store { return new(lru.Store) })
}

func TestConformanceTinyStore(t *testing.T) {
	t.Parallel()
	// Bounds large enough for every value the suite stores at once, small
	// enough that eviction runs throughout (the 16 KiB value alone evicts).
	clk := storetest.NewClock(epoch)
	storetest.Run(t, func(t *testing.T) sessioncache.Store {
		s, err := lru.New(lru.Config{MaxEntries: 16, MaxBytes: 20 << 10, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.Options{Advance: clk.Advance})
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  lru.Config
		want string // "" means valid
	}{
		{"zero", lru.Config{}, ""},
		{"bounds", lru.Config{MaxEntries: 10, MaxBytes: 1000}, ""},
		{"negative_entries", lru.Config{MaxEntries: -1}, "lru.max_entries: must not be negative, got -1"},
		{"negative_bytes", lru.Config{MaxBytes: -5}, "lru.max_bytes: must not be negative, got -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if got := errString(err); got != tt.want {
				t.Errorf("Validate() = %q, want %q", got, tt.want)
			}
			if _, err := lru.New(tt.cfg); (err == nil) != (tt.want == "") {
				t.Errorf("New() error = %v, want error %v", err, tt.want != "")
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func newStore(t testing.TB, cfg lru.Config) *lru.Store {
	t.Helper()
	s, err := lru.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *lru.Store, key, val string) {
	t.Helper()
	if err := s.Put(t.Context(), key, []byte(val), time.Hour); err != nil {
		t.Fatalf("Put(%q) = %v", key, err)
	}
}

// present returns the keys among keys that Get finds. Get refreshes recency,
// so tests call it only where order no longer matters.
func present(t *testing.T, s *lru.Store, keys ...string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		_, err := s.Get(t.Context(), k)
		switch {
		case err == nil:
			out = append(out, k)
		case !errors.Is(err, sessioncache.ErrMiss):
			t.Fatalf("Get(%q) = %v", k, err)
		}
	}
	return out
}

func TestEvictByEntries(t *testing.T) {
	t.Parallel()
	s := newStore(t, lru.Config{MaxEntries: 3})
	put(t, s, "a", "1")
	put(t, s, "b", "2")
	put(t, s, "c", "3")
	if _, err := s.Get(t.Context(), "a"); err != nil { // a is now the most recent
		t.Fatal(err)
	}
	put(t, s, "d", "4") // evicts b, the least recently used
	if got, want := fmt.Sprint(present(t, s, "a", "b", "c", "d")), "[a c d]"; got != want {
		t.Errorf("present = %s, want %s", got, want)
	}
	if s.Len() != 3 || s.Bytes() != 6 {
		t.Errorf("Len, Bytes = %d, %d, want 3, 6", s.Len(), s.Bytes())
	}
}

func TestEvictByBytes(t *testing.T) {
	t.Parallel()
	s := newStore(t, lru.Config{MaxBytes: 10})
	put(t, s, "a", "1234") // 5 bytes
	put(t, s, "b", "1234") // 10 bytes
	put(t, s, "c", "1")    // 12 > 10: evicts a
	if got, want := fmt.Sprint(present(t, s, "a", "b", "c")), "[b c]"; got != want {
		t.Errorf("present = %s, want %s", got, want)
	}
	if got := s.Bytes(); got != 7 {
		t.Errorf("Bytes = %d, want 7", got)
	}
	// Growing an entry in place evicts others, never the entry itself.
	put(t, s, "c", "123456789") // c is 10 bytes alone
	if got, want := fmt.Sprint(present(t, s, "b", "c")), "[c]"; got != want {
		t.Errorf("present = %s, want %s", got, want)
	}
	if s.Len() != 1 || s.Bytes() != 10 {
		t.Errorf("Len, Bytes = %d, %d, want 1, 10", s.Len(), s.Bytes())
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	s := newStore(t, lru.Config{MaxBytes: 10})
	put(t, s, "a", "old")
	put(t, s, "b", "keep")
	err := s.Put(t.Context(), "a", []byte("0123456789"), time.Hour) // 11 bytes with its key
	if !errors.Is(err, lru.ErrTooLarge) {
		t.Fatalf("Put(too large) = %v, want ErrTooLarge", err)
	}
	// The stale value is gone; other entries are untouched.
	if got, want := fmt.Sprint(present(t, s, "a", "b")), "[b]"; got != want {
		t.Errorf("present = %s, want %s", got, want)
	}
	if s.Len() != 1 || s.Bytes() != 5 {
		t.Errorf("Len, Bytes = %d, %d, want 1, 5", s.Len(), s.Bytes())
	}
}

func TestExpiredEntryIsRemoved(t *testing.T) {
	t.Parallel()
	clk := storetest.NewClock(epoch)
	s := newStore(t, lru.Config{Now: clk.Now})
	if err := s.Put(t.Context(), "k", []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if s.Len() != 1 {
		t.Fatalf("Len before Get = %d, want 1 (removal is lazy)", s.Len())
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, sessioncache.ErrMiss) {
		t.Fatalf("Get(expired) = %v, want ErrMiss", err)
	}
	if s.Len() != 0 || s.Bytes() != 0 {
		t.Errorf("Len, Bytes after Get = %d, %d, want 0, 0", s.Len(), s.Bytes())
	}
}

func TestDeleteAccounting(t *testing.T) {
	t.Parallel()
	s := newStore(t, lru.Config{})
	put(t, s, "a", "12")
	put(t, s, "b", "345")
	if err := s.Delete(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 1 || s.Bytes() != 4 {
		t.Errorf("Len, Bytes = %d, %d, want 1, 4", s.Len(), s.Bytes())
	}
}

// TestAllocs pins the hot-path allocations: a hit allocates only the copy it
// returns, a miss nothing, and a Put at capacity only its copy of the value
// (the evicted entry is recycled).
func TestAllocs(t *testing.T) {
	// Not parallel: testing.AllocsPerRun refuses to run in a parallel test.
	if testing.Short() {
		t.Skip("allocation counts are checked in full runs")
	}
	ctx := context.Background()
	s := newStore(t, lru.Config{MaxEntries: 100})
	keys := makeKeys(1000)
	val := make([]byte, 300)
	for _, k := range keys[:100] {
		if err := s.Put(ctx, k, val, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	tests := []struct {
		name string
		max  float64
		fn   func()
	}{
		{"get_hit", 1, func() { _, _ = s.Get(ctx, keys[99]) }},
		{"get_miss", 0, func() { _, _ = s.Get(ctx, keys[999]) }},
		{"put_overwrite", 1, func() { _ = s.Put(ctx, keys[99], val, time.Hour) }},
		{"put_evicting", 1, func() { i++; _ = s.Put(ctx, keys[100+i%800], val, time.Hour) }},
		{"delete_missing", 0, func() { _ = s.Delete(ctx, keys[999]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(200, tt.fn); got > tt.max {
				t.Errorf("allocs per call = %v, want <= %v", got, tt.max)
			}
		})
	}
}

func makeKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = sessioncache.SessionKey("", []byte("session-id-"+strconv.Itoa(i)))
	}
	return keys
}

// sessionSize is a typical sealed TLS 1.3 session state with a certificate
// chain left out: what the resumption layer stores.
const sessionSize = 512

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s := newStore(b, lru.Config{})
	keys := makeKeys(1024)
	val := make([]byte, sessionSize)
	for _, k := range keys {
		if err := s.Put(ctx, k, val, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, keys[i&1023]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGetParallel(b *testing.B) {
	ctx := context.Background()
	s := newStore(b, lru.Config{})
	keys := makeKeys(1024)
	val := make([]byte, sessionSize)
	for _, k := range keys {
		if err := s.Put(ctx, k, val, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Get(ctx, keys[i&1023]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkPut stores new keys into a full store, so every Put evicts.
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	s := newStore(b, lru.Config{MaxEntries: 10_000})
	keys := makeKeys(1 << 15)
	val := make([]byte, sessionSize)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Put(ctx, keys[i&(1<<15-1)], val, time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkPutParallel(b *testing.B) {
	ctx := context.Background()
	s := newStore(b, lru.Config{MaxEntries: 10_000})
	keys := makeKeys(1 << 15)
	val := make([]byte, sessionSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := s.Put(ctx, keys[i&(1<<15-1)], val, time.Hour); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
