// Package certstore is a certmagic.Storage on Redis, so that a fleet shares
// its ACME certificates, account and challenge tokens, and takes ACME locks
// in one place: one node orders a certificate, the others load it.
//
// It lives beside the session store (sessioncache/redis) and is built from
// the same redis.Config, through the same constructor: single node,
// Sentinel, Cluster, TLS and password files behave identically (#9).
//
// # Layout
//
// Every key shares one Redis Cluster hash tag, so that the multi-key
// transactions below stay in one slot:
//
//	KeyPrefix + "{edgeproxy/v1/certmagic}/f/" + key   hash {v: value, m: unix ms modified}
//	KeyPrefix + "{edgeproxy/v1/certmagic}/index"      sorted set of every file key (score 0, ordered by name)
//	KeyPrefix + "{edgeproxy/v1/certmagic}/lock/" + n  lock token, with an expiry
//
// Directories are implicit: a key is a directory when the index holds a
// member under key + "/". Certificates are a few kilobytes and a fleet has
// at most thousands, so one slot is not a bottleneck.
//
// # Locks
//
// Lock sets the lock key to a random token with SET NX PX LockTTL. While the
// lock is held, a goroutine extends the expiry every LockTTL/3, but only if
// the key still holds this holder's token. Unlock deletes the key only if it
// still holds the token (compare-and-delete in one Lua script): a holder
// whose lock expired, and was taken by another node, cannot release the new
// holder's lock. A holder that dies stops extending, and its lock expires
// after at most LockTTL.
package certstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

// Defaults for Config fields left zero.
const (
	// DefaultLockTTL is how long a lock outlives a holder that stopped
	// extending it.
	DefaultLockTTL = 30 * time.Second
	// DefaultPollInterval is how often a waiting Lock retries.
	DefaultPollInterval = time.Second
	// DefaultTimeout bounds each Redis call when Redis.Timeout is zero. It
	// is longer than the session store's: nothing here runs inside a
	// handshake's budget except a cold certificate load.
	DefaultTimeout = 5 * time.Second
)

// ErrNotOwner is returned by Unlock and RenewLockLease when the lock is not
// held by this Storage: it was never taken here, or it expired and another
// holder took it.
var ErrNotOwner = errors.New("certstore: lock not held by this storage")

// Config configures a Storage.
type Config struct {
	// Redis is the connection, exactly as for the session store. Its
	// KeyPrefix is prepended to every key. If Redis.Timeout is zero,
	// DefaultTimeout is used.
	Redis redisstore.Config `yaml:",inline"`
	// LockTTL is how long a lock survives its holder: the expiry set on the
	// lock key, extended every LockTTL/3 while held. If zero,
	// DefaultLockTTL.
	LockTTL time.Duration `yaml:"lock_ttl"`
	// PollInterval is how often Lock retries a lock held elsewhere. If
	// zero, DefaultPollInterval.
	PollInterval time.Duration `yaml:"-"`
	// Logger receives lock keepalive failures. If nil, nothing is logged.
	Logger *zap.Logger `yaml:"-"`
}

// Validate checks cfg without I/O.
func (c Config) Validate() error {
	if err := c.Redis.Validate(); err != nil {
		return err
	}
	if c.LockTTL < 0 {
		return fmt.Errorf("redis.lock_ttl: must not be negative, got %q", c.LockTTL)
	}
	if c.LockTTL > 0 && c.LockTTL < 30*time.Millisecond {
		return fmt.Errorf("redis.lock_ttl: %q is too short to be kept alive; use at least 30ms", c.LockTTL)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("redis.poll_interval: must not be negative, got %q", c.PollInterval)
	}
	return nil
}

// Storage is a certmagic.Storage, TryLocker and LockLeaseRenewer on Redis.
// It is safe for concurrent use. Close it when done: that stops the
// keepalives of held locks (they then expire) and closes the client.
type Storage struct {
	store  *redisstore.Store
	client goredis.UniversalClient
	prefix string
	ttl    time.Duration
	poll   time.Duration
	log    *zap.Logger

	// mu protects held, the locks this Storage holds by name.
	mu   sync.Mutex
	held map[string]*heldLock
}

// heldLock is one lock this Storage holds, and its keepalive goroutine.
type heldLock struct {
	token string
	stop  chan struct{} // closed to end the keepalive
	done  chan struct{} // closed when the keepalive returned
}

