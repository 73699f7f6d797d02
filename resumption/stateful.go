package resumption

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
)

// Stateful handle and stored value, format version 1; documented on Stateful.
const (
	statefulVersion   = 0x01
	statefulIDLen     = 16
	statefulKeyLen    = 16 // AES-128
	statefulHandleLen = statefulIDLen + statefulKeyLen
	statefulSIDLen    = 16 // bytes of SHA-256(id) that name the entry
	statefulNonceLen  = 12
	statefulTagLen    = 16
	statefulHeaderLen = 1 + statefulNonceLen // version | nonce
	statefulOverhead  = statefulHeaderLen + statefulTagLen

	// The node-local cache stores flag | value. The flag says whether the
	// shared store took the value too (stored), or only this node has it
	// (localOnly: sticky mode, or the store write failed or was skipped).
	statefulStored    = 0x00
	statefulLocalOnly = 0x01
)

// Stateful is the Backend for the stateful modes (redis, memcached, sticky):
// the session state stays on the server side, and the client carries a
// 32-byte handle as its ticket (TLS 1.2) or PSK identity (TLS 1.3):
//
//	handle = id(16) | k(16)                 both random, per session
//	sid    = SHA-256(id)[:16]               names the entry
//	key    = sessioncache.SessionKey(Prefix, sid)
//	value  = version(1) = 0x01 | nonce(12) | AES-128-GCM_k(SessionState.Bytes())
//
// with version||id as the additional data and a random nonce. The store
// holds only the value, under a key derived from id, so neither the store
// alone (a dump, a replica, an operator) nor the handle alone (a network
// observer) reveals a session secret, and no key is shared between nodes.
// hex(sid) is the session's non-secret identifier (SessionID): the proxy may
// pass it upstream, and Revoke deletes the session by it.
//
// Every session is written to Store (with Lifetime as TTL) and to Local.
// Store is the source of truth: while it answers, a session resumes only if
// Store has it, so revocation and single use hold fleet-wide. When Store
// fails or is slower than Timeout, Stateful falls back to Local (degraded
// mode): clients returning to the node that issued their session still
// resume, every other client gets a full handshake, and none a failed one.
// Consecutive failures open a circuit breaker that skips Store (no
// Timeout is added to handshakes) until Cooldown has passed; then one call
// probes Store, and the breaker closes again when it succeeds. A session
// whose Store write failed is kept in Local as node-local, and resumes on
// its node even once Store is back; it can be revoked only on that node.
//
// In sticky mode (no Store), Local is the only store.
//
// Stateful is safe for concurrent use. It starts no goroutines. Its zero
// value is not usable: build it with NewStateful.
//
// Warning: Store and Local hold every live session, sealed; the handle is
// the key that opens one. Anyone who sees a handle and can read the store
// (or this node's memory) can decrypt the TLS 1.2 connections of that
// session and, with TLS 1.3, impersonate the server to its client.
type Stateful struct {
	mode      string
	shared    sessioncache.Store // nil in sticky mode
	local     sessioncache.Store
	prefix    string
	lifetime  time.Duration
	timeout   time.Duration
	singleUse bool
	rand      io.Reader
	log       *zap.Logger
	breaker   *statefulBreaker
	m         *statefulModeMetrics // nil: count nothing
	metrics   *StatefulMetrics     // to detach from on Close

	closeOnce sync.Once
}

var _ Backend = (*Stateful)(nil)

// errStatefulBreakerOpen is the store error of a call the breaker skipped.
var errStatefulBreakerOpen = errors.New("resumption: session store skipped: circuit breaker open")

