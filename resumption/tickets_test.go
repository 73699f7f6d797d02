package resumption

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

var _ = &tls.Config{WrapSession: (&Tickets{}).WrapSession}
var _ = &tls.Config{UnwrapSession: (&Tickets{}).UnwrapSession}

var _ Backend = (*Tickets)(nil)

// ticketTestRing is a RingSource whose ring a test swaps whole, as
// ticketkeys.Holder does.
type ticketTestRing struct {
	p atomic.Pointer[ticketkeys.Ring]
}

func (r *ticketTestRing) Ring() *ticketkeys.Ring { return r.p.Load() }

func (r *ticketTestRing) set(tb testing.TB, keys ...*ticketkeys.Key) {
	tb.Helper()
	ring, err := ticketkeys.NewRing(keys...)
	if err != nil {
		tb.Fatal(err)
	}
	r.p.Store(ring)
}

func newTicketTestRing(tb testing.TB, keys ...*ticketkeys.Key) *ticketTestRing {
	tb.Helper()
	r := &ticketTestRing{}
	r.set(tb, keys...)
	return r
}

// newTicketKey returns a key whose name is id repeated and whose secret is
// random.
func newTicketKey(tb testing.TB, id byte) *ticketkeys.Key {
	tb.Helper()
	k := &ticketkeys.Key{}
	for i := range k.Name {
		k.Name[i] = id
	}
	if _, err := rand.Read(k.Secret[:]); err != nil {
		tb.Fatal(err)
	}
	return k
}

func newTestTickets(tb testing.TB, keys RingSource) *Tickets {
	tb.Helper()
	tk, err := NewTickets(TicketsConfig{Keys: keys})
	if err != nil {
		tb.Fatal(err)
	}
	return tk
}

// ticketName returns the key name a ticket carries.
func ticketName(tb testing.TB, ticket []byte) ticketkeys.Name {
	tb.Helper()
	if len(ticket) < ticketSaltOff {
		tb.Fatalf("ticket of %d bytes has no key name", len(ticket))
	}
	return ticketkeys.Name(ticket[ticketNameOff:ticketSaltOff])
}

// ticketAdapter wires a Backend straight into tls.Config hooks for tests:
// UnwrapSession maps every error to (nil, nil), a full handshake, and
// records it.
type ticketAdapter struct {
	b Backend

	// mu protects errs.
	mu   sync.Mutex
	errs []error
}

func (a *ticketAdapter) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, err := a.b.UnwrapSession(identity, cs)
	if err != nil {
		a.mu.Lock()
		a.errs = append(a.errs, err)
		a.mu.Unlock()
		return nil, nil
	}
	return ss, nil
}

// takeErrs returns the unwrap errors recorded since the last call.
func (a *ticketAdapter) takeErrs() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	errs := a.errs
	a.errs = nil
	return errs
}

func ticketServerConfig(tb testing.TB, a *ticketAdapter, version uint16) *tls.Config {
	tb.Helper()
	return &tls.Config{
		Certificates:  []tls.Certificate{tlstest.Cert(tb)},
		MinVersion:    version,
		MaxVersion:    version,
		WrapSession:   a.b.WrapSession,
		UnwrapSession: a.unwrap,
	}
}

