package stateful

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// The Backend's store calls: each is timed and counted, and calls to the
// shared store go through the breaker and feed it.

// maxTimeoutFactor bounds the adaptive per-call timeout: at most this many
// times Config.Timeout (see latency).
const maxTimeoutFactor = 4

// StoreCallBound returns the longest a single shared store call may take:
// the adaptive timeout's ceiling, maxTimeoutFactor × StoreTimeout. Give it
// to the store client as its own socket timeout, so that the client does
// not cut a call the Backend still waits for.
func (c Config) StoreCallBound() time.Duration { return maxTimeoutFactor * c.StoreTimeout() }

// latency sizes the per-call store timeout from what the calls take (#12).
// On a loaded machine a call's time includes the wait for a CPU, so a
// fixed timeout tight enough for a hung store also cuts answers that came
// in time but were read late: the node then falls back (or gives a full
// handshake) although the store is fine. latency keeps, as TCP does for
// its retransmission timeout (RFC 6298), a smoothed time srtt and a mean
// deviation rttvar of the store's answers, and bounds each call by
//
//	clamp(2 × (srtt + 4 × rttvar), Timeout, maxTimeoutFactor × Timeout)
//
// A call that timed out counts as an answer after its bound, so a store or
// scheduler that got slower raises the bound step by step, up to the
// ceiling; errors (a refused connection) are not counted. Timeout stays the
// floor: on a quiet machine nothing changes. A hung store costs each
// handshake at most the ceiling, until the breaker opens.
//
// It is safe for concurrent use.
type latency struct {
	floor, ceil time.Duration
	bound       atomic.Int64 // the current bound, read without the lock

	// mu protects srtt and rttvar, and orders updates of bound.
	mu           sync.Mutex
	srtt, rttvar time.Duration // zero until the first observation
}

func newLatency(floor time.Duration) *latency {
	l := &latency{floor: floor, ceil: maxTimeoutFactor * floor}
	l.bound.Store(int64(floor))
	return l
}

// timeout returns the current per-call bound.
func (l *latency) timeout() time.Duration { return time.Duration(l.bound.Load()) }

// observe records how long a call that got an answer (or timed out) took.
func (l *latency) observe(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.srtt == 0 {
		l.srtt, l.rttvar = d, d/2
	} else {
		l.rttvar += (abs(l.srtt-d) - l.rttvar) / 4
		l.srtt += (d - l.srtt) / 8
	}
	l.bound.Store(int64(min(max(2*(l.srtt+4*l.rttvar), l.floor), l.ceil)))
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// sharedGet reads key from the shared store within Timeout, unless the
// breaker skips it (errBreakerOpen).
func (s *Backend) sharedGet(key string) ([]byte, error) {
	ok, probe := s.breaker.allow()
	if !ok {
		s.m.skip(opGet)
		return nil, errBreakerOpen
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.lat.timeout())
	start := time.Now()
	val, err := s.shared.Get(ctx, key)
	elapsed := time.Since(start)
	cancel()
	failed := s.sharedDone(opGet, elapsed, err)
	s.breaker.done(probe, failed, err)
	return val, err
}

// sharedPut writes key to the shared store within Timeout, unless the
// breaker skips it.
func (s *Backend) sharedPut(key string, val []byte) error {
	ok, probe := s.breaker.allow()
	if !ok {
		s.m.skip(opPut)
		return errBreakerOpen
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.lat.timeout())
	start := time.Now()
	err := s.shared.Put(ctx, key, val, s.lifetime)
	elapsed := time.Since(start)
	cancel()
	failed := s.sharedDone(opPut, elapsed, err)
	s.breaker.done(probe, failed, err)
	if err != nil {
		s.log.Debug("session store put failed", zap.String("mode", s.mode), zap.Error(err))
	}
	return err
}

// sharedDelete deletes key from the shared store: within Timeout if
// bounded, else within ctx alone. The breaker does not skip deletes (the
// caller has just reached the store, or is an operator revoking a session),
// but their failures feed it.
func (s *Backend) sharedDelete(ctx context.Context, key string, bounded bool) error {
	cancel := context.CancelFunc(func() {})
	if bounded {
		ctx, cancel = context.WithTimeout(ctx, s.lat.timeout())
	}
	start := time.Now()
	err := s.shared.Delete(ctx, key)
	elapsed := time.Since(start)
	cancel()
	failed := s.sharedDone(opDelete, elapsed, err)
	s.breaker.done(false, failed, err)
	return err
}

// sharedDone counts a shared store call, feeds its time to the adaptive
// timeout, and reports whether it failed (an error or timeout; a miss is an
// answer).
func (s *Backend) sharedDone(op int, elapsed time.Duration, err error) (failed bool) {
	r := resultOf(err)
	s.m.call(op, r, elapsed)
	if r != resultError {
		s.lat.observe(elapsed)
	}
	return r == resultError || r == resultTimeout
}

// resultOf classifies a store call's error for metrics.
func resultOf(err error) int {
	if err == nil {
		return resultOK
	}
	if errors.Is(err, sessioncache.ErrMiss) {
		return resultMiss
	}
	var te interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout()) {
		return resultTimeout
	}
	return resultError
}

// localGet reads key from Local. Its calls are counted as store calls only
// in sticky mode, where Local is the store. A value too short to hold the
// local flag is reported as bad.
func (s *Backend) localGet(key string) ([]byte, error) {
	var start time.Time
	if s.shared == nil {
		start = time.Now()
	}
	val, err := s.local.Get(context.Background(), key)
	if s.shared == nil {
		s.m.call(opGet, resultOf(err), time.Since(start))
	}
	if err == nil && len(val) == 0 {
		return nil, fmt.Errorf("%w: empty local session entry", resumption.ErrBad)
	}
	return val, err
}

// localPut writes flag | value to Local for Lifetime.
func (s *Backend) localPut(key string, val []byte) error {
	var start time.Time
	if s.shared == nil {
		start = time.Now()
	}
	err := s.local.Put(context.Background(), key, val, s.lifetime)
	if s.shared == nil {
		s.m.call(opPut, resultOf(err), time.Since(start))
	}
	if err != nil {
		s.log.Debug("local session cache put failed", zap.String("mode", s.mode), zap.Error(err))
	}
	return err
}

// localDelete deletes key from Local.
func (s *Backend) localDelete(key string) {
	var start time.Time
	if s.shared == nil {
		start = time.Now()
	}
	err := s.local.Delete(context.Background(), key)
	if s.shared == nil {
		s.m.call(opDelete, resultOf(err), time.Since(start))
	}
}
