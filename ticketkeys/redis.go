package ticketkeys

import (
	"bytes"
	"cmp"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// Redis source defaults.
const (
	// DefaultRefreshEvery is how often a RedisSource re-reads the shared
	// keys between epoch boundaries: it rewrites keys the store lost and
	// picks up keys other nodes created.
	DefaultRefreshEvery = 30 * time.Second
	// DefaultRedisTimeout bounds one refresh (one pipelined round trip).
	DefaultRedisTimeout = 2 * time.Second
	// minRedisRotate is the shortest epoch a RedisSource accepts.
	minRedisRotate = time.Second
)

// ErrUnavailable means the shared key store could not be reached. The source
// keeps its ring, reports Degraded, and retries with backoff.
var ErrUnavailable = errors.New("ticketkeys: key store unavailable")

// RedisClient is the part of a go-redis client the RedisSource uses. Every
// redis.UniversalClient (single node, Sentinel, Cluster) implements it; a
// Cluster client splits the pipeline by slot.
type RedisClient interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// RedisConfig configures a RedisSource.
type RedisConfig struct {
	// Client reaches the shared store. Required.
	Client RedisClient
	// KEKFile is a file of exactly KEKSize random bytes, readable by its
	// owner only, that wraps ticket keys before they are stored. Every node
	// of the fleet needs the same one. Required.
	KEKFile string
	// Prefix is put in front of every store key (see
	// sessioncache.TicketKeyKey); fleets sharing one store need different
	// prefixes. It may be empty.
	Prefix string
	// RotateEvery is the epoch length: the key of epoch floor(now /
	// RotateEvery) seals. Every node needs the same value. If zero,
	// DefaultRotateEvery is used; at least one second.
	RotateEvery time.Duration
	// Lifetime is the session lifetime the ring must cover. If zero,
	// DefaultKeyLifetime is used.
	Lifetime time.Duration
	// RefreshEvery is the longest wait between two refreshes within an
	// epoch. If zero, DefaultRefreshEvery is used.
	RefreshEvery time.Duration
	// Timeout bounds each refresh. If zero, DefaultRedisTimeout is used.
	Timeout time.Duration
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Rand is the source of key bytes and nonces. If nil,
	// crypto/rand.Reader is used.
	Rand io.Reader
	// Logger receives refresh logs. If nil, nothing is logged.
	Logger *zap.Logger
	// Metrics receives refresh counts and ring gauges. If nil, none.
	Metrics *Metrics
}

// Validate reports configuration mistakes without reaching Redis or reading
// the KEK file.
func (c RedisConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("ticketkeys.redis: a client is required"))
	}
	if c.KEKFile == "" {
		errs = append(errs, errors.New("ticketkeys.kek_file: required: a file of 32 random bytes shared by every node"))
	}
	if err := sessioncache.CheckKey(sessioncache.TicketKeyKey(c.Prefix, 0)); err != nil {
		errs = append(errs, fmt.Errorf("ticketkeys.prefix: %q makes illegal store keys: %w", c.Prefix, err))
	}
	if c.RotateEvery > 0 && c.RotateEvery < minRedisRotate {
		errs = append(errs, fmt.Errorf("ticketkeys.rotate_every: must be at least %s, got %q", minRedisRotate, c.RotateEvery.String()))
	}
	// The window is n+2 keys with n = ceil(Lifetime/RotateEvery)+1; keep it
	// within half a ring so superseded and fallback keys still fit.
	errs = append(errs, validateRotation(c.RotateEvery, c.Lifetime, MaxKeys/2-3),
		validateDuration("refresh_every", c.RefreshEvery), validateDuration("timeout", c.Timeout))
	return errors.Join(errs...)
}

