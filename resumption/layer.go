// Package resumption decides what a TLS client carries between connections
// and whether a returning client resumes. It plugs into crypto/tls through
// tls.Config.WrapSession and UnwrapSession.
//
// A Layer owns those two hooks for every mode and holds the policy once:
// session lifetime, scope binding and metrics. Below it a Backend carries the
// state: Tickets seals it into the ticket itself (stateless, shared keys);
// stateful backends keep it in a store and hand the client a handle.
//
// The stateless ticket format is documented on Tickets; the stateful handle
// on stateful.Backend, in package resumption/stateful.
//
// Go's crypto/tls server resumes only through the ticket extension (TLS 1.2)
// and PSK identities (TLS 1.3); it has no TLS 1.2 session-ID cache. In
// edgeproxy a "session cache" is therefore server-side state found through an
// opaque handle that the client carries as its ticket.
//
// The Layer never fails a handshake: a session it cannot find, open, or trust
// yields (nil, nil) from UnwrapSession, which crypto/tls answers with a full
// handshake. Each outcome is counted.
package resumption

import (
	"cmp"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
)

const (
	// DefaultSessionLifetime is the session lifetime when none is set
	// (Config.Lifetime zero); see SessionLifetime. Not to be confused with
	// ticketkeys.DefaultKeyLifetime, how long a ticket key keeps opening
	// tickets.
	DefaultSessionLifetime = 12 * time.Hour
	// MaxLifetime is the longest lifetime accepted: TLS 1.3 forbids tickets
	// older than 7 days (RFC 8446, Section 4.6.1).
	MaxLifetime = 7 * 24 * time.Hour
	// RecommendedMaxLifetime is the bound RFC 5246 recommends for a session
	// (Appendix F.1.4): a resumed session skips certificate checks.
	RecommendedMaxLifetime = 24 * time.Hour
)

// Mode names, as in configuration and metric labels.
const (
	ModeTickets   = "tickets"
	ModeRedis     = "redis"
	ModeMemcached = "memcached"
	ModeSticky    = "sticky"
	ModeOff       = "off"
)

// Config configures a Layer.
type Config struct {
	// Mode names the backend in metrics and logs, e.g. ModeTickets.
	Mode string
	// Backend carries the state. Required.
	Backend Backend
	// Lifetime bounds how long after the full handshake that authenticated
	// it a session resumes, however often it resumed meanwhile (when the
	// hooks come from ConnConfig). If zero, DefaultSessionLifetime is used.
	// Values above MaxLifetime are refused.
	Lifetime time.Duration
	// Scope returns the security context a connection belongs to: the
	// certificate group its SNI selected, its client-auth policy. A session
	// resumes only in the scope it was issued in. If nil, every connection
	// shares one scope.
	Scope func(tls.ConnectionState) string
	// Metrics receives counts. If nil, nothing is counted.
	Metrics *Metrics
	// Logger logs failures at debug level, never the identity or state.
	// If nil, logs are discarded.
	Logger *zap.Logger
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Rand is the entropy for decoy tickets. If nil, crypto/rand is used.
	Rand io.Reader
}

// SessionLifetime returns the session lifetime that the setting d (the
// resumption.session_lifetime key, Config.Lifetime) gives: d, or
// DefaultSessionLifetime if d is zero. With CheckSessionLifetime it is the
// one place the setting is checked and defaulted: configuration validation,
// the Layer and the backends all use them.
func SessionLifetime(d time.Duration) time.Duration { return cmp.Or(d, DefaultSessionLifetime) }

// CheckSessionLifetime returns an error naming resumption.session_lifetime
// if d is negative or above MaxLifetime.
func CheckSessionLifetime(d time.Duration) error {
	if d < 0 || d > MaxLifetime {
		return fmt.Errorf("resumption.session_lifetime: %q: must be between 0 and %s (TLS 1.3 allows at most 7 days)", d, MaxLifetime)
	}
	return nil
}

// Validate checks cfg without I/O.
func (c *Config) Validate() error {
	if c.Backend == nil {
		return errors.New("resumption.backend: required")
	}
	return CheckSessionLifetime(c.Lifetime)
}

// Layer owns a tls.Config's WrapSession and UnwrapSession hooks. It is safe
// for concurrent use.
type Layer struct {
	mode     string
	backend  Backend
	ider     SessionIDer // backend, if it names its sessions
	cb       ConnBackend // backend, if it keeps per-connection state
	reissuer Reissuer    // backend, if its TLS 1.2 identities may be sent again
	lifetime time.Duration
	scope    func(tls.ConnectionState) string
	now      func() time.Time
	rand     io.Reader
	log      *zap.Logger
	counts   *modeCounters
}

