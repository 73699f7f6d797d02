package ticketkeys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults shared by the sources.
const (
	// DefaultRotateEvery is how often generated and shared keys rotate.
	DefaultRotateEvery = time.Hour
	// DefaultKeyLifetime is how long a key keeps opening tickets after it
	// stops sealing, when a source's Lifetime (the session lifetime the
	// ring must cover) is zero: 24h, the RFC 5246 maximum for a session.
	// internal/app sets Lifetime to the session lifetime in force
	// (resumption.SessionLifetime), so this default applies only to other
	// callers.
	DefaultKeyLifetime = 24 * time.Hour
	// DefaultRetryMin and DefaultRetryMax bound the backoff after a failed
	// rotation, reload or refresh. Each retry waits between half and all of
	// min(DefaultRetryMax, DefaultRetryMin<<(failures-1)).
	DefaultRetryMin = time.Second
	DefaultRetryMax = 2 * time.Minute
)

// Source keeps a Holder's ring current, in the spirit of Caddy's
// STEKProvider: Start publishes the first ring, then a background goroutine
// publishes each new one until Close.
//
// Start publishes a ring into the Holder before it returns nil, and returns
// an error (with nothing left running) if it cannot. ctx bounds only that
// first load; the background goroutine runs until Close. Start may be called
// once.
//
// Close stops the background goroutine and waits for it. It does not close
// the Holder, whose owner closes it once handshakes have stopped. Close is
// idempotent and may be called without Start.
//
// Degraded reports whether the source failed its last attempt to update the
// ring and is serving the last good one; it recovers by itself. Status gives
// the details for health endpoints.
//
// A background loop that fails or panics logs it, counts it, and retries with
// exponential backoff and jitter; it never stops rotating until Close.
// Sources are safe for concurrent use.
type Source interface {
	Start(ctx context.Context) error
	Close() error
	Degraded() bool
	Status() Status
}

// Reloader is implemented by sources that can be told to re-read their key
// material now, for example on SIGHUP. Reload returns the error of that
// attempt; on error the source keeps its current ring.
type Reloader interface {
	Reload() error
}

// Status describes a source for health checks and logs. It never contains key
// material.
type Status struct {
	// Source is "generate", "file" or "redis".
	Source string
	// Degraded is true while the last update attempt failed.
	Degraded bool
	// Err is the error of the last attempt, nil if it succeeded.
	Err error
	// Failures counts consecutive failed attempts.
	Failures int
	// LastSuccess is when the ring was last brought up to date.
	LastSuccess time.Time
	// Keys is the number of keys in the current ring.
	Keys int
	// Current names the sealing key (zero before the first ring).
	Current Name
	// CurrentCreated is when the sealing key was created (zero if unknown).
	CurrentCreated time.Time
}

// ErrClosed is returned by Start after Close or when called twice, and by
// Rotate and Reload after Close.
var ErrClosed = errors.New("ticketkeys: source closed or already started")

// idle, returned by a step, waits for a kick instead of a timer.
const idle time.Duration = -1

// runner is the part shared by every source: the lifecycle (Start once,
// Close signals and waits), the background loop with backoff and panic
// recovery, status and metrics.
type runner struct {
	source   string
	holder   *Holder
	log      *zap.Logger
	metrics  *Metrics
	now      func() time.Time
	retryMin time.Duration // tests shorten it
	retryMax time.Duration

	// ctx is cancelled by Close, so the goroutines and any call in flight
	// return.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the goroutines started by spawn; Close waits for them.
	wg sync.WaitGroup

	// lifeMu protects started and closed, and orders spawn before Close.
	lifeMu  sync.Mutex
	started bool // Start was called
	closed  bool

	// statusMu protects status.
	statusMu sync.Mutex
	status   Status
}

func newRunner(source string, h *Holder, log *zap.Logger, m *Metrics, now func() time.Time) runner {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return runner{
		source:   source,
		holder:   h,
		log:      log.With(zap.String("source", source)),
		metrics:  m,
		now:      now,
		retryMin: DefaultRetryMin,
		retryMax: DefaultRetryMax,
		ctx:      ctx,
		cancel:   cancel,
		status:   Status{Source: source},
	}
}

// begin marks the runner started, or reports that it cannot start.
func (r *runner) begin() error {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.started || r.closed {
		return ErrClosed
	}
	r.started = true
	return nil
}