func TestNewTicketsValidates(t *testing.T) {
	t.Parallel()
	ring := newTicketTestRing(t, newTicketKey(t, 1))
	tests := []struct {
		name    string
		cfg     TicketsConfig
		wantErr string
	}{
		{"no keys", TicketsConfig{}, "TicketsConfig.Keys"},
		{"no keys with rand", TicketsConfig{Rand: rand.Reader}, "TicketsConfig.Keys"},
		{"keys", TicketsConfig{Keys: ring}, ""},
		{"keys and rand", TicketsConfig{Keys: ring, Rand: rand.Reader}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, err := NewTickets(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || tk == nil {
					t.Fatalf("NewTickets = %v, %v; want a backend", tk, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewTickets error = %v; want one naming %q", err, tt.wantErr)
			}
			if tk != nil {
				t.Fatal("NewTickets returned a backend with its error")
			}
		})
	}
}

func TestTicketsRoundTripState(t *testing.T) {
	t.Parallel()
	key := newTicketKey(t, 1)
	tk := newTestTickets(t, newTicketTestRing(t, key))
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			ss := tlstest.Session(t, v.Version)
			ss.Extra = [][]byte{{0xE1, 1, 2, 3}, []byte("node-7"), {}}
			want, err := ss.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			ticket, err := tk.WrapSession(tls.ConnectionState{}, ss)
			if err != nil {
				t.Fatal(err)
			}
			if ticket[0] != ticketVersion || ticketName(t, ticket) != key.Name {
				t.Fatalf("ticket header = %x; want version %d and key %s", ticket[:ticketSaltOff], ticketVersion, key.Name)
			}
			if got, want := len(ticket), len(want)+ticketOverhead; got != want {
				t.Fatalf("ticket is %d bytes; want %d", got, want)
			}
			if bytes.Contains(ticket, want[len(want)/2:]) {
				t.Fatal("the ticket carries the session state in the clear")
			}
			got, err := tk.UnwrapSession(ticket, tls.ConnectionState{})
			if err != nil {
				t.Fatal(err)
			}
			gotBytes, err := got.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotBytes, want) {
				t.Fatalf("unwrapped state differs:\n got %x\nwant %x", gotBytes, want)
			}
		})
	}
}

func TestTicketsResumeHandshake(t *testing.T) {
	t.Parallel()
	l := tlstest.NewLoopback(t)
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			a := &ticketAdapter{b: newTestTickets(t, newTicketTestRing(t, newTicketKey(t, 1)))}
			srv := ticketServerConfig(t, a, v.Version)
			cache := tlstest.NewRecordingCache()
			cli := tlstest.ClientConfig(t, v.Version, cache)

			first := l.Connect(t, cli, srv)
			if first.DidResume {
				t.Fatal("first connection resumed")
			}
			if first.Version != v.Version {
				t.Fatalf("negotiated %x; want %x", first.Version, v.Version)
			}
			if cache.Count() == 0 {
				t.Fatal("the client received no ticket")
			}
			// A TLS 1.2 server asks for the (empty) ticket of a client that
			// has none: that is a miss.
			for _, err := range a.takeErrs() {
				if !errors.Is(err, ErrMiss) {
					t.Fatalf("first connection: unwrap error %v; want only ErrMiss", err)
				}
			}
			second := l.Connect(t, cli, srv)
			if !second.DidResume {
				t.Fatalf("second connection did not resume; unwrap errors: %v", a.takeErrs())
			}
			if errs := a.takeErrs(); len(errs) != 0 {
				t.Fatalf("unwrap errors: %v", errs)
			}
		})
	}
}

// TestTicketsFleetRoundRobin runs three servers, as three nodes, sharing one
// ring; the client goes to each in turn and must resume everywhere.
func TestTicketsFleetRoundRobin(t *testing.T) {
	t.Parallel()
	const reconnects = 100
	l := tlstest.NewLoopback(t)
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			ring := newTicketTestRing(t, newTicketKey(t, 1), newTicketKey(t, 2))
			var nodes []*tls.Config
			var adapters []*ticketAdapter
			for range 3 {
				a := &ticketAdapter{b: newTestTickets(t, ring)}
				adapters = append(adapters, a)
				nodes = append(nodes, ticketServerConfig(t, a, v.Version))
			}
			cli := tlstest.ClientConfig(t, v.Version, tls.NewLRUClientSessionCache(4))
			if l.Connect(t, cli, nodes[0]).DidResume {
				t.Fatal("first connection resumed")
			}
			resumed := 0
			for i := range reconnects {
				if l.Connect(t, cli, nodes[(i+1)%len(nodes)]).DidResume {
					resumed++
				}
			}
			// Deterministic: every node opens every ticket of the ring.
			if resumed != reconnects {
				var errs []error
				for _, a := range adapters {
					errs = append(errs, a.takeErrs()...)
				}
				t.Fatalf("resumed %d of %d reconnects; want all; unwrap errors: %v", resumed, reconnects, errs)
			}
			t.Logf("resumed %d of %d reconnects", resumed, reconnects)
		})
	}
}

