package certstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// unlockScript deletes the lock only if it still holds the caller's token.
var unlockScript = goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// extendScript sets a new expiry (ms) on the lock only if it still holds the
// caller's token.
var extendScript = goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// Lock takes the named lock, waiting (polling every PollInterval) while
// another holder has it, until ctx ends. Another goroutine of the same
// Storage is another holder: a second Lock of a held name waits too.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := s.TryLock(ctx, name)
		if cerr := ctxErr(ctx); err != nil && cerr != nil {
			// go-redis reports a deadline reached mid-call as an i/o
			// timeout; the caller asked for ctx's error.
			return fmt.Errorf("certstore: waiting for lock %q: %w", name, cerr)
		}
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(s.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("certstore: waiting for lock %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// ctxErr is ctx.Err(), or DeadlineExceeded once ctx's deadline passed even
// if its timer has not fired yet (the socket deadline go-redis derives from
// it can fire first).
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// TryLock takes the named lock if it is free and reports whether it did.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, fmt.Errorf("certstore: lock token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	ok, err := s.client.SetNX(ctx, s.lockKey(name), token, s.ttl).Result()
	if err != nil {
		return false, fmt.Errorf("certstore: locking %q: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	if _, dup := s.held[name]; dup {
		// Another goroutine of this Storage holds the lock in Redis
		// under its token, so SETNX cannot have succeeded: the entry is
		// stale (its key expired). Replace it.
		old := s.held[name]
		close(old.stop)
		defer func() { <-old.done }()
	}
	s.held[name] = h
	s.mu.Unlock()
	go s.keepalive(name, h)
	return true, nil
}

// keepalive extends the lock every ttl/3 until stopped or the lock is lost.
func (s *Storage) keepalive(name string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.ttl/3)
		n, err := extendScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token, s.ttl.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			// Keep trying: the lock survives until its expiry.
			s.log.Warn("lock keepalive failed", zap.String("lock", name), zap.Error(err))
		case n == 0:
			s.log.Error("lock lost: it expired and another holder may have it", zap.String("lock", name))
			return
		}
	}
}

// take removes and returns this Storage's record of the named lock after
// stopping its keepalive, or nil.
func (s *Storage) take(name string) *heldLock {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h != nil {
		close(h.stop)
		<-h.done
	}
	return h
}

// Unlock releases the named lock if this Storage holds it. It returns
// ErrNotOwner, and deletes nothing, if the lock was not taken here or has
// since expired and been taken by another holder.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	h := s.take(name)
	if h == nil {
		return fmt.Errorf("unlocking %q: %w", name, ErrNotOwner)
	}
	n, err := unlockScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token).Int()
	if err != nil {
		return fmt.Errorf("certstore: unlocking %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("unlocking %q: %w", name, ErrNotOwner)
	}
	return nil
}

// RenewLockLease extends a held lock's expiry to lease once (the keepalive
// keeps extending it by LockTTL afterwards).
func (s *Storage) RenewLockLease(ctx context.Context, name string, lease time.Duration) error {
	s.mu.Lock()
	h := s.held[name]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("renewing %q: %w", name, ErrNotOwner)
	}
	n, err := extendScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token, lease.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("certstore: renewing %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("renewing %q: %w", name, ErrNotOwner)
	}
	return nil
}