// RedisSource shares ticket keys across a fleet through Redis, without a
// leader. Time is cut into epochs of RotateEvery; the key of epoch e seals
// during e, and the keys of epochs e-n .. e+1 open, where n =
// ceil(Lifetime/RotateEvery)+1, so nodes whose clocks differ by up to one
// epoch open each other's tickets. The first node that needs an epoch's key
// creates it with SET NX and an expiry beyond its window; every node then
// reads the same value. Each refresh also creates the next epoch's key, so
// an epoch boundary never waits on Redis, and the previous epoch's, so a
// node ahead opens the tickets of nodes behind from its first refresh.
//
// If Redis cannot be reached, the source keeps serving from the keys it
// holds (it already has the next epoch's), reports Degraded, and retries with
// backoff. If Redis is down at Start, it seals with a node-local random key
// until Redis answers; that key keeps opening its tickets for the session
// lifetime afterwards. If Redis lost its data and another node wrote a new
// key for an epoch this node already had, the stored key wins and the old
// one keeps opening what it sealed.
//
// Warning: Redis holds only wrapped keys (AES-256-GCM under the KEK, epoch as
// additional data), so a dump of Redis alone reveals nothing; the KEK file
// and Redis together reveal every ticket key. A value that fails to unwrap
// (ErrUnwrap: a different KEK, or tampering) is never used.
type RedisSource struct {
	runner
	client       RedisClient
	kekFile      string
	prefix       string
	rotate       time.Duration
	past         int64 // n: past epochs that still open
	refreshEvery time.Duration
	timeout      time.Duration
	rand         io.Reader
	// onRefresh, if set before Start, is called after every refresh the
	// loop makes. Tests wait on it instead of sleeping.
	onRefresh func(error)

	// mu protects the fields below and serialises refreshes.
	mu       sync.Mutex
	kek      cipher.AEAD
	cache    map[int64]*storedKey // by epoch, within the window
	extras   []extraKey           // open-only keys outside the epoch scheme
	fallback *Key                 // seals while no epoch key is known
	ring     *Ring                // last ring published
}

// storedKey is an epoch key and its wrapped form as stored.
type storedKey struct {
	key  *Key
	blob []byte
}

// extraKey opens tickets until the end of epoch until.
type extraKey struct {
	key   *Key
	until int64
}

var (
	_ Source   = (*RedisSource)(nil)
	_ Reloader = (*RedisSource)(nil)
)

// NewRedisSource validates cfg and returns a source that publishes into h. It
// reaches nothing until Start.
func NewRedisSource(h *Holder, cfg RedisConfig) (*RedisSource, error) {
	if err := checkNew(h, cfg); err != nil {
		return nil, err
	}
	rotate := cmp.Or(cfg.RotateEvery, DefaultRotateEvery)
	return &RedisSource{
		runner:       newRunner("redis", h, cfg.Logger, cfg.Metrics, cfg.Now),
		client:       cfg.Client,
		kekFile:      cfg.KEKFile,
		prefix:       cfg.Prefix,
		rotate:       rotate,
		past:         pastKeys(cmp.Or(cfg.Lifetime, DefaultKeyLifetime), rotate) + 1,
		refreshEvery: cmp.Or(cfg.RefreshEvery, DefaultRefreshEvery),
		timeout:      cmp.Or(cfg.Timeout, DefaultRedisTimeout),
		rand:         randReader(cfg.Rand),
		cache:        make(map[int64]*storedKey),
	}, nil
}

