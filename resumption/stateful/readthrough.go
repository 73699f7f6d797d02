package stateful

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// Read-through (#12): with Config.ReadThrough, a client that returns to the
// node that last wrote or read its session resumes from Local, without a
// store get. Revocation stays fleet-wide, with a bound:
//
//   - Revoke deletes the session from Store, then replaces the value under
//     sessioncache.RevocationKey (the revocation generation) with 16 random
//     bytes. A plain Put, not an increment: it works with any Store, and a
//     random value never comes back (no ABA), so any change is seen as one;
//     an expired or evicted generation reads as a change too.
//   - Each Backend polls the generation every RevocationPoll. When it
//     changed, or a poll failed, the poller moves to a new epoch.
//   - Local entries carry the epoch read before the store call that wrote
//     or read them. An entry is used without a store get only if it is
//     marked stored, its epoch is the current one, and the last successful
//     poll started less than 2 × RevocationPoll ago.
//
// So a session revoked on any node may still resume on a node that holds a
// verified copy until that node's next poll: RevocationPoll after the
// revocation typically, 2 × RevocationPoll at most, and never while the
// node cannot read the generation. SingleUse never reads through.

// DefaultRevocationPoll is how often a Backend reads the revocation
// generation when Config.RevocationPoll is zero.
const DefaultRevocationPoll = 100 * time.Millisecond

// localHdr is the length of the header of a Local value:
// flag(1) | epoch(8, big endian).
const localHdr = 1 + 8

// revocation polls the fleet's revocation generation. It is safe for
// concurrent use; stop ends its goroutine.
type revocation struct {
	store sessioncache.Store
	key   string
	every time.Duration
	now   func() time.Time // Config.Now: the poll's freshness
	log   *zap.Logger

	epoch      atomic.Uint64 // the current epoch
	freshUntil atomic.Int64  // UnixNano: start of the last successful poll + 2 × every

	// mu protects seen, seenOK and changed: the generation last read, whether
	// the last poll read it, and a channel closed (and replaced) at each
	// new epoch.
	mu      sync.Mutex
	seen    []byte
	seenOK  bool
	changed chan struct{}

	stop, done chan struct{}
}

func newRevocation(store sessioncache.Store, key string, every time.Duration, now func() time.Time, log *zap.Logger) *revocation {
	r := &revocation{store: store, key: key, every: every, now: now, log: log,
		changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	r.epoch.Store(1)
	go r.run()
	return r
}

// current returns the epoch to record with a store call about to be made.
func (r *revocation) current() uint64 { return r.epoch.Load() }

// usable reports whether a stored Local entry verified in epoch may be
// used without a store get.
func (r *revocation) usable(epoch uint64) bool {
	return epoch == r.epoch.Load() && r.now().UnixNano() < r.freshUntil.Load()
}

// next returns a channel closed at the next new epoch (tests wait on it).
func (r *revocation) next() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *revocation) run() {
	defer close(r.done)
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		r.poll()
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
	}
}

// poll reads the generation once and moves to a new epoch if it changed or
// could not be read.
func (r *revocation) poll() {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("revocation poll panicked", zap.Any("panic", p))
		}
	}()
	start := r.now()
	ctx, cancel := context.WithTimeout(context.Background(), r.every)
	val, err := r.store.Get(ctx, r.key)
	cancel()
	if errors.Is(err, sessioncache.ErrMiss) {
		val, err = nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.log.Debug("revocation poll failed", zap.Error(err))
		if r.seenOK {
			r.seenOK = false
			r.advanceLocked()
		}
		return
	}
	if !r.seenOK || !bytes.Equal(val, r.seen) {
		r.seen, r.seenOK = val, true
		r.advanceLocked()
	}
	r.freshUntil.Store(start.Add(2 * r.every).UnixNano())
}

// advanceLocked moves to a new epoch: no entry verified before is used
// without a store get.
func (r *revocation) advanceLocked() {
	r.epoch.Add(1)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *revocation) close() {
	close(r.stop)
	<-r.done
}