// spawn runs f in a goroutine that Close waits for. It reports false,
// running nothing, if Close came first.
func (r *runner) spawn(f func()) bool {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// launch attaches the metrics and starts the loop: the first step runs after
// first (idle: at the first kick), and a kick (kick may be nil) runs a step
// kickDelay later. It reports false if Close came first.
func (r *runner) launch(step func() (time.Duration, error), first time.Duration, kick <-chan struct{}, kickDelay time.Duration) bool {
	r.metrics.attach(r)
	if !r.spawn(func() { r.loop(step, first, kick, kickDelay) }) {
		r.metrics.detach(r)
		return false
	}
	return true
}

// Close implements Source.
func (r *runner) Close() error {
	r.lifeMu.Lock()
	if r.closed {
		r.lifeMu.Unlock()
		return nil
	}
	r.closed = true
	r.lifeMu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.metrics.detach(r)
	return nil
}

// stopped reports whether Close has been called.
func (r *runner) stopped() bool { return r.ctx.Err() != nil }

// Degraded implements Source.
func (r *runner) Degraded() bool {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	return r.status.Degraded
}

// Status implements Source.
func (r *runner) Status() Status {
	r.statusMu.Lock()
	st := r.status
	r.statusMu.Unlock()
	if ring := r.holder.Ring(); ring != nil {
		st.Keys = ring.Len()
		st.Current = ring.Current().Name
		st.CurrentCreated = ring.Current().Created
	}
	return st
}

// record notes the outcome of an update attempt in the status and metrics,
// and logs failures.
func (r *runner) record(err error) {
	r.metrics.rotation(r.source, err)
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	r.status.Err = err
	r.status.Degraded = err != nil
	if err != nil {
		r.status.Failures++
		r.log.Warn("ticket key update failed", zap.Int("failures", r.status.Failures), zap.Error(err))
		return
	}
	r.status.Failures = 0
	r.status.LastSuccess = r.now()
}

// publish stores ring and logs the new sealing key by name (names are
// public: every ticket carries one).
func (r *runner) publish(ring *Ring) {
	r.holder.Store(ring)
	r.log.Info("ticket key ring updated",
		zap.Stringer("current_key", ring.Current().Name), zap.Int("ring_size", ring.Len()))
}

func (r *runner) loop(step func() (time.Duration, error), first time.Duration, kick <-chan struct{}, kickDelay time.Duration) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	if first >= 0 {
		timer.Reset(first)
	}
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-kick:
			timer.Reset(kickDelay)
			continue
		case <-timer.C:
		}
		next, err := r.safeStep(step)
		if r.stopped() {
			return
		}
		if err != nil {
			failures++
			next = r.backoff(failures)
		} else {
			failures = 0
		}
		if next >= 0 {
			timer.Reset(next)
		}
	}
}

// safeStep runs step, turning a panic into an error so the loop re-arms
// instead of dying.
func (r *runner) safeStep(step func() (time.Duration, error)) (next time.Duration, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ticketkeys: %s source panicked: %v", r.source, p)
			r.log.Error("ticket key loop panicked", zap.Any("panic", p), zap.Stack("stack"))
			r.record(err)
		}
	}()
	return step()
}

// backoff returns the wait before retry number failures (from 1): between
// half and all of min(retryMax, retryMin<<(failures-1)).
func (r *runner) backoff(failures int) time.Duration {
	d := r.retryMax
	if failures < 32 {
		if b := r.retryMin << (failures - 1); b > 0 && b < d {
			d = b
		}
	}
	half := d / 2
	return half + mrand.N(d-half+1)
}

// randReader returns rnd, or crypto/rand.Reader if nil.
func randReader(rnd io.Reader) io.Reader {
	if rnd == nil {
		return rand.Reader
	}
	return rnd
}

// checkNew reports why a source cannot be built on h with cfg: a nil Holder,
// or cfg's own Validate error.
func checkNew(h *Holder, cfg interface{ Validate() error }) error {
	if h == nil {
		return errors.New("ticketkeys: holder is nil")
	}
	return cfg.Validate()
}

// apply runs f, a reload or rotation that needs mu, unless the source is
// closed (ErrClosed), and records its outcome in the status and metrics.
func (r *runner) apply(mu *sync.Mutex, f func() error) error {
	if r.stopped() {
		return ErrClosed
	}
	mu.Lock()
	defer mu.Unlock()
	err := f()
	r.record(err)
	return err
}

// validateDuration checks an optional duration field: zero means the default,
// and anything else must be positive.
func validateDuration(field string, v time.Duration) error {
	if v < 0 {
		return fmt.Errorf("ticketkeys.%s: must be positive, got %q", field, v.String())
	}
	return nil
}

// pastKeys returns how many keys besides the sealing one cover a session
// lifetime with keys rotating every rotate: ceil(lifetime/rotate).
// Both must be positive.
func pastKeys(lifetime, rotate time.Duration) int64 {
	n := int64(lifetime / rotate)
	if lifetime%rotate != 0 {
		n++
	}
	return n
}