// Start reads the KEK and fetches (or creates) the shared keys. It fails if
// the KEK file is bad or the current epoch's stored key does not unwrap. If
// Redis is unreachable it starts degraded on a node-local key (see
// RedisSource).
func (s *RedisSource) Start(ctx context.Context) error {
	if err := s.begin(); err != nil {
		return err
	}
	kek, err := loadKEK(s.kekFile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.kek = kek
	err = s.refreshLocked(ctx)
	if s.ring == nil && errors.Is(err, ErrUnavailable) {
		err = s.startFallbackLocked(err)
	}
	published := s.ring != nil
	if !published {
		for ep, sk := range s.cache {
			clear(sk.key.Secret[:])
			delete(s.cache, ep)
		}
	}
	s.mu.Unlock()
	s.record(err)
	if !published {
		return err
	}
	if !s.launch(s.step, s.nextWake(), nil, 0) {
		return ErrClosed
	}
	return nil
}

// startFallbackLocked publishes a node-local key so the node can still
// resume its own sessions while Redis is down at startup. It returns cause
// (the node is degraded) or the error that prevented the fallback.
func (s *RedisSource) startFallbackLocked(cause error) error {
	k, err := newRandomKey(s.rand, s.now())
	if err != nil {
		return errors.Join(cause, err)
	}
	s.fallback = k
	if err := s.publishLocked(s.epochOf(s.now())); err != nil {
		return errors.Join(cause, err)
	}
	s.log.Warn("redis unavailable at start: sealing with a node-local key", zap.Error(cause))
	return cause
}

// Reload refreshes from Redis now. It returns the refresh's error; on error
// the source keeps its ring and retries on its own. After Close it returns
// ErrClosed.
func (s *RedisSource) Reload() error {
	return s.refresh(s.ctx)
}

func (s *RedisSource) step() (time.Duration, error) {
	err := s.refresh(s.ctx)
	if s.onRefresh != nil {
		s.onRefresh(err)
	}
	return s.nextWake(), err
}

func (s *RedisSource) refresh(ctx context.Context) error {
	if s.stopped() {
		return ErrClosed
	}
	s.mu.Lock()
	var err error
	if s.kek == nil {
		err = errors.New("ticketkeys: redis source not started")
	} else {
		err = s.refreshLocked(ctx)
	}
	s.mu.Unlock()
	s.record(err)
	return err
}

// nextWake is the wait until the next epoch begins, or RefreshEvery if
// sooner. After an error the loop uses its backoff instead.
func (s *RedisSource) nextWake() time.Duration {
	now := s.now()
	untilNext := s.epochStart(s.epochOf(now) + 1).Sub(now)
	return min(untilNext, s.refreshEvery)
}

func (s *RedisSource) epochOf(t time.Time) int64 {
	n, r := t.UnixNano(), int64(s.rotate)
	e := n / r
	if n%r < 0 {
		e--
	}
	return e
}

func (s *RedisSource) epochStart(e int64) time.Time { return time.Unix(0, e*int64(s.rotate)) }

// expiry is when the store may forget epoch e's key: one epoch after the last
// node, with its clock one epoch behind, stops opening it.
func (s *RedisSource) expiry(e int64) time.Time { return s.epochStart(e + s.past + 3) }

// refreshLocked syncs the window with Redis, then publishes the ring the
// keys held allow, even if the sync failed (rotation continues from keys
// fetched ahead).
func (s *RedisSource) refreshLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	e := s.epochOf(s.now())
	s.prune(e)
	syncErr := s.syncLocked(ctx, e)
	return errors.Join(syncErr, s.publishLocked(e))
}

// prune forgets keys outside the window (also ahead of it, should the clock
// step back), so a key that left a ring is never published again. Keys still
// in the published ring are zeroed by the Holder when they leave it; the
// others are zeroed here.
func (s *RedisSource) prune(e int64) {
	for ep, sk := range s.cache {
		if ep < e-s.past || ep > e+1 {
			delete(s.cache, ep)
			s.zeroUnpublished(sk.key)
		}
	}
	kept := s.extras[:0]
	for _, x := range s.extras {
		if x.until >= e {
			kept = append(kept, x)
		} else {
			s.zeroUnpublished(x.key)
		}
	}
	clear(s.extras[len(kept):])
	s.extras = kept
}

func (s *RedisSource) zeroUnpublished(k *Key) {
	if s.ring == nil || !s.ring.contains(k) {
		clear(k.Secret[:])
	}
}

// syncOp is one epoch's part of the pipeline.
type syncOp struct {
	epoch int64
	set   *redis.BoolCmd   // SET NX of the key this node holds or offers; may be nil
	get   *redis.StringCmd // what the store holds
	fresh *storedKey       // a key this node offered with SET NX
}

