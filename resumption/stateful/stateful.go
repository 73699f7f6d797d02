// Package stateful is the resumption.Backend of the stateful modes (redis,
// memcached, sticky): the session state stays on the server side, in a
// shared sessioncache.Store and a node-local cache, and the client carries
// a 32-byte handle as its ticket or PSK identity. The handle format, the
// degraded mode and the circuit breaker are documented on Backend.
//
// The package assumes no transport: it sees only the tls.SessionState
// crypto/tls hands to the session hooks, so a QUIC listener can share it.
package stateful

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/aesgcm"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
)

// Handle and stored value, format version 1; documented on Backend.
const (
	formatVersion = 0x01
	idLen         = 16
	keyLen        = 16 // AES-128
	handleLen     = idLen + keyLen
	sidLen        = 16 // bytes of SHA-256(id) that name the entry
	nonceLen      = 12
	tagLen        = 16
	headerLen     = 1 + nonceLen // version | nonce
	overhead      = headerLen + tagLen

	// The node-local cache stores flag | epoch(8) | value. The epoch is the
	// read-through epoch of the store call that wrote or read the value
	// (see readthrough.go). The flag says whether the
	// shared store took the value too (stored), or only this node has it
	// (localOnly: sticky mode, or the store write failed or was skipped).
	flagStored    = 0x00
	flagLocalOnly = 0x01
)

// Backend is the resumption.Backend for the stateful modes (redis, memcached, sticky):
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
// Every session is written to Store (with Lifetime as TTL) and to Local:
// through NewConn (the path of edgeproxy's listener, #12) only once its
// handshake completed, to Local at once and to Store by background
// writers (see commit.go: bounded queue, pipelined writes, the window in
// which another node misses a session just issued); through the Backend's
// own WrapSession, at once. Store is the source of truth: while it
// answers, a session resumes only if Store has it, so revocation and
// single use hold fleet-wide. With ReadThrough, a session this node
// last wrote to or read from Store resumes from Local without a store
// get, and a revocation holds here within RevocationPoll (2 ×
// RevocationPoll at most; see readthrough.go). When Store fails or is slower than its
// per-call bound (Timeout, raised by observed latency; see latency),
// Backend falls back to Local (degraded mode): clients returning to the
// node that issued their session still resume, every other client gets a
// full handshake, and none a failed one. A high failure rate opens a
// circuit breaker that skips Store (no wait is added to handshakes);
// probes from 100ms to Cooldown apart try Store again, and the breaker
// closes when one succeeds (see breaker). A session
// whose Store write failed is kept in Local as node-local, and resumes on
// its node even once Store is back; it can be revoked only on that node.
//
// In sticky mode (no Store), Local is the only store.
//
// Backend is safe for concurrent use. With Store, the first commit starts
// its writer goroutines, which Close stops. Its zero value is not usable:
// build it with New.
//
// Warning: Store and Local hold every live session, sealed; the handle is
// the key that opens one. Anyone who sees a handle and can read the store
// (or this node's memory) can decrypt the TLS 1.2 connections of that
// session and, with TLS 1.3, impersonate the server to its client.
type Backend struct {
	mode      string
	shared    sessioncache.Store // nil in sticky mode
	local     sessioncache.Store
	prefix    string
	lifetime  time.Duration
	timeout   time.Duration
	singleUse bool
	async     bool // Config.CommitAsync
	rand      io.Reader
	log       *zap.Logger
	breaker   *breaker
	lat       *latency     // the adaptive per-call store timeout
	m         *modeMetrics // nil: count nothing
	metrics   *Metrics     // to detach from on Close
	writer    *committer
	rev       *revocation // nil: Local is read only after a store failure
	revKey    string      // sessioncache.RevocationKey

	closeOnce sync.Once
}

var _ resumption.Backend = (*Backend)(nil)

// errBreakerOpen is the store error of a call the breaker skipped.
var errBreakerOpen = errors.New("stateful: session store skipped: circuit breaker open")

