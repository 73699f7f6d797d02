package stateful

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
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
const maxTimeoutFactor = 10

// StoreCallBound returns the longest a single shared store call may take:
// the adaptive timeout's ceiling, maxTimeoutFactor × StoreTimeout. Give it
// to the store client as its own socket timeout, so that the client does
// not cut a call the Backend still waits for.
func (c Config) StoreCallBound() time.Duration { return maxTimeoutFactor * c.StoreTimeout() }

// latency sizes the per-call store timeout from what the calls take (#12).
// On a loaded machine a call's time includes the wait for a CPU, so a
// fixed timeout tight enough for a hung store also cuts answers that came
// in time but were read late: the node then falls back (or gives a full
// handshake) although the store is fine. latency keeps a histogram of the
// latest calls' times (power-of-two buckets from 64µs; the latest
// latencyWindow to 2 × latencyWindow calls) and bounds each call by
//
//	clamp(2 × p99, Timeout, maxTimeoutFactor × Timeout)
//
// where p99 is the upper edge of the bucket holding the 99th percentile. A
// call that timed out counts as taking its bound, so a store or scheduler
// that got slower raises the bound, up to the ceiling; errors (a refused
// connection) are not counted. Timeout stays the floor: on a quiet machine
// nothing changes. A hung store costs each handshake at most the ceiling,
// until the breaker opens. The bound starts at the ceiling.
//
// It is safe for concurrent use.
type latency struct {
	floor, ceil time.Duration
	bound       atomic.Int64 // the current bound, read without the lock

	answered atomic.Int64 // when the store last answered (UnixNano)

	// mu protects the histograms.
	mu        sync.Mutex
	cur, prev [latencyBuckets]int // calls per bucket: this epoch, the last
	n         int                 // calls in cur
}

const (
	latencyBuckets = 16                    // 64µs << 15 ≈ 2.1s
	latencyUnit    = 64 * time.Microsecond // upper edge of bucket 0
	latencyWindow  = 512                   // calls per epoch
	latencyEvery   = 32                    // calls between two updates of bound
)

func newLatency(floor time.Duration) *latency {
	l := &latency{floor: floor, ceil: maxTimeoutFactor * floor}
	// Until latencyEvery calls were seen, as TCP's initial timeout (RFC
	// 6298, 2.1), the bound is conservative: a node that starts under load
	// does not take its first slow answers for failures.
	l.bound.Store(int64(l.ceil))
	return l
}

// answeredSince reports whether the store answered a call after t.
func (l *latency) answeredSince(t time.Time) bool { return l.answered.Load() > t.UnixNano() }

// timeout returns the current per-call bound.
func (l *latency) timeout() time.Duration { return time.Duration(l.bound.Load()) }

// observe records how long a call that got an answer (or timed out) took.
func (l *latency) observe(d time.Duration) {
	i := min(bits.Len64(uint64(max(d-1, 0)/latencyUnit)), latencyBuckets-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur[i]++
	l.n++
	if l.n%latencyEvery != 0 {
		return
	}
	total := l.n
	for _, c := range l.prev {
		total += c
	}
	// The bucket of the 99th percentile of cur and prev together.
	above, p99 := total/100, latencyBuckets-1
	for ; p99 > 0 && above >= l.cur[p99]+l.prev[p99]; p99-- {
		above -= l.cur[p99] + l.prev[p99]
	}
	l.bound.Store(int64(min(max(2*latencyUnit<<p99, l.floor), l.ceil)))
	if l.n == latencyWindow {
		l.prev, l.cur, l.n = l.cur, [latencyBuckets]int{}, 0
	}
}

// sharedGet reads key from the shared store within the adaptive bound,
// unless the breaker skips it (errBreakerOpen).
func (s *Backend) sharedGet(key string) ([]byte, error) {
	return s.sharedCall(opGet, key, nil)
}

// sharedPut writes key to the shared store within the adaptive bound,
// unless the breaker skips it.
func (s *Backend) sharedPut(key string, val []byte) error {
	_, err := s.sharedCall(opPut, key, val)
	if err != nil {
		s.log.Debug("session store put failed", zap.String("mode", s.mode), zap.Error(err))
	}
	return err
}

// sharedCall makes a get or put (op) through the breaker, and feeds it.
//
// A call that timed out is not always the store's fault (#12): if the store
// answered another call after this one started, it is alive, and this
// call waited on this process (a busy scheduler, every pooled connection
// taken by goroutines that are not being run); if the call returned more
// than half a bound after its deadline, its goroutine was not run for that
// long, and the answer may have been waiting on the socket. Such a call is
// retried once, and does not count against the store in the breaker. A
// hung store answers nobody, and its calls return at their deadline: they
// count.
func (s *Backend) sharedCall(op int, key string, val []byte) ([]byte, error) {
	ok, probe := s.breaker.allow()
	if !ok {
		s.m.skip(op)
		return nil, errBreakerOpen
	}
	for retried := false; ; retried = true {
		bound := s.lat.timeout()
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		start := time.Now()
		var got []byte
		var err error
		if op == opGet {
			got, err = s.shared.Get(ctx, key)
		} else {
			err = s.shared.Put(ctx, key, val, s.lifetime)
		}
		elapsed := time.Since(start)
		cancel()
		r := s.sharedDone(op, elapsed, err)
		ours := r == resultTimeout && (elapsed > bound+bound/2 || s.lat.answeredSince(start))
		if ours && !retried {
			s.log.Debug("session store call timed out on this process, retrying", zap.String("mode", s.mode), zap.Duration("bound", bound), zap.Duration("elapsed", elapsed))
			continue
		}
		s.breaker.done(probe, (r == resultError || r == resultTimeout) && !ours, err)
		return got, err
	}
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
	r := s.sharedDone(opDelete, elapsed, err)
	s.breaker.done(false, r == resultError || r == resultTimeout, err)
	return err
}

// sharedDone counts a shared store call, feeds its time to the adaptive
// timeout, and returns its result (resultOK, resultMiss, resultError or
// resultTimeout).
func (s *Backend) sharedDone(op int, elapsed time.Duration, err error) int {
	r := resultOf(err)
	s.m.call(op, r, elapsed)
	if r == resultOK || r == resultMiss {
		s.lat.answered.Store(time.Now().UnixNano())
	}
	if r != resultError {
		s.lat.observe(elapsed)
	}
	return r
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
	if err == nil && len(val) < localHdr {
		return nil, fmt.Errorf("%w: truncated local session entry", resumption.ErrBad)
	}
	return val, err
}

// localPut writes flag | epoch | value to Local for Lifetime.
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
