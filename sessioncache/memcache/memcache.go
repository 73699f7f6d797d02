// Package memcache is a sessioncache.Store on memcached, through
// bradfitz/gomemcache. Keys are spread over Config.Servers by rendezvous
// hashing, so every node of the fleet must list the same servers (in any
// order), and removing one of N servers loses only the sessions it held,
// about 1/N of them.
//
// gomemcache has no context.Context. A Store honours ctx without a goroutine
// per call: it returns ctx.Err() before a call if ctx is already done, and it
// gives each call its own gomemcache client whose Timeout is min(time left
// before ctx's deadline, Config.Timeout), so the dial and every socket read
// and write are bounded by the sooner of the two. The clients are pooled and
// each holds at most one idle connection per server, so the pool is also
// the connection pool. A ctx canceled while a call is in flight is noticed
// when the call returns, which is at most the bound above later.
package memcache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	gomemcache "github.com/bradfitz/gomemcache/memcache"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

const (
	// DefaultTimeout bounds each call when Config.Timeout is zero. The
	// resumption layer passes its own, shorter per-handshake deadline in ctx;
	// this default only keeps other callers from waiting on a hung server.
	DefaultTimeout = 100 * time.Millisecond

	// DefaultMaxIdleConns is the idle-connection bound per server used when
	// Config.MaxIdleConns is zero. It is larger than gomemcache's default of
	// 2, which makes a busy proxy dial for most calls.
	DefaultMaxIdleConns = 16
)

// maxRelativeExpiration is the longest expiration memcached takes as
// relative seconds; it reads larger values as absolute Unix times.
const maxRelativeExpiration = 30 * 24 * 60 * 60

// ErrClosed is returned (wrapped in an *Error) by calls on a closed Store.
var ErrClosed = errors.New("sessioncache/memcache: store closed")

// Config configures a Store. Field names in error messages use the
// snake_case form of the field (memcached.max_idle_conns).
type Config struct {
	// Servers are the memcached servers, each host:port or the path of a
	// Unix socket (any name containing "/"). A server listed twice gets twice
	// the share of keys. Removing one of N servers loses about 1/N of the
	// sessions; adding one, about 1/(N+1). At least one is required.
	Servers []string `yaml:"servers"`

	// Timeout bounds each Get, Put and Delete: the dial and each socket read
	// and write. A shorter ctx deadline takes precedence. If zero,
	// DefaultTimeout is used.
	Timeout time.Duration `yaml:"-"`

	// MaxIdleConns bounds the idle connections kept per server. If zero,
	// DefaultMaxIdleConns is used.
	MaxIdleConns int `yaml:"max_idle_conns"`

	// KeyPrefix is prepended to every key, so several fleets can share
	// servers. The prefixed key must still pass sessioncache.CheckKey.
	KeyPrefix string `yaml:"key_prefix"`
}