// NewStateful returns a Stateful backend for cfg, or the error from
// cfg.Validate. It does no I/O: check the store's reachability separately
// (redis.Store.Ping, memcache.Store.Ping).
func NewStateful(cfg StatefulConfig) (*Stateful, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Stateful{
		mode:      cfg.Mode,
		shared:    cfg.Store,
		local:     cfg.Local,
		prefix:    cfg.Prefix,
		lifetime:  cfg.Lifetime,
		timeout:   cfg.Timeout,
		singleUse: cfg.SingleUse,
		rand:      cfg.Rand,
		log:       cfg.Logger,
		metrics:   cfg.Metrics,
	}
	if s.mode == "" {
		s.mode = ModeSticky
		if s.shared != nil {
			s.mode = "shared"
		}
	}
	if s.lifetime == 0 {
		s.lifetime = DefaultLifetime
	}
	if s.timeout == 0 {
		s.timeout = DefaultStatefulTimeout
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if s.local == nil {
		l, err := lru.New(lru.Config{Now: cfg.Now})
		if err != nil {
			return nil, fmt.Errorf("resumption: building the local session cache: %w", err)
		}
		s.local = l
	}
	s.breaker = newStatefulBreaker(cfg.Breaker, now, s.log.With(zap.String("mode", s.mode)))
	if cfg.Metrics != nil {
		s.m = cfg.Metrics.forMode(s.mode)
		cfg.Metrics.attach(s)
	}
	return s, nil
}

// Close detaches s from its StatefulMetrics, whose gauges stop counting its
// local cache and breaker. It does not close Store or Local, which belong to
// the caller. It is safe to call more than once; s keeps working after it.
func (s *Stateful) Close() error {
	s.closeOnce.Do(func() {
		if s.metrics != nil {
			s.metrics.detach(s)
		}
	})
	return nil
}

// statefulAEAD returns AES-128-GCM under the per-session key k.
func statefulAEAD(k []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("resumption: creating session cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("resumption: creating session cipher: %w", err)
	}
	return aead, nil
}

// statefulAD returns the additional data of a value: version || id.
func statefulAD(id []byte) [1 + statefulIDLen]byte {
	var ad [1 + statefulIDLen]byte
	ad[0] = statefulVersion
	copy(ad[1:], id)
	return ad
}

// storeKey returns the store key of the session whose handle starts with id.
func (s *Stateful) storeKey(id []byte) string {
	sum := sha256.Sum256(id)
	return sessioncache.SessionKey(s.prefix, sum[:statefulSIDLen])
}

// SessionID returns the non-secret identifier of the session a handle
// names: hex(SHA-256(id)[:16]), 32 hex digits, the same on every node. It
// reveals neither the handle nor the session, so it may travel to upstreams
// (X-TLS-Session-ID) and into logs of the admin API; Revoke takes it. It
// returns "" for an identity that is not a 32-byte handle. It implements
// SessionIDer.
func (s *Stateful) SessionID(identity []byte) string {
	if len(identity) != statefulHandleLen {
		return ""
	}
	sum := sha256.Sum256(identity[:statefulIDLen])
	return hex.EncodeToString(sum[:statefulSIDLen])
}

// WrapSession stores ss, sealed under a fresh per-session key, and returns
// the handle that names and opens it. It has the signature of
// tls.Config.WrapSession.
//
// The session is written to Store (bounded by Timeout, skipped while the
// breaker is open) and to Local. A Store failure is not a wrap failure: it
// is counted and feeds the breaker, and the session lives in Local only, so
// it resumes on this node. WrapSession fails only if the state cannot be
// serialised, Rand fails, or neither cache took the session.
//
// Warning: the handle opens the session; see Stateful.
func (s *Stateful) WrapSession(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	if ss == nil {
		return nil, errors.New("resumption: WrapSession called with a nil session")
	}
	state, err := ss.Bytes()
	if err != nil {
		return nil, fmt.Errorf("resumption: serialising session: %w", err)
	}
	defer clear(state) // it holds the session secret in the clear

	// One buffer: handle(32) | local flag(1) | version(1) | nonce(12) | sealed.
	// The handle returned to crypto/tls shares it (capped, so nothing
	// writes past it); the rest is copied by Local and sent by Store.
	const valueOff = statefulHandleLen + 1
	buf := make([]byte, valueOff+statefulHeaderLen, valueOff+statefulHeaderLen+len(state)+statefulTagLen)
	handle := buf[:statefulHandleLen:statefulHandleLen]
	nonce := buf[valueOff+1 : valueOff+statefulHeaderLen]
	if _, err := io.ReadFull(s.rand, handle); err != nil {
		return nil, fmt.Errorf("resumption: reading session handle: %w", err)
	}
	if _, err := io.ReadFull(s.rand, nonce); err != nil {
		return nil, fmt.Errorf("resumption: reading session nonce: %w", err)
	}
	buf[valueOff] = statefulVersion
	aead, err := statefulAEAD(handle[statefulIDLen:])
	if err != nil {
		return nil, err
	}
	ad := statefulAD(handle[:statefulIDLen])
	buf = aead.Seal(buf, nonce, state, ad[:])

	key := s.storeKey(handle[:statefulIDLen])
	flag := byte(statefulLocalOnly)
	if s.shared != nil && s.sharedPut(key, buf[valueOff:]) == nil {
		flag = statefulStored
	}
	buf[statefulHandleLen] = flag
	if err := s.localPut(key, buf[statefulHandleLen:]); err != nil && flag == statefulLocalOnly {
		return nil, fmt.Errorf("resumption: storing session: %w", err)
	}
	return handle, nil
}

// UnwrapSession returns the session a handle names. It has the signature of
// tls.Config.UnwrapSession but reports why it found no session, as Backend
// requires:
//
//   - ErrMiss: the identity is empty (a TLS 1.2 client without a ticket;
//     crypto/tls asks anyway), or the store answered that it has no such
//     session: never issued, expired, revoked or already used (SingleUse);
//   - ErrBad: the identity is not 32 bytes, or the stored value fails
//     authentication under the handle's key (a forged or altered handle or
//     value), or holds state that does not parse;
//   - any other error: Store failed (or the breaker skipped it) and Local
//     has no copy either.
//
// While Store fails, a session found in Local resumes (degraded mode, see
// Stateful). It never panics on any input. It does not check the session's
// age or scope; the Layer does.
func (s *Stateful) UnwrapSession(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) == 0 {
		return nil, ErrMiss
	}
	if len(identity) != statefulHandleLen {
		return nil, fmt.Errorf("%w: handle of %d bytes, want %d", ErrBad, len(identity), statefulHandleLen)
	}
	key := s.storeKey(identity[:statefulIDLen])
	if s.shared == nil {
		return s.unwrapSticky(identity, key)
	}
	val, storeErr := s.sharedGet(key)
	switch {
	case storeErr == nil:
		ss, err := s.open(identity, val)
		if err == nil && s.singleUse {
			s.consume(key)
		}
		return ss, err
	case errors.Is(storeErr, sessioncache.ErrMiss):
		return s.afterStoreMiss(identity, key)
	}
	// Degraded: resume only what this node issued.
	val, err := s.localGet(key)
	if err != nil {
		s.m.fallback(statefulFallbackMiss)
		return nil, fmt.Errorf("resumption: no local copy, and %w", storeErr)
	}
	s.m.fallback(statefulFallbackHit)
	return s.openLocal(identity, key, val)
}

