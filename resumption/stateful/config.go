package stateful

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// Defaults for Config's zero fields.
const (
	// DefaultTimeout bounds each call to the shared store when
	// Config.Timeout is zero: what a slow store may add to a
	// handshake, per call.
	DefaultTimeout = 25 * time.Millisecond
	// DefaultBreakerFailures is how many failed store calls (among the
	// last 32, and at least half of them) open the circuit breaker when
	// BreakerConfig.Failures is zero.
	DefaultBreakerFailures = 5
	// DefaultBreakerCooldown is the longest an open breaker waits between
	// probes when BreakerConfig.Cooldown is zero: a store that comes back
	// is used again within it (#12).
	DefaultBreakerCooldown = 500 * time.Millisecond
	// DefaultCommitQueue is how many committed sessions may wait for the
	// store writers when Config.CommitQueue is zero: about 1 MB of sealed
	// sessions, a fifth of a second of handshakes at 20,000/s.
	DefaultCommitQueue = 4096
	// DefaultCommitWorkers is the number of store writers when
	// Config.CommitWorkers is zero.
	DefaultCommitWorkers = 4
)

// BreakerConfig configures the circuit breaker in front of the
// shared store.
type BreakerConfig struct {
	// Failures is how many store failures (errors and timeouts; a miss is
	// an answer, not a failure) among the last 32 calls, and at least half
	// of them, open the breaker. If zero, DefaultBreakerFailures is used.
	// It must not be negative.
	Failures int
	// Cooldown is the longest an open breaker skips the store before it
	// lets a single probe call through: the first probe comes 100ms after
	// opening, each failed probe doubles the wait up to Cooldown, and the
	// probe's success closes it. If zero, DefaultBreakerCooldown is used. It
	// must not be negative.
	Cooldown time.Duration
}

// Config configures a Backend. Field names in error
// messages are the configuration keys (resumption.store.timeout).
type Config struct {
	// Mode names the backend in metrics and logs: resumption.ModeRedis, resumption.ModeMemcached
	// or resumption.ModeSticky. If empty, resumption.ModeSticky is used when Store is nil and
	// "shared" otherwise. resumption.ModeSticky with a Store, or resumption.ModeRedis or
	// resumption.ModeMemcached without one, is refused.
	Mode string

	// Store is the shared session store, the source of truth for every node
	// of the fleet (a sessioncache/redis or sessioncache/memcache Store). If
	// nil, the backend runs in sticky mode: sessions live only in Local and
	// resume only on the node that issued them. Backend does not close it.
	Store sessioncache.Store

	// Local is the node-local cache: the whole store in sticky mode, and in
	// the shared modes the copy of every session this node issued (and,
	// with ReadThrough, read from Store), read while Store fails, or
	// with ReadThrough in place of a store get (see Backend). If nil, an lru.Store with the
	// default bounds and Now as its clock is used. If it has a
	// Len() int method (as *lru.Store has), its size is exported as a
	// metric. It must never block: it is called on every handshake.
	Local sessioncache.Store

	// Prefix is prepended to every key (see sessioncache.SessionKey), so
	// several fleets can share one store. It may be empty. With the key it
	// must pass sessioncache.CheckKey.
	Prefix string

	// Lifetime is the time to live of stored sessions. Set it to the Layer's
	// Lifetime, which also refuses older sessions. If zero, resumption.DefaultSessionLifetime
	// is used; values above resumption.MaxLifetime are refused.
	Lifetime time.Duration

	// Timeout bounds each call to Store. Through NewConn a connection
	// makes one call (the get of the session it resumes), waits for the
	// writers' put of the session it was issued (unless CommitAsync, or
	// the get found Store failing), and with SingleUse makes one more call
	// once it completed (the delete). A hung store thus adds one Timeout
	// to a connection, two with SingleUse, until the breaker opens. (The
	// Backend's own hooks get and put on the handshake's path.) The
	// bound adapts to the latency the calls see, between Timeout and
	// 10 × Timeout (see StoreCallBound). If zero, DefaultTimeout is used.
	// It must not be negative.
	Timeout time.Duration

	// CommitQueue bounds the sessions of completed handshakes waiting for
	// the writers that put them to Store. When it is full a session is not
	// queued: it stays in Local, resumes on this node only, and is counted
	// (edgeproxy_session_commits_total{result="overflow"}); the handshake
	// never waits. If zero, DefaultCommitQueue is used. It must not be
	// negative.
	CommitQueue int

	// CommitAsync, if true, lets HandshakeDone return as soon as the
	// session is queued for the writers. Then a client that reconnects to
	// another node before the write reached Store (the commit delay,
	// edgeproxy_session_commit_delay_seconds: tens of microseconds on an
	// idle loopback, milliseconds when the writers wait for a busy CPU)
	// gets a full handshake there. If false, HandshakeDone waits for Store's
	// acknowledgement, at most Timeout, before the listener serves the
	// connection: the handshake is complete and its latency unchanged, the
	// first request waits one store round trip (writes still batched
	// across connections), and a client that reconnects after the server's
	// first response or close finds its session on every node.
	CommitAsync bool

	// CommitWorkers is the number of writers, each sending what is queued
	// (up to 64 sessions in one pipelined round trip to a store that can,
	// such as Redis; one at a time to memcached). If zero,
	// DefaultCommitWorkers is used. It must not be negative.
	CommitWorkers int

	// SingleUse deletes a session when it resumed (Get, then Delete), so
	// each handle resumes once; crypto/tls hands the client a fresh one on
	// every resumption. Through NewConn the Delete waits for the completed
	// handshake (#12), so a replayed handle with a bogus binder, or a
	// client that leaves before its Finished, consumes nothing. It costs
	// one more store round trip per resumption, and browsers that open
	// several connections in parallel with one ticket see full handshakes
	// on all but the first. Two handshakes racing with one handle between
	// the Get and the Delete (the end of the first handshake) may both
	// resume. While the store is down (degraded mode) single use is
	// enforced only per node: other nodes' local copies are not reachable.
	SingleUse bool

	// ReadThrough, if true (and SingleUse is not), lets a client that
	// returns to the node that last wrote or read its session resume from
	// Local without a store get (#12). A session revoked on any node may
	// then still resume on such a node for up to RevocationPoll,
	// 2 × RevocationPoll at most (see readthrough.go). If false, every
	// resumption reads Store while it answers.
	ReadThrough bool

	// RevocationPoll is how often a ReadThrough Backend reads the fleet's
	// revocation generation from Store. If zero, DefaultRevocationPoll is
	// used. It must not be negative.
	RevocationPoll time.Duration

	// Breaker configures the circuit breaker in front of Store.
	Breaker BreakerConfig

	// Now returns the current time, for the breaker's cooldown, the
	// freshness of the revocation poll (ReadThrough) and the default
	// Local's TTLs. If nil, time.Now is used. Durations in metrics
	// are always measured with time.Now.
	Now func() time.Time

	// Rand is the source of handles and nonces. If nil, crypto/rand is used.
	// A predictable Rand gives away every session: only tests should set it.
	Rand io.Reader

	// Logger logs breaker transitions (warn, info) and store failures
	// (debug), never handles or session IDs. If nil, logs are discarded.
	Logger *zap.Logger

	// Metrics receives store call counts and latencies. If nil, nothing is
	// counted.
	Metrics *Metrics
}

