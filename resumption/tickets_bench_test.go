package resumption

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"testing"

	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
)

func BenchmarkTicketsWrap(b *testing.B) {
	tk := newTestTickets(b, newTicketTestRing(b, newTicketKey(b, 1)))
	ss := tlstest.Session(b, tls.VersionTLS13)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tk.WrapSession(tls.ConnectionState{}, ss); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTicketsUnwrap(b *testing.B) {
	tk := newTestTickets(b, newTicketTestRing(b, newTicketKey(b, 1)))
	ticket, err := tk.WrapSession(tls.ConnectionState{}, tlstest.Session(b, tls.VersionTLS13))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tk.UnwrapSession(ticket, tls.ConnectionState{}); err != nil {
			b.Fatal(err)
		}
	}
}

// aesTicketAEAD is the cheaper subkey derivation weighed against HKDF (see
// the Tickets doc): subkey = AES-256_K(salt) || AES-256_K(^salt).
func aesTicketAEAD(secret *[32]byte, salt []byte) (cipher.AEAD, error) {
	master, err := aes.NewCipher(secret[:])
	if err != nil {
		return nil, err
	}
	var subkey [32]byte
	var inv [16]byte
	for i := range inv {
		inv[i] = ^salt[i]
	}
	master.Encrypt(subkey[:16], salt)
	master.Encrypt(subkey[16:], inv[:])
	block, err := aes.NewCipher(subkey[:])
	clear(subkey[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// BenchmarkTicketsSubkey compares the per-ticket subkey derivations, each
// including the AES-GCM setup both need.
func BenchmarkTicketsSubkey(b *testing.B) {
	key := newTicketKey(b, 1)
	salt := make([]byte, ticketSaltLen)
	for _, bb := range []struct {
		name string
		f    func(*[32]byte, []byte) (cipher.AEAD, error)
	}{
		{"hkdf", ticketAEAD},
		{"aes", aesTicketAEAD},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bb.f(&key.Secret, salt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshakeFullVsResumed measures a whole connection (TCP loopback
// connect, both TLS handshakes, one byte) in one process, both ends
// included, with the Tickets backend issuing a ticket each time.
func BenchmarkHandshakeFullVsResumed(b *testing.B) {
	l := tlstest.NewLoopback(b)
	for _, v := range tlstest.Versions {
		b.Run(v.Name, func(b *testing.B) {
			tk := newTestTickets(b, newTicketTestRing(b, newTicketKey(b, 1)))
			srv := ticketServerConfig(b, &ticketAdapter{b: tk}, v.Version)
			// Map errors to a full handshake without recording them, so the
			// record does not grow with b.N.
			srv.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
				ss, err := tk.UnwrapSession(identity, cs)
				if err != nil {
					return nil, nil
				}
				return ss, nil
			}
			b.Run("full", func(b *testing.B) {
				cli := tlstest.ClientConfig(b, v.Version, nil)
				b.ReportAllocs()
				for b.Loop() {
					if l.Connect(b, cli, srv).DidResume {
						b.Fatal("resumed without a session cache")
					}
				}
			})
			b.Run("resumed", func(b *testing.B) {
				cli := tlstest.ClientConfig(b, v.Version, tls.NewLRUClientSessionCache(1))
				l.Connect(b, cli, srv)
				b.ReportAllocs()
				for b.Loop() {
					if !l.Connect(b, cli, srv).DidResume {
						b.Fatal("did not resume")
					}
				}
			})
		})
	}
}
