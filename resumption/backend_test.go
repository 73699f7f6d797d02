package resumption

import (
	"crypto/tls"
	"errors"
	"testing"
)

// unwrapContract unwraps identity with b and checks the Backend contract:
// a session and no error, or no session and ErrBad or ErrMiss. It returns
// the session, or nil.
func unwrapContract(t *testing.T, b Backend, identity []byte) *tls.SessionState {
	t.Helper()
	ss, err := b.UnwrapSession(identity, tls.ConnectionState{})
	if err != nil {
		if ss != nil {
			t.Fatalf("UnwrapSession returned a session with error %v", err)
		}
		if !errors.Is(err, ErrBad) && !errors.Is(err, ErrMiss) {
			t.Fatalf("UnwrapSession error %v is neither ErrBad nor ErrMiss", err)
		}
		return nil
	}
	if ss == nil {
		t.Fatal("UnwrapSession returned (nil, nil)")
	}
	return ss
}
