package ticketkeys

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the injected Now.
type fakeClock struct {
	mu sync.Mutex // mu protects t
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// manualSchedule replaces a Holder's timers: zeroing callbacks wait in a
// queue until run is called.
type manualSchedule struct {
	mu    sync.Mutex // mu protects fns
	fns   []*scheduled
	grace []time.Duration
}

type scheduled struct {
	f       func()
	stopped bool
	ran     bool
}

func (m *manualSchedule) schedule(d time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &scheduled{f: f}
	m.fns = append(m.fns, s)
	m.grace = append(m.grace, d)
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		if s.ran || s.stopped {
			return false
		}
		s.stopped = true
		return true
	}
}

// run fires every pending callback, as if the grace period ended.
func (m *manualSchedule) run() {
	m.mu.Lock()
	var todo []func()
	for _, s := range m.fns {
		if !s.ran && !s.stopped {
			s.ran = true
			todo = append(todo, s.f)
		}
	}
	m.mu.Unlock()
	for _, f := range todo {
		f()
	}
}

func newManualHolder() (*Holder, *manualSchedule) {
	m := &manualSchedule{}
	h := NewHolder(HolderConfig{RetireGrace: 3 * time.Second})
	h.schedule = m.schedule
	return h, m
}

func isZero(k *Key) bool { return k.Secret == [SecretSize]byte{} }

// seqReader is a deterministic byte stream for Rand: SHA-256 of a counter.
type seqReader struct {
	mu  sync.Mutex // mu protects n and buf
	n   uint64
	buf []byte
}

func (r *seqReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range p {
		if len(r.buf) == 0 {
			r.n++
			sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, r.n))
			r.buf = sum[:]
		}
		p[i], r.buf = r.buf[0], r.buf[1:]
	}
	return len(p), nil
}

// testKey returns a key whose name and secret start with b.
func testKey(b byte) *Key {
	k := &Key{Created: time.Unix(1700000000, 0)}
	copy(k.Name[:], bytes.Repeat([]byte{b}, NameSize))
	for i := range k.Secret {
		k.Secret[i] = b + byte(i) + 1 // never all zero
	}
	return k
}

func mustRing(t testing.TB, keys ...*Key) *Ring {
	t.Helper()
	r, err := NewRing(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor receives from ch until ok returns true, failing the test if that
// takes longer than a generous guard (the guard is a failure bound, not a
// synchronisation delay).
func waitFor[T any](t testing.TB, ch <-chan T, what string, ok func(T) bool) {
	t.Helper()
	guard := time.NewTimer(20 * time.Second)
	defer guard.Stop()
	for {
		select {
		case v := <-ch:
			if ok(v) {
				return
			}
		case <-guard.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// switchReader reads from a reader that the test can swap.
type switchReader struct {
	mu sync.Mutex // mu protects r
	r  io.Reader
}

func (s *switchReader) set(r io.Reader) {
	s.mu.Lock()
	s.r = r
	s.mu.Unlock()
}

func (s *switchReader) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Read(p)
}
