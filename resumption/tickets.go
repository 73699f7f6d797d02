package resumption

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/internal/aesgcm"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// Ticket format v1 offsets and sizes; the layout is documented on Tickets.
const (
	ticketVersion   = 0x01
	ticketNameOff   = 1
	ticketSaltOff   = ticketNameOff + ticketkeys.NameSize // 17
	ticketNonceOff  = ticketSaltOff + ticketSaltLen       // 33
	ticketHeaderLen = ticketNonceOff + ticketNonceLen     // 45
	ticketSaltLen   = 16
	ticketNonceLen  = 12
	ticketTagLen    = 16
	// ticketOverhead is the size of a ticket around its sealed state, and so
	// the size of the shortest well-formed ticket.
	ticketOverhead = ticketHeaderLen + ticketTagLen // 61
	// ticketSubkeyInfo is the HKDF info that binds subkeys to this format.
	ticketSubkeyInfo = "edgeproxy ticket v1"
)

// RingSource supplies the ticket key ring currently in force. Ring must be
// safe for concurrent use and cheap (it is called on every handshake that
// issues or presents a ticket); it returns nil only when no ring has been
// loaded. ticketkeys.Holder implements it.
type RingSource interface {
	Ring() *ticketkeys.Ring
}

// TicketsConfig configures a Tickets backend.
type TicketsConfig struct {
	// Keys supplies the ticket key ring. Required: every node of a fleet that
	// should resume each other's sessions must see the same keys.
	Keys RingSource
	// Rand is the source of ticket salts and nonces. If nil, crypto/rand is
	// used. A Rand that repeats itself reuses GCM nonces under the same
	// subkey, which lets anyone forge tickets: only tests should set it.
	Rand io.Reader
}

// Validate reports whether the configuration can build a Tickets backend. It
// does no I/O.
func (c TicketsConfig) Validate() error {
	if c.Keys == nil {
		return errors.New("resumption: TicketsConfig.Keys is required: pass the ticket key holder (ticketkeys.Holder)")
	}
	return nil
}

// Tickets is the stateless resumption Backend: the whole session state
// travels in the ticket, sealed with AES-256-GCM under a per-ticket subkey of
// the current ring key. Any node holding the ring opens any ticket sealed
// under a key still in the ring, in O(1) in the number of tickets and nodes.
//
// A ticket (format version 1) is fixed-size fields followed by the sealed
// state, so it is parsed by offsets alone:
//
//	offset  size  field
//	     0     1  version = 0x01
//	     1    16  key_name: ticketkeys.Name of the sealing key, in the clear
//	    17    16  salt: random, per ticket
//	    33    12  nonce: random, per ticket
//	    45     n  AES-256-GCM ciphertext of SessionState.Bytes()
//	  45+n    16  GCM tag
//
// The additional data is version||key_name (the first 17 bytes), so neither
// can be altered without failing authentication. The per-ticket AES-256 key is
//
//	subkey = HKDF-SHA256(secret = Key.Secret, salt = salt, info = "edgeproxy ticket v1", length 32)
//
// Why a subkey per ticket: a random 96-bit GCM nonce under a single key is
// safe only up to about 2^32 messages (NIST SP 800-38D, Section 8.3); past
// that the chance of a nonce repeat, which reveals the GHASH key and lets
// anyone forge tickets, exceeds 2^-32. With a fresh subkey per ticket a nonce
// repeat matters only if the 128-bit salt repeats too, so each ticket draws
// 224 random bits, and keeping the repeat probability under 2^-32 allows
// about 2^96 tickets per key: nonce safety no longer depends on rotation.
//
// A cheaper derivation of equal strength was measured:
// subkey = AES-256_K(salt) || AES-256_K(^salt), AES as a PRF on the salt (two
// tickets share even half a subkey only if their salts are equal or
// complementary, probability about q²/2^127 for q tickets). The standard HKDF
// construction is kept; written out allocation-free (ticketSubkey), it costs
// about as much (BenchmarkTicketsSubkey), where crypto/hkdf cost 16
// allocations per ticket, 32 per resumed TLS 1.2 handshake (#13).
//
// Tickets is safe for concurrent use. Its zero value is not usable: build it
// with NewTickets. It holds no key material itself; it reads the ring from its
// RingSource on every call, so a rotation takes effect on the next handshake.
//
// Warning: a ticket carries the session's secret (the TLS 1.2 master secret,
// the TLS 1.3 resumption PSK), readable by anyone holding the ring key that
// sealed it. With TLS 1.2 a leaked ring key decrypts every recorded
// connection that issued or resumed with a ticket under it; with TLS 1.3 it
// lets its holder impersonate the server to clients resuming with such a
// ticket. Ring keys must therefore rotate out and be zeroed (see package
// ticketkeys), and a ticket cannot be revoked before its key leaves the ring.
type Tickets struct {
	keys RingSource
	rand io.Reader
}

// NewTickets returns a Tickets backend for cfg, or the error from
// cfg.Validate.
func NewTickets(cfg TicketsConfig) (*Tickets, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Tickets{keys: cfg.Keys, rand: cfg.Rand}
	if t.rand == nil {
		t.rand = rand.Reader
	}
	return t, nil
}

var _ Reissuer = (*Tickets)(nil)

var errNoRing = errors.New("resumption: no ticket key ring loaded")

