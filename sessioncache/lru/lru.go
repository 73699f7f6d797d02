// Package lru is an in-process sessioncache.Store: a least-recently-used
// cache bounded by entry count and by the total length of its keys and
// values, with a time to live per entry.
//
// It backs the "sticky" resumption mode, where each node remembers only its
// own sessions, and the small local cache that shared modes keep beside Redis
// or memcached for when the shared store is slow or down.
package lru

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

const (
	// DefaultMaxEntries is the entry bound used when Config.MaxEntries is zero.
	DefaultMaxEntries = 100_000
	// DefaultMaxBytes is the byte bound used when Config.MaxBytes is zero.
	DefaultMaxBytes = 64 << 20
)

// ErrTooLarge is returned (wrapped) by Put when len(key)+len(val) exceeds the
// store's MaxBytes. Such a value is never stored, and any earlier value under
// the same key is deleted, so a later Get misses. Callers treat it like any
// other Put failure: the session is not resumable, and the handshake that
// created it is unaffected.
var ErrTooLarge = errors.New("sessioncache/lru: value too large")

// Config configures a Store. The zero Config is valid and uses the defaults.
type Config struct {
	// MaxEntries bounds the number of entries. If zero, DefaultMaxEntries is
	// used. It must not be negative.
	MaxEntries int

	// MaxBytes bounds the sum of len(key)+len(val) over all entries; the
	// per-entry bookkeeping (about 100 bytes) is not counted. If zero,
	// DefaultMaxBytes is used. It must not be negative.
	MaxBytes int64

	// Now returns the current time, against which TTLs are measured. If nil,
	// time.Now is used. Tests inject a fake clock here.
	Now func() time.Time
}

// Validate reports the first invalid field of c, without side effects.
func (c Config) Validate() error {
	if c.MaxEntries < 0 {
		return fmt.Errorf("lru.max_entries: must not be negative, got %d", c.MaxEntries)
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("lru.max_bytes: must not be negative, got %d", c.MaxBytes)
	}
	return nil
}

// entry is one cached value and its links in the recency list.
type entry struct {
	prev, next *entry
	key        string
	val        []byte    // never written after Put stores it: Get copies it outside the lock
	expires    time.Time // the entry is a miss at and after this instant
}

// Store is an in-process LRU sessioncache.Store. Get, Put and Delete run in
// O(1) time and are safe for concurrent use.
//
// When a Put would exceed MaxEntries or MaxBytes, the least recently used
// entries are evicted to make room. An expired entry is a miss and is removed
// when Get finds it; until then (or until it is evicted) it still counts
// towards Len and Bytes. Put copies val and Get returns a fresh copy, so
// neither side can alter what the other holds.
//
// The zero Store is ready to use with the defaults of a zero Config. A Store
// must not be copied after first use.
type Store struct {
	maxEntries int
	maxBytes   int64
	now        func() time.Time

	// mu guards items, root and bytes: the map, the recency list threaded
	// through its entries, and the sum of their sizes.
	mu    sync.Mutex
	items map[string]*entry
	root  entry // sentinel: root.next is the most recently used entry, root.prev the least
	bytes int64
}

// New returns an empty Store configured by cfg, or cfg's validation error.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sessioncache/lru: %w", err)
	}
	return &Store{maxEntries: cfg.MaxEntries, maxBytes: cfg.MaxBytes, now: cfg.Now}, nil
}

func (s *Store) maxEntriesOrDefault() int {
	if s.maxEntries > 0 {
		return s.maxEntries
	}
	return DefaultMaxEntries
}

func (s *Store) maxBytesOrDefault() int64 {
	if s.maxBytes > 0 {
		return s.maxBytes
	}
	return DefaultMaxBytes
}

func (s *Store) time() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// check returns the error for a call that must not proceed: a done ctx or an
// illegal key.
func check(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sessioncache/lru: %s: %w", op, err)
	}
	if err := sessioncache.CheckKey(key); err != nil {
		return fmt.Errorf("sessioncache/lru: %s: %w", op, err)
	}
	return nil
}

