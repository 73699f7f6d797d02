package ticketkeys

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultRetireGrace is how long a key that left the ring keeps its secret
// before the Holder zeroes it, when HolderConfig.RetireGrace is zero.
const DefaultRetireGrace = 5 * time.Second

// HolderConfig configures a Holder. The zero value is ready to use.
type HolderConfig struct {
	// RetireGrace is how long a key that left the ring keeps its secret
	// before it is zeroed. A seal or open that loaded the previous ring just
	// before a swap finishes within it with intact key bytes. If zero,
	// DefaultRetireGrace is used. Negative values are treated as zero.
	RetireGrace time.Duration
}

// Holder publishes the current Ring to the handshake path. Ring is a single
// atomic load: no lock and no allocation. Store swaps the ring whole; a
// published Ring is never edited.
//
// The zero Holder is empty (Ring returns nil) and ready to use with
// DefaultRetireGrace. A Holder must not be copied after first use. It is safe
// for concurrent use.
//
// Key retirement: the Holder owns the keys of every ring it is given. When a
// Store leaves a key (compared by pointer) out of the new ring, the key is
// zeroed RetireGrace later, on a timer; Close zeroes every retired key at once
// and the keys of the current ring. Callers must therefore finish with a *Key
// within RetireGrace of loading the ring it came from, and must not Store a
// key again once it has left a ring.
//
// Warning: a ticket key opens every session sealed under it. Copies of
// Key.Secret made by callers are not zeroed by the Holder; do not keep them.
type Holder struct {
	ring atomic.Pointer[Ring]

	grace time.Duration
	// schedule runs f after d and returns a function that cancels it,
	// reporting whether it did so before f started. Tests replace it to run
	// the zeroing by hand instead of waiting for a timer.
	schedule func(d time.Duration, f func()) (stop func() bool)

	// mu protects pending and closed, and serialises Store and Close so the
	// set of retired keys is computed against the ring actually replaced.
	mu      sync.Mutex
	pending []*retireBatch
	closed  bool
	// wg counts scheduled zeroing callbacks that have not finished.
	wg sync.WaitGroup
}

// retireBatch is a set of keys that left the ring in one Store, waiting for
// the grace period to end.
type retireBatch struct {
	keys []*Key
	stop func() bool
}

// NewHolder returns an empty Holder.
func NewHolder(cfg HolderConfig) *Holder {
	return &Holder{grace: cfg.RetireGrace}
}

func (h *Holder) retireGrace() time.Duration {
	if h.grace <= 0 {
		return DefaultRetireGrace
	}
	return h.grace
}

func (h *Holder) scheduleFunc() func(time.Duration, func()) func() bool {
	if h.schedule != nil {
		return h.schedule
	}
	return func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
}

// Ring returns the current ring, or nil before the first Store and after
// Close. It never blocks and never allocates.
func (h *Holder) Ring() *Ring { return h.ring.Load() }

// Store publishes r as the current ring. Keys of the previous ring that are
// not in r are zeroed after the retire grace period. Storing nil, or storing
// after Close, does nothing.
func (h *Holder) Store(r *Ring) {
	if r == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	old := h.ring.Swap(r)
	// A key that comes back must not be zeroed by an earlier batch.
	for _, b := range h.pending {
		b.keys = removeKeys(b.keys, r)
	}
	if old == nil || old == r {
		return
	}
	retired := removeKeys(old.Keys(), r)
	if len(retired) == 0 {
		return
	}
	b := &retireBatch{keys: retired}
	h.pending = append(h.pending, b)
	h.wg.Add(1)
	b.stop = h.scheduleFunc()(h.retireGrace(), func() {
		defer h.wg.Done()
		h.zeroBatch(b)
	})
}

// zeroBatch zeroes the keys of b and forgets it.
func (h *Holder) zeroBatch(b *retireBatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, p := range h.pending {
		if p == b {
			h.pending = append(h.pending[:i], h.pending[i+1:]...)
			break
		}
	}
	for _, k := range b.keys {
		clear(k.Secret[:])
	}
	b.keys = nil
}

// Close zeroes every key the Holder still owns, retired or current, and
// empties it: Ring returns nil afterwards and Store does nothing. It waits for
// any zeroing timer already running. Call it after the last handshake that
// may use a ring has finished. Close is idempotent and always returns nil.
func (h *Holder) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for _, b := range h.pending {
		if b.stop() {
			h.wg.Done() // the callback will never run
		}
		for _, k := range b.keys {
			clear(k.Secret[:])
		}
		b.keys = nil
	}
	h.pending = nil
	if r := h.ring.Swap(nil); r != nil {
		for _, k := range r.keys {
			clear(k.Secret[:])
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// removeKeys returns the keys of ks that are not in r, compared by pointer.
// It reuses the backing array of ks.
func removeKeys(ks []*Key, r *Ring) []*Key {
	out := ks[:0]
	for _, k := range ks {
		if !r.contains(k) {
			out = append(out, k)
		}
	}
	clear(ks[len(out):])
	return out
}

// contains reports whether k (by pointer) is one of the ring's keys.
func (r *Ring) contains(k *Key) bool {
	for _, rk := range r.keys {
		if rk == k {
			return true
		}
	}
	return false
}