// TestTicketsRotation checks that a ticket under a retiring key still
// resumes and comes back under the current key (crypto/tls issues a fresh
// ticket on every resumption, through WrapSession), and that a ticket whose
// key left the ring is a miss: a full handshake, not a failure.
func TestTicketsRotation(t *testing.T) {
	t.Parallel()
	l := tlstest.NewLoopback(t)
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			k1, k2 := newTicketKey(t, 1), newTicketKey(t, 2)
			ring := newTicketTestRing(t, k1)
			a := &ticketAdapter{b: newTestTickets(t, ring)}
			srv := ticketServerConfig(t, a, v.Version)

			// Ring [k1]: a full handshake issues a ticket under k1.
			cache := tlstest.NewRecordingCache()
			if l.Connect(t, tlstest.ClientConfig(t, v.Version, cache), srv).DidResume {
				t.Fatal("first connection resumed")
			}
			cacheKey, oldSession, oldTicket := cache.Last(t)
			if got := ticketName(t, oldTicket); got != k1.Name {
				t.Fatalf("first ticket under key %s; want k1 %s", got, k1.Name)
			}

			// Ring [k2, k1]: the k1 ticket resumes, the new one is under k2.
			ring.set(t, k2, k1)
			cache = tlstest.NewRecordingCache()
			cache.Put(cacheKey, oldSession)
			if !l.Connect(t, tlstest.ClientConfig(t, v.Version, cache), srv).DidResume {
				t.Fatalf("k1 ticket did not resume under ring [k2 k1]; unwrap errors: %v", a.takeErrs())
			}
			_, newSession, newTicket := cache.Last(t)
			if newSession == oldSession {
				t.Fatal("the server issued no new ticket on resumption")
			}
			if got := ticketName(t, newTicket); got != k2.Name {
				t.Fatalf("ticket issued on resumption under key %s; want current key k2 %s", got, k2.Name)
			}

			// Ring [k2]: the k1 ticket is a miss and gets a full handshake
			// and a k2 ticket; the k2 ticket still resumes.
			ring.set(t, k2)
			a.takeErrs()
			cache = tlstest.NewRecordingCache()
			cache.Put(cacheKey, oldSession)
			cli := tlstest.ClientConfig(t, v.Version, cache)
			if l.Connect(t, cli, srv).DidResume {
				t.Fatal("k1 ticket resumed after k1 left the ring")
			}
			errs := a.takeErrs()
			if len(errs) != 1 || !errors.Is(errs[0], ErrMiss) {
				t.Fatalf("unwrap errors = %v; want one ErrMiss", errs)
			}
			if _, _, ticket := cache.Last(t); ticketName(t, ticket) != k2.Name {
				t.Fatalf("ticket after the miss under key %s; want k2", ticketName(t, ticket))
			}
			if !l.Connect(t, cli, srv).DidResume {
				t.Fatalf("k2 ticket did not resume; unwrap errors: %v", a.takeErrs())
			}
		})
	}
}

