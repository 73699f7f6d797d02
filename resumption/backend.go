package resumption

import (
	"crypto/tls"
	"errors"
)

// Backend carries session state between handshakes: it turns a session into
// the identity the client carries (a sealed ticket, or a handle into a
// store), and an identity back into the session. Its two methods have exactly
// the signatures of tls.Config.WrapSession and UnwrapSession, but unlike those
// hooks a Backend reports why a session could not be found, so the Layer can
// count it: ErrMiss, ErrBad, or any other error for a store that failed. The
// Layer turns every such error into a full handshake; a Backend never decides
// to fail a handshake.
//
// Backends serialise sessions only with SessionState.Bytes and
// tls.ParseSessionState, and must be safe for concurrent use.
type Backend interface {
	WrapSession(tls.ConnectionState, *tls.SessionState) ([]byte, error)
	UnwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error)
}

var (
	// ErrMiss means the identity is well formed but names nothing this node
	// can open: an unknown or retired ticket key, or a handle whose entry is
	// gone or expired in the store.
	ErrMiss = errors.New("resumption: session not found")
	// ErrBad means the identity is malformed, fails authentication, or holds
	// state that does not parse.
	ErrBad = errors.New("resumption: bad session identity")
)
