package stateful

import (
	"math/bits"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Breaker tuning that is not configurable (#12).
const (
	// breakerWindow is how many of the latest store calls the breaker
	// weighs: it opens when at least half of them failed (and at least
	// BreakerConfig.Failures). A slow scheduler times out the few calls in
	// flight at one moment; a dead or hung store fails all of them.
	breakerWindow = 32
	// firstProbe is how long an open breaker waits before its first probe.
	// Each failed probe doubles the wait, up to BreakerConfig.Cooldown, so
	// a store that comes back is used again within Cooldown (plus one
	// call), while a store that stays down costs one probe per Cooldown.
	firstProbe = 100 * time.Millisecond
)

// breaker is the circuit breaker in front of a shared session store.
//
// Closed, every call goes to the store. It opens when, among the last
// breakerWindow calls, at least half and at least Failures failed: an error
// rate, not a run of consecutive failures, so a burst of timeouts from a
// busy scheduler (every call in flight at one stall) does not open it. A
// dead store, whose calls fail at once (connection refused), opens it after
// Failures calls, as fast as before; timeouts open it only once they are
// half of a whole window (breakerWindow/2 calls), since on a loaded
// machine a timeout may be the scheduler's, not the store's. Open, calls skip the store until the probe wait has
// passed: firstProbe after opening, doubled after each failed probe up to
// Cooldown. Then the first caller becomes the probe (half-open): it alone
// calls the store, while concurrent callers keep skipping it rather than
// wait, since a probe of a store that is still down takes the whole
// per-call timeout. The probe's success closes the breaker with a clean
// window; its failure opens it for the next wait. Results of calls that
// started while the breaker was closed but end after it opened are
// ignored.
//
// It is safe for concurrent use and must not be copied.
type breaker struct {
	threshold int
	cooldown  time.Duration // the longest wait between probes
	now       func() time.Time
	log       *zap.Logger

	// mu protects the breaker's state: the fields below. It is held only for
	// a few comparisons, never across a store call.
	mu      sync.Mutex
	open    bool          // open or half-open
	history uint64        // while closed: the latest outcomes, newest in bit 0, 1 = failed
	calls   int           // while closed: outcomes in history, at most breakerWindow
	wait    time.Duration // while open: the current wait between probes
	until   time.Time     // while open: when the next probe may start
	probing bool          // while open: a probe is in flight
}

func newBreaker(cfg BreakerConfig, now func() time.Time, log *zap.Logger) *breaker {
	b := &breaker{threshold: cfg.Failures, cooldown: cfg.Cooldown, now: now, log: log}
	if b.threshold == 0 {
		b.threshold = DefaultBreakerFailures
	}
	if b.cooldown == 0 {
		b.cooldown = DefaultBreakerCooldown
	}
	return b
}

// allow reports whether a store call may go ahead, and whether it is the
// half-open probe. A caller that got ok must report the call's outcome with
// done, passing probe back.
func (b *breaker) allow() (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true, false
	}
	if b.probing || b.now().Before(b.until) {
		return false, false
	}
	b.probing = true
	return true, true
}

// done records the outcome of a call that allow let through: failed is true
// for an error or timeout, false for an answer (a miss included). cause is
// the failure, for the log.
func (b *breaker) done(probe, failed bool, cause error) {
	b.mu.Lock()
	var opened, reopened, closed bool
	var failures, calls int
	switch {
	case probe && failed:
		b.probing = false
		b.wait = min(2*b.wait, b.cooldown)
		b.until = b.now().Add(b.wait)
		reopened = true
	case probe:
		b.probing, b.open, b.history, b.calls = false, false, 0, 0
		closed = true
	case b.open:
		// A call from before the breaker opened: its result says nothing
		// about the store now.
	default:
		b.history <<= 1
		if failed {
			b.history |= 1
		}
		b.calls = min(b.calls+1, breakerWindow)
		failures = bits.OnesCount64(b.history & (1<<breakerWindow - 1))
		// A timeout may be the scheduler's (#12): only when half of a
		// whole window timed out or failed is it the store's.
		window := b.calls
		if resultOf(cause) == resultTimeout {
			window = breakerWindow
		}
		if failed && failures >= b.threshold && 2*failures >= window {
			b.open = true
			b.wait = min(firstProbe, b.cooldown)
			b.until = b.now().Add(b.wait)
			opened = true
		}
		calls = b.calls
	}
	b.mu.Unlock()
	switch {
	case opened:
		b.log.Warn("session store breaker open", zap.Int("failures", failures), zap.Int("calls", calls), zap.Error(cause))
	case reopened:
		b.log.Debug("session store probe failed", zap.Error(cause))
	case closed:
		b.log.Info("session store breaker closed")
	}
}

// isOpen reports whether the breaker is open or half-open.
func (b *breaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}