// New returns a Layer for cfg.
func New(cfg Config) (*Layer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Layer{
		mode:     cfg.Mode,
		backend:  cfg.Backend,
		lifetime: SessionLifetime(cfg.Lifetime),
		scope:    cfg.Scope,
		now:      cfg.Now,
		rand:     cfg.Rand,
		log:      cfg.Logger,
		counts:   cfg.Metrics.forMode(cfg.Mode),
	}
	l.ider, _ = cfg.Backend.(SessionIDer)
	l.cb, _ = cfg.Backend.(ConnBackend)
	l.reissuer, _ = cfg.Backend.(Reissuer)
	if l.now == nil {
		l.now = time.Now
	}
	if l.rand == nil {
		l.rand = rand.Reader
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	return l, nil
}

// Lifetime returns the session lifetime in force.
func (l *Layer) Lifetime() time.Duration { return l.lifetime }

// Configure installs the Layer's plain hooks in c, for a server that shares
// one tls.Config between connections. They restart a session's lifetime
// with every ticket and record no ConnSession; and since nothing tells them
// how the handshake ended, a ConnBackend acts inside them (a stateful
// backend stores every issued session, for completed handshakes or not).
// edgeproxy's listener uses ConnConfig instead, the one place it installs
// hooks.
func (l *Layer) Configure(c *tls.Config) {
	c.WrapSession = l.WrapSession
	c.UnwrapSession = l.UnwrapSession
}

// The Layer's own fields travel in SessionState.Extra as one element:
// extraTag(1) | authentication time, unix seconds(8) | scope.
const extraTag = 0xE1

func (l *Layer) scopeOf(cs tls.ConnectionState) string {
	if l.scope == nil {
		return ""
	}
	return l.scope(cs)
}

// WrapSession is a tls.Config.WrapSession hook. It stamps the session with
// the time of its authentication (now: without a per-connection link, see
// ConnConfig, every ticket counts as a new authentication) and its scope,
// and has the Backend turn it into an identity.
//
// It never returns an error: a Backend that cannot wrap (a failing random
// source, a store that cannot be written) yields a random decoy identity
// that will never resume, so the handshake completes and the client's next
// connection gets a full handshake.
//
// Warning: the session state holds the connection's resumption secret; anyone
// who can open the identity can decrypt connections resumed with it.
func (l *Layer) WrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	id, _, _ := l.wrap(l.ider, cs, ss, l.now().Unix())
	return id, nil
}

// wrap seals ss with authAt, the Unix time of the full handshake that
// authenticated the session, through ider if it is not nil, else through
// the Backend. ok is false when the identity is a decoy; sessionID is set
// only through an ider.
func (l *Layer) wrap(ider SessionIDer, cs tls.ConnectionState, ss *tls.SessionState, authAt int64) (id []byte, sessionID string, ok bool) {
	scope := l.scopeOf(cs)
	e := make([]byte, 9+len(scope))
	e[0] = extraTag
	binary.BigEndian.PutUint64(e[1:9], uint64(authAt))
	copy(e[9:], scope)
	ss.Extra = append(ss.Extra[:0:0], e)
	var err error
	if ider != nil {
		id, sessionID, err = ider.WrapSessionID(cs, ss)
	} else {
		id, err = l.backend.WrapSession(cs, ss)
	}
	if err == nil && len(id) > 0 {
		l.counts.wrapOK.Inc()
		return id, sessionID, true
	}
	l.counts.wrapError.Inc()
	l.log.Debug("session wrap failed", zap.String("mode", l.mode), zap.Error(err))
	decoy := make([]byte, 32)
	if _, err := io.ReadFull(l.rand, decoy); err != nil {
		// A decoy of zeros is as unresumable as a random one.
		clear(decoy)
	}
	return decoy, "", false
}

// UnwrapSession is a tls.Config.UnwrapSession hook. It returns the session
// the identity names, or (nil, nil) — a full handshake — when the identity
// is unknown, malformed, expired (authenticated longer than the lifetime
// ago), from another scope, or the store failed. It never returns an error.
func (l *Layer) UnwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, _, _ := l.unwrap(l.ider, identity, cs)
	return ss, nil
}

// unwrap is UnwrapSession through ider (if not nil, else the Backend) that
// also returns the session's authentication time and, through an ider, its
// identifier.
func (l *Layer) unwrap(ider SessionIDer, identity []byte, cs tls.ConnectionState) (ss *tls.SessionState, authAt int64, sessionID string) {
	var err error
	if ider != nil {
		ss, sessionID, err = ider.UnwrapSessionID(identity, cs)
	} else {
		ss, err = l.backend.UnwrapSession(identity, cs)
	}
	switch {
	case err == nil && ss != nil:
	case err == nil || errors.Is(err, ErrMiss):
		l.counts.miss.Inc()
		return nil, 0, ""
	case errors.Is(err, ErrBad):
		l.counts.bad.Inc()
		return nil, 0, ""
	default:
		l.counts.storeError.Inc()
		l.log.Debug("session store failed", zap.String("mode", l.mode), zap.Error(err))
		return nil, 0, ""
	}
	authAt, scope, ok := parseExtra(ss.Extra)
	if !ok {
		l.counts.bad.Inc()
		return nil, 0, ""
	}
	if l.now().Sub(time.Unix(authAt, 0)) > l.lifetime {
		l.counts.expired.Inc()
		return nil, 0, ""
	}
	if scope != l.scopeOf(cs) {
		l.counts.scopeMismatch.Inc()
		return nil, 0, ""
	}
	l.counts.opened.Inc()
	return ss, authAt, sessionID
}

func parseExtra(extra [][]byte) (authAt int64, scope string, ok bool) {
	for _, e := range extra {
		if len(e) >= 9 && e[0] == extraTag {
			return int64(binary.BigEndian.Uint64(e[1:9])), string(e[9:]), true
		}
	}
	return 0, "", false
}
