package stateful

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/edgeproxy/edgeproxy/resumption"
)

// Conn is a Backend's state for one connection's handshake, the
// resumption.BackendConn that Layer.ConnConfig routes the connection's
// hooks to (#12). Unlike the Backend's own hooks:
//
//   - WrapSessionID seals the session but stores nothing: the entry is
//     parked until HandshakeDone, which commits it if the handshake
//     completed and drops it otherwise (crypto/tls issues TLS 1.3 tickets,
//     and TLS 1.2 tickets on resumption, before it reads the client's
//     Finished). Two TLS 1.2 cases differ, because there the client holds
//     the ticket as soon as the server's Finished is out, and may reconnect
//     to another node before HandshakeDone could commit: a full handshake's
//     ticket is issued after crypto/tls verified the client's Finished, so
//     it is committed at once, before the server's Finished; a resumption
//     re-issues the handle the client presented (crypto/tls re-wraps the
//     same master secret and creation time, and the Layer keeps the
//     authentication time and scope), so nothing is written and the next
//     connection finds the session wherever this one did. With SingleUse
//     the resumed session is consumed, so a fresh one is parked as in TLS
//     1.3;
//   - UnwrapSessionID makes at most one store lookup per handshake: the
//     first identity that is a well-formed handle costs one, any further
//     identity of the ClientHello is a miss without a lookup;
//   - with SingleUse, the session the handshake resumed is consumed in
//     HandshakeDone(nil), after crypto/tls verified the TLS 1.3 binder and
//     read the client's Finished, not when it is looked up: a replayed
//     handle with a bogus binder does not burn the client's session.
//
// A Conn is used by one connection, its calls in sequence.
type Conn struct {
	s       *Backend
	pending []*entry // sealed, waiting for HandshakeDone
	looked  bool     // the one store lookup was made
	opened  string   // store key of the session the lookup opened
	handle  []byte   // its handle, as the client presented it
	sid     string   // its SessionID
	from    int      // where it was found (fromStore, fromLocal, fromDegraded)
	// storeDown: the lookup found Store failing, so commits do not wait
	// for it (a hung store costs a connection one Timeout, not two).
	storeDown bool
	// resumed: crypto/tls issued a ticket on a resumed connection, so the
	// opened session was used.
	resumed  bool
	done, ok bool // HandshakeDone ran; the handshake completed
	consumed bool
}

var _ resumption.BackendConn = (*Conn)(nil)

// NewConn returns the state of one connection's handshake. It implements
// resumption.ConnBackend.
func (s *Backend) NewConn() resumption.BackendConn { return &Conn{s: s} }

// WrapSessionID seals ss under a fresh handle, as Backend.WrapSessionID
// does, and parks it until HandshakeDone; issued after HandshakeDone(nil)
// (a QUIC server sends tickets after its handshake), it is committed at
// once. TLS 1.2 differs; see Conn.
func (c *Conn) WrapSessionID(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, string, error) {
	if cs.DidResume {
		c.resumed = true
	}
	if cs.Version == tls.VersionTLS12 && cs.DidResume && c.handle != nil && !c.s.singleUse && !c.done {
		c.s.m.commit(commitReissued)
		return c.handle, c.sid, nil
	}
	e, err := c.s.seal(ss)
	if err != nil {
		return nil, "", err
	}
	switch {
	case cs.Version == tls.VersionTLS12 && !cs.DidResume && !c.done:
		// The client's Finished was verified: commit before the server's.
		c.s.commit(e, !c.storeDown)
	case !c.done:
		c.pending = append(c.pending, e)
	case c.ok:
		c.s.commit(e, !c.storeDown)
		c.consume()
	default:
		c.s.m.commit(commitDropped)
	}
	return e.handle(), e.sid, nil
}

// UnwrapSessionID returns the session a handle names, as
// Backend.UnwrapSessionID does, but for the first well-formed handle of
// the handshake only: later ones get resumption.ErrMiss without a lookup.
// It consumes nothing; see HandshakeDone.
func (c *Conn) UnwrapSessionID(identity []byte, _ tls.ConnectionState) (*tls.SessionState, string, error) {
	key, sid, err := c.s.check(identity)
	if err != nil {
		return nil, "", err
	}
	if c.looked {
		return nil, "", fmt.Errorf("%w: this handshake made its one session lookup already", resumption.ErrMiss)
	}
	c.looked = true
	ss, from, err := c.s.unwrap(identity, key)
	c.storeDown = from == fromDegraded ||
		err != nil && !errors.Is(err, resumption.ErrMiss) && !errors.Is(err, resumption.ErrBad)
	if err != nil {
		return nil, "", err
	}
	c.opened, c.from, c.sid = key, from, sid
	c.handle = append([]byte(nil), identity...)
	return ss, sid, nil
}

// HandshakeDone ends the handshake: if err is nil, it commits the parked
// sessions (see Backend) and, with SingleUse, consumes the session the
// handshake resumed; else it drops them. Unless CommitAsync is set it
// waits for Store to acknowledge the commit, at most Timeout; with
// SingleUse, for the delete, at most Timeout. Calls after the first do
// nothing.
func (c *Conn) HandshakeDone(err error) {
	if c.done {
		return
	}
	c.done, c.ok = true, err == nil
	pending := c.pending
	c.pending = nil
	if err != nil {
		for range pending {
			c.s.m.commit(commitDropped)
		}
		return
	}
	for _, e := range pending {
		c.s.commit(e, !c.storeDown)
	}
	c.consume()
}

// consume deletes, with SingleUse, the session a completed handshake
// resumed, once.
func (c *Conn) consume() {
	if !c.s.singleUse || !c.ok || !c.resumed || c.opened == "" || c.consumed {
		return
	}
	c.consumed = true
	c.s.consume(c.opened, c.from)
}
