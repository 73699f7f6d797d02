package stateful

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// breaker is the circuit breaker in front of a shared session store.
//
// Closed, every call goes to the store, and Failures consecutive failures
// open it. Open, calls skip the store until Cooldown has passed. Then the
// first caller becomes the probe (half-open): it alone calls the store, while
// concurrent callers keep skipping it rather than wait, since a probe of a
// store that is still down takes the whole per-call Timeout. The probe's
// success closes the breaker; its failure opens it for another Cooldown.
// Results of calls that started while the breaker was closed but end after
// it opened are ignored.
//
// It is safe for concurrent use and must not be copied.
type breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time
	log       *zap.Logger

	// mu protects open, fails, until and probing: the breaker's state. It is
	// held only for a few comparisons, never across a store call.
	mu      sync.Mutex
	open    bool      // open or half-open
	fails   int       // consecutive failures while closed
	until   time.Time // while open: when the next probe may start
	probing bool      // while open: a probe is in flight
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
	switch {
	case probe && failed:
		b.probing = false
		b.until = b.now().Add(b.cooldown)
		reopened = true
	case probe:
		b.probing, b.open, b.fails = false, false, 0
		closed = true
	case b.open:
		// A call from before the breaker opened: its result says nothing
		// about the store now.
	case failed:
		b.fails++
		if b.fails >= b.threshold {
			b.open, b.fails = true, 0
			b.until = b.now().Add(b.cooldown)
			opened = true
		}
	default:
		b.fails = 0
	}
	b.mu.Unlock()
	switch {
	case opened:
		b.log.Warn("session store breaker open", zap.Int("failures", b.threshold), zap.Duration("cooldown", b.cooldown), zap.Error(cause))
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