// WrapSession seals ss under the ring's current key and returns the ticket.
// It has the signature of tls.Config.WrapSession. It fails only if the state
// cannot be serialised, the random source fails, or no ring is loaded.
//
// crypto/tls calls WrapSession for every ticket it issues, including the
// fresh ticket it sends on every resumption, so a client that resumed with a
// ticket under an older ring key leaves with one under the current key.
// (Through Layer.ConnConfig, a TLS 1.2 resumption with a ticket under the
// current key gets that ticket back instead: see Reissuable.)
func (t *Tickets) WrapSession(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	if ss == nil {
		return nil, errors.New("resumption: WrapSession called with a nil session")
	}
	ring := t.keys.Ring()
	if ring == nil {
		return nil, errNoRing
	}
	state, err := ss.Bytes()
	if err != nil {
		return nil, fmt.Errorf("resumption: serialising session: %w", err)
	}
	ticket, err := t.seal(ring.Current(), state)
	clear(state) // it holds the master secret in the clear
	return ticket, err
}

// Reissuable reports whether identity, a ticket UnwrapSession opened, is
// sealed under the ring's current key: then a TLS 1.2 resumption may send it
// back as its new ticket (Reissuer); under an older key, a fresh ticket
// moves the client to the current one.
func (t *Tickets) Reissuable(identity []byte) bool {
	ring := t.keys.Ring()
	return ring != nil && len(identity) >= ticketOverhead && identity[0] == ticketVersion &&
		ticketkeys.Name(identity[ticketNameOff:ticketSaltOff]) == ring.Current().Name
}

// seal returns plaintext sealed under key in ticket format v1. The ticket is
// the only allocation beyond the per-ticket subkey and cipher.
func (t *Tickets) seal(key *ticketkeys.Key, plaintext []byte) ([]byte, error) {
	ticket := make([]byte, ticketHeaderLen, len(plaintext)+ticketOverhead)
	ticket[0] = ticketVersion
	copy(ticket[ticketNameOff:ticketSaltOff], key.Name[:])
	if _, err := io.ReadFull(t.rand, ticket[ticketSaltOff:ticketHeaderLen]); err != nil {
		return nil, fmt.Errorf("resumption: reading ticket salt and nonce: %w", err)
	}
	aead, err := ticketAEAD(&key.Secret, ticket[ticketSaltOff:ticketNonceOff])
	if err != nil {
		return nil, err
	}
	// Seal appends after the header, within ticket's capacity; the output
	// does not overlap the nonce or additional data it reads from the header.
	return aead.Seal(ticket, ticket[ticketNonceOff:ticketHeaderLen], plaintext, ticket[:ticketSaltOff]), nil
}

// UnwrapSession opens a ticket sealed by WrapSession on any node sharing the
// ring and returns its session. It has the signature of
// tls.Config.UnwrapSession but reports why it found no session, as Backend
// requires:
//
//   - ErrMiss: the identity is empty (a TLS 1.2 client without a ticket;
//     crypto/tls asks anyway), or the ticket is well formed but its key is
//     not in the ring (retired, or from another fleet), or no ring is loaded;
//   - ErrBad: the ticket is truncated, has an unknown version, fails
//     authentication, or holds state that does not parse.
//
// It never panics on any input, and costs one key lookup, one subkey
// derivation and one decryption regardless of the number of tickets issued.
// It does not check the session's age or scope; the Layer does.
func (t *Tickets) UnwrapSession(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) == 0 {
		// crypto/tls calls UnwrapSession for every TLS 1.2 ClientHello,
		// with an empty identity when the client has no ticket: nothing
		// presented, nothing found. Not an error worth counting as bad.
		return nil, ErrMiss
	}
	if identity[0] != ticketVersion {
		return nil, fmt.Errorf("%w: not a version %d ticket", ErrBad, ticketVersion)
	}
	if len(identity) < ticketOverhead {
		return nil, fmt.Errorf("%w: ticket of %d bytes is shorter than the %d-byte minimum", ErrBad, len(identity), ticketOverhead)
	}
	ring := t.keys.Ring()
	if ring == nil {
		return nil, fmt.Errorf("%w: %w", ErrMiss, errNoRing)
	}
	name := ticketkeys.Name(identity[ticketNameOff:ticketSaltOff])
	key := ring.Lookup(name)
	if key == nil {
		return nil, fmt.Errorf("%w: ticket key %s is not in the ring", ErrMiss, name)
	}
	aead, err := ticketAEAD(&key.Secret, identity[ticketSaltOff:ticketNonceOff])
	if err != nil {
		return nil, err
	}
	// Open into a fresh buffer: the identity belongs to crypto/tls, and
	// ParseSessionState keeps slices of the plaintext (the secret, Extra), so
	// the buffer can be neither pooled nor cleared.
	plaintext, err := aead.Open(nil, identity[ticketNonceOff:ticketHeaderLen], identity[ticketHeaderLen:], identity[:ticketSaltOff])
	if err != nil {
		return nil, fmt.Errorf("%w: ticket under key %s fails authentication", ErrBad, name)
	}
	ss, err := tls.ParseSessionState(plaintext)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing session state: %w", ErrBad, err)
	}
	return ss, nil
}

// ticketAEAD returns AES-256-GCM under the subkey that secret and salt derive
// (ticketSubkey). crypto/cipher keeps the expanded key inside the AEAD, so
// one is built per ticket; the raw subkey is zeroed once expanded.
func ticketAEAD(secret *[ticketkeys.SecretSize]byte, salt []byte) (cipher.AEAD, error) {
	subkey := ticketSubkey(secret, salt)
	aead, err := aesgcm.New(subkey[:])
	clear(subkey[:])
	if err != nil {
		return nil, fmt.Errorf("resumption: creating ticket cipher: %w", err)
	}
	return aead, nil
}