// unwrapSticky finds a session in Local, the only store in sticky mode.
func (s *Stateful) unwrapSticky(identity []byte, key string) (*tls.SessionState, error) {
	val, err := s.localGet(key)
	if errors.Is(err, sessioncache.ErrMiss) {
		return nil, ErrMiss
	}
	if err != nil {
		return nil, fmt.Errorf("resumption: local session cache: %w", err)
	}
	return s.openLocal(identity, key, val)
}

// afterStoreMiss handles a healthy store's miss. The store is the source of
// truth, so a copy in Local is stale (revoked, expired, used, or lost with
// the store) and is dropped, unless it is marked local-only: its store
// write failed, so the store never had it, and it resumes on this node.
func (s *Stateful) afterStoreMiss(identity []byte, key string) (*tls.SessionState, error) {
	val, err := s.localGet(key)
	if err != nil {
		return nil, ErrMiss
	}
	if val[0] != statefulLocalOnly {
		s.localDelete(key)
		return nil, ErrMiss
	}
	s.m.fallback(statefulFallbackLocalOnly)
	return s.openLocal(identity, key, val)
}

// openLocal opens flag | value from Local, and drops it in single-use mode.
func (s *Stateful) openLocal(identity []byte, key string, val []byte) (*tls.SessionState, error) {
	ss, err := s.open(identity, val[1:])
	if err == nil && s.singleUse {
		s.localDelete(key)
	}
	return ss, err
}

// open decrypts a stored value with the handle's key, in place: stores
// return slices the caller may keep, and ParseSessionState keeps slices of
// the plaintext.
func (s *Stateful) open(handle, val []byte) (*tls.SessionState, error) {
	if len(val) < statefulOverhead || val[0] != statefulVersion {
		return nil, fmt.Errorf("%w: stored session is truncated or not version %d", ErrBad, statefulVersion)
	}
	aead, err := statefulAEAD(handle[statefulIDLen:])
	if err != nil {
		return nil, err
	}
	ad := statefulAD(handle[:statefulIDLen])
	sealed := val[statefulHeaderLen:]
	plaintext, err := aead.Open(sealed[:0], val[1:statefulHeaderLen], sealed, ad[:])
	if err != nil {
		return nil, fmt.Errorf("%w: stored session fails authentication under the handle's key", ErrBad)
	}
	ss, err := tls.ParseSessionState(plaintext)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing session state: %w", ErrBad, err)
	}
	return ss, nil
}

// consume deletes a session that just resumed, for SingleUse: from Store
// first (which makes it single-use fleet-wide), then from Local.
func (s *Stateful) consume(key string) {
	if err := s.sharedDelete(context.Background(), key, true); err != nil {
		s.log.Debug("session store delete failed", zap.String("mode", s.mode), zap.Error(err))
	}
	s.localDelete(key)
}

// ErrBadSessionID is returned by Revoke for a string that is not a session
// identifier.
var ErrBadSessionID = errors.New("not a session ID")

// Revoke deletes the session whose SessionID is sessionID from Store and
// from this node's Local, so that its handle no longer resumes anywhere
// while Store is healthy. It returns an error if sessionID is not 32 hex
// digits, or if Store could not delete it (the session may then still
// resume); deleting an unknown session is not an error. ctx bounds the store
// call, which the breaker does not skip and Timeout does not bound.
//
// Other nodes' local copies are read only while their store fails, so
// during an outage a revoked session may still resume on the node that
// issued it; so may a session whose store write had failed (see Stateful),
// unless Revoke runs on that node.
func (s *Stateful) Revoke(ctx context.Context, sessionID string) error {
	sid, err := hex.DecodeString(sessionID)
	if err != nil || len(sid) != statefulSIDLen {
		return fmt.Errorf("resumption: revoking session %q: %w (%d hex digits)", sessionID, ErrBadSessionID, 2*statefulSIDLen)
	}
	key := sessioncache.SessionKey(s.prefix, sid)
	if err := s.local.Delete(ctx, key); err != nil {
		return fmt.Errorf("resumption: revoking session %s: %w", sessionID, err)
	}
	if s.shared == nil {
		return nil
	}
	if err := s.sharedDelete(ctx, key, false); err != nil {
		return fmt.Errorf("resumption: revoking session %s: %w", sessionID, err)
	}
	return nil
}