// TestTicketsFormat implements the documented format independently, with
// crypto/hkdf and crypto/cipher directly, and checks both directions: a
// ticket from WrapSession opens by the spec, and a ticket sealed by the spec
// opens with UnwrapSession.
func TestTicketsFormat(t *testing.T) {
	t.Parallel()
	key := newTicketKey(t, 7)
	tk := newTestTickets(t, newTicketTestRing(t, key))
	ss := tlstest.Session(t, tls.VersionTLS13)
	state, err := ss.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	specAEAD := func(salt []byte) cipher.AEAD {
		subkey, err := hkdf.Key(sha256.New, key.Secret[:], salt, "edgeproxy ticket v1", 32)
		if err != nil {
			t.Fatal(err)
		}
		block, err := aes.NewCipher(subkey)
		if err != nil {
			t.Fatal(err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		return aead
	}

	t.Run("wrapped ticket opens by the spec", func(t *testing.T) {
		ticket, err := tk.WrapSession(tls.ConnectionState{}, ss)
		if err != nil {
			t.Fatal(err)
		}
		if ticket[0] != 0x01 || !bytes.Equal(ticket[1:17], key.Name[:]) {
			t.Fatalf("header %x; want 01 then the key name", ticket[:17])
		}
		salt, nonce, sealed := ticket[17:33], ticket[33:45], ticket[45:]
		got, err := specAEAD(salt).Open(nil, nonce, sealed, ticket[:17])
		if err != nil {
			t.Fatalf("opening by the spec: %v", err)
		}
		if !bytes.Equal(got, state) {
			t.Fatal("plaintext is not SessionState.Bytes()")
		}
	})

	t.Run("spec ticket unwraps", func(t *testing.T) {
		salt := bytes.Repeat([]byte{0xa5}, 16)
		nonce := bytes.Repeat([]byte{0x5a}, 12)
		header := append(append(append([]byte{0x01}, key.Name[:]...), salt...), nonce...)
		ticket := specAEAD(salt).Seal(header, nonce, state, header[:17])
		got, err := tk.UnwrapSession(ticket, tls.ConnectionState{})
		if err != nil {
			t.Fatal(err)
		}
		gotBytes, err := got.Bytes()
		if err != nil || !bytes.Equal(gotBytes, state) {
			t.Fatalf("unwrapped state differs (%v)", err)
		}
	})

	t.Run("additional data is version and key name", func(t *testing.T) {
		salt := bytes.Repeat([]byte{0xa5}, 16)
		nonce := bytes.Repeat([]byte{0x5a}, 12)
		header := append(append(append([]byte{0x01}, key.Name[:]...), salt...), nonce...)
		ticket := specAEAD(salt).Seal(header, nonce, state, nil) // no additional data
		if _, err := tk.UnwrapSession(ticket, tls.ConnectionState{}); !errors.Is(err, ErrBad) {
			t.Fatalf("ticket sealed without additional data: error = %v; want ErrBad", err)
		}
	})
}

// bitRegion names the ticket field that holds byte i.
func bitRegion(i, n int) string {
	switch {
	case i == 0:
		return "version"
	case i < ticketSaltOff:
		return "key_name"
	case i < ticketNonceOff:
		return "salt"
	case i < ticketHeaderLen:
		return "nonce"
	case i < n-ticketTagLen:
		return "ciphertext"
	default:
		return "tag"
	}
}

func TestTicketsBadTickets(t *testing.T) {
	t.Parallel()
	key := newTicketKey(t, 1)
	ring := newTicketTestRing(t, key, newTicketKey(t, 2))
	tk := newTestTickets(t, ring)
	valid, err := tk.WrapSession(tls.ConnectionState{}, tlstest.Session(t, tls.VersionTLS13))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.UnwrapSession(valid, tls.ConnectionState{}); err != nil {
		t.Fatalf("the valid ticket does not open: %v", err)
	}
	garbage, err := tk.seal(key, []byte("not a session state"))
	if err != nil {
		t.Fatal(err)
	}
	clone := func(b []byte) []byte { return append([]byte(nil), b...) }

	type tcase struct {
		name     string
		identity []byte
		want     error // ErrBad or ErrMiss; nil means either
	}
	tests := []tcase{
		{"nil", nil, ErrMiss},
		{"empty", []byte{}, ErrMiss},
		{"one byte", []byte{ticketVersion}, ErrBad},
		{"header only", clone(valid[:ticketHeaderLen]), ErrBad},
		{"header and tag only", append(clone(valid[:ticketHeaderLen]), valid[len(valid)-ticketTagLen:]...), ErrBad},
		{"unparsable state", garbage, ErrBad},
	}
	for _, ver := range []byte{0x00, 0x02, 0x80, 0xff} {
		b := clone(valid)
		b[0] = ver
		tests = append(tests, tcase{fmt.Sprintf("version %#x", ver), b, ErrBad})
	}
	unknown := clone(valid)
	copy(unknown[ticketNameOff:ticketSaltOff], bytes.Repeat([]byte{9}, ticketkeys.NameSize))
	tests = append(tests, tcase{"unknown key name", unknown, ErrMiss})
	other := clone(valid)
	copy(other[ticketNameOff:ticketSaltOff], bytes.Repeat([]byte{2}, ticketkeys.NameSize))
	tests = append(tests, tcase{"other ring key", other, ErrBad})
	for n := 1; n < len(valid); n++ { // 0 is "empty"
		tests = append(tests, tcase{fmt.Sprintf("truncated to %d", n), clone(valid[:n]), ErrBad})
	}
	tests = append(tests, tcase{"one byte extra", append(clone(valid), 0), ErrBad})
	for i := range len(valid) * 8 {
		b := clone(valid)
		b[i/8] ^= 1 << (i % 8)
		want := ErrBad
		if bitRegion(i/8, len(valid)) == "key_name" {
			want = ErrMiss
		}
		tests = append(tests, tcase{fmt.Sprintf("bit %d flipped in %s", i, bitRegion(i/8, len(valid))), b, want})
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	sizes := []int{ticketOverhead + 1, 100, 255, 1000, 4096, 16 << 10, 60 << 10, 65535}
	for n := range ticketOverhead + 2 {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		tests = append(tests, tcase{fmt.Sprintf("random %d bytes", n), b, nil})
		if n >= ticketOverhead {
			h := clone(b)
			h[0] = ticketVersion
			copy(h[ticketNameOff:ticketSaltOff], key.Name[:])
			tests = append(tests, tcase{fmt.Sprintf("random %d bytes under a ring key", n), h, ErrBad})
		}
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss, err := tk.UnwrapSession(tt.identity, tls.ConnectionState{})
			if ss != nil {
				t.Fatal("UnwrapSession returned a session")
			}
			switch {
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("error = %v; want %v", err, tt.want)
			case tt.want == nil && !errors.Is(err, ErrBad) && !errors.Is(err, ErrMiss):
				t.Fatalf("error = %v; want ErrBad or ErrMiss", err)
			}
		})
	}

	t.Run("unparsable state error wraps the parse error", func(t *testing.T) {
		_, err := tk.UnwrapSession(garbage, tls.ConnectionState{})
		wrapped, ok := err.(interface{ Unwrap() []error })
		if !errors.Is(err, ErrBad) || !ok || len(wrapped.Unwrap()) != 2 || !strings.Contains(err.Error(), "parsing session state") {
			t.Fatalf("error = %v; want ErrBad wrapping the parse error", err)
		}
	})
}

func TestTicketsNoRing(t *testing.T) {
	t.Parallel()
	tk := newTestTickets(t, &ticketTestRing{})
	ss := tlstest.Session(t, tls.VersionTLS13)
	if ticket, err := tk.WrapSession(tls.ConnectionState{}, ss); err == nil || ticket != nil {
		t.Fatalf("WrapSession without a ring = %x, %v; want an error", ticket, err)
	}
	valid, err := newTestTickets(t, newTicketTestRing(t, newTicketKey(t, 1))).WrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.UnwrapSession(valid, tls.ConnectionState{}); got != nil || !errors.Is(err, ErrMiss) {
		t.Fatalf("UnwrapSession without a ring = %v, %v; want ErrMiss", got, err)
	}
}

type ticketFailingReader struct{ err error }

func (r ticketFailingReader) Read([]byte) (int, error) { return 0, r.err }

func TestTicketsRandFailure(t *testing.T) {
	t.Parallel()
	errEntropy := errors.New("entropy exhausted")
	ss := tlstest.Session(t, tls.VersionTLS13)
	tests := []struct {
		name string
		r    io.Reader
		want error
	}{
		{"failing", ticketFailingReader{errEntropy}, errEntropy},
		{"short", bytes.NewReader(make([]byte, ticketSaltLen)), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, err := NewTickets(TicketsConfig{Keys: newTicketTestRing(t, newTicketKey(t, 1)), Rand: tt.r})
			if err != nil {
				t.Fatal(err)
			}
			ticket, err := tk.WrapSession(tls.ConnectionState{}, ss)
			if !errors.Is(err, tt.want) || ticket != nil {
				t.Fatalf("WrapSession = %x, %v; want error %v", ticket, err, tt.want)
			}
		})
	}
}

