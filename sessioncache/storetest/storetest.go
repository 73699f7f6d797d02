// Package storetest is the conformance suite for sessioncache.Store
// implementations, plus helpers for tests that use a store: a call-recording,
// fault-injecting wrapper (Recorder) and a fake clock (Clock).
//
// Every backend runs the same suite: the in-process LRU with a fake clock,
// and Redis and memcached against real server processes.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// Options adapts the suite to a store. The zero Options runs every check that
// needs nothing from the store but the Store interface.
type Options struct {
	// Advance, if set, moves forward by d the clock of every store newStore
	// returns; the suite then checks that an entry is returned until its TTL
	// passes and is a miss from then on. Run calls it from one goroutine at a
	// time and runs its subtests sequentially, so one Clock shared by all
	// stores of a Run is fine. Stores on the real clock leave it nil: their
	// expiry is the server's and is checked through RemainingTTL instead.
	Advance func(d time.Duration)

	// RemainingTTL, if set, asks the server behind s (a store newStore
	// returned) for the time to live it holds for key, as the store was given
	// it (the function adds any prefix the store adds). The suite checks that
	// a Put with ttl leaves a remaining TTL in (ttl/2, ttl+TTLSlack].
	RemainingTTL func(s sessioncache.Store, key string) (time.Duration, error)

	// TTLSlack is how far above the requested TTL a RemainingTTL answer may
	// be: a store that rounds TTLs up to whole seconds needs a second or two.
	// If zero, one millisecond.
	TTLSlack time.Duration
}

func (o Options) slack() time.Duration {
	if o.TTLSlack > 0 {
		return o.TTLSlack
	}
	return time.Millisecond
}

// ttl is the TTL the suite uses where expiry is not under test: long enough
// never to pass during a run.
const ttl = time.Hour

// Run runs the conformance suite as subtests of t. newStore is called once
// per subtest and returns the store under test; stores may share a server,
// since every subtest uses fresh random keys. At most one Options may be
// given.
func Run(t *testing.T, newStore func(t *testing.T) sessioncache.Store, opts ...Options) {
	t.Helper()
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatalf("storetest.Run: got %d Options, want at most one", len(opts))
	}
	tests := []struct {
		name string
		fn   func(*testing.T, sessioncache.Store, Options)
	}{
		{"Miss", testMiss},
		{"RoundTrip", testRoundTrip},
		{"GetReturnsCopy", testGetReturnsCopy},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"DeleteMissing", testDeleteMissing},
		{"KeysIndependent", testKeysIndependent},
		{"NonPositiveTTL", testNonPositiveTTL},
		{"LongTTL", testLongTTL},
		{"Expiry", testExpiry},
		{"RemainingTTL", testRemainingTTL},
		{"IllegalKey", testIllegalKey},
		{"DoneContext", testDoneContext},
		{"Concurrent", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t), o)
		})
	}
}

// newKey returns a fresh key built the way edgeproxy builds keys.
func newKey(t *testing.T) string {
	t.Helper()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	return sessioncache.SessionKey("storetest/", id)
}

func mustPut(t *testing.T, s sessioncache.Store, key string, val []byte, ttl time.Duration) {
	t.Helper()
	if err := s.Put(t.Context(), key, val, ttl); err != nil {
		t.Fatalf("Put(%d bytes, ttl %v) = %v", len(val), ttl, err)
	}
}

func wantValue(t *testing.T, s sessioncache.Store, key string, want []byte) {
	t.Helper()
	got, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get = %v, want %d bytes", err, len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get = %s, want %s", describe(got), describe(want))
	}
}

func wantMiss(t *testing.T, s sessioncache.Store, key string) {
	t.Helper()
	got, err := s.Get(t.Context(), key)
	if !errors.Is(err, sessioncache.ErrMiss) {
		t.Fatalf("Get = (%s, %v), want ErrMiss", describe(got), err)
	}
	if got != nil {
		t.Fatalf("Get returned ErrMiss and %s, want nil value", describe(got))
	}
}

func describe(b []byte) string {
	if len(b) <= 16 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes %q...", len(b), b[:16])
}

func testMiss(t *testing.T, s sessioncache.Store, _ Options) {
	wantMiss(t, s, newKey(t))
}

