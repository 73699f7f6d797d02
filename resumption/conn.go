package resumption

import "crypto/tls"

// SessionIDer is implemented by backends whose sessions have a non-secret
// identifier that can be revoked (the stateful backends). The identifier
// is derived from the identity but does not reveal it.
type SessionIDer interface {
	SessionID(identity []byte) string
}

// ConnSession records, for one connection, the identifier of the session
// its handshake resumed or issued. It is written during the handshake and
// must be read only after the handshake completed.
type ConnSession struct {
	id string
}

// ID returns the session identifier, or "" when the connection has none
// (no ticket issued, or a backend without identifiers).
func (c *ConnSession) ID() string {
	if c == nil {
		return ""
	}
	return c.id
}

// TracksSessions reports whether ConnConfig records session identifiers:
// only backends implementing SessionIDer have them.
func (l *Layer) TracksSessions() bool {
	_, ok := l.backend.(SessionIDer)
	return ok
}

// ConnConfig returns a copy of base for one connection whose session hooks
// also record the connection's session identifier in the returned
// ConnSession: the newest issued one, else the one resumed. It costs a
// tls.Config clone per handshake; use it only when the identifier is
// needed (TracksSessions).
func (l *Layer) ConnConfig(base *tls.Config) (*tls.Config, *ConnSession) {
	ider, ok := l.backend.(SessionIDer)
	if !ok {
		return base, nil
	}
	c := base.Clone()
	rec := &ConnSession{}
	c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		identity, err := l.WrapSession(cs, ss)
		if err == nil {
			rec.id = ider.SessionID(identity)
		}
		return identity, err
	}
	c.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := l.UnwrapSession(identity, cs)
		if ss != nil {
			rec.id = ider.SessionID(identity)
		}
		return ss, err
	}
	return c, rec
}
