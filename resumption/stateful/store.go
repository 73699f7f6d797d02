package stateful

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// The Backend's store calls: each is timed and counted, and calls to the
// shared store go through the breaker and feed it.

// sharedGet reads key from the shared store within Timeout, unless the
// breaker skips it (errBreakerOpen).
func (s *Backend) sharedGet(key string) ([]byte, error) {
	ok, probe := s.breaker.allow()
	if !ok {
		s.m.skip(opGet)
		return nil, errBreakerOpen
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
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
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
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
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
	}
	start := time.Now()
	err := s.shared.Delete(ctx, key)
	elapsed := time.Since(start)
	cancel()
	failed := s.sharedDone(opDelete, elapsed, err)
	s.breaker.done(false, failed, err)
	return err
}

// sharedDone counts a shared store call and reports whether it failed (an
// error or timeout; a miss is an answer).
func (s *Backend) sharedDone(op int, elapsed time.Duration, err error) (failed bool) {
	r := resultOf(err)
	s.m.call(op, r, elapsed)
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