func testRoundTrip(t *testing.T, s sessioncache.Store, _ Options) {
	allBytes := make([]byte, 512)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	big := make([]byte, 16<<10)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		val  []byte
		want []byte
	}{
		{"binary", allBytes, allBytes},
		{"zero_bytes", make([]byte, 48), make([]byte, 48)},
		{"crlf_and_end", []byte("\r\nEND\r\n"), []byte("\r\nEND\r\n")},
		{"empty", []byte{}, []byte{}},
		{"nil", nil, []byte{}},
		{"16KiB", big, big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := newKey(t)
			mustPut(t, s, key, tt.val, ttl)
			wantValue(t, s, key, tt.want)
			wantValue(t, s, key, tt.want) // a Get does not consume the entry
		})
	}
}

func testGetReturnsCopy(t *testing.T, s sessioncache.Store, _ Options) {
	key := newKey(t)
	mustPut(t, s, key, []byte("original"), ttl)
	got, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "XXXXXXXX") // a caller decrypting in place must not corrupt the store
	wantValue(t, s, key, []byte("original"))
}

func testOverwrite(t *testing.T, s sessioncache.Store, _ Options) {
	key := newKey(t)
	for _, v := range []string{"first", "a much longer second value", "3rd", ""} {
		mustPut(t, s, key, []byte(v), ttl)
		wantValue(t, s, key, []byte(v))
	}
}

func testDelete(t *testing.T, s sessioncache.Store, _ Options) {
	key := newKey(t)
	mustPut(t, s, key, []byte("v"), ttl)
	if err := s.Delete(t.Context(), key); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	wantMiss(t, s, key)
	mustPut(t, s, key, []byte("again"), ttl) // a deleted key can be stored again
	wantValue(t, s, key, []byte("again"))
}

func testDeleteMissing(t *testing.T, s sessioncache.Store, _ Options) {
	key := newKey(t)
	for range 2 {
		if err := s.Delete(t.Context(), key); err != nil {
			t.Fatalf("Delete(missing) = %v, want nil", err)
		}
	}
}

func testKeysIndependent(t *testing.T, s sessioncache.Store, _ Options) {
	a, b := newKey(t), newKey(t)
	mustPut(t, s, a, []byte("a"), ttl)
	mustPut(t, s, b, []byte("b"), ttl)
	if err := s.Delete(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, s, a)
	wantValue(t, s, b, []byte("b"))
}

func testNonPositiveTTL(t *testing.T, s sessioncache.Store, _ Options) {
	for _, d := range []time.Duration{0, -time.Second} {
		key := newKey(t)
		if err := s.Put(t.Context(), key, []byte("v"), d); err == nil {
			t.Errorf("Put(ttl %v) = nil, want an error", d)
		}
		wantMiss(t, s, key)
	}
}

// testLongTTL catches a memcached-style bug: relative expirations above 30
// days are read as absolute timestamps in 1970, so the entry is born expired.
func testLongTTL(t *testing.T, s sessioncache.Store, _ Options) {
	key := newKey(t)
	mustPut(t, s, key, []byte("v"), 40*24*time.Hour)
	wantValue(t, s, key, []byte("v"))
}

func testExpiry(t *testing.T, s sessioncache.Store, o Options) {
	if o.Advance == nil {
		t.Skip("Options.Advance not set: the store's clock cannot be moved")
	}
	const d = time.Minute
	key, other := newKey(t), newKey(t)
	mustPut(t, s, key, []byte("v"), d)
	mustPut(t, s, other, []byte("w"), 2*d)
	o.Advance(d - time.Nanosecond)
	wantValue(t, s, key, []byte("v"))
	o.Advance(time.Nanosecond)
	wantMiss(t, s, key)
	wantValue(t, s, other, []byte("w"))

	// An overwrite sets a new TTL.
	mustPut(t, s, key, []byte("v2"), d)
	o.Advance(d / 2)
	mustPut(t, s, key, []byte("v3"), d)
	o.Advance(d - time.Nanosecond)
	wantValue(t, s, key, []byte("v3"))
	o.Advance(time.Nanosecond)
	wantMiss(t, s, key)
}

