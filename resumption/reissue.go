package resumption

import "crypto/tls"

// Reissuer is implemented by backends that keep a session's state on the
// server side and can hand a TLS 1.2 client back the identity it resumed
// with, instead of wrapping the session again (#12).
//
// On a TLS 1.2 resumption crypto/tls always issues a new ticket, for the
// same master secret and creation time; through ConnConfig the Layer keeps
// the session's authentication time and scope, so the state is the one the
// backend already holds, and a stateful backend would only write it again
// under a new handle (a seal and a store round trip per resumption). Handing
// back the same handle reveals nothing new to an observer: the TLS 1.2
// NewSessionTicket message is sent in the clear, so a new ticket links the
// connections of a session just as well. TLS 1.3 derives a new secret per
// ticket, so it always wraps.
type Reissuer interface {
	// ReissuesTLS12 reports whether the backend accepts its own identity
	// back as the new ticket of a TLS 1.2 resumption; false for instance
	// when each session may be used once.
	ReissuesTLS12() bool
}

// reissue returns the identity a TLS 1.2 connection resumed with, when its
// new ticket may be that identity (see Reissuer), or nil.
func (l *Layer) reissue(cs tls.ConnectionState, resumedWith []byte) []byte {
	if cs.Version != tls.VersionTLS12 || !cs.DidResume || resumedWith == nil {
		return nil
	}
	if r, ok := l.backend.(Reissuer); !ok || !r.ReissuesTLS12() {
		return nil
	}
	return resumedWith
}