// New builds a Storage from cfg through redisstore.New: it reads the
// password and CA files but does not connect.
func New(cfg Config) (*Storage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("certstore: %w", err)
	}
	rc := cfg.Redis
	rc.Timeout = cmp.Or(rc.Timeout, DefaultTimeout)
	st, err := redisstore.New(rc)
	if err != nil {
		return nil, err
	}
	return &Storage{
		store:  st,
		client: st.Client(),
		prefix: cfg.Redis.KeyPrefix + "{edgeproxy/v1/certmagic}/",
		ttl:    cmp.Or(cfg.LockTTL, DefaultLockTTL),
		poll:   cmp.Or(cfg.PollInterval, DefaultPollInterval),
		log:    cmp.Or(cfg.Logger, zap.NewNop()),
		held:   map[string]*heldLock{},
	}, nil
}

// Ping checks that Redis answers.
func (s *Storage) Ping(ctx context.Context) error { return s.store.Ping(ctx) }

// Close stops every lock keepalive without releasing the locks (they
// expire after LockTTL, as a crashed holder's would) and closes the client.
func (s *Storage) Close() error {
	s.mu.Lock()
	held := s.held
	s.held = map[string]*heldLock{}
	s.mu.Unlock()
	for _, h := range held {
		close(h.stop)
		<-h.done
	}
	return s.store.Close()
}

func (s *Storage) fileKey(key string) string { return s.prefix + "f/" + key }
func (s *Storage) indexKey() string          { return s.prefix + "index" }
func (s *Storage) lockKey(name string) string {
	return s.prefix + "lock/" + name
}

// checkKey rejects keys certmagic never produces: empty, or with a leading
// or trailing slash.
func checkKey(op, key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("certstore: %s: invalid key %q", op, key)
	}
	return nil
}

// Store writes value at key and records the key in the index, atomically.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if err := checkKey("store", key); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	_, err := s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.fileKey(key), "v", value, "m", time.Now().UnixMilli())
		p.ZAdd(ctx, s.indexKey(), goredis.Z{Member: key})
		return nil
	})
	if err != nil {
		return fmt.Errorf("certstore: storing %q: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.client.HGet(ctx, s.fileKey(key), "v").Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("certstore: loading %q: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("certstore: loading %q: %w", key, err)
	}
	return v, nil
}

// below returns the index members under dir ("" for all), in order.
func (s *Storage) below(ctx context.Context, dir string) ([]string, error) {
	if dir == "" {
		return s.client.ZRange(ctx, s.indexKey(), 0, -1).Result()
	}
	// "/" is 0x2F and "0" is 0x30: [dir/, dir0) is exactly the keys under dir.
	return s.client.ZRangeByLex(ctx, s.indexKey(), &goredis.ZRangeBy{Min: "[" + dir + "/", Max: "(" + dir + "0"}).Result()
}

// Delete removes key, and every key under it if it is a directory. A
// missing key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if err := checkKey("delete", key); err != nil {
		return err
	}
	keys, err := s.below(ctx, key)
	if err != nil {
		return fmt.Errorf("certstore: deleting %q: %w", key, err)
	}
	keys = append(keys, key)
	_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, s.fileKey(k))
			p.ZRem(ctx, s.indexKey(), k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("certstore: deleting %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory. An error reaching
// Redis reads as false.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List returns the keys under dir: with recursive, every file and
// directory below it; otherwise its direct children. Keys are full paths,
// as certmagic's FileStorage returns them. A dir with nothing under it
// returns an error wrapping fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = strings.Trim(dir, "/")
	keys, err := s.below(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("certstore: listing %q: %w", dir, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("certstore: listing %q: %w", dir, fs.ErrNotExist)
	}
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, k := range keys {
		rel := k
		if dir != "" {
			rel = k[len(dir)+1:]
		}
		parts := strings.Split(rel, "/")
		if !recursive {
			add(path.Join(dir, parts[0]))
			continue
		}
		for i := range parts {
			add(path.Join(dir, strings.Join(parts[:i+1], "/")))
		}
	}
	return out, nil
}

// Stat describes key: a file (size and modification time) or a directory
// (neither). A missing key returns an error wrapping fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	vals, err := s.client.HMGet(ctx, s.fileKey(key), "v", "m").Result()
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, err)
	}
	if v, ok := vals[0].(string); ok {
		ms, _ := strconv.ParseInt(fmt.Sprint(vals[1]), 10, 64)
		return certmagic.KeyInfo{Key: key, Modified: time.UnixMilli(ms), Size: int64(len(v)), IsTerminal: true}, nil
	}
	under, err := s.client.ZRangeByLex(ctx, s.indexKey(), &goredis.ZRangeBy{Min: "[" + key + "/", Max: "(" + key + "0", Count: 1}).Result()
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, err)
	}
	if len(under) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

var _ certmagic.Storage = (*Storage)(nil)
var _ certmagic.TryLocker = (*Storage)(nil)
var _ certmagic.LockLeaseRenewer = (*Storage)(nil)