func testRemainingTTL(t *testing.T, s sessioncache.Store, o Options) {
	if o.RemainingTTL == nil {
		t.Skip("Options.RemainingTTL not set")
	}
	// 90s checks units (seconds vs milliseconds), 1500ms rounding, 40 days
	// memcached's absolute-timestamp form.
	for _, d := range []time.Duration{90 * time.Second, 1500 * time.Millisecond, 40 * 24 * time.Hour} {
		key := newKey(t)
		mustPut(t, s, key, []byte("v"), d)
		got, err := o.RemainingTTL(s, key)
		if err != nil {
			t.Fatalf("RemainingTTL after Put(ttl %v) = %v", d, err)
		}
		// The lower bound is generous: it fails only for a wrong unit or if
		// this goroutine stalled for d/2, not on a slow machine.
		if got <= d/2 || got > d+o.slack() {
			t.Errorf("after Put(ttl %v) the server holds ttl %v, want in (%v, %v]", d, got, d/2, d+o.slack())
		}
	}
}

func testIllegalKey(t *testing.T, s sessioncache.Store, _ Options) {
	keys := map[string]string{
		"empty":    "",
		"space":    "edgeproxy/v1/sess/a b",
		"newline":  "edgeproxy/v1/sess/a\r\nflush_all",
		"control":  "edgeproxy/v1/sess/\x00",
		"del":      "edgeproxy/v1/sess/\x7f",
		"too_long": strings.Repeat("k", sessioncache.MaxKeyLen+1),
	}
	for name, key := range keys {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			if err := s.Put(ctx, key, []byte("v"), ttl); err == nil {
				t.Errorf("Put = nil, want an error")
			}
			if _, err := s.Get(ctx, key); err == nil || errors.Is(err, sessioncache.ErrMiss) {
				t.Errorf("Get = %v, want an error other than ErrMiss", err)
			}
			if err := s.Delete(ctx, key); err == nil {
				t.Errorf("Delete = nil, want an error")
			}
		})
	}
	// A long legal key works. (Not MaxKeyLen: a store may spend some of the
	// limit on its own key prefix.)
	key := newKey(t)
	key += strings.Repeat("k", 200-len(key))
	mustPut(t, s, key, []byte("v"), ttl)
	wantValue(t, s, key, []byte("v"))
}

func testDoneContext(t *testing.T, s sessioncache.Store, _ Options) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	key := newKey(t)
	mustPut(t, s, key, []byte("v"), ttl)
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"canceled", canceled, context.Canceled},
		{"deadline_passed", expired, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.Get(c.ctx, key); !errors.Is(err, c.want) {
				t.Errorf("Get = %v, want an error wrapping %v", err, c.want)
			}
			if err := s.Put(c.ctx, newKey(t), []byte("v"), ttl); !errors.Is(err, c.want) {
				t.Errorf("Put = %v, want an error wrapping %v", err, c.want)
			}
			if err := s.Delete(c.ctx, key); !errors.Is(err, c.want) {
				t.Errorf("Delete = %v, want an error wrapping %v", err, c.want)
			}
		})
	}
	wantValue(t, s, key, []byte("v")) // nothing above reached the store
}

// testConcurrent runs writers, readers and deleters on shared keys; under
// -race it finds unguarded state, and every value read must be one that some
// goroutine wrote whole.
func testConcurrent(t *testing.T, s sessioncache.Store, _ Options) {
	const workers, rounds = 8, 40
	shared := []string{newKey(t), newKey(t), newKey(t)}
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			own := newKey(t)
			for i := range rounds {
				// A value is its writer and round, repeated: a torn or mixed
				// value shows up as a byte that differs from the first.
				val := bytes.Repeat([]byte{byte(w*rounds + i)}, 64+w*97+i)
				key := shared[(w+i)%len(shared)]
				if err := s.Put(ctx, key, val, ttl); err != nil {
					t.Errorf("Put(shared) = %v", err)
					return
				}
				if err := s.Put(ctx, own, val, ttl); err != nil {
					t.Errorf("Put(own) = %v", err)
					return
				}
				got, err := s.Get(ctx, own)
				if err != nil || !bytes.Equal(got, val) {
					t.Errorf("Get(own) = (%s, %v), want %s", describe(got), err, describe(val))
					return
				}
				got, err = s.Get(ctx, shared[(w+i+1)%len(shared)])
				switch {
				case errors.Is(err, sessioncache.ErrMiss):
				case err != nil:
					t.Errorf("Get(shared) = %v", err)
					return
				case len(got) == 0 || bytes.Count(got, got[:1]) != len(got):
					t.Errorf("Get(shared) = %s: not a value any writer wrote", describe(got))
					return
				}
				if i%5 == 0 {
					if err := s.Delete(ctx, shared[(w+i+2)%len(shared)]); err != nil {
						t.Errorf("Delete(shared) = %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
