package resumption

import (
	"bytes"
	"crypto/tls"
	"testing"

	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// ticketFuzzKey is fixed so that tickets in testdata/fuzz stay openable.
func ticketFuzzKey() *ticketkeys.Key {
	k := &ticketkeys.Key{Name: ticketkeys.Name([]byte("edgeproxy fuzz k"))}
	for i := range k.Secret {
		k.Secret[i] = byte(i * 7)
	}
	return k
}

// FuzzTicketsUnwrap feeds arbitrary identities to UnwrapSession, which must
// not panic and must return either a session or ErrBad/ErrMiss. Since a
// fuzzer cannot forge a GCM tag, it also seals the input as the plaintext of
// an authentic ticket, which takes arbitrary bytes to ParseSessionState. A
// session that unwraps must re-serialise and wrap again.
func FuzzTicketsUnwrap(f *testing.F) {
	key := ticketFuzzKey()
	tk := newTestTickets(f, newTicketTestRing(f, key))

	f.Add([]byte(nil))
	f.Add([]byte{ticketVersion})
	f.Add(append([]byte{ticketVersion}, key.Name[:]...))
	l := tlstest.NewLoopback(f)
	for _, v := range tlstest.Versions {
		// A server session (and its ticket) and a client session, which
		// carries certificates.
		a := &ticketAdapter{b: tk}
		cache := tlstest.NewRecordingCache()
		l.Connect(f, tlstest.ClientConfig(f, v.Version, cache), ticketServerConfig(f, a, v.Version))
		_, cs, ticket := cache.Last(f)
		f.Add(ticket)
		f.Add(ticket[:len(ticket)-1])
		ss, err := tk.UnwrapSession(ticket, tls.ConnectionState{})
		if err != nil {
			f.Fatal(err)
		}
		state, err := ss.Bytes()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(state)
		_, clientSS, err := cs.ResumptionState()
		if err != nil {
			f.Fatal(err)
		}
		clientState, err := clientSS.Bytes()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(clientState)
	}

	f.Fuzz(func(t *testing.T, identity []byte) {
		checkTicketsUnwrap(t, tk, identity)
		sealed, err := tk.seal(key, identity)
		if err != nil {
			t.Fatal(err)
		}
		checkTicketsUnwrap(t, tk, sealed)
	})
}

func checkTicketsUnwrap(t *testing.T, tk *Tickets, identity []byte) {
	t.Helper()
	ss := unwrapContract(t, tk, identity)
	if ss == nil {
		return
	}
	state, err := ss.Bytes()
	if err != nil {
		t.Fatalf("an unwrapped session does not serialise: %v", err)
	}
	reparsed, err := tls.ParseSessionState(state)
	if err != nil {
		t.Fatalf("an unwrapped session's bytes do not parse: %v", err)
	}
	again, err := reparsed.Bytes()
	if err != nil || !bytes.Equal(again, state) {
		t.Fatalf("serialising is not stable (%v):\n%x\n%x", err, state, again)
	}
	ticket, err := tk.WrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatalf("an unwrapped session does not wrap: %v", err)
	}
	back, err := tk.UnwrapSession(ticket, tls.ConnectionState{})
	if err != nil {
		t.Fatalf("a rewrapped session does not unwrap: %v", err)
	}
	if b, err := back.Bytes(); err != nil || !bytes.Equal(b, state) {
		t.Fatalf("a rewrapped session changed (%v)", err)
	}
}