// StoreTimeout returns the floor of the bound on each shared store call:
// Timeout, or DefaultTimeout if it is zero. Give StoreCallBound, its
// ceiling, to the store client (its own socket deadlines).
func (c Config) StoreTimeout() time.Duration { return cmp.Or(c.Timeout, DefaultTimeout) }

func (c Config) revocationPoll() time.Duration {
	return cmp.Or(c.RevocationPoll, DefaultRevocationPoll)
}

func (c Config) commitQueue() int   { return cmp.Or(c.CommitQueue, DefaultCommitQueue) }
func (c Config) commitWorkers() int { return cmp.Or(c.CommitWorkers, DefaultCommitWorkers) }

// Validate reports the first invalid field of c. It does no I/O.
func (c Config) Validate() error {
	switch c.Mode {
	case "":
	case resumption.ModeSticky:
		if c.Store != nil {
			return errors.New("resumption.mode: sticky keeps sessions on each node, but a shared store is set")
		}
	case resumption.ModeRedis, resumption.ModeMemcached:
		if c.Store == nil {
			return fmt.Errorf("resumption.mode: %q needs a shared store, and none is set", c.Mode)
		}
	default:
		return fmt.Errorf("resumption.mode: %q: a stateful backend must be redis, memcached or sticky", c.Mode)
	}
	if c.Prefix != "" {
		if err := sessioncache.CheckKey(sessioncache.SessionKey(c.Prefix, make([]byte, sidLen))); err != nil {
			return fmt.Errorf("resumption.store.prefix: %q: %w", c.Prefix, err)
		}
	}
	if err := resumption.CheckSessionLifetime(c.Lifetime); err != nil {
		return err
	}
	if c.Timeout < 0 {
		return fmt.Errorf("resumption.store.timeout: must not be negative, got %q", c.Timeout)
	}
	if c.RevocationPoll < 0 {
		return fmt.Errorf("resumption.store.revocation_poll: must not be negative, got %q", c.RevocationPoll)
	}
	if c.CommitQueue < 0 {
		return fmt.Errorf("resumption.store.commit_queue: must not be negative, got %d", c.CommitQueue)
	}
	if c.CommitWorkers < 0 {
		return fmt.Errorf("resumption.store.commit_workers: must not be negative, got %d", c.CommitWorkers)
	}
	if c.Breaker.Failures < 0 {
		return fmt.Errorf("resumption.store.breaker.failures: must not be negative, got %d", c.Breaker.Failures)
	}
	if c.Breaker.Cooldown < 0 {
		return fmt.Errorf("resumption.store.breaker.cooldown: must not be negative, got %q", c.Breaker.Cooldown)
	}
	return nil
}