// New returns a Backend for cfg, or the error from
// cfg.Validate. It does no I/O: check the store's reachability separately
// (redis.Store.Ping, memcache.Store.Ping).
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Backend{
		mode:      cfg.Mode,
		shared:    cfg.Store,
		local:     cfg.Local,
		prefix:    cfg.Prefix,
		lifetime:  resumption.SessionLifetime(cfg.Lifetime),
		timeout:   cfg.StoreTimeout(),
		singleUse: cfg.SingleUse,
		async:     cfg.CommitAsync,
		rand:      cfg.Rand,
		log:       cfg.Logger,
		metrics:   cfg.Metrics,
	}
	queue := cfg.commitQueue()
	if s.shared == nil {
		queue = 0 // sticky: commits go to Local, never to the writers
	}
	s.writer = newCommitter(queue, cfg.commitWorkers())
	if s.mode == "" {
		s.mode = resumption.ModeSticky
		if s.shared != nil {
			s.mode = "shared"
		}
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
			return nil, fmt.Errorf("stateful: building the local session cache: %w", err)
		}
		s.local = l
	}
	if s.shared != nil {
		s.revKey = sessioncache.RevocationKey(s.prefix)
		if cfg.ReadThrough && !s.singleUse {
			s.rev = newRevocation(s.shared, s.revKey, cfg.revocationPoll(), now, s.log.With(zap.String("mode", s.mode)))
		}
	}
	s.breaker = newBreaker(cfg.Breaker, now, s.log.With(zap.String("mode", s.mode)))
	s.lat = newLatency(s.timeout)
	if cfg.Metrics != nil {
		s.m = cfg.Metrics.forMode(s.mode)
		cfg.Metrics.attach(s)
	}
	return s, nil
}

// Close stops the revocation poller (ReadThrough) and the commit writers once they wrote what is queued (each
// write bounded by Timeout, or skipped by an open breaker), and detaches s
// from its Metrics, whose gauges stop counting its local cache and
// breaker. It does not close Store or Local, which belong to the caller:
// close Store after it. It is safe to call more than once; s keeps working
// after it, but later commits reach Local only (counted as overflow).
func (s *Backend) Close() error {
	s.closeOnce.Do(func() {
		s.writer.close()
		if s.rev != nil {
			s.rev.close()
		}
		if s.metrics != nil {
			s.metrics.detach(s)
		}
	})
	return nil
}

// sessionAEAD returns AES-128-GCM under the per-session key k.
func sessionAEAD(k []byte) (cipher.AEAD, error) {
	aead, err := aesgcm.New(k)
	if err != nil {
		return nil, fmt.Errorf("stateful: creating session cipher: %w", err)
	}
	return aead, nil
}

// additionalData returns the additional data of a value: version || id.
func additionalData(id []byte) [1 + idLen]byte {
	var ad [1 + idLen]byte
	ad[0] = formatVersion
	copy(ad[1:], id)
	return ad
}

// sidOf returns the name of the session whose handle starts with id:
// SHA-256(id)[:16]. Its store key and its SessionID both derive from it, so
// a wrap or an unwrap hashes once.
func sidOf(id []byte) [sidLen]byte {
	sum := sha256.Sum256(id)
	return [sidLen]byte(sum[:sidLen])
}

// storeKey returns the store key of the session whose handle starts with id.
func (s *Backend) storeKey(id []byte) string {
	sid := sidOf(id)
	return sessioncache.SessionKey(s.prefix, sid[:])
}

// SessionID returns the non-secret identifier of the session a handle
// names: hex(SHA-256(id)[:16]), 32 hex digits, the same on every node. It
// reveals neither the handle nor the session, so it may travel to upstreams
// (X-TLS-Session-ID) and into logs of the admin API; Revoke takes it. It
// returns "" for an identity that is not a 32-byte handle. WrapSessionID
// and UnwrapSessionID return it without hashing again.
func (s *Backend) SessionID(identity []byte) string {
	if len(identity) != handleLen {
		return ""
	}
	sid := sidOf(identity[:idLen])
	return hex.EncodeToString(sid[:])
}

// WrapSession is WrapSessionID without the session identifier. It has the
// signature of tls.Config.WrapSession.
func (s *Backend) WrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	h, _, err := s.WrapSessionID(cs, ss)
	return h, err
}

// UnwrapSession is UnwrapSessionID without the session identifier. It has
// the signature of tls.Config.UnwrapSession.
func (s *Backend) UnwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, _, err := s.UnwrapSessionID(identity, cs)
	return ss, err
}

// WrapSessionID stores ss, sealed under a fresh per-session key, and
// returns the handle that names and opens it, and the session's SessionID.
// It implements resumption.SessionIDer. It stores at once, for a handshake
// that may never complete: edgeproxy's listener goes through NewConn, which
// stores only once the handshake completed.
//
// The session is written to Store (bounded by Timeout, skipped while the
// breaker is open) and to Local. A Store failure is not a wrap failure: it
// is counted and feeds the breaker, and the session lives in Local only, so
// it resumes on this node. WrapSession fails only if the state cannot be
// serialised, Rand fails, or neither cache took the session.
//
// Warning: the handle opens the session; see Backend.
func (s *Backend) WrapSessionID(_ tls.ConnectionState, ss *tls.SessionState) (handle []byte, sessionID string, err error) {
	e, err := s.seal(ss)
	if err != nil {
		return nil, "", err
	}
	flag, epoch := byte(flagLocalOnly), s.epoch()
	if s.shared != nil && s.sharedPut(e.key, e.value()) == nil {
		flag = flagStored
	}
	if err := s.localPut(e.key, e.local(flag, epoch)); err != nil && flag == flagLocalOnly {
		return nil, "", fmt.Errorf("stateful: storing session: %w", err)
	}
	return e.handle(), e.sid, nil
}