// syncLocked makes one pipelined round trip: for every epoch of the window it
// re-offers the key this node holds (restoring it if Redis lost it), offers a
// new key for the previous, current and next epochs if it has none, and
// reads what is stored.
func (s *RedisSource) syncLocked(ctx context.Context, e int64) error {
	now := s.now()
	var ops []syncOp
	var genErr error
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for ep := e - s.past; ep <= e+1; ep++ {
			op := syncOp{epoch: ep}
			key := sessioncache.TicketKeyKey(s.prefix, ep)
			ttl := s.expiry(ep).Sub(now)
			if sk := s.cache[ep]; sk != nil && ttl > 0 {
				op.set = p.SetNX(ctx, key, sk.blob, ttl)
			} else if sk == nil && ep >= e-1 {
				// The previous epoch's key too: a node up to one epoch
				// behind seals with it, and a node that started ahead of
				// the fleet must open those tickets at once, not after its
				// next refresh (#12).
				k, blob, err := newEpochKey(s.kek, s.rand, ep, s.epochStart(ep))
				if err != nil {
					genErr = err
					return err
				}
				op.fresh = &storedKey{key: k, blob: blob}
				op.set = p.SetNX(ctx, key, blob, ttl)
			}
			op.get = p.Get(ctx, key)
			ops = append(ops, op)
		}
		return nil
	})
	if genErr == nil && (err == nil || errors.Is(err, redis.Nil)) {
		err = nil
		for _, op := range ops {
			if op.set != nil && op.set.Err() != nil {
				err = op.set.Err()
				break
			}
			if gerr := op.get.Err(); gerr != nil && !errors.Is(gerr, redis.Nil) {
				err = gerr
				break
			}
		}
	}
	if err != nil {
		for _, op := range ops {
			if op.fresh != nil {
				clear(op.fresh.key.Secret[:])
			}
		}
		if genErr != nil {
			return genErr
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var errs []error
	for _, op := range ops {
		if err := s.apply(op); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// apply takes one epoch's stored value into the cache.
func (s *RedisSource) apply(op syncOp) error {
	val, err := op.get.Bytes()
	cur := s.cache[op.epoch]
	if errors.Is(err, redis.Nil) {
		if op.fresh != nil {
			clear(op.fresh.key.Secret[:])
		}
		return nil
	}
	if cur != nil && bytes.Equal(val, cur.blob) {
		return nil
	}
	if op.fresh != nil {
		if bytes.Equal(val, op.fresh.blob) {
			s.cache[op.epoch] = op.fresh
			s.log.Info("created shared ticket key", zap.Int64("epoch", op.epoch), zap.Stringer("key_name", op.fresh.key.Name))
			return nil
		}
		clear(op.fresh.key.Secret[:]) // another node won the SET NX
	}
	k, err := unwrapEpochKey(s.kek, val, op.epoch, s.epochStart(op.epoch))
	if err != nil {
		return err
	}
	if cur != nil {
		s.log.Warn("stored ticket key replaced, keeping the old one for opening",
			zap.Int64("epoch", op.epoch), zap.Stringer("old_key", cur.key.Name), zap.Stringer("new_key", k.Name))
		s.extras = append(s.extras, extraKey{key: cur.key, until: op.epoch + s.past})
	}
	s.cache[op.epoch] = &storedKey{key: k, blob: bytes.Clone(val)}
	return nil
}

// publishLocked builds the ring for epoch e from the keys held and publishes
// it if it differs from the last one. Without a key to seal it keeps the
// last ring and says so.
func (s *RedisSource) publishLocked(e int64) error {
	var keys []*Key
	if cur := s.cache[e]; cur != nil {
		if s.fallback != nil {
			s.extras = append(s.extras, extraKey{key: s.fallback, until: e + s.past})
			s.fallback = nil
		}
		keys = append(keys, cur.key)
	} else if s.fallback != nil {
		keys = append(keys, s.fallback)
	} else {
		return fmt.Errorf("ticketkeys: no usable key for epoch %d: keeping the last ring", e)
	}
	if next := s.cache[e+1]; next != nil {
		keys = append(keys, next.key)
	}
	for ep := e - 1; ep >= e-s.past; ep-- {
		if sk := s.cache[ep]; sk != nil {
			keys = append(keys, sk.key)
		}
	}
	// Newest extras first; those that do not fit are dropped for good.
	if drop := len(s.extras) - (MaxKeys - len(keys)); drop > 0 {
		for _, x := range s.extras[:drop] {
			s.zeroUnpublished(x.key)
		}
		s.extras = append([]extraKey(nil), s.extras[drop:]...)
	}
	for i := len(s.extras) - 1; i >= 0; i-- {
		keys = append(keys, s.extras[i].key)
	}
	if s.ring != nil && samePointers(s.ring.keys, keys) {
		return nil
	}
	ring, err := NewRing(keys...)
	if err != nil {
		return fmt.Errorf("ticketkeys: building ring for epoch %d: %w", e, err)
	}
	s.ring = ring
	s.publish(ring)
	return nil
}

func samePointers(a, b []*Key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
