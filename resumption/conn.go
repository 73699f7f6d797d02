package resumption

import (
	"crypto/tls"
)

// SessionIDer is implemented by backends whose sessions have a non-secret
// identifier that can be revoked (the stateful backends). The identifier
// is derived from the identity but does not reveal it. Its methods are the
// Backend's WrapSession and UnwrapSession that also return the identifier
// ("" with an error), so that a backend derives it once, with its store key;
// a Layer calls them instead of WrapSession and UnwrapSession.
type SessionIDer interface {
	WrapSessionID(tls.ConnectionState, *tls.SessionState) (identity []byte, sessionID string, err error)
	UnwrapSessionID(identity []byte, cs tls.ConnectionState) (ss *tls.SessionState, sessionID string, err error)
}

// Reissuer is implemented by backends whose TLS 1.2 identities may go back
// to the client unchanged when a connection resumes with them (Tickets: one
// sealed under the ring's current key). crypto/tls issues a ticket on every
// TLS 1.2 resumption, wrapping the same master secret and creation time;
// the Layer keeps the authentication time and scope too, so that ticket
// would say what the presented one says. OpenSSL (nginx, HAProxy) sends no
// new ticket then unless the old one's key is due for renewal; sending the
// presented one back is the nearest crypto/tls allows, and saves sealing a
// ticket per resumption (#13). Unlinkability is not lost: a TLS 1.2
// NewSessionTicket travels in the clear, so an observer links the old and
// the new ticket anyway. TLS 1.3 tickets are always fresh.
//
// Reissuable is called only with an identity the backend has just opened.
type Reissuer interface {
	Reissuable(identity []byte) bool
}

// ConnBackend is implemented by backends that must see how a connection's
// handshake ended before they act on what its hooks did (the stateful
// backends, #12): crypto/tls issues a TLS 1.3 ticket (and a TLS 1.2 ticket
// on resumption) before it has read the client's Finished, and verifies a
// TLS 1.3 binder only after UnwrapSession returned, so a store write or a
// single-use deletion made inside the hooks would act for an
// unauthenticated client.
//
// Layer.ConnConfig calls NewConn once per connection and routes that
// connection's hooks to the BackendConn it returns, whose HandshakeDone is
// called from ConnSession.HandshakeDone. The plain hooks of
// Layer.Configure, which see no end of handshake, keep calling the
// Backend's own methods.
type ConnBackend interface {
	NewConn() BackendConn
}

// BackendConn is one connection's view of a ConnBackend. Its methods are
// called in sequence (never concurrently): the session hooks during the
// handshake, then HandshakeDone once with nil if the handshake completed or
// its error; a transport that issues tickets after the handshake (QUIC) may
// call WrapSessionID after HandshakeDone(nil).
type BackendConn interface {
	SessionIDer
	HandshakeDone(err error)
}

// ConnSession is what one connection's handshake learnt about its session:
// the identifier of the session it resumed or was issued (stateful
// backends), and when the resumed session was first authenticated. The
// handshake writes it; it must be read only after HandshakeDone. It
// implements proxy.ConnSession.
type ConnSession struct {
	l      *Layer
	bc     BackendConn // nil unless the backend is a ConnBackend
	id     string
	authAt int64 // Unix seconds; zero when the handshake resumed nothing
	// resumed is set when crypto/tls issued a ticket on a resumed
	// connection (cs.DidResume in WrapSession): it does so on every
	// resumption over TCP, TLS 1.2 and 1.3.
	resumed bool
	opened  bool // UnwrapSession handed crypto/tls a session
	done    bool
	// reissue is the TLS 1.2 identity the handshake opened, while it may
	// be sent back as the ticket crypto/tls issues (Reissuer).
	reissue []byte
}

// SessionID returns the session identifier, or "" when the connection has
// none (no ticket issued, or a backend without identifiers). It is safe to
// call on a nil *ConnSession.
func (c *ConnSession) SessionID() string {
	if c == nil {
		return ""
	}
	return c.id
}

// HandshakeDone is called by the listener once the connection's handshake
// ended, with nil if it completed: the client's Finished authenticated it.
// It is the commit point of what had to wait for that (#12): a stateful
// backend stores the session the handshake issued, or drops it if err is
// not nil, and consumes a single-use session the handshake resumed. It
// counts the handshake in edgeproxy_resumption_handshakes_total. It may
// wait for the backend's store (bounded by the backend's timeout), so the
// listener calls it on the connection's own goroutine. Calls after the
// first do nothing; it is safe on a nil *ConnSession. It is
// transport-agnostic: any listener (TCP, QUIC) calls it at the end of the
// handshake.
func (c *ConnSession) HandshakeDone(err error) {
	if c == nil || c.done || c.l == nil {
		return
	}
	c.done = true
	c.reissue = nil
	if c.bc != nil {
		c.bc.HandshakeDone(err)
	}
	switch {
	case err != nil:
		c.l.counts.failed.Inc()
	case c.resumed && c.opened:
		c.l.counts.resumed.Inc()
	default:
		c.l.counts.full.Inc()
	}
}

// TracksSessions reports whether ConnSession.SessionID is filled in: only for
// backends implementing SessionIDer.
func (l *Layer) TracksSessions() bool { return l.ider != nil }

// ConnConfig returns a copy of base for one connection, with session
// tickets on and the Layer's hooks installed, which link what the handshake
// resumed to what it issues:
//
//   - a ticket issued on a resumed connection keeps the authentication time
//     of the session it resumed, so Lifetime bounds a session from its full
//     handshake however often it resumes (the plain hooks from Configure
//     restart the clock with every ticket);
//   - with a SessionIDer backend, the returned ConnSession records the
//     identifier of the newest issued session, else of the one resumed;
//   - with a ConnBackend, the hooks go to the connection's BackendConn,
//     which acts (stores, consumes) only at ConnSession.HandshakeDone.
//
// The caller must call HandshakeDone on the returned ConnSession when the
// handshake ended: without it a stateful backend stores nothing.
//
// It costs a tls.Config clone per handshake (about 0.3µs, 4 allocations).
func (l *Layer) ConnConfig(base *tls.Config) (*tls.Config, *ConnSession) {
	c := base.Clone()
	c.SessionTicketsDisabled = false
	rec := &ConnSession{l: l}
	ider := l.ider
	if l.cb != nil {
		rec.bc = l.cb.NewConn()
		ider = rec.bc
	}
	c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		authAt := rec.authAt
		if cs.DidResume {
			rec.resumed = true
			if id := rec.reissue; id != nil { // set only for TLS 1.2
				rec.reissue = nil
				l.counts.wrapOK.Inc()
				return id, nil
			}
		}
		if !cs.DidResume || authAt == 0 {
			authAt = l.now().Unix()
		}
		identity, id, ok := l.wrap(ider, cs, ss, authAt)
		if ok && id != "" {
			rec.id = id
		}
		return identity, nil
	}
	c.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, authAt, id := l.unwrap(ider, identity, cs)
		if ss != nil {
			rec.authAt, rec.id, rec.opened = authAt, id, true
			if cs.Version == tls.VersionTLS12 && l.reissuer != nil && l.reissuer.Reissuable(identity) {
				rec.reissue = identity // crypto/tls's, unchanged until the handshake ends
			}
		}
		return ss, nil
	}
	return c, rec
}