// entry is a sealed session on its way to the stores. Its one buffer is
// handle(32) | local flag(1) | epoch(8) | version(1) | nonce(12) | sealed:
// the handle returned to crypto/tls shares it (capped, so nothing writes
// past it); Local copies flag | epoch | value, Store is sent value.
type entry struct {
	buf []byte
	key string // store key
	sid string // SessionID
	// committed is when the handshake completed (NewConn's path only).
	committed time.Time
	// epoch is the read-through epoch when it was committed.
	epoch uint64
	// acked, if not nil, is closed once the writers are done with the entry.
	acked chan struct{}
}

const valueOff = handleLen + localHdr // offset of the value in entry.buf

func (e *entry) handle() []byte { return e.buf[:handleLen:handleLen] }

// value returns the stored value: version | nonce | sealed.
func (e *entry) value() []byte { return e.buf[valueOff:] }

// local returns flag | epoch | value for Local. It sets the header in
// buf, so it must not be called once buf was handed to Local with another.
func (e *entry) local(flag byte, epoch uint64) []byte {
	e.buf[handleLen] = flag
	binary.BigEndian.PutUint64(e.buf[handleLen+1:valueOff], epoch)
	return e.buf[handleLen:]
}

// localValue returns flag | epoch | val for Local, in a new slice.
func localValue(flag byte, epoch uint64, val []byte) []byte {
	b := make([]byte, localHdr, localHdr+len(val))
	b[0] = flag
	binary.BigEndian.PutUint64(b[1:], epoch)
	return append(b, val...)
}

// epoch returns the read-through epoch to record with a store call about
// to be made; 0 without read-through.
func (s *Backend) epoch() uint64 {
	if s.rev == nil {
		return 0
	}
	return s.rev.current()
}

// seal serialises ss and seals it under a fresh handle.
func (s *Backend) seal(ss *tls.SessionState) (*entry, error) {
	if ss == nil {
		return nil, errors.New("stateful: WrapSession called with a nil session")
	}
	state, err := ss.Bytes()
	if err != nil {
		return nil, fmt.Errorf("stateful: serialising session: %w", err)
	}
	defer clear(state) // it holds the session secret in the clear

	buf := make([]byte, valueOff+headerLen, valueOff+headerLen+len(state)+tagLen)
	handle := buf[:handleLen:handleLen]
	nonce := buf[valueOff+1 : valueOff+headerLen]
	if _, err := io.ReadFull(s.rand, handle); err != nil {
		return nil, fmt.Errorf("stateful: reading session handle: %w", err)
	}
	if _, err := io.ReadFull(s.rand, nonce); err != nil {
		return nil, fmt.Errorf("stateful: reading session nonce: %w", err)
	}
	buf[valueOff] = formatVersion
	aead, err := sessionAEAD(handle[idLen:])
	if err != nil {
		return nil, err
	}
	ad := additionalData(handle[:idLen])
	buf = aead.Seal(buf, nonce, state, ad[:])
	sid := sidOf(handle[:idLen])
	return &entry{buf: buf, key: sessioncache.SessionKey(s.prefix, sid[:]), sid: hex.EncodeToString(sid[:])}, nil
}

// UnwrapSessionID returns the session a handle names and its SessionID. It
// implements resumption.SessionIDer, and reports why it found no session as
// resumption.Backend requires:
//
//   - resumption.ErrMiss: the identity is empty (a TLS 1.2 client without a ticket;
//     crypto/tls asks anyway), or the store answered that it has no such
//     session: never issued, expired, revoked or already used (SingleUse);
//   - resumption.ErrBad: the identity is not 32 bytes, or the stored value fails
//     authentication under the handle's key (a forged or altered handle or
//     value), or holds state that does not parse;
//   - any other error: Store failed (or the breaker skipped it) and Local
//     has no copy either.
//
// While Store fails, a session found in Local resumes (degraded mode, see
// Backend). It never panics on any input. It does not check the session's
// age or scope; the Layer does. With SingleUse it consumes the session at
// once, before crypto/tls checked the client's binder or Finished: use
// NewConn's hooks, which consume after the handshake completed.
func (s *Backend) UnwrapSessionID(identity []byte, _ tls.ConnectionState) (*tls.SessionState, string, error) {
	key, sid, err := s.check(identity)
	if err != nil {
		return nil, "", err
	}
	ss, from, err := s.unwrap(identity, key)
	if err != nil {
		return nil, "", err
	}
	if s.singleUse {
		s.consume(key, from)
	}
	return ss, sid, nil
}