// Validate reports the first invalid field of c. It does no I/O: names in
// Servers are resolved by New.
func (c Config) Validate() error {
	if len(c.Servers) == 0 {
		return errors.New("memcached.servers: at least one server is required")
	}
	for i, s := range c.Servers {
		if strings.Contains(s, "/") {
			continue // a Unix socket path
		}
		if err := sessioncache.CheckAddr(s); err != nil {
			return fmt.Errorf("memcached.servers[%d]: %q: %w", i, s, err)
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("memcached.timeout: must not be negative, got %q", c.Timeout)
	}
	if c.MaxIdleConns < 0 {
		return fmt.Errorf("memcached.max_idle_conns: must not be negative, got %d", c.MaxIdleConns)
	}
	if c.KeyPrefix != "" {
		if err := sessioncache.CheckKey(c.KeyPrefix); err != nil || len(c.KeyPrefix) >= sessioncache.MaxKeyLen {
			return fmt.Errorf("memcached.key_prefix: %q: must be shorter than %d bytes with no spaces or control bytes", c.KeyPrefix, sessioncache.MaxKeyLen)
		}
	}
	return nil
}

// Error is a failure of a memcached operation: the server could not be
// reached, did not answer in time, or answered with an error. A miss is not
// an Error: Get returns sessioncache.ErrMiss.
type Error struct {
	Op   string // "get", "put", "delete" or "ping"
	Addr string // the server the key maps to; for ping, all servers, comma-separated
	Err  error  // the cause; errors.Is finds context.Canceled and context.DeadlineExceeded in it
}

func (e *Error) Error() string {
	return "sessioncache/memcache: " + e.Op + " " + e.Addr + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the operation failed because a deadline passed:
// Config.Timeout, ctx's deadline, or a socket deadline.
func (e *Error) Timeout() bool {
	var te interface{ Timeout() bool }
	var cte *gomemcache.ConnectTimeoutError
	return errors.Is(e.Err, context.DeadlineExceeded) || errors.As(e.Err, &cte) ||
		(errors.As(e.Err, &te) && te.Timeout())
}

// Store is a sessioncache.Store on memcached. It is safe for concurrent use.
// Keys are KeyPrefix followed by the caller's key (see
// sessioncache.SessionKey).
type Store struct {
	servers *rendezvous
	all     string // every server, for Ping's errors
	prefix  string
	timeout time.Duration
	maxIdle int

	// mu guards free and closed. free holds idle clients, most recently
	// used last; each is used by one call at a time, so its Timeout can be
	// set per call without a data race.
	mu     sync.Mutex
	free   []*gomemcache.Client
	closed bool
}

// New builds a Store from cfg. It validates cfg and resolves the server
// names (gomemcache's own New ignores that error), but does not connect:
// call Ping to check that the servers are reachable. Its errors start with
// the field at fault (memcached.servers: ...).
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	servers, err := newRendezvous(cfg.Servers...)
	if err != nil {
		return nil, fmt.Errorf("memcached.servers: resolving: %w", err)
	}
	s := &Store{
		servers: servers,
		all:     strings.Join(cfg.Servers, ","),
		prefix:  cfg.KeyPrefix,
		timeout: cfg.Timeout,
		maxIdle: cfg.MaxIdleConns,
	}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.maxIdle == 0 {
		s.maxIdle = DefaultMaxIdleConns
	}
	return s, nil
}

// Close closes the idle connections; calls after Close fail with ErrClosed.
// Calls in flight finish, and their connections are closed when they do.
func (s *Store) Close() error {
	s.mu.Lock()
	free := s.free
	s.free, s.closed = nil, true
	s.mu.Unlock()
	var first error
	for _, c := range free {
		if err := c.Close(); err != nil && first == nil {
			first = fmt.Errorf("sessioncache/memcache: closing: %w", err)
		}
	}
	return first
}

// acquire returns a client for one call, with its Timeout set to the call's
// bound: min(Config.Timeout, time left before ctx's deadline). byCtx reports
// that ctx's deadline was the sooner. The caller must release the client.
func (s *Store) acquire(ctx context.Context) (c *gomemcache.Client, byCtx bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	timeout := s.timeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < timeout {
			if left <= 0 {
				return nil, false, context.DeadlineExceeded
			}
			timeout, byCtx = left, true
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, ErrClosed
	}
	if n := len(s.free); n > 0 {
		c = s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
	}
	s.mu.Unlock()
	if c == nil {
		c = gomemcache.NewFromSelector(s.servers)
		c.MaxIdleConns = 1
	}
	c.Timeout = timeout
	return c, byCtx, nil
}

// release returns c to the pool, or closes its connections if the pool is
// full or the Store closed.
func (s *Store) release(c *gomemcache.Client) {
	s.mu.Lock()
	if !s.closed && len(s.free) < s.maxIdle {
		s.free = append(s.free, c)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	_ = c.Close()
}

// key returns the server key for key, or an error if key is illegal or too
// long once prefixed.
func (s *Store) key(op, key string) (string, error) {
	if err := sessioncache.CheckKey(key); err != nil {
		return "", fmt.Errorf("sessioncache/memcache: %s: %w", op, err)
	}
	if s.prefix == "" {
		return key, nil
	}
	if n := len(s.prefix) + len(key); n > sessioncache.MaxKeyLen {
		return "", fmt.Errorf("sessioncache/memcache: %s: key is %d bytes with its prefix, limit %d", op, n, sessioncache.MaxKeyLen)
	}
	return s.prefix + key, nil
}

// fail wraps err from a call on key into an *Error naming key's server. If
// ctx is done, or the call's bound came from ctx's deadline and has passed,
// the error wraps ctx's error too.
func (s *Store) fail(ctx context.Context, op, key string, byCtx bool, err error) error {
	cerr := ctx.Err()
	if cerr == nil && byCtx {
		if dl, _ := ctx.Deadline(); !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	addr := s.all
	if a, perr := s.servers.PickServer(key); perr == nil {
		addr = a.String()
	}
	return &Error{Op: op, Addr: addr, Err: err}
}

// Get returns the value stored under key. It returns sessioncache.ErrMiss
// if the key is absent or expired, an error if key is illegal, and an *Error
// if the server could not answer, including when ctx is done or the call
// took longer than Config.Timeout.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	k, err := s.key("get", key)
	if err != nil {
		return nil, err
	}
	c, byCtx, err := s.acquire(ctx)
	if err != nil {
		return nil, s.fail(ctx, "get", k, byCtx, err)
	}
	it, err := c.Get(k)
	s.release(c)
	if errors.Is(err, gomemcache.ErrCacheMiss) {
		return nil, sessioncache.ErrMiss
	}
	if err != nil {
		return nil, s.fail(ctx, "get", k, byCtx, err)
	}
	if it.Value == nil {
		return []byte{}, nil
	}
	return it.Value, nil
}

// Put stores val under key for ttl, replacing any earlier value. memcached
// counts whole seconds, so ttl is rounded up to one; a ttl above 30 days is
// sent as an absolute Unix time, as memcached requires. Put returns an error
// if key is illegal or ttl is not positive (or ends after 2038, beyond
// memcached's 32-bit times), and an *Error if the server did not store the
// value (values above the server's item size limit, 1 MiB by default, are
// refused).
func (s *Store) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	k, err := s.key("put", key)
	if err != nil {
		return err
	}
	exp, err := expiration(ttl, time.Now())
	if err != nil {
		return fmt.Errorf("sessioncache/memcache: put: %w", err)
	}
	c, byCtx, err := s.acquire(ctx)
	if err != nil {
		return s.fail(ctx, "put", k, byCtx, err)
	}
	err = c.Set(&gomemcache.Item{Key: k, Value: val, Expiration: exp})
	s.release(c)
	if err != nil {
		return s.fail(ctx, "put", k, byCtx, err)
	}
	return nil
}

// expiration returns memcached's expiration for ttl from now: whole seconds,
// rounded up, or an absolute Unix time (also rounded up) beyond 30 days.
func expiration(ttl time.Duration, now time.Time) (int32, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("ttl must be positive, got %q", ttl)
	}
	secs := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		secs++
	}
	if secs <= maxRelativeExpiration {
		return int32(secs), nil
	}
	end := now.Add(ttl)
	abs := end.Unix()
	if end.Nanosecond() != 0 {
		abs++
	}
	if abs > math.MaxInt32 {
		return 0, fmt.Errorf("ttl %q ends after memcached's last time (2038-01-19)", ttl)
	}
	return int32(abs), nil
}

// Delete removes key. Deleting a missing key returns nil. It returns an
// error if key is illegal and an *Error if the server could not answer.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.key("delete", key)
	if err != nil {
		return err
	}
	c, byCtx, err := s.acquire(ctx)
	if err != nil {
		return s.fail(ctx, "delete", k, byCtx, err)
	}
	err = c.Delete(k)
	s.release(c)
	if err != nil && !errors.Is(err, gomemcache.ErrCacheMiss) {
		return s.fail(ctx, "delete", k, byCtx, err)
	}
	return nil
}

// Ping checks that every server answers, each within the same bound as
// Get.
func (s *Store) Ping(ctx context.Context) error {
	c, byCtx, err := s.acquire(ctx)
	if err == nil {
		err = c.Ping()
		s.release(c)
	}
	if err != nil {
		e := s.fail(ctx, "ping", "", byCtx, err).(*Error)
		e.Addr = s.all
		return e
	}
	return nil
}

var _ sessioncache.Store = (*Store)(nil)