// ticketFieldRepeats counts tickets whose bytes [from, to) another ticket
// already had.
func ticketFieldRepeats(tickets [][]byte, from, to int) int {
	seen := make(map[string]struct{}, len(tickets))
	repeats := 0
	for _, t := range tickets {
		f := string(t[from:to])
		if _, ok := seen[f]; ok {
			repeats++
		}
		seen[f] = struct{}{}
	}
	return repeats
}

type ticketRepeatingReader struct{}

func (ticketRepeatingReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestTicketsSaltNonceUnique(t *testing.T) {
	t.Parallel()
	const n = 100_000
	key := newTicketKey(t, 1)
	tests := []struct {
		name        string
		rand        io.Reader
		wantRepeats bool
	}{
		{"crypto/rand", nil, false},
		// The check itself must catch a broken source.
		{"repeating source", ticketRepeatingReader{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, err := NewTickets(TicketsConfig{Keys: newTicketTestRing(t, key), Rand: tt.rand})
			if err != nil {
				t.Fatal(err)
			}
			count := n
			if tt.wantRepeats {
				count = 100
			}
			tickets := make([][]byte, count)
			for i := range tickets {
				if tickets[i], err = tk.seal(key, []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			// Each field alone must be unique too: a fixed salt would bring
			// back the 2^32 bound of random nonces, and a fixed nonce would
			// leave every ticket's safety to the salt alone.
			for _, f := range []struct {
				name     string
				from, to int
			}{
				{"salt||nonce", ticketSaltOff, ticketHeaderLen},
				{"salt", ticketSaltOff, ticketNonceOff},
				{"nonce", ticketNonceOff, ticketHeaderLen},
			} {
				repeats := ticketFieldRepeats(tickets, f.from, f.to)
				if got := repeats > 0; got != tt.wantRepeats {
					t.Errorf("%d %s repeats in %d tickets; want repeats: %v", repeats, f.name, count, tt.wantRepeats)
				}
			}
		})
	}
}

// TestTicketsConcurrentRotation wraps and unwraps from many goroutines while
// the ring rotates between orders of the same two keys, so every ticket must
// open; run with -race.
func TestTicketsConcurrentRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := newTicketKey(t, 1), newTicketKey(t, 2)
	ring := newTicketTestRing(t, k1, k2)
	r1, r2 := ring.Ring(), func() *ticketkeys.Ring { ring.set(t, k2, k1); return ring.Ring() }()
	tk := newTestTickets(t, ring)
	ss := tlstest.Session(t, tls.VersionTLS13)
	want, err := ss.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	rotated := make(chan struct{})
	go func() {
		defer close(rotated)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				ring.p.Store(r1)
			} else {
				ring.p.Store(r2)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				ticket, err := tk.WrapSession(tls.ConnectionState{}, ss)
				if err != nil {
					errs <- err
					return
				}
				got, err := tk.UnwrapSession(ticket, tls.ConnectionState{})
				if err != nil {
					errs <- err
					return
				}
				gotBytes, err := got.Bytes()
				if err != nil || !bytes.Equal(gotBytes, want) {
					errs <- fmt.Errorf("state differs after a round trip (%v)", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-rotated
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func ExampleTickets_UnwrapSession() {
	key := &ticketkeys.Key{Name: ticketkeys.Name{1}}
	ring, _ := ticketkeys.NewRing(key)
	var holder ticketTestRing
	holder.p.Store(ring)
	tk, err := NewTickets(TicketsConfig{Keys: &holder})
	if err != nil {
		panic(err)
	}

	_, err = tk.UnwrapSession([]byte("not a ticket"), tls.ConnectionState{})
	fmt.Println(errors.Is(err, ErrBad))

	retired := make([]byte, ticketOverhead+10)
	retired[0] = 0x01 // version 1, key name all zeros: not in the ring
	_, err = tk.UnwrapSession(retired, tls.ConnectionState{})
	fmt.Println(errors.Is(err, ErrMiss))
	// Output:
	// true
	// true
}