// check makes the cheap checks of an identity, and returns the store key and
// SessionID of a well-formed handle.
func (s *Backend) check(identity []byte) (key, sessionID string, err error) {
	if len(identity) == 0 {
		return "", "", resumption.ErrMiss
	}
	if len(identity) != handleLen {
		return "", "", fmt.Errorf("%w: handle of %d bytes, want %d", resumption.ErrBad, len(identity), handleLen)
	}
	sid := sidOf(identity[:idLen])
	return sessioncache.SessionKey(s.prefix, sid[:]), hex.EncodeToString(sid[:]), nil
}

// Where unwrap found a session: a SingleUse consumption deletes it there.
const (
	fromStore    = iota + 1 // Store, and maybe Local
	fromLocal               // Local only: local-only after a store miss, or sticky
	fromDegraded            // Local only, because Store failed
	fromCache               // Local, verified in the current epoch (ReadThrough)
)

// unwrap finds and opens the session of a 32-byte handle stored under key,
// and says where it found it (fromStore, fromLocal, fromDegraded). It
// consumes nothing:
// the caller does, for SingleUse.
func (s *Backend) unwrap(identity []byte, key string) (*tls.SessionState, int, error) {
	if s.shared == nil {
		return s.unwrapSticky(identity, key)
	}
	if s.rev != nil {
		if val, err := s.localGet(key); err == nil && val[0] == flagStored &&
			s.rev.usable(binary.BigEndian.Uint64(val[1:localHdr])) {
			s.m.readThrough()
			ss, err := s.open(identity, val[localHdr:])
			return ss, fromCache, err
		}
	}
	epoch := s.epoch()
	val, storeErr := s.sharedGet(key)
	switch {
	case storeErr == nil:
		if s.rev != nil {
			// Keep a verified copy: open decrypts val in place.
			_ = s.localPut(key, localValue(flagStored, epoch, val))
		}
		ss, err := s.open(identity, val)
		return ss, fromStore, err
	case errors.Is(storeErr, sessioncache.ErrMiss):
		return s.afterStoreMiss(identity, key)
	}
	// Degraded: resume only what this node issued.
	val, err := s.localGet(key)
	if err != nil {
		s.m.fallback(fallbackMiss)
		return nil, 0, fmt.Errorf("stateful: no local copy, and %w", storeErr)
	}
	s.m.fallback(fallbackHit)
	ss, _, err := s.openLocal(identity, val)
	return ss, fromDegraded, err
}

// unwrapSticky finds a session in Local, the only store in sticky mode.
func (s *Backend) unwrapSticky(identity []byte, key string) (*tls.SessionState, int, error) {
	val, err := s.localGet(key)
	if errors.Is(err, sessioncache.ErrMiss) {
		return nil, 0, resumption.ErrMiss
	}
	if err != nil {
		return nil, 0, fmt.Errorf("stateful: local session cache: %w", err)
	}
	return s.openLocal(identity, val)
}

// afterStoreMiss handles a healthy store's miss. The store is the source of
// truth, so a copy in Local is stale (revoked, expired, used, or lost with
// the store) and is dropped, unless it is marked local-only: its store
// write failed, so the store never had it, and it resumes on this node.
func (s *Backend) afterStoreMiss(identity []byte, key string) (*tls.SessionState, int, error) {
	val, err := s.localGet(key)
	if err != nil {
		return nil, 0, resumption.ErrMiss
	}
	if val[0] != flagLocalOnly {
		s.localDelete(key)
		return nil, 0, resumption.ErrMiss
	}
	s.m.fallback(fallbackLocalOnly)
	return s.openLocal(identity, val)
}

// openLocal opens flag | value from Local.
func (s *Backend) openLocal(identity []byte, val []byte) (*tls.SessionState, int, error) {
	ss, err := s.open(identity, val[localHdr:])
	return ss, fromLocal, err
}

