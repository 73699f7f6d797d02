package resumption

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestTicketSubkeyMatchesHKDF checks the hand-written derivation against
// crypto/hkdf on random secrets and salts: tickets sealed by either open
// with the other, across a fleet of mixed versions.
func TestTicketSubkeyMatchesHKDF(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		var secret [32]byte
		salt := make([]byte, ticketSaltLen)
		for j := range secret {
			secret[j] = byte(r.Uint32())
		}
		for j := range salt {
			salt[j] = byte(r.Uint32())
		}
		want, err := hkdf.Key(sha256.New, secret[:], salt, ticketSubkeyInfo, 32)
		if err != nil {
			t.Fatal(err)
		}
		if got := ticketSubkey(&secret, salt); !bytes.Equal(got[:], want) {
			t.Fatalf("case %d: subkey %x, crypto/hkdf %x", i, got, want)
		}
	}
}

// TestTicketSubkeyAllocs guards the point of ticketSubkey: no allocation.
func TestTicketSubkeyAllocs(t *testing.T) {
	var secret [32]byte
	salt := make([]byte, ticketSaltLen)
	if n := testing.AllocsPerRun(100, func() { ticketSubkey(&secret, salt) }); n != 0 {
		t.Errorf("ticketSubkey: %v allocations, want 0", n)
	}
}
