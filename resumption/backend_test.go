package resumption

import (
	"crypto/tls"
	"testing"

	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
)

// unwrapContract unwraps identity with b and checks the Backend contract:
// a session and no error, or no session and ErrBad or ErrMiss. It returns
// the session, or nil.
func unwrapContract(t *testing.T, b Backend, identity []byte) *tls.SessionState {
	t.Helper()
	return tlstest.UnwrapContract(t, b.UnwrapSession, identity, ErrBad, ErrMiss)
}