// open decrypts a stored value with the handle's key, in place: stores
// return slices the caller may keep, and ParseSessionState keeps slices of
// the plaintext.
func (s *Backend) open(handle, val []byte) (*tls.SessionState, error) {
	if len(val) < overhead || val[0] != formatVersion {
		return nil, fmt.Errorf("%w: stored session is truncated or not version %d", resumption.ErrBad, formatVersion)
	}
	aead, err := sessionAEAD(handle[idLen:])
	if err != nil {
		return nil, err
	}
	ad := additionalData(handle[:idLen])
	sealed := val[headerLen:]
	plaintext, err := aead.Open(sealed[:0], val[1:headerLen], sealed, ad[:])
	if err != nil {
		return nil, fmt.Errorf("%w: stored session fails authentication under the handle's key", resumption.ErrBad)
	}
	ss, err := tls.ParseSessionState(plaintext)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing session state: %w", resumption.ErrBad, err)
	}
	return ss, nil
}

// consume deletes a session that resumed, for SingleUse: found in Store,
// from Store first (which makes it single-use fleet-wide), then from Local;
// found in Local only, from Local.
func (s *Backend) consume(key string, from int) {
	result := consumeOK
	if from == fromStore {
		if err := s.sharedDelete(context.Background(), key, true); err != nil {
			result = consumeError
			s.log.Debug("session store delete failed", zap.String("mode", s.mode), zap.Error(err))
		}
	}
	s.localDelete(key)
	s.m.consumed(result)
}

// ErrBadSessionID is returned by Revoke for a string that is not a session
// identifier.
var ErrBadSessionID = errors.New("not a session ID")

// ErrRevokeIncomplete is wrapped by Revoke's errors when the session was
// dropped from this node's Local but the store did not take the deletion
// or the new revocation generation: the session may still resume on other
// nodes (from Store, or from their local copies) until a later Revoke of
// it succeeds. Retry it.
var ErrRevokeIncomplete = errors.New("revocation incomplete, retry")

// Revoke deletes the session whose SessionID is sessionID from this
// node's Local, then from Store, then replaces the revocation generation in
// Store, so that nodes with ReadThrough stop using their local copies of
// it at their next poll. Deleting an unknown session is not an error. ctx
// bounds the store calls, which the breaker does not skip and Timeout does
// not bound.
//
// If Revoke returns nil, the session no longer resumes on any node of the
// fleet while Store is healthy: at once on nodes that read Store, within
// RevocationPoll (2 × RevocationPoll at most) on nodes that hold a copy
// with ReadThrough (see readthrough.go). During a store outage other
// nodes' copies are read in degraded mode (see Backend); a session whose
// store write had failed lives only in its node's Local, where only a
// Revoke on that node reaches it; a session revoked within its commit
// delay (edgeproxy_session_commit_delay_seconds, typically well under a
// millisecond) of its handshake may be written to Store after the delete.
//
// It returns an error wrapping ErrBadSessionID if sessionID is not 32 hex
// digits, and one wrapping ErrRevokeIncomplete if Store failed the delete
// or the generation write: the local copy is dropped regardless, but other
// nodes may still resume the session (a node that cannot read the
// generation stops reading through within 2 × RevocationPoll, so the
// danger is a node that reads Store while this one could not write it).
// The caller should retry until Revoke returns nil (#12).
func (s *Backend) Revoke(ctx context.Context, sessionID string) error {
	sid, err := hex.DecodeString(sessionID)
	if err != nil || len(sid) != sidLen {
		return fmt.Errorf("stateful: revoking session %q: %w (%d hex digits)", sessionID, ErrBadSessionID, 2*sidLen)
	}
	key := sessioncache.SessionKey(s.prefix, sid)
	// Local first and regardless of ctx: this node stops resuming it even
	// if Store fails below.
	s.localDelete(key)
	if s.shared == nil {
		return nil
	}
	if err := s.sharedDelete(ctx, key, false); err != nil {
		return fmt.Errorf("stateful: revoking session %s: %w: deleting it from the store: %w", sessionID, ErrRevokeIncomplete, err)
	}
	if err := s.bumpGeneration(ctx); err != nil {
		return fmt.Errorf("stateful: revoking session %s: %w: deleted from the store, but other nodes may resume it from their local copies: %w", sessionID, ErrRevokeIncomplete, err)
	}
	return nil
}

// bumpGeneration replaces the fleet's revocation generation with 16 random
// bytes, so that every ReadThrough node stops using its verified copies at
// its next poll (see readthrough.go).
func (s *Backend) bumpGeneration(ctx context.Context) error {
	gen := make([]byte, 16)
	if _, err := io.ReadFull(s.rand, gen); err != nil {
		return fmt.Errorf("reading revocation generation: %w", err)
	}
	if err := s.shared.Put(ctx, s.revKey, gen, s.lifetime); err != nil {
		return fmt.Errorf("writing revocation generation: %w", err)
	}
	return nil
}