// Get returns a copy of the value stored under key. It returns
// sessioncache.ErrMiss if the key is absent or its TTL has passed, and an
// error wrapping ctx.Err() if ctx is already done.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	if err := check(ctx, "get", key); err != nil {
		return nil, err
	}
	now := s.time()
	s.mu.Lock()
	e := s.items[key]
	if e == nil {
		s.mu.Unlock()
		return nil, sessioncache.ErrMiss
	}
	if !now.Before(e.expires) {
		s.unlink(e)
		s.mu.Unlock()
		return nil, sessioncache.ErrMiss
	}
	s.moveToFront(e)
	v := e.val
	s.mu.Unlock()
	// Stored slices are never written, so the copy can be made unlocked.
	return append(make([]byte, 0, len(v)), v...), nil
}

// Put stores a copy of val under key for ttl, replacing any earlier value,
// and evicts least recently used entries as needed. It returns an error if
// ctx is done, key is illegal (see sessioncache.CheckKey) or ttl is not
// positive, and an error wrapping ErrTooLarge if the entry alone exceeds
// MaxBytes.
func (s *Store) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := check(ctx, "put", key); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("sessioncache/lru: put: ttl must be positive, got %q", ttl)
	}
	size := int64(len(key)) + int64(len(val))
	if max := s.maxBytesOrDefault(); size > max {
		s.mu.Lock()
		if e := s.items[key]; e != nil {
			s.unlink(e)
		}
		s.mu.Unlock()
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, max)
	}
	v := append(make([]byte, 0, len(val)), val...)
	expires := s.time().Add(ttl)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items == nil {
		s.items = make(map[string]*entry)
		s.root.next, s.root.prev = &s.root, &s.root
	}
	if e := s.items[key]; e != nil {
		s.bytes += int64(len(v)) - int64(len(e.val))
		e.val, e.expires = v, expires
		s.moveToFront(e)
		// e is at the front and fits alone, so this stops before reaching it.
		for s.bytes > s.maxBytesOrDefault() {
			s.unlink(s.root.prev)
		}
		return nil
	}
	// Make room, recycling the first evicted entry to save an allocation.
	var e *entry
	maxEntries, maxBytes := s.maxEntriesOrDefault(), s.maxBytesOrDefault()
	for len(s.items) >= maxEntries || s.bytes+size > maxBytes {
		victim := s.root.prev
		s.unlink(victim)
		if e == nil {
			e = victim
		}
	}
	if e == nil {
		e = new(entry)
	}
	*e = entry{key: key, val: v, expires: expires}
	s.pushFront(e)
	s.items[key] = e
	s.bytes += size
	return nil
}

// Delete removes key. Deleting a missing key returns nil. It returns an
// error if ctx is done or key is illegal.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key); err != nil {
		return err
	}
	s.mu.Lock()
	if e := s.items[key]; e != nil {
		s.unlink(e)
	}
	s.mu.Unlock()
	return nil
}

// Len returns the number of entries, including expired ones not yet removed.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// Bytes returns the sum of len(key)+len(val) over the entries counted by Len.
func (s *Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// pushFront links e as the most recently used entry. s.mu must be held.
func (s *Store) pushFront(e *entry) {
	e.prev, e.next = &s.root, s.root.next
	s.root.next.prev = e
	s.root.next = e
}

// moveToFront marks e as the most recently used entry. s.mu must be held.
func (s *Store) moveToFront(e *entry) {
	if s.root.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFront(e)
}

// unlink removes e from the list and the map and releases its value. s.mu
// must be held.
func (s *Store) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(s.items, e.key)
	s.bytes -= int64(len(e.key)) + int64(len(e.val))
	e.val = nil
}

var _ sessioncache.Store = (*Store)(nil)
